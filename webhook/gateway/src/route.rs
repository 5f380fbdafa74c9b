//! Which session a login name means, per platform preset. Pure: the index calls
//! [`names`] for every pod it sees, the server calls [`normalize`] for every login.
//!
//! - jupyterhub: the hub user name for the default server, `<user>+<server>` for a named
//!   server. Hub names may hold `@`, `.`, `-` and even `+`: a name that could mean two
//!   sessions matches both, and two matches are refused, never picked from.
//! - renku: the session name (the pod's StatefulSet, else the pod without `-0`).
//! - kubeflow: `<notebook>.<namespace>`.
//! - generic: `<pod>.<namespace>`.

use clap::ValueEnum;
use k8s_openapi::api::core::v1::Pod;

/// Platform presets (the webhook's `platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
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

impl Preset {
    /// The hint every client sees before it logs in.
    pub fn hint(self) -> &'static str {
        match self {
            Preset::Jupyterhub => {
                "Log in as your hub user name (or <user>+<server> for a named server), with a key your session accepts. If you are refused, check that your server is running on the hub's home page."
            }
            Preset::Renku => {
                "Log in as your session's name, with a key your session accepts. If you are refused, check that the session is running in Renku."
            }
            Preset::Kubeflow => {
                "Log in as <notebook>.<namespace>, with a key your notebook accepts. If you are refused, check that the notebook is running."
            }
            Preset::Generic => {
                "Log in as <pod>.<namespace>, with a key your session accepts. If you are refused, check that the session is running."
            }
        }
    }
}

/// The login names that reach this pod (none when the pod lacks what the preset reads).
pub fn names(pod: &Pod, preset: Preset) -> Vec<String> {
    let meta = &pod.metadata;
    let ns = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let read = |key: &str| read(pod, key);
    let out = match preset {
        Preset::Jupyterhub => read(HUB_USER).map(|user| match read(HUB_SERVER) {
            Some(server) if !server.is_empty() => format!("{user}{SERVER_SEPARATOR}{server}"),
            _ => user.to_owned(),
        }),
        Preset::Renku => {
            let owner = meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "StatefulSet")
                .map(|o| o.name.clone());
            owner.or_else(|| name.strip_suffix("-0").map(str::to_owned))
        }
        Preset::Kubeflow => read(KUBEFLOW_NOTEBOOK).map(|nb| format!("{nb}.{ns}")),
        Preset::Generic => (!name.is_empty()).then(|| format!("{name}.{ns}")),
    };
    out.and_then(|n| normalize(&n, preset))
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
pub fn normalize(login: &str, preset: Preset) -> Option<String> {
    if login.is_empty()
        || login.len() > MAX_LOGIN
        || login.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    Some(match preset {
        Preset::Jupyterhub => login.to_lowercase(),
        _ => login.to_owned(),
    })
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
    fn hub_names_keep_at_dot_dash_and_lower_case() {
        let p = pod(
            "jupyter-a",
            "hub",
            &[(HUB_USER, "Alice.Smith-2@Example.org")],
        );
        assert_eq!(names(&p, Preset::Jupyterhub), ["alice.smith-2@example.org"]);
        let p = pod(
            "jupyter-a--lab",
            "hub",
            &[(HUB_USER, "alice@x.org"), (HUB_SERVER, "lab")],
        );
        assert_eq!(names(&p, Preset::Jupyterhub), ["alice@x.org+lab"]);
        assert_eq!(
            normalize("Alice@X.org+lab", Preset::Jupyterhub).as_deref(),
            Some("alice@x.org+lab")
        );
        // An empty server name is the default server.
        let p = pod("j", "hub", &[(HUB_USER, "bob"), (HUB_SERVER, "")]);
        assert_eq!(names(&p, Preset::Jupyterhub), ["bob"]);
        assert!(names(&pod("x", "hub", &[]), Preset::Jupyterhub).is_empty());
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
        assert_eq!(names(&p, Preset::Kubeflow), ["dev.team"]);
        assert_eq!(names(&p, Preset::Generic), ["dev-0.team"]);
        assert_eq!(names(&p, Preset::Renku), ["dev"]);
        let mut owned = pod("sess-abc-0", "renku", &[]);
        owned.metadata.owner_references = Some(vec![OwnerReference {
            kind: "StatefulSet".into(),
            name: "sess-abc".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(names(&owned, Preset::Renku), ["sess-abc"]);
        // Generic names are case-sensitive, as Kubernetes names are.
        assert_eq!(
            normalize("Dev-0.team", Preset::Generic).as_deref(),
            Some("Dev-0.team")
        );
    }

    #[test]
    fn names_that_name_nothing() {
        for bad in ["", "a b", "a\nb", "a\u{0}", &"x".repeat(MAX_LOGIN + 1)] {
            assert_eq!(normalize(bad, Preset::Jupyterhub), None, "{bad:?}");
        }
    }
}
