//! The webhook's admission path, two ways (the first input byte picks the way and the
//! config: the example configs of `manifests/` and the golden tests'):
//! - raw: the bytes as an AdmissionReview body through `admission::review`, the function
//!   the `/mutate` handler calls;
//! - structured: a real session pod (the golden fixtures) edited by the fuzzer (fields
//!   removed, replaced, added: see [`edit`]) through `patch::mutate`.
//!
//! Properties: no panic (review's own `catch_unwind` is not relied on: `mutate` is also called
//! bare); the answer echoes the request's uid; every patch applies (RFC 6902) to its pod
//! and yields a valid Pod; admitting the patched pod again changes nothing (idempotent, as
//! on webhook reinvocation).
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use session_ssh_contract::names;
use session_ssh_webhook::admission;
use session_ssh_webhook::config::Config;
use session_ssh_webhook::patch;

macro_rules! files {
    ($($f:literal),* $(,)?) => { &[$(($f, include_str!(concat!("../../", $f)))),*] };
}

const CONFIGS: &[(&str, &str)] = files![
    "manifests/base/config.yaml",
    "manifests/examples/jupyterhub/config.yaml",
    "manifests/examples/renku/config.yaml",
    "manifests/examples/kubeflow/config.yaml",
    "manifests/overlays/local-node/config.yaml",
    "webhook/tests/fixtures/edge-bare-generatename.config.yaml",
    "webhook/tests/fixtures/jupyterhub-host-ca.config.yaml",
];

const PODS: &[(&str, &str)] = files![
    "webhook/tests/fixtures/jupyterhub-alice.pod.yaml",
    "webhook/tests/fixtures/jupyterhub-high-uid-readonly.pod.yaml",
    "webhook/tests/fixtures/jupyterhub-poststart-exec.pod.yaml",
    "webhook/tests/fixtures/kubeflow-notebook.pod.yaml",
    "webhook/tests/fixtures/renku-amalthea.pod.yaml",
    "webhook/tests/fixtures/edge-already-injected.pod.yaml",
    "webhook/tests/fixtures/edge-annotation-escaping.pod.yaml",
    "webhook/tests/fixtures/edge-bare-generatename.pod.yaml",
    "webhook/tests/fixtures/edge-port-taken.pod.yaml",
];

/// Strings the webhook reacts to, offered to the edits besides the fuzzer's own.
const WORDS: &[&str] = &[
    names::INJECT,
    names::STATUS,
    names::SESSION_ID,
    names::AUTHORIZED_KEYS,
    names::CONTAINER,
    names::HOST_KEY,
    names::VOLUME,
    names::INIT_CONTAINER,
    names::PORT_SSH,
    names::PORT_SSH_TLS,
    "true",
    "false",
    "hub.jupyter.org/username",
    "component",
    "singleuser-server",
    "notebook-name",
    "notebook",
    "jupyter-server",
    "containers",
    "initContainers",
    "volumes",
    "ports",
    "containerPort",
    "securityContext",
    "runAsUser",
    "hostNetwork",
    "generateName",
    "name",
    "labels",
    "annotations",
];

fn loaded() -> &'static (Vec<Config>, Vec<Value>) {
    static LOADED: OnceLock<(Vec<Config>, Vec<Value>)> = OnceLock::new();
    LOADED.get_or_init(|| {
        let configs = CONFIGS
            .iter()
            .map(|(f, t)| Config::from_yaml(t, f).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let pods = PODS
            .iter()
            .map(|(f, t)| {
                let pod: Pod = serde_yaml::from_str(t).unwrap_or_else(|e| panic!("{f}: {e}"));
                serde_json::to_value(pod).unwrap_or_else(|e| panic!("{f}: {e}"))
            })
            .collect();
        (configs, pods)
    })
}

/// Every pod's patch applies, gives a Pod, and admitting that Pod again changes nothing.
fn check_mutation(pod: &Pod, cfg: &Config, what: &str) {
    let first = patch::mutate(pod, cfg);
    let patched = apply(pod, first.patch(), what);
    let again = patch::mutate(&patched, cfg);
    assert!(
        again.patch().0.is_empty(),
        "{what}: not idempotent: second patch {}\nfirst patch {}",
        json(again.patch()),
        json(first.patch()),
    );
}

fn apply(pod: &Pod, p: &Patch, what: &str) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap_or_else(|e| panic!("{what}: pod: {e}"));
    if let Err(e) = json_patch::patch(&mut doc, &p.0) {
        panic!(
            "{what}: patch does not apply: {e}\npatch {}\npod {doc}",
            json(p)
        );
    }
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: patched pod invalid: {e}"))
}

fn json(p: &Patch) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

/// Raw mode: the bytes as the apiserver's request body.
fn raw(body: &[u8], cfg: &Config) {
    let Ok(decision) = admission::review(body, cfg) else {
        return; // Refused with a 400: the handler's error path.
    };
    let out: Value = serde_json::from_slice(&decision.body).expect("answer is JSON");
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return, // admitted untouched (not a pod we can read)
    };
    let Some(req) = review.request else { return };
    assert_eq!(
        out["response"]["uid"].as_str(),
        Some(req.uid.as_str()),
        "uid echoed"
    );
    let Some(pod) = req.object else { return };
    if let Some(b64) = out["response"]["patch"].as_str() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("patch is base64");
        let p: Patch = serde_json::from_slice(&bytes).expect("patch is a JSON patch");
        apply(&pod, &p, "review");
    }
    check_mutation(&pod, cfg, "review's pod");
}

/// Structured mode: a seed pod with fuzz-chosen edits.
fn structured(u: &mut Unstructured<'_>, cfg: &Config, pods: &[Value]) -> arbitrary::Result<()> {
    let mut doc = u.choose(pods)?.clone();
    for _ in 0..u.int_in_range(1..=8)? {
        edit(u, &mut doc)?;
    }
    if let Ok(pod) = serde_json::from_value::<Pod>(doc) {
        check_mutation(&pod, cfg, "edited pod");
    }
    Ok(())
}

/// One edit at a random place of the tree: remove it, replace it, or add a key or element.
fn edit(u: &mut Unstructured<'_>, doc: &mut Value) -> arbitrary::Result<()> {
    let mut places = Vec::new();
    pointers(doc, String::new(), &mut places);
    let at = u.choose(&places)?;
    let Some(node) = doc.pointer_mut(at) else {
        return Ok(());
    };
    match (u.int_in_range(0..=3u8)?, node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let i = u.choose_index(m.len())?;
            let k = m.keys().nth(i).cloned().unwrap_or_default();
            m.remove(&k);
        }
        (0, Value::Array(a)) if !a.is_empty() => {
            let i = u.choose_index(a.len())?;
            a.remove(i);
        }
        (1, Value::Object(m)) => {
            let k = word(u)?;
            let v = value(u, 2)?;
            m.insert(k, v);
        }
        (1, Value::Array(a)) => {
            let v = match a.first() {
                Some(first) if u.arbitrary()? => first.clone(),
                _ => value(u, 2)?,
            };
            a.push(v);
        }
        (_, node) => *node = value(u, 2)?,
    }
    Ok(())
}

/// The JSON pointer of every node.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let esc = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{esc}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn word(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(if u.arbitrary()? {
        (*u.choose(WORDS)?).to_owned()
    } else {
        String::arbitrary(u)?
    })
}

fn value(u: &mut Unstructured<'_>, depth: u8) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(i64::arbitrary(u)?),
        3 => Value::from(u.int_in_range(0..=70000u32)?),
        4 | 5 => Value::String(word(u)?),
        6 if depth > 0 => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                m.insert(word(u)?, value(u, depth - 1)?);
            }
            Value::Object(m)
        }
        _ if depth > 0 => {
            let mut a = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                a.push(value(u, depth - 1)?);
            }
            Value::Array(a)
        }
        _ => Value::String(String::new()),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (configs, pods) = loaded();
    let cfg = &configs[usize::from(mode >> 1) % configs.len()];
    if mode & 1 == 0 {
        raw(rest, cfg);
    } else {
        let _ = structured(&mut Unstructured::new(rest), cfg, pods);
    }
});
