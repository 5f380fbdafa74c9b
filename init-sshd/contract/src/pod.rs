//! Readers over a Pod for what the webhook recorded on it. The cluster side asks these, never
//! the annotation map directly, so "is this pod injected" has one answer.

use k8s_openapi::api::core::v1::Pod;

use crate::names;

/// The pod carries `session-ssh.io/status: injected`.
pub fn is_injected(pod: &Pod) -> bool {
    annotation(pod, names::STATUS) == Some(names::STATUS_INJECTED)
}

/// A volume of the pod is the Secret `name`.
pub fn mounts_secret(pod: &Pod, name: &str) -> bool {
    secret_volumes(pod).any(|s| s == name)
}

/// The names of the Secrets the pod has as volumes.
pub fn secret_volumes(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
}

/// The session id label.
pub fn session_id(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(names::SESSION_ID)
        .map(String::as_str)
}

/// A pod annotation.
pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, SecretVolumeSource, Volume};
    use std::collections::BTreeMap;

    fn pod(status: Option<&str>, secrets: &[&str]) -> Pod {
        let mut p = Pod::default();
        if let Some(s) = status {
            p.metadata.annotations =
                Some(BTreeMap::from([(names::STATUS.to_owned(), s.to_owned())]));
        }
        p.spec = Some(PodSpec {
            volumes: Some(
                secrets
                    .iter()
                    .map(|n| Volume {
                        name: format!("v-{n}"),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some((*n).to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    #[test]
    fn injected_and_secrets() {
        assert!(is_injected(&pod(Some("injected"), &[])));
        assert!(!is_injected(&pod(Some("skipped"), &[])));
        assert!(!is_injected(&pod(None, &[])));
        let p = pod(None, &["a", "b"]);
        assert!(mounts_secret(&p, "b"));
        assert!(!mounts_secret(&p, "c"));
        assert_eq!(secret_volumes(&p).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(session_id(&p), None);
    }
}
