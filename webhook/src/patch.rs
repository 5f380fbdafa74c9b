//! The mutation: a pure function from a pod and the config to a JSON patch.
//!
//! Never breaks a pod: anything it cannot handle safely becomes [`Mutation::Skip`] with a
//! bounded [`SkipReason`], a warning, and a patch that only records the reason.
//! Assumes `/metadata` and `/spec` exist in the pod document (true for every API object;
//! `inject` adds them to bare pod templates).

use std::collections::{BTreeMap, BTreeSet};

use json_patch::Patch;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, VolumeMount};
use serde_json::{Value, json};
use tracing::debug;

use crate::config::Config;
use crate::hostca;
use crate::hostkey::{self, SecretRef};
use crate::keys::{self, KeyPlan};
use crate::naming;

mod ops;
pub use ops::pointer;
use ops::{MetaOps, add, append_all};

/// Annotation: `injected` or `skipped`.
pub const STATUS: &str = "session-ssh.io/status";
/// Annotation: why a pod was skipped (`<reason>: <detail>`).
pub const REASON: &str = "session-ssh.io/reason";
/// Annotation: the session container's name.
pub const CONTAINER: &str = "session-ssh.io/container";
/// Label: the session id the controller selects the pod by.
pub const SESSION_ID: &str = "session-ssh.io/session-id";
/// Annotation or label with `"true"`/`"false"`: per-pod opt-in/opt-out.
pub const INJECT: &str = "session-ssh.io/inject";
/// The shared emptyDir.
pub const VOLUME: &str = "session-ssh";
/// The init container.
pub const INIT_CONTAINER: &str = "session-ssh-install";
/// Port names on the session container (IANA service names, at most 15 characters).
pub const PORT_SSH: &str = "session-ssh";
/// See [`PORT_SSH`].
pub const PORT_SSH_TLS: &str = "session-ssh-tls";
/// Every name the webhook adds starts with this.
pub const NAME_PREFIX: &str = "session-ssh";

/// Why a pod was left unchanged. A bounded set: the values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Neither the selector nor an opt-in annotation/label selects the pod.
    NotSelected,
    /// `session-ssh.io/inject: "false"`.
    OptedOut,
    /// The pod already carries `session-ssh.io/status: injected`.
    AlreadyInjected,
    /// No container qualifies as the session container.
    NoSessionContainer,
    /// The session container has an `httpGet`, `tcpSocket` or `sleep` postStart hook,
    /// which cannot be chained after an exec hook.
    UnsupportedPostStart,
    /// A container already declares the SSH or SSH-TLS port.
    PortTaken,
    /// A volume, container, port name or mount path the webhook adds already exists.
    NameCollision,
    /// A Windows pod (`spec.os.name: windows`); init-sshd is a Linux binary.
    WindowsPod,
    /// `hostNetwork: true`: the SSH port would open on the node itself.
    HostNetwork,
}

impl SkipReason {
    /// Stable kebab-case name (metric label, reason annotation prefix).
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::NotSelected => "not-selected",
            SkipReason::OptedOut => "opted-out",
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::NoSessionContainer => "no-session-container",
            SkipReason::UnsupportedPostStart => "unsupported-post-start",
            SkipReason::PortTaken => "port-taken",
            SkipReason::NameCollision => "name-collision",
            SkipReason::WindowsPod => "windows-pod",
            SkipReason::HostNetwork => "host-network",
        }
    }

    /// True when the pod asked for (or matched) SSH and did not get it: these get a
    /// warning and a reason annotation; the others are silent.
    pub fn is_unsafe(&self) -> bool {
        !matches!(
            self,
            SkipReason::NotSelected | SkipReason::OptedOut | SkipReason::AlreadyInjected
        )
    }
}

/// The outcome of [`mutate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// The pod gets SSH (or, on an injected pod that lacks it, just its session id label).
    Patch {
        /// RFC 6902 patch against the pod.
        patch: Patch,
        /// Admission warnings (e.g. a key source that could not be used).
        warnings: Vec<String>,
    },
    /// The pod stays as it is.
    Skip {
        /// Why.
        reason: SkipReason,
        /// Admission warnings (empty for silent skips).
        warnings: Vec<String>,
        /// Only the status/reason annotations; empty when they are already there.
        patch: Patch,
    },
}

impl Mutation {
    /// The patch to send, whatever the outcome.
    pub fn patch(&self) -> &Patch {
        match self {
            Mutation::Patch { patch, .. } | Mutation::Skip { patch, .. } => patch,
        }
    }

    /// The admission warnings.
    pub fn warnings(&self) -> &[String] {
        match self {
            Mutation::Patch { warnings, .. } | Mutation::Skip { warnings, .. } => warnings,
        }
    }
}

/// How the session id label is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionId {
    /// Keep an existing valid label; else derive it from the pod name; else (a
    /// `generateName` pod, whose name a webhook never sees) a random id.
    Derive,
    /// Like `Derive`, with this value instead of a random one for a `generateName` pod
    /// (deterministic output for golden tests).
    DeriveOr(String),
    /// Use this value (tests, callers with their own scheme) unless the pod has one.
    Fixed(String),
    /// Leave it out: used for workload pod templates, whose pods all share the template;
    /// the webhook then adds a distinct id to each pod it admits.
    Omit,
}

/// Mutate a pod as the admission webhook does.
pub fn mutate(pod: &Pod, cfg: &Config) -> Mutation {
    mutate_with(pod, cfg, SessionId::Derive)
}

/// [`mutate`] with an explicit session id policy.
pub fn mutate_with(pod: &Pod, cfg: &Config, id: SessionId) -> Mutation {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let mut meta = MetaOps::new(pod);

    if annotations.get(STATUS).map(String::as_str) == Some("injected") {
        if !labels.contains_key(SESSION_ID)
            && let Some(v) = session_id(pod, &id)
        {
            // Injected from a workload template by `inject`: give this pod its own id.
            meta.label(SESSION_ID, &v);
            return Mutation::Patch {
                patch: Patch(meta.ops),
                warnings: vec![],
            };
        }
        return silent(SkipReason::AlreadyInjected);
    }

    let mut warnings = Vec::new();
    let opt = annotations
        .get(INJECT)
        .map(|v| ("annotation", v))
        .or_else(|| labels.get(INJECT).map(|v| ("label", v)));
    let opted_in = match opt {
        Some((_, v)) if v == "false" => return silent(SkipReason::OptedOut),
        Some((_, v)) if v == "true" => true,
        Some((kind, v)) => {
            warnings.push(format!(
                "session-ssh: ignoring {kind} {INJECT}={v:?} (expected \"true\" or \"false\")"
            ));
            false
        }
        None => false,
    };
    if !opted_in && !selected(labels, cfg) {
        return silent(SkipReason::NotSelected);
    }

    let Some(spec) = pod.spec.as_ref() else {
        return skip(
            pod,
            SkipReason::NoSessionContainer,
            "pod has no spec".into(),
            warnings,
        );
    };
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return skip(
            pod,
            SkipReason::WindowsPod,
            "spec.os.name is windows".into(),
            warnings,
        );
    }
    if spec.host_network == Some(true) {
        return skip(
            pod,
            SkipReason::HostNetwork,
            "hostNetwork would expose the SSH port on the node".into(),
            warnings,
        );
    }
    let Some(idx) = session_container(spec, labels, cfg) else {
        return skip(
            pod,
            SkipReason::NoSessionContainer,
            "no container matches sessionContainer".into(),
            warnings,
        );
    };
    let session = &spec.containers[idx];
    if let Err((reason, detail)) = check_conflicts(spec, session, cfg) {
        return skip(pod, reason, detail, warnings);
    }

    let plan = keys::plan(pod, session, cfg, &mut warnings);
    let mut ops = Vec::new();

    // Metadata first: status, container, session id.
    meta.annotation(STATUS, "injected");
    // A pod skipped on an earlier pass (reinvocation after another webhook fixed the
    // conflict) must not keep the old reason.
    meta.remove_annotation(REASON);
    meta.annotation(CONTAINER, &session.name);
    if let Some(v) = session_id(pod, &id) {
        meta.label(SESSION_ID, &v);
    }
    ops.append(&mut meta.ops);

    // Volumes: the shared emptyDir plus the key sources.
    let mut empty_dir = json!({});
    if let Some(limit) = &cfg.volume_size_limit {
        empty_dir["sizeLimit"] = json!(limit);
    }
    let mut volumes = vec![json!({ "name": VOLUME, "emptyDir": empty_dir })];
    volumes.extend(plan.volumes.iter().cloned());
    // The session's host-key Secret (admission creates it); optional, so a missing Secret
    // only means install generates a key. Default mode: the init container's UID varies.
    let host_key = hostkey::secret_ref(pod, &cfg.host_keys);
    if let Some(r) = &host_key {
        volumes.push(json!({
            "name": hostkey::VOLUME,
            "secret": { "secretName": r.name, "optional": true },
        }));
    }
    // With a host CA, the controller's certificate annotation reaches serve as a file the
    // kubelet keeps current (a subPath mount would never be refreshed).
    let host_cert = host_key.is_some() && cfg.host_keys.ca.secret_name.is_some();
    if host_cert {
        volumes.push(json!({
            "name": hostca::VOLUME,
            "downwardAPI": { "items": [{
                "path": hostca::FILE,
                "fieldRef": { "fieldPath": format!("metadata.annotations['{}']", hostca::CERTIFICATE) },
            }]},
        }));
    }
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes,
    );

    // The init container, last so it runs after the platform's git clone.
    let init = init_container(spec, session, cfg, &plan, host_key.as_ref());
    append_all(
        &mut ops,
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        vec![init],
    );

    // The session container: mount, ports, postStart.
    let c = idx.to_string();
    let base = ["spec", "containers", c.as_str()];
    append_all(
        &mut ops,
        &[&base[..], &["volumeMounts"]].concat(),
        session.volume_mounts.is_some(),
        {
            let mut mounts = vec![json!({ "name": VOLUME, "mountPath": cfg.mount_path })];
            if host_cert {
                mounts.push(json!({
                    "name": hostca::VOLUME,
                    "mountPath": format!("{}/{}", cfg.mount_path.trim_end_matches('/'), hostca::DIR),
                    "readOnly": true,
                }));
            }
            mounts
        },
    );
    let mut ports =
        vec![json!({ "name": PORT_SSH, "containerPort": cfg.ports.ssh, "protocol": "TCP" })];
    if let Some(tls) = cfg.ports.ssh_tls {
        ports.push(json!({ "name": PORT_SSH_TLS, "containerPort": tls, "protocol": "TCP" }));
    }
    append_all(
        &mut ops,
        &[&base[..], &["ports"]].concat(),
        session.ports.is_some(),
        ports,
    );
    let hook = json!({ "exec": { "command": post_start_command(session, cfg) } });
    if session.lifecycle.is_some() {
        // `add` on an existing member replaces it; preStop stays untouched.
        ops.push(add(
            &[&base[..], &["lifecycle", "postStart"]].concat(),
            hook,
        ));
    } else {
        ops.push(add(
            &[&base[..], &["lifecycle"]].concat(),
            json!({ "postStart": hook }),
        ));
    }
    debug!(
        container = %session.name,
        key_files = plan.files.len(),
        key_dirs = plan.dirs.len(),
        ops = ops.len(),
        "planned injection"
    );
    Mutation::Patch {
        patch: Patch(ops),
        warnings,
    }
}

fn silent(reason: SkipReason) -> Mutation {
    Mutation::Skip {
        reason,
        warnings: vec![],
        patch: Patch(vec![]),
    }
}

/// An unsafe skip: warning plus status/reason annotations (none when already recorded,
/// so a second pass is a no-op).
fn skip(pod: &Pod, reason: SkipReason, detail: String, mut warnings: Vec<String>) -> Mutation {
    let text = format!("{}: {detail}", reason.as_str());
    warnings.push(format!("session-ssh: not injected: {text}"));
    let mut meta = MetaOps::new(pod);
    meta.annotation(STATUS, "skipped");
    meta.annotation(REASON, &text);
    Mutation::Skip {
        reason,
        warnings,
        patch: Patch(meta.ops),
    }
}

fn selected(labels: &BTreeMap<String, String>, cfg: &Config) -> bool {
    let s = &cfg.selector;
    !s.require_opt_in
        && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && s.has_labels.iter().all(|k| labels.contains_key(k))
}

fn session_container(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    cfg: &Config,
) -> Option<usize> {
    let sc = &cfg.session_container;
    let by_name = |name: &str| spec.containers.iter().position(|c| c.name == name);
    sc.name_from_label
        .as_ref()
        .and_then(|l| labels.get(l))
        .and_then(|n| by_name(n))
        .or_else(|| sc.names.iter().find_map(|n| by_name(n)))
        .or_else(|| (sc.fallback_to_first && !spec.containers.is_empty()).then_some(0))
}

fn check_conflicts(
    spec: &PodSpec,
    session: &Container,
    cfg: &Config,
) -> Result<(), (SkipReason, String)> {
    if let Some(ps) = session
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    {
        let kind = if ps.http_get.is_some() {
            Some("httpGet")
        } else if ps.tcp_socket.is_some() {
            Some("tcpSocket")
        } else if ps.sleep.is_some() {
            Some("sleep")
        } else {
            None
        };
        if let Some(kind) = kind {
            return Err((
                SkipReason::UnsupportedPostStart,
                format!("container {:?} has a {kind} postStart hook", session.name),
            ));
        }
    }
    let ours: BTreeSet<i32> = [Some(cfg.ports.ssh), cfg.ports.ssh_tls]
        .into_iter()
        .flatten()
        .map(i32::from)
        .collect();
    // All containers share the pod's network namespace, init sidecars included.
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all.clone() {
        for p in c.ports.iter().flatten() {
            if ours.contains(&p.container_port) {
                return Err((
                    SkipReason::PortTaken,
                    format!("container {:?} declares port {}", c.name, p.container_port),
                ));
            }
            if let Some(n) = p.name.as_deref().filter(|n| n.starts_with(NAME_PREFIX)) {
                return Err((
                    SkipReason::NameCollision,
                    format!("container {:?} has a port named {n:?}", c.name),
                ));
            }
        }
        if c.name.starts_with(NAME_PREFIX) {
            return Err((
                SkipReason::NameCollision,
                format!("a container is already named {:?}", c.name),
            ));
        }
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(NAME_PREFIX))
    {
        return Err((
            SkipReason::NameCollision,
            format!("a volume is already named {:?}", v.name),
        ));
    }
    let clash = |m: &&VolumeMount| {
        m.mount_path.trim_end_matches('/') == cfg.mount_path.trim_end_matches('/')
    };
    if let Some(m) = session.volume_mounts.iter().flatten().find(clash) {
        return Err((
            SkipReason::NameCollision,
            format!(
                "container {:?} already mounts {:?} at {}",
                session.name, m.name, m.mount_path
            ),
        ));
    }
    Ok(())
}

fn session_id(pod: &Pod, id: &SessionId) -> Option<String> {
    let existing = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SESSION_ID))
        .filter(|v| !v.is_empty() && naming::is_label_value(v));
    if let Some(v) = existing {
        return Some(v.clone());
    }
    match id {
        SessionId::Omit => None,
        SessionId::Fixed(v) => Some(v.clone()),
        SessionId::Derive | SessionId::DeriveOr(_) => Some(match pod.metadata.name.as_deref() {
            Some(name) if !name.is_empty() => naming::session_id_for_name(name),
            _ => match id {
                SessionId::DeriveOr(v) => v.clone(),
                _ => naming::random_session_id(),
            },
        }),
    }
}

/// The `session-ssh-install` container.
fn init_container(
    spec: &PodSpec,
    session: &Container,
    cfg: &Config,
    plan: &KeyPlan,
    host_key: Option<&SecretRef>,
) -> Value {
    let ic = &cfg.init_container;
    let csc = session.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    // The UID the session runs as, when the spec states it (root included).
    let session_uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let mut command = vec![
        ic.binary.clone(),
        "install".to_owned(),
        "--dir".to_owned(),
        cfg.mount_path.clone(),
    ];
    if let Some(uid) = session_uid {
        // install writes the host key 0600 at once when it runs as this UID; otherwise it
        // hands the key off and `start` (as the session user) makes it private.
        command.push("--session-uid".to_owned());
        command.push(uid.to_string());
    }
    if host_key.is_some() {
        command.push("--host-key-dir".to_owned());
        command.push(hostkey::MOUNT_PATH.to_owned());
    }
    for f in &plan.files {
        command.push("--keys".to_owned());
        command.push(f.clone());
    }
    for d in &plan.dirs {
        command.push("--keys-dir".to_owned());
        command.push(d.clone());
    }
    let mut mounts = vec![json!({ "name": VOLUME, "mountPath": cfg.mount_path })];
    mounts.extend(plan.mounts.iter().cloned());
    if host_key.is_some() {
        mounts.push(
            json!({ "name": hostkey::VOLUME, "mountPath": hostkey::MOUNT_PATH, "readOnly": true }),
        );
    }

    // Run as the session's user when the spec says who that is, so files in the shared
    // volume (host key 0600) belong to it. Root is never copied: the installer needs none.
    let uid = session_uid.filter(|u| *u != 0).or(ic.run_as_user);
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group))
        .or(ic.run_as_group);
    let mut sc = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(u) = uid {
        sc["runAsUser"] = json!(u);
    }
    if let Some(g) = gid {
        sc["runAsGroup"] = json!(g);
    }
    let mut resources = json!({});
    for (kind, q) in [
        ("requests", &ic.resources.requests),
        ("limits", &ic.resources.limits),
    ] {
        let mut m = serde_json::Map::new();
        if let Some(cpu) = &q.cpu {
            m.insert("cpu".into(), json!(cpu));
        }
        if let Some(mem) = &q.memory {
            m.insert("memory".into(), json!(mem));
        }
        if !m.is_empty() {
            resources[kind] = Value::Object(m);
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": ic.image,
        "imagePullPolicy": ic.image_pull_policy.as_str(),
        "command": command,
        "resources": resources,
        "securityContext": sc,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

/// `init-sshd start`, chaining an existing exec hook after `--`.
fn post_start_command(session: &Container, cfg: &Config) -> Vec<String> {
    let mut cmd = vec![
        format!("{}/bin/init-sshd", cfg.mount_path.trim_end_matches('/')),
        "start".to_owned(),
        "--dir".to_owned(),
        cfg.mount_path.clone(),
    ];
    if cfg.ports.ssh != 2222 {
        cmd.push("--listen".to_owned());
        cmd.push(format!("0.0.0.0:{}", cfg.ports.ssh));
    }
    let existing = session
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.as_ref())
        .filter(|c| !c.is_empty());
    if let Some(orig) = existing {
        cmd.push("--".to_owned());
        cmd.extend(orig.iter().cloned());
    }
    cmd
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
