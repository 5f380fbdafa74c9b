//! End-to-end: stable per-session host keys (issue 6). The webhook, running with the
//! manifests' ServiceAccount token against a real kube-apiserver, creates one host-key
//! Secret per session identity at admission and the stored pod mounts it. The same
//! identity started again reuses the Secret (same key bytes), distinct identities never
//! share one, and a dryRun admission creates none.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use session_ssh_tests::cluster::webhook::{Platform, Tls, WebhookCluster, is_injected};
use session_ssh_tests::cluster::{self, wait_for};

const KEY_FILE: &str = "ssh_host_ed25519_key";
const HOST_KEY_LABEL: &str = "session-ssh.io/host-key=true";
const WAIT: Duration = Duration::from_secs(30);

/// The real KubeSpawner pod, for `user` and `server`.
fn hub_pod(name: &str, user: &str, server: &str) -> Pod {
    cluster::hub_pod(name, user, server).unwrap()
}

/// The host-key Secret the stored pod mounts, after checking how it is mounted.
fn mounted_secret(pod: &Pod) -> String {
    let spec = pod.spec.as_ref().unwrap();
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "session-ssh-host-key")
        .expect("host-key volume");
    let secret = vol.secret.as_ref().unwrap();
    assert_eq!(secret.optional, Some(true), "never blocks the pod");
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "session-ssh-install")
        .unwrap();
    let mount = init
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "session-ssh-host-key")
        .expect("mounted into install");
    assert_eq!(mount.read_only, Some(true));
    let cmd = init.command.as_ref().unwrap();
    let at = cmd.iter().position(|a| a == "--host-key-dir").unwrap();
    assert_eq!(cmd[at + 1], mount.mount_path);
    // Only the install container sees the private key.
    for c in &spec.containers {
        assert!(
            !c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "session-ssh-host-key"),
            "container {} must not mount the host key Secret",
            c.name
        );
    }
    secret.secret_name.clone().unwrap()
}

async fn create(pods: &Api<Pod>, pod: &Pod) -> Pod {
    let created = pods.create(&PostParams::default(), pod).await.unwrap();
    assert!(is_injected(&created), "the webhook injected the pod");
    created
}

async fn delete_and_wait(pods: &Api<Pod>, name: &str) {
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_for("the pod to be gone", WAIT, || {
        let pods = pods.clone();
        async move { Ok(pods.get_opt(name).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
}

fn key_bytes(s: &Secret) -> Vec<u8> {
    s.data.as_ref().unwrap()[KEY_FILE].0.clone()
}

async fn host_key_secrets(secrets: &Api<Secret>) -> Vec<Secret> {
    secrets
        .list(&ListParams::default().labels(HOST_KEY_LABEL))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_identity_same_key_distinct_identities_distinct_keys_dry_run_none() {
    let wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let client = wc.client().await.unwrap();
    // The JupyterHub example binds host-key rights (RoleBinding) in its hub namespace only.
    assert_eq!(
        wc.session_namespaces.len(),
        1,
        "{:?}",
        wc.session_namespaces
    );
    let ns = wc.session_namespaces[0].clone();
    // wait_active probes with dry-run creates: those must leave no Secret behind.
    wc.wait_active(&ns, &hub_pod("probe", "probe", ""))
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    // dryRun: the answer mounts a Secret, but none is made.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let returned = pods
        .create(&dry, &hub_pod("jupyter-dry", "dry", ""))
        .await
        .unwrap();
    assert!(is_injected(&returned));
    let dry_name = mounted_secret(&returned);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(secrets.get_opt(&dry_name).await.unwrap().is_none());
    assert!(
        host_key_secrets(&secrets).await.is_empty(),
        "dry runs created a host-key Secret"
    );

    // First start of alice's default server.
    let first = create(&pods, &hub_pod("jupyter-alice", "alice", "")).await;
    let name = mounted_secret(&first);
    assert!(name.starts_with("session-ssh-hostkey-alice-"), "{name}");
    // Made before the admission answered, so it is there when the pod starts.
    let Some(s1) = secrets.get_opt(&name).await.unwrap() else {
        panic!("no Secret {name}; webhook log:\n{}", wc.webhook_log());
    };
    assert_eq!(s1.type_.as_deref(), Some("Opaque"));
    let labels = s1.metadata.labels.clone().unwrap();
    assert_eq!(labels["session-ssh.io/host-key"], "true");
    let key1 = key_bytes(&s1);
    let text = String::from_utf8(key1.clone()).unwrap();
    let parsed = russh::keys::PrivateKey::from_openssh(&text).unwrap();
    assert_eq!(parsed.algorithm().as_str(), "ssh-ed25519");
    let public = &s1.metadata.annotations.as_ref().unwrap()["session-ssh.io/host-key-public"];
    assert_eq!(*public, parsed.public_key().to_openssh().unwrap());

    // Restart: delete, create again (same name, as KubeSpawner does) → same Secret.
    delete_and_wait(&pods, "jupyter-alice").await;
    let second = create(&pods, &hub_pod("jupyter-alice", "alice", "")).await;
    assert_eq!(mounted_secret(&second), name);
    let s2 = secrets.get(&name).await.unwrap();
    assert_eq!(s2.metadata.uid, s1.metadata.uid, "reused, not re-made");
    assert_eq!(key_bytes(&s2), key1, "same host key after a restart");

    // The controller publishes a known_hosts line for the session's address (mode none:
    // the Service's cluster DNS name, port 22) with the Secret's public key.
    let pinned = wait_for("the known-hosts annotation", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("jupyter-alice").await?;
            let a = p.metadata.annotations.unwrap_or_default();
            Ok(a.get("session-ssh.io/known-hosts")
                .cloned()
                .zip(a.get("session-ssh.io/ssh-host").cloned()))
        }
    })
    .await
    .unwrap();
    let (line, host) = pinned;
    let blob = public.split_whitespace().nth(1).unwrap();
    assert_eq!(line, format!("{host} ssh-ed25519 {blob}"));

    // Other identities: another user, alice's named server, a name that sanitizes alike.
    let mut keys = vec![key1.clone()];
    let mut names = vec![name.clone()];
    for (pod_name, user, server) in [
        ("jupyter-bob", "bob", ""),
        ("jupyter-alice--gpu", "alice", "gpu"),
        ("jupyter-alice-2d-gpu", "alice-gpu", ""),
    ] {
        let p = create(&pods, &hub_pod(pod_name, user, server)).await;
        let n = mounted_secret(&p);
        let s = secrets.get(&n).await.unwrap();
        assert!(!names.contains(&n), "{n} shared");
        assert!(!keys.contains(&key_bytes(&s)), "host key shared by {n}");
        names.push(n);
        keys.push(key_bytes(&s));
    }
    let all = host_key_secrets(&secrets).await;
    assert_eq!(all.len(), 4, "one Secret per identity, none for dry runs");
    // The decision line carries the host-key outcome (one line per request).
    let log = wc.webhook_log();
    assert!(
        log.lines().any(|l| l.contains("admission decision")
            && l.contains("host_key")
            && l.contains("\"created\"")),
        "host-key outcome in the decision line:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("admission decision")
            && l.contains("host_key")
            && l.contains("\"existing\"")),
        "a restarted session's decision says the Secret was reused:\n{log}"
    );

    // A selected namespace where the webhook may not create Secrets: the pod is still
    // admitted and injected; its optional volume just finds nothing (install generates).
    let other = cluster::unique_name("no-rbac");
    wc.namespace(&other, true).await.unwrap();
    let opods = Api::<Pod>::namespaced(client.clone(), &other);
    wc.prepare_for(&other, &hub_pod("x", "x", ""))
        .await
        .unwrap();
    let p = create(&opods, &hub_pod("jupyter-alice", "alice", "")).await;
    let n = mounted_secret(&p);
    let osecrets = Api::<Secret>::namespaced(client.clone(), &other);
    assert!(osecrets.get_opt(&n).await.unwrap().is_none());
    assert!(
        wc.webhook_log()
            .contains("host-key Secret not made; the session generates its own key"),
        "failure logged"
    );
}

/// The stored pod run as far as this machine allows (install + postStart in the pod
/// sandbox, Secret volumes from the apiserver): init-sshd serves the Secret's key, and
/// again after the session is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_session_serves_the_same_host_key() {
    use session_ssh_tests::injected::InjectedSession;

    let wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let client = wc.client().await.unwrap();
    let ns = wc.session_namespaces[0].clone();
    let original = hub_pod("jupyter-alice", "alice", "");
    wc.wait_active(&ns, &original).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let secrets_api = Api::<Secret>::namespaced(client.clone(), &ns);
    let bin = std::env::var_os("INIT_SSHD_BIN")
        .map(|p| session_ssh_tests::repo_root().join(p))
        .unwrap_or_else(|| session_ssh_tests::repo_root().join("target/debug/init-sshd"));

    let mut served = Vec::new();
    for round in 0..2 {
        let stored = create(&pods, &original).await;
        let host_secret = mounted_secret(&stored);
        // What a kubelet would mount: every Secret volume that exists.
        let secrets = cluster::mounted_secrets(&client, &ns, &stored)
            .await
            .unwrap();
        let s = secrets_api.get(&host_secret).await.unwrap();
        let public = s.metadata.annotations.unwrap()["session-ssh.io/host-key-public"].clone();
        let work = tempfile::tempdir().unwrap();
        let session =
            InjectedSession::launch(&original, stored, &bin, work.path(), secrets, 0).unwrap();
        assert!(
            session.install.status.success(),
            "{}",
            String::from_utf8_lossy(&session.install.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(session.dir.join("install-report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report["host_key"]["origin"], "copied",
            "round {round}: {report}"
        );
        let key = std::fs::read_to_string(session.dir.join("ssh_host_ed25519_key.pub")).unwrap();
        let field = |t: &str| t.split_whitespace().nth(1).unwrap().to_owned();
        assert_eq!(
            field(&key),
            field(&public),
            "round {round}: serves the Secret's key"
        );
        served.push(field(&key));
        drop(session);
        delete_and_wait(&pods, "jupyter-alice").await;
    }
    assert_eq!(served[0], served[1], "same host key after a restart");
}

/// `hostKeys.deleteUnusedAfterSeconds`: a Secret no pod mounts goes after the TTL; one a
/// running session mounts stays however old it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_host_keys_are_deleted_after_the_ttl() {
    let mut wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let path = wc.work.path().join("config.yaml");
    let base = std::fs::read_to_string(&path).unwrap();
    assert!(!base.contains("hostKeys"), "{base}");
    std::fs::write(
        &path,
        format!(
            "{}\nhostKeys:\n  deleteUnusedAfterSeconds: 4\n",
            base.trim_end()
        ),
    )
    .unwrap();
    wc.start_webhook().await.unwrap();
    let client = wc.client().await.unwrap();
    let ns = wc.session_namespaces[0].clone();
    wc.wait_active(&ns, &hub_pod("probe", "probe", ""))
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    let alice = mounted_secret(&create(&pods, &hub_pod("jupyter-alice", "alice", "")).await);
    let bob = mounted_secret(&create(&pods, &hub_pod("jupyter-bob", "bob", "")).await);
    assert!(secrets.get_opt(&alice).await.unwrap().is_some());
    delete_and_wait(&pods, "jupyter-alice").await;
    let gone_after = std::time::Instant::now();
    wait_for("alice's unused host-key Secret deleted", WAIT, || {
        let secrets = secrets.clone();
        let alice = alice.clone();
        async move { Ok(secrets.get_opt(&alice).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
    assert!(
        gone_after.elapsed() >= Duration::from_secs(3),
        "deleted before the TTL: {:?}",
        gone_after.elapsed()
    );
    // Bob's session is older than the TTL by now and still mounts its Secret.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt(&bob).await.unwrap().is_some(),
        "a mounted host key was deleted"
    );
    assert!(
        wc.webhook_log().contains("unused host-key Secret deleted"),
        "{}",
        wc.webhook_log()
    );
}
