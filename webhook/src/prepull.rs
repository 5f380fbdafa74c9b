//! The init image's gate (optional, `--init-image-daemonset NAMESPACE/NAME`). An init
//! container whose image cannot be pulled holds its pod in Init forever; the pre-pull
//! DaemonSet (`manifests/prepull`) runs the same image on every node, so while it is ready
//! everywhere the image is on every node and in use (the kubelet's image GC keeps images in
//! use). While it is not, admission leaves new pods without SSH, with the reason on the pod.
//!
//! What it cannot cover: an image removed by hand from a node while the DaemonSet's pod
//! runs there, and a node that joined after the last check (the next check closes the gate
//! until the DaemonSet is ready there too).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use tracing::{info, warn};

use crate::patch::ImageGate;

/// Where the DaemonSet is, and the gate as last seen.
#[derive(Debug)]
pub struct PrePull {
    namespace: String,
    name: String,
    image: String,
    gate: RwLock<ImageGate>,
}

impl PrePull {
    /// Parses `NAMESPACE/NAME`; the gate starts closed until the first check.
    pub fn new(spec: &str, image: &str) -> Result<PrePull, String> {
        let (ns, name) = spec
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| format!("--init-image-daemonset {spec:?}: expected NAMESPACE/NAME"))?;
        Ok(PrePull {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            image: image.to_owned(),
            gate: RwLock::new(ImageGate::Closed(
                "the pre-pull DaemonSet is not checked yet".into(),
            )),
        })
    }

    /// The gate now.
    pub fn gate(&self) -> ImageGate {
        self.gate
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Reads the DaemonSet once and sets the gate; logs when it opens or closes.
    pub async fn check(&self, client: &kube::Client) {
        let api = kube::Api::<DaemonSet>::namespaced(client.clone(), &self.namespace);
        let next = match api.get(&self.name).await {
            Ok(ds) => readiness(&ds, &self.image),
            Err(e) => ImageGate::Closed(format!(
                "cannot read DaemonSet {}/{}: {e}",
                self.namespace, self.name
            )),
        };
        let mut g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if *g != next {
            match &next {
                ImageGate::Open => {
                    info!(daemonset = %self.name, "init image ready on every node: injecting")
                }
                ImageGate::Closed(why) => {
                    warn!(daemonset = %self.name, reason = %why, "init image not known to be on every node: new pods start without SSH")
                }
            }
            *g = next;
        }
    }

    /// Checks now, then every `every`, for the life of the process.
    pub async fn run(self: Arc<Self>, client: kube::Client, every: Duration) {
        loop {
            self.check(&client).await;
            tokio::time::sleep(every).await;
        }
    }
}

/// Open when the DaemonSet runs `image`, is rolled out, and is ready on every node it
/// should run on (at least one).
pub fn readiness(ds: &DaemonSet, image: &str) -> ImageGate {
    let runs_image = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .is_some_and(|p| {
            p.containers
                .iter()
                .chain(p.init_containers.iter().flatten())
                .any(|c| c.image.as_deref() == Some(image))
        });
    if !runs_image {
        return ImageGate::Closed(format!(
            "the pre-pull DaemonSet does not run the configured init image {image}"
        ));
    }
    let Some(st) = ds.status.as_ref() else {
        return ImageGate::Closed("the pre-pull DaemonSet has no status yet".into());
    };
    let desired = st.desired_number_scheduled;
    let observed = st.observed_generation.unwrap_or(0);
    let generation = ds.metadata.generation.unwrap_or(0);
    if desired == 0 {
        return ImageGate::Closed("the pre-pull DaemonSet runs on no node".into());
    }
    if observed < generation || st.updated_number_scheduled.unwrap_or(0) < desired {
        return ImageGate::Closed("the pre-pull DaemonSet is rolling out".into());
    }
    if st.number_ready < desired {
        return ImageGate::Closed(format!(
            "the init image is ready on {} of {desired} nodes (pre-pull DaemonSet)",
            st.number_ready
        ));
    }
    ImageGate::Open
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(image: &str, desired: i32, ready: i32, updated: i32, observed: i64) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "generation": 2 },
            "spec": {
                "selector": { "matchLabels": { "a": "b" } },
                "template": { "spec": { "containers": [{ "name": "c", "image": image }] } },
            },
            "status": {
                "desiredNumberScheduled": desired, "numberReady": ready,
                "updatedNumberScheduled": updated, "observedGeneration": observed,
                "currentNumberScheduled": desired, "numberMisscheduled": 0,
            },
        }))
        .unwrap()
    }

    #[test]
    fn open_only_when_ready_everywhere_with_the_same_image() {
        let img = "ghcr.io/session-ssh/init-sshd:0.1.0";
        assert_eq!(readiness(&ds(img, 3, 3, 3, 2), img), ImageGate::Open);
        for (d, why) in [
            (ds(img, 3, 2, 3, 2), "2 of 3"),
            (ds(img, 0, 0, 0, 2), "no node"),
            (ds(img, 3, 3, 2, 2), "rolling out"),
            (ds(img, 3, 3, 3, 1), "rolling out"),
            (ds("other:1", 3, 3, 3, 2), "does not run"),
        ] {
            match readiness(&d, img) {
                ImageGate::Closed(r) => assert!(r.contains(why), "{r}"),
                ImageGate::Open => panic!("open for {why}"),
            }
        }
    }

    #[test]
    fn spec_parsing() {
        assert!(PrePull::new("session-ssh/session-ssh-prepull", "i").is_ok());
        for bad in ["", "x", "/x", "x/", "a/b/c"] {
            assert!(PrePull::new(bad, "i").is_err(), "{bad}");
        }
        // Closed until checked.
        let p = PrePull::new("a/b", "i").unwrap();
        assert!(matches!(p.gate(), ImageGate::Closed(_)));
    }
}
