//! End-to-end: the init image's gate (`manifests/prepull`, `--init-image-daemonset`)
//! against a real kube-apiserver. The JupyterHub example installs the pre-pull DaemonSet;
//! its status is set as the DaemonSet controller would write it. While it is not
//! ready on every node, new session pods are admitted without SSH with the reason on the
//! pod (they start, never wait in Init for an image); once it is, they get SSH.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use session_ssh_tests::cluster::webhook::{NAMESPACE, is_injected};
use session_ssh_tests::cluster::{self, wait_for};
use session_ssh_tests::gateway::hub_cluster;

const WAIT: Duration = Duration::from_secs(60);

fn reason(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("session-ssh.io/reason"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn sessions_skip_ssh_until_the_init_image_is_on_every_node() {
    let (mut wc, ns) = hub_cluster().await.unwrap();
    // As the component's Deployment patch sets it (checked every second here).
    wc.set_env(&[
        (
            "SESSION_SSH_INIT_IMAGE_DAEMONSET",
            "session-ssh/session-ssh-prepull",
        ),
        ("SESSION_SSH_INIT_IMAGE_CHECK_SECONDS", "1"),
    ])
    .await
    .unwrap();
    let client = wc.client().await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let create = |name: &'static str, user: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = cluster::hub_pod(name, user, "").unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap()
        }
    };

    // No node runs the DaemonSet: the pod starts without SSH, and says why.
    let p = create("jupyter-alice", "alice").await;
    assert!(!is_injected(&p), "injected with no node holding the image");
    let r = reason(&p);
    assert!(
        r.starts_with("init-image-not-ready:") && r.contains("no node"),
        "reason: {r:?}\n{}",
        wc.webhook_log()
    );

    // A node joins and its pre-pull pod is not ready yet; then it is. The status is what
    // the DaemonSet controller writes (this control plane runs none; the real node's
    // e2e, scripts/node-e2e.sh --first-law, has the real one).
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE);
    let ds = daemonsets.get("session-ssh-prepull").await.unwrap();
    let generation = ds.metadata.generation.unwrap_or(1);
    let set_status = |ready: i32| {
        let daemonsets = daemonsets.clone();
        async move {
            let status = serde_json::json!({"status": {
                "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1, "numberMisscheduled": 0,
                "numberReady": ready, "observedGeneration": generation,
            }});
            daemonsets
                .patch_status(
                    "session-ssh-prepull",
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .unwrap();
        }
    };
    set_status(0).await;
    let not_ready = wait_for("the gate to see 0 of 1", WAIT, || {
        let log = wc.webhook_log();
        async move { Ok(log.contains("ready on 0 of 1 nodes").then_some(())) }
    })
    .await;
    assert!(not_ready.is_ok(), "{}", wc.webhook_log());
    let p = create("jupyter-bob", "bob").await;
    assert!(!is_injected(&p));
    assert!(reason(&p).contains("0 of 1"), "reason: {:?}", reason(&p));

    set_status(1).await;
    let opened = wait_for("the gate to open", WAIT, || {
        let log = wc.webhook_log();
        async move { Ok(log.contains("init image ready on every node").then_some(())) }
    })
    .await;
    assert!(opened.is_ok(), "{}", wc.webhook_log());
    let p = create("jupyter-carol", "carol").await;
    assert!(
        is_injected(&p),
        "not injected with the image on every node: {:?}\n{}",
        p.metadata.annotations,
        wc.webhook_log()
    );
}
