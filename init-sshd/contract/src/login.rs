//! The SSH login names that lead to a session, per platform: the gateway routes by them, the
//! webhook writes them into the session's connection information. Pure functions of the pod.
//!
//! - jupyterhub: the hub user name for the default server, `<user>+<server>` for a named
//!   server. Hub names may hold `@`, `.`, `-` and even `+`: a name that could mean two
//!   sessions matches both, and two matches are refused, never picked from.
//! - renku: the session name (the pod's StatefulSet, else the pod without `-0`).
//! - kubeflow: `<notebook>.<namespace>`.
//! - generic: `<pod>.<namespace>`.

use k8s_openapi::api::core::v1::Pod;

/// The platforms (the webhook's `platform`, the gateway's `--preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Jupyterhub,
    Renku,
    Kubeflow,
    Generic,
}

/// What separates a hub user from a named server.
pub const SERVER_SEPARATOR: char = '+';
/// Longest login name looked up.
pub const MAX_LOGIN: usize = 256;

const HUB_USER: &str = "hub.jupyter.org/username";
const HUB_SERVER: &str = "hub.jupyter.org/servername";
const KUBEFLOW_NOTEBOOK: &str = "notebook-name";

/// The login names that reach this pod (none when the pod lacks what the platform reads).
pub fn names(pod: &Pod, platform: Platform) -> Vec<String> {
    let meta = &pod.metadata;
    let ns = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let read = |key: &str| read(pod, key);
    let out = match platform {
        Platform::Jupyterhub => read(HUB_USER).map(|user| match read(HUB_SERVER) {
            Some(server) if !server.is_empty() => format!("{user}{SERVER_SEPARATOR}{server}"),
            _ => user.to_owned(),
        }),
        Platform::Renku => {
            let owner = meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "StatefulSet")
                .map(|o| o.name.clone());
            owner.or_else(|| name.strip_suffix("-0").map(str::to_owned))
        }
        Platform::Kubeflow => read(KUBEFLOW_NOTEBOOK).map(|nb| format!("{nb}.{ns}")),
        Platform::Generic => (!name.is_empty()).then(|| format!("{name}.{ns}")),
    };
    out.and_then(|n| normalize(&n, platform))
        .into_iter()
        .collect()
}

/// The hub user and server name (`""`: the default server) of a JupyterHub session pod, as
/// the hub spells them (annotations first: KubeSpawner's labels may be escaped forms).
pub fn hub_server(pod: &Pod) -> Option<(String, String)> {
    let user = read(pod, HUB_USER).filter(|u| !u.is_empty())?;
    let server = read(pod, HUB_SERVER).unwrap_or_default();
    Some((user.to_owned(), server.to_owned()))
}

/// An annotation, else the label of the same key.
fn read<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(key)))
        .map(String::as_str)
}

/// The canonical form of a login name, or None for one that names nothing (empty, too
/// long, control characters or whitespace). JupyterHub compares user names lower-case.
/// The length is checked on the canonical form: lower-casing can lengthen a name (`Ⱦ` is 2
/// bytes, `ⱦ` 3), and a name the gateway publishes must also be one it looks up.
pub fn normalize(login: &str, platform: Platform) -> Option<String> {
    if login.is_empty() || login.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let canonical = match platform {
        Platform::Jupyterhub => login.to_lowercase(),
        _ => login.to_owned(),
    };
    (canonical.len() <= MAX_LOGIN).then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;

    fn pod(name: &str, ns: &str, annotations: &[(&str, &str)]) -> Pod {
        let map: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                annotations: Some(map),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_name_that_lower_casing_lengthens_past_the_limit_names_nothing() {
        // Found by the login_name fuzz target: 128 x `Ⱦ` is 256 bytes, lower-cased 384. The
        // pod's name was published but could not be looked up.
        let upper = "\u{23e}".repeat(128);
        assert_eq!(upper.len(), MAX_LOGIN);
        assert_eq!(normalize(&upper, Platform::Jupyterhub), None);
        assert!(
            names(
                &pod("j", "hub", &[(HUB_USER, &upper)]),
                Platform::Jupyterhub
            )
            .is_empty()
        );
        // Where the case does not change, the same name is within the limit.
        assert_eq!(
            normalize(&upper, Platform::Generic).as_deref(),
            Some(upper.as_str())
        );
        let lower = "\u{2c66}".repeat(85);
        assert_eq!(
            normalize(&lower, Platform::Jupyterhub).as_deref(),
            Some(lower.as_str())
        );
    }

    #[test]
    fn hub_names_keep_at_dot_dash_and_lower_case() {
        let p = pod(
            "jupyter-a",
            "hub",
            &[(HUB_USER, "Alice.Smith-2@Example.org")],
        );
        assert_eq!(
            names(&p, Platform::Jupyterhub),
            ["alice.smith-2@example.org"]
        );
        let p = pod(
            "jupyter-a--lab",
            "hub",
            &[(HUB_USER, "alice@x.org"), (HUB_SERVER, "lab")],
        );
        assert_eq!(names(&p, Platform::Jupyterhub), ["alice@x.org+lab"]);
        assert_eq!(
            normalize("Alice@X.org+lab", Platform::Jupyterhub).as_deref(),
            Some("alice@x.org+lab")
        );
        // An empty server name is the default server.
        let p = pod("j", "hub", &[(HUB_USER, "bob"), (HUB_SERVER, "")]);
        assert_eq!(names(&p, Platform::Jupyterhub), ["bob"]);
        assert!(names(&pod("x", "hub", &[]), Platform::Jupyterhub).is_empty());
        // Hub-token logins compare the hub's own spelling, not the login name.
        assert_eq!(
            hub_server(&pod(
                "j",
                "hub",
                &[(HUB_USER, "Alice@X.org"), (HUB_SERVER, "lab")]
            )),
            Some(("Alice@X.org".into(), "lab".into()))
        );
        assert_eq!(hub_server(&pod("x", "hub", &[])), None);
    }

    #[test]
    fn other_presets() {
        let p = pod("dev-0", "team", &[(KUBEFLOW_NOTEBOOK, "dev")]);
        assert_eq!(names(&p, Platform::Kubeflow), ["dev.team"]);
        assert_eq!(names(&p, Platform::Generic), ["dev-0.team"]);
        assert_eq!(names(&p, Platform::Renku), ["dev"]);
        let mut owned = pod("sess-abc-0", "renku", &[]);
        owned.metadata.owner_references = Some(vec![OwnerReference {
            kind: "StatefulSet".into(),
            name: "sess-abc".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(names(&owned, Platform::Renku), ["sess-abc"]);
        // Generic names are case-sensitive, as Kubernetes names are.
        assert_eq!(
            normalize("Dev-0.team", Platform::Generic).as_deref(),
            Some("Dev-0.team")
        );
    }

    #[test]
    fn names_that_name_nothing() {
        for bad in ["", "a b", "a\nb", "a\u{0}", &"x".repeat(MAX_LOGIN + 1)] {
            assert_eq!(normalize(bad, Platform::Jupyterhub), None, "{bad:?}");
        }
    }
}
