//! Which authorized-keys sources a pod gets: the `--keys` / `--keys-dir` arguments of
//! `init-sshd install`, and the volumes and read-only mounts that make them visible to
//! the init container. A source that cannot be used becomes a warning, never a failure.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use tracing::debug;

use session_ssh_contract::{names, wildcard};

use crate::config::Config;
use crate::naming;

/// Where Secret and downward-API key directories are mounted in the init container.
pub const KEYS_ROOT: &str = "/session-ssh-keys";

/// What the init container needs for its key sources.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyPlan {
    /// `--keys` arguments: files or globs, at the paths the session container sees.
    pub files: Vec<String>,
    /// `--keys-dir` arguments.
    pub dirs: Vec<String>,
    /// Pod volumes to add (Secrets, downward API).
    pub volumes: Vec<Value>,
    /// Init container mounts: the session's volumes that hold `files` (read-only, same
    /// paths) and the added volumes.
    pub mounts: Vec<Value>,
    /// Session container mounts of the added volumes (read-only, same paths), so the server
    /// re-reads what the kubelet updates (issue 14: keys added while the session runs).
    pub session_mounts: Vec<Value>,
}

/// Plan every configured source for this pod; unusable sources are reported in `warnings`.
pub fn plan(pod: &Pod, session: &Container, cfg: &Config, warnings: &mut Vec<String>) -> KeyPlan {
    let mut plan = KeyPlan::default();
    for file in &cfg.keys.files {
        plan_file(&mut plan, file, session, &cfg.mount_path, warnings);
    }

    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(template) = &cfg.keys.user_secret {
        match naming::render_secret_name(template, labels) {
            Ok(name) => plan.secret(names::USER_KEYS_VOLUME, &name, "user"),
            Err(e) => warnings.push(format!(
                "session-ssh: per-user key Secret not used: {e} (template {template:?})"
            )),
        }
    }

    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if let Some(key) = cfg
        .keys
        .annotation
        .as_ref()
        .filter(|k| annotations.contains_key(*k))
    {
        let dir = format!("{KEYS_ROOT}/annotation");
        plan.volumes.push(json!({
            "name": names::ANNOTATION_KEYS_VOLUME,
            "downwardAPI": { "items": [{
                "path": "authorized_keys",
                "fieldRef": { "fieldPath": format!("metadata.annotations['{key}']") },
            }]},
        }));
        let mount = json!({
            "name": names::ANNOTATION_KEYS_VOLUME, "mountPath": dir, "readOnly": true,
        });
        plan.mounts.push(mount.clone());
        plan.session_mounts.push(mount);
        plan.dirs.push(dir);
    }

    for (i, name) in cfg.keys.extra_secrets.iter().enumerate() {
        plan.secret(
            &format!("{}{i}", names::SECRET_KEYS_VOLUME_PREFIX),
            name,
            &format!("secret-{i}"),
        );
    }
    plan
}

impl KeyPlan {
    fn secret(&mut self, volume: &str, secret: &str, sub: &str) {
        let dir = format!("{KEYS_ROOT}/{sub}");
        self.volumes.push(json!({
            "name": volume,
            "secret": { "secretName": secret, "optional": true },
        }));
        let mount = json!({ "name": volume, "mountPath": dir, "readOnly": true });
        self.mounts.push(mount.clone());
        self.session_mounts.push(mount);
        self.dirs.push(dir);
    }
}

/// The directory part of `path` before the first component with a glob character.
fn literal_prefix(path: &str) -> (&str, bool) {
    let mut end = 0;
    for (i, comp) in path.match_indices('/') {
        if path[end..i].contains(['*', '?', '[']) {
            return (path[..end].trim_end_matches('/'), true);
        }
        end = i + comp.len();
    }
    if path[end..].contains(['*', '?', '[']) {
        return (path[..end].trim_end_matches('/'), true);
    }
    (path, false)
}

fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || dir.is_empty() || path.starts_with(&format!("{dir}/"))
}

/// A file source is usable when a volume of the session container holds it: mount that
/// volume (and, for globs, any volume mounted below the glob's fixed part) read-only at
/// the same path, so `--keys` means the same thing in both containers.
fn plan_file(
    plan: &mut KeyPlan,
    file: &str,
    session: &Container,
    ours: &str,
    warnings: &mut Vec<String>,
) {
    let (prefix, is_glob) = literal_prefix(file);
    let mounts: Vec<_> = session.volume_mounts.iter().flatten().collect();
    let holder = mounts
        .iter()
        .filter(|m| under(prefix, &m.mount_path))
        .max_by_key(|m| m.mount_path.trim_end_matches('/').len());
    // Volumes mounted below the glob's fixed part, where a match could live.
    let below = mounts
        .iter()
        .filter(|m| is_glob && may_hold(file, prefix, &m.mount_path));
    let chosen: Vec<_> = holder.into_iter().chain(below).collect();
    if chosen.is_empty() {
        warnings.push(format!(
            "session-ssh: key file {file:?} is on no volume of container {:?}; ignored",
            session.name
        ));
        return;
    }
    let mut usable = false;
    for m in chosen {
        if m.mount_path.trim_end_matches('/').is_empty() {
            warnings.push(format!(
                "session-ssh: volume {:?} is mounted at /; not mounted",
                m.name
            ));
            continue;
        }
        if under(&m.mount_path, ours) || under(&m.mount_path, KEYS_ROOT) {
            // Would duplicate or shadow one of our own mounts: an invalid pod.
            warnings.push(format!(
                "session-ssh: volume {:?} at {} overlaps the init container's own mounts; not mounted",
                m.name, m.mount_path
            ));
            continue;
        }
        if m.sub_path_expr.is_some() {
            // The expression expands with the session container's env, which the init
            // container does not have.
            warnings.push(format!(
                "session-ssh: volume {:?} uses subPathExpr; not mounted for key file {file:?}",
                m.name
            ));
            continue;
        }
        usable = true;
        if plan
            .mounts
            .iter()
            .any(|v| v["mountPath"] == json!(m.mount_path))
        {
            continue;
        }
        let mut v = json!({ "name": m.name, "mountPath": m.mount_path, "readOnly": true });
        if let Some(sp) = &m.sub_path {
            v["subPath"] = json!(sp);
        }
        debug!(volume = %m.name, path = %m.mount_path, file, "mounting key volume read-only");
        plan.mounts.push(v);
    }
    if usable {
        plan.files.push(file.to_owned());
    }
}

/// Could a volume mounted at `mount` (below `prefix`) hold a file matching `pattern`?
/// Compares path components below the prefix with the glob's components, with the
/// same rules as init-sshd's glob: `*` and `?` never match a leading `.` unless the
/// pattern component starts with one; `[...]` classes are assumed to match.
fn may_hold(pattern: &str, prefix: &str, mount: &str) -> bool {
    let (Some(pat_rest), Some(mount_rest)) = (
        pattern
            .strip_prefix(prefix)
            .map(|r| r.trim_start_matches('/')),
        mount.strip_prefix(&format!("{prefix}/")),
    ) else {
        return false;
    };
    let pats: Vec<&str> = pat_rest.split('/').filter(|c| !c.is_empty()).collect();
    let comps: Vec<&str> = mount_rest.split('/').filter(|c| !c.is_empty()).collect();
    comps.len() <= pats.len()
        && pats
            .iter()
            .zip(&comps)
            .all(|(p, c)| component_matches(p, c))
}

fn component_matches(pat: &str, name: &str) -> bool {
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    if pat.contains('[') {
        return true;
    }
    wildcard::matches(pat.as_bytes(), name.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes() {
        assert_eq!(
            literal_prefix("/home/jovyan/work/*/.ssh/authorized_keys"),
            ("/home/jovyan/work", true)
        );
        assert_eq!(literal_prefix("/a/b/keys"), ("/a/b/keys", false));
        assert_eq!(literal_prefix("/a/k?ys"), ("/a", true));
        assert_eq!(literal_prefix("/*/x"), ("", true));
    }

    #[test]
    fn glob_components() {
        let pat = "/home/jovyan/work/*/.ssh/authorized_keys";
        let pre = "/home/jovyan/work";
        assert!(may_hold(pat, pre, "/home/jovyan/work/project"));
        assert!(may_hold(pat, pre, "/home/jovyan/work/project/.ssh"));
        assert!(may_hold(
            pat,
            pre,
            "/home/jovyan/work/p/.ssh/authorized_keys"
        ));
        assert!(!may_hold(pat, pre, "/home/jovyan/work/.jupyter_config"));
        assert!(!may_hold(pat, pre, "/home/jovyan/work/p/data"));
        assert!(!may_hold(
            pat,
            pre,
            "/home/jovyan/work/p/.ssh/authorized_keys/x"
        ));
        assert!(!may_hold(pat, pre, "/home/jovyan/workshop"));
        assert!(wildcard::matches(b"a*b?c", b"axxbyc", false));
        assert!(wildcard::matches(b"*", b"", false));
        assert!(!wildcard::matches(b"a*b", b"axxc", false));
        assert!(component_matches("[ab]x", "zz"));
    }

    #[test]
    fn under_paths() {
        assert!(under("/home/jovyan/work", "/home/jovyan"));
        assert!(under("/home/jovyan", "/home/jovyan/"));
        assert!(!under("/home/jovyanx", "/home/jovyan"));
        assert!(under("/x", "/"));
    }
}
