//! Offline injection, like `istioctl kube-inject`: YAML in (a Pod, a workload with a pod
//! template, a `List`, or several `---` documents), mutated YAML or the JSON patch out.
//! Workload templates are mutated without a session id label: every pod of the workload
//! shares the template, so the webhook gives each admitted pod its own id.

use std::io::Read;

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::patch::{self, Mutation, SessionId};

/// Everything that can go wrong with the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file (or stdin) could not be read.
    #[error("cannot read {input}: {source}")]
    Read {
        input: String,
        #[source]
        source: std::io::Error,
    },
    /// A document is not YAML.
    #[error("{input}: document {index}: not valid YAML: {source}")]
    Yaml {
        input: String,
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    /// A document is YAML but not something that can be injected.
    #[error("{input}: document {index}: {reason}")]
    Document {
        input: String,
        index: usize,
        reason: String,
    },
    /// The input holds no document at all.
    #[error("{input}: no YAML document found")]
    Empty { input: String },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// One pod (or pod template) found in the input and what happened to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// e.g. `Deployment/lab` or `Pod/jupyter-alice`.
    pub what: String,
    /// `injected`, or the skip reason.
    pub outcome: String,
    /// Warnings from the mutation.
    pub warnings: Vec<String>,
}

/// One input document after injection.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document with the patch applied.
    pub mutated: Value,
    /// The patch, with paths relative to the document.
    pub patch: Patch,
    /// The pods and templates inside it.
    pub targets: Vec<Target>,
}

/// Read `-` (stdin) or a file.
pub fn read_input(path: &str) -> Result<String> {
    let mut text = String::new();
    let res = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    res.map_err(|source| Error::Read {
        input: path.to_owned(),
        source,
    })?;
    Ok(text)
}

/// Inject every document of a YAML stream. `input` names it in errors.
pub fn inject_text(text: &str, input: &str, cfg: &Config) -> Result<Vec<Document>> {
    inject_text_with(text, input, cfg, &SessionId::Derive)
}

/// [`inject_text`] with the session id policy for Pod documents (templates never get one).
pub fn inject_text_with(
    text: &str,
    input: &str,
    cfg: &Config,
    pod_id: &SessionId,
) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let doc = Value::deserialize(de).map_err(|source| Error::Yaml {
            input: input.to_owned(),
            index,
            source,
        })?;
        if doc.is_null() {
            continue; // an empty document between `---` markers
        }
        let document = inject_value(doc, cfg, pod_id).map_err(|reason| Error::Document {
            input: input.to_owned(),
            index,
            reason,
        })?;
        out.push(document);
    }
    if out.is_empty() {
        return Err(Error::Empty {
            input: input.to_owned(),
        });
    }
    Ok(out)
}

/// Inject one parsed document; the error is a reason for the user.
pub fn inject_value(
    doc: Value,
    cfg: &Config,
    pod_id: &SessionId,
) -> std::result::Result<Document, String> {
    let mut ops = Vec::new();
    let mut targets = Vec::new();
    collect(&doc, "", cfg, pod_id, &mut ops, &mut targets)?;
    let mut mutated = doc;
    json_patch::patch(&mut mutated, &ops).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok(Document {
        mutated,
        patch: Patch(ops),
        targets,
    })
}

/// Where the pod (template) of each supported kind lives.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// The pod template of a workload at `path` below `doc` (the document itself for a Pod),
/// with its JSON pointer.
fn template<'a>(
    doc: &'a Value,
    at: &str,
    path: &[&str],
    what: &str,
) -> std::result::Result<(String, &'a Value), String> {
    let mut tpl_ptr = at.to_owned();
    let mut tpl = doc;
    for seg in path {
        tpl_ptr = format!("{tpl_ptr}/{seg}");
        tpl = tpl.get(*seg).ok_or_else(|| {
            format!(
                "{what}: missing `{}`",
                tpl_ptr.trim_start_matches('/').replace('/', ".")
            )
        })?;
    }
    if tpl.get("spec").is_none_or(|s| !s.is_object()) {
        return Err(format!("{what}: no pod spec"));
    }
    Ok((tpl_ptr, tpl))
}

/// A template read as a Pod (metadata and spec), for the mutation.
fn template_pod(tpl: &Value, what: &str) -> std::result::Result<Pod, String> {
    let mut pod_value = serde_json::json!({ "metadata": {}, "spec": tpl["spec"] });
    if let Some(m) = tpl.get("metadata").filter(|m| !m.is_null()) {
        pod_value["metadata"] = m.clone();
    }
    serde_path_to_error::deserialize(pod_value)
        .map_err(|e| format!("{what}: `{}`: {}", e.path(), e.inner()))
}

fn collect(
    doc: &Value,
    at: &str,
    cfg: &Config,
    pod_id: &SessionId,
    ops: &mut Vec<PatchOperation>,
    targets: &mut Vec<Target>,
) -> std::result::Result<(), String> {
    let kind = doc.get("kind").and_then(Value::as_str).ok_or_else(|| {
        format!(
            "{}: no `kind`; expected a Pod, a workload or a List",
            here(at)
        )
    })?;
    if kind == "List" || (kind.ends_with("List") && doc.get("items").is_some()) {
        let items = doc
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{}: List without `items`", here(at)))?;
        for (i, item) in items.iter().enumerate() {
            collect(item, &format!("{at}/items/{i}"), cfg, pod_id, ops, targets)?;
        }
        return Ok(());
    }
    let path = template_path(kind).ok_or_else(|| {
        format!(
            "{}: kind {kind:?} has no pod template; expected Pod, Deployment, StatefulSet, \
             DaemonSet, ReplicaSet, Job, CronJob or a List of them",
            here(at)
        )
    })?;
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let what = format!("{kind}/{name}");
    let (tpl_ptr, tpl) = template(doc, at, path, &what)?;
    // The mutation adds under /metadata; a template may not have one yet.
    if tpl.get("metadata").is_none_or(Value::is_null) {
        ops.push(
            serde_json::from_value(serde_json::json!({
                "op": "add", "path": format!("{tpl_ptr}/metadata"), "value": {}
            }))
            .map_err(|e| e.to_string())?,
        );
    }
    let pod = template_pod(tpl, &what)?;
    let id = if path.is_empty() {
        pod_id.clone()
    } else {
        SessionId::Omit
    };
    let m = patch::mutate_with(&pod, cfg, id);
    for op in &m.patch().0 {
        ops.push(prefixed(op, &tpl_ptr)?);
    }
    let outcome = match &m {
        Mutation::Patch { .. } => "injected".to_owned(),
        Mutation::Skip { reason, .. } => format!("not injected ({})", reason.as_str()),
    };
    targets.push(Target {
        what,
        outcome,
        warnings: m.warnings().to_vec(),
    });
    Ok(())
}

fn here(at: &str) -> String {
    if at.is_empty() {
        "document".to_owned()
    } else {
        format!("at {at}")
    }
}

/// The same operation with `prefix` (an already escaped pointer) in front of its path.
fn prefixed(op: &PatchOperation, prefix: &str) -> std::result::Result<PatchOperation, String> {
    let mut v = serde_json::to_value(op).map_err(|e| e.to_string())?;
    if let Some(p) = v.get("path").and_then(Value::as_str) {
        v["path"] = Value::String(format!("{prefix}{p}"));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// The mutated documents as a YAML stream.
pub fn render_yaml(docs: &[Document]) -> std::result::Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&d.mutated)?);
    }
    Ok(out)
}

/// The patches, one pretty JSON array per document.
pub fn render_patches(docs: &[Document]) -> std::result::Result<String, serde_json::Error> {
    let mut out = String::new();
    for d in docs {
        out.push_str(&serde_json::to_string_pretty(&d.patch)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Platform;

    fn jh() -> Config {
        Config::preset(Platform::Jupyterhub)
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: jupyter-a\n  labels:\n    component: singleuser-server\nspec:\n  containers:\n  - name: notebook\n    image: x\n";

    #[test]
    fn pod_and_patch() {
        let docs = inject_text(POD, "pod.yaml", &jh()).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].targets[0].outcome, "injected");
        let y = render_yaml(&docs).unwrap();
        assert!(y.contains("session-ssh-install"), "{y}");
        let p = render_patches(&docs).unwrap();
        assert!(p.contains("/spec/initContainers"), "{p}");
        // Injecting the output again changes nothing.
        let again = inject_text(&y, "out.yaml", &jh()).unwrap();
        assert!(again[0].patch.0.is_empty());
        assert_eq!(again[0].mutated, docs[0].mutated);
    }

    #[test]
    fn workloads_mutate_their_template_without_session_id() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: lab\nspec:\n  template:\n    spec:\n      containers:\n      - name: notebook\n        image: x\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\nspec:\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          labels:\n            session-ssh.io/inject: \"true\"\n        spec:\n          containers:\n          - name: notebook\n            image: x\n";
        let mut c = jh();
        c.selector.match_labels.clear();
        let docs = inject_text(text, "w.yaml", &c).unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[0].mutated;
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["session-ssh.io/status"],
            "injected"
        );
        assert!(d["spec"]["template"]["metadata"].get("labels").is_none());
        let cj = &docs[1].mutated["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(
            cj["spec"]["initContainers"][0]["name"],
            "session-ssh-install"
        );
        assert!(
            cj["metadata"]["labels"]
                .get("session-ssh.io/session-id")
                .is_none()
        );
    }

    #[test]
    fn lists_are_walked() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: a\n    labels: {component: singleuser-server}\n  spec:\n    containers: [{name: notebook, image: x}]\n";
        let docs = inject_text(text, "l.yaml", &jh()).unwrap();
        assert_eq!(
            docs[0].mutated["items"][0]["spec"]["initContainers"][0]["name"],
            "session-ssh-install"
        );
        assert!(
            render_patches(&docs)
                .unwrap()
                .contains("\"/items/0/spec/initContainers\"")
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let cases = [
            ("", "no YAML document"),
            ("kind: [\n", "not valid YAML"),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
                "kind \"Service\" has no pod template",
            ),
            ("name: x\n", "no `kind`"),
            (
                "kind: Deployment\nmetadata: {name: d}\nspec: {}\n",
                "missing `spec.template`",
            ),
            ("kind: Pod\nmetadata: {name: p}\n", "no pod spec"),
            (
                "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: http\n",
                "spec.containers[0].ports[0].containerPort",
            ),
        ];
        for (text, want) in cases {
            let e = inject_text(text, "in.yaml", &jh()).unwrap_err().to_string();
            assert!(e.starts_with("in.yaml"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
