//! End-to-end: a pod stored by the real kube-apiserver after our webhook mutated
//! it is run as far as this machine allows: the stored spec's
//! `session-ssh-install` init container and the session container's postStart
//! command run in the pod sandbox (same paths, env and UID; volumes as temporary
//! directories, Secrets read from the apiserver and written as files), then the
//! real OpenSSH client logs in with the key the user put in their Secret.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use session_ssh_tests::cluster::webhook::{Platform, Tls, WebhookCluster, is_injected};
use session_ssh_tests::cluster::{self};
use session_ssh_tests::injected::{ENTRYPOINT_VAR, InjectedSession};
use session_ssh_tests::repo_root;

fn init_sshd_bin() -> std::path::PathBuf {
    std::env::var_os("INIT_SSHD_BIN")
        .map(|p| repo_root().join(p))
        .unwrap_or_else(|| repo_root().join("target/debug/init-sshd"))
}

#[tokio::test]
async fn stored_injected_pod_runs_and_the_user_logs_in() {
    let wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let client = wc.client().await.unwrap();
    let ns = cluster::unique_name("hub-run");
    wc.namespace(&ns, true).await.unwrap();

    let path = repo_root().join("webhook/tests/fixtures/jupyterhub-alice.pod.yaml");
    let mut original: Pod = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    original.metadata.namespace = None;
    wc.prepare_for(&ns, &original).await.unwrap();
    wc.wait_active(&ns, &original).await.unwrap();

    // The user's key, stored the way the JupyterHub guide says: Secret ssh-keys-<username>.
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read(key.with_extension("pub")).unwrap();
    let secrets_api = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("ssh-keys-alice".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "authorized_keys".to_owned(),
            ByteString(pubkey),
        )])),
        ..Default::default()
    };
    secrets_api
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &original)
        .await
        .unwrap();
    let name = original.metadata.name.clone().unwrap();
    let stored = pods.get(&name).await.unwrap();
    assert!(
        is_injected(&stored),
        "stored pod not injected: {:?}",
        stored.metadata.annotations
    );

    // What a kubelet would mount: every Secret volume of the stored spec, from the apiserver.
    let secrets = cluster::mounted_secrets(&client, &ns, &stored)
        .await
        .unwrap();
    assert!(
        secrets.contains_key("ssh-keys-alice"),
        "the stored pod mounts the user's key Secret: {:?}",
        stored.spec.as_ref().map(|s| &s.volumes)
    );

    let run = work.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let session =
        InjectedSession::launch(&original, stored, &init_sshd_bin(), &run, secrets, 0).unwrap();
    assert!(
        session.install.status.success() && session.post_start.status.success(),
        "install: {}\npostStart: {}",
        String::from_utf8_lossy(&session.install.stderr),
        String::from_utf8_lossy(&session.post_start.stderr)
    );

    // Log in with the key from the apiserver's Secret (not the sandbox's own).
    let opts: Vec<String> = session
        .ssh_opts()
        .into_iter()
        .map(|o| {
            if o == session.key.display().to_string() {
                key.display().to_string()
            } else {
                o
            }
        })
        .collect();
    let out = Command::new("ssh")
        .args(&opts)
        .arg("jovyan@127.0.0.1")
        .arg(format!("id -u; echo ${}", ENTRYPOINT_VAR.0))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh: {}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(session.dir.join("init-sshd.log")).unwrap_or_default()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [session.identity.uid.to_string().as_str(), ENTRYPOINT_VAR.1]
    );
}
