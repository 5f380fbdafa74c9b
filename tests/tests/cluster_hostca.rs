//! End-to-end: the optional host CA (issue 6). The admin stores an `ssh-keygen` CA key
//! in a Secret of the webhook's namespace; the webhook, running with the manifests'
//! ServiceAccount token (so only the manifests' RBAC lets it read that Secret) against a
//! real kube-apiserver, certifies each session's host key for its hostname and publishes
//! the certificate and one `@cert-authority` line on the pod. The real `ssh-keygen -L`
//! reads the certificate; the apiserver accepts the certificate's downward-API volume; the
//! pod run in the sandbox serves it, and the real `ssh` logs in with only the CA line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use session_ssh_tests::cluster::webhook::{NAMESPACE, Platform, Tls, WebhookCluster, is_injected};
use session_ssh_tests::cluster::{self, wait_for};
use session_ssh_tests::injected::InjectedSession;

const CA_SECRET: &str = "session-ssh-host-ca";
const CERT: &str = "session-ssh.io/host-certificate";
const AUTHORITY: &str = "session-ssh.io/cert-authority";
const WAIT: Duration = Duration::from_secs(30);

/// The real KubeSpawner pod for `user` (default server).
fn hub_pod(name: &str, user: &str) -> Pod {
    cluster::hub_pod(name, user, "").unwrap()
}

fn keygen(args: &[&str], path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `SHA256:…` of a public key or certificate file.
fn fingerprint(path: &Path) -> String {
    keygen(&["-l", "-f"], path)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

fn annotations(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.annotations.clone().unwrap_or_default()
}

async fn published(pods: &Api<Pod>, name: &str) -> (String, String) {
    let pods = pods.clone();
    let name = name.to_owned();
    wait_for("the host certificate annotations", WAIT, move || {
        let (pods, name) = (pods.clone(), name.clone());
        async move {
            let a = annotations(&pods.get(&name).await?);
            Ok(a.get(CERT).cloned().zip(a.get(AUTHORITY).cloned()))
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_host_certificates_from_the_ca_secret() {
    let mut wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let client = wc.client().await.unwrap();
    let ns = wc.session_namespaces[0].clone();

    // The admin's steps from the README: an ed25519 CA key without passphrase, in a Secret.
    let work = wc.work.path().join("host-ca");
    std::fs::create_dir_all(&work).unwrap();
    let ca = work.join("host_ca");
    keygen(
        &["-q", "-t", "ed25519", "-N", "", "-C", "e2e-host-ca", "-f"],
        &ca,
    );
    let ca_pub = std::fs::read_to_string(work.join("host_ca.pub")).unwrap();
    let ca_blob = ca_pub.split_whitespace().nth(1).unwrap().to_owned();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "host_ca_key".into(),
            ByteString(std::fs::read(&ca).unwrap()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    // A session admitted before the CA is configured: its server has no certificate file.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    wc.wait_active(&ns, &hub_pod("probe", "probe"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &hub_pod("jupyter-early", "early"))
        .await
        .unwrap();

    // The config: the CA, and the hostname users type.
    let path = wc.work.path().join("config.yaml");
    let base = std::fs::read_to_string(&path).unwrap();
    assert!(
        !base.contains("hostKeys") && !base.contains("ingress"),
        "{base}"
    );
    std::fs::write(
        &path,
        format!(
            "{}\ningress:\n  hostTemplate: '{{label:hub.jupyter.org/username}}.ssh.example.org'\nhostKeys:\n  ca:\n    secretName: {CA_SECRET}\n",
            base.trim_end()
        ),
    )
    .unwrap();
    wc.start_webhook().await.unwrap();
    wc.wait_active(&ns, &hub_pod("probe", "probe"))
        .await
        .unwrap();

    let stored = pods
        .create(&PostParams::default(), &hub_pod("jupyter-alice", "alice"))
        .await
        .unwrap();
    assert!(is_injected(&stored));
    // The apiserver took the certificate's downward-API volume.
    let spec = stored.spec.as_ref().unwrap();
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "session-ssh-host-cert")
        .expect("certificate volume");
    assert!(vol.downward_api.is_some());

    let (cert, authority) = published(&pods, "jupyter-alice").await;
    assert_eq!(
        authority,
        format!("@cert-authority *.ssh.example.org,[*.ssh.example.org]:* ssh-ed25519 {ca_blob}")
    );
    let cert_file = work.join("alice-cert.pub");
    std::fs::write(&cert_file, format!("{cert}\n")).unwrap();
    let shown = keygen(&["-L", "-f"], &cert_file);
    assert!(
        shown.contains("Type: ssh-ed25519-cert-v01@openssh.com host certificate"),
        "{shown}"
    );
    let ca_fp = fingerprint(&work.join("host_ca.pub"));
    assert!(
        shown.contains(&format!("Signing CA: ED25519 {ca_fp}")),
        "{shown}"
    );
    let principals: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.trim().starts_with("Principals:"))
        .skip(1)
        .take_while(|l| l.starts_with("                "))
        .map(str::trim)
        .collect();
    let svc = "jupyter-alice";
    assert_eq!(
        principals,
        ["alice.ssh.example.org", &format!("{svc}.{ns}.svc")],
        "{shown}"
    );
    assert!(
        shown.contains(&format!("Key ID: \"session-ssh {ns}/jupyter-alice")),
        "{shown}"
    );

    // It certifies the key in the session's host-key Secret (what install serves).
    let host_secret = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "session-ssh-host-key")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone())
        .unwrap();
    let s = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&host_secret)
        .await
        .unwrap();
    let public = &s.metadata.annotations.as_ref().unwrap()["session-ssh.io/host-key-public"];
    let pub_file = work.join("alice.pub");
    std::fs::write(&pub_file, format!("{public}\n")).unwrap();
    assert_eq!(fingerprint(&cert_file), fingerprint(&pub_file));
    // And it verifies: ssh-keygen checks the signature against the CA line as ssh would.
    let kh = work.join("known_hosts");
    std::fs::write(&kh, format!("{authority}\n")).unwrap();
    let found = Command::new("ssh-keygen")
        .args(["-F", "alice.ssh.example.org", "-f"])
        .arg(&kh)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("@cert-authority"),
        "the published line matches the hostname"
    );
    assert!(wc.webhook_log().contains("host certificate signed"));
    // The early session is reconciled (its connection info is there) but not certified:
    // a certificate its server never presents would only mislead.
    let early = wait_for("the early pod's connection info", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("jupyter-early").await?;
            let a = annotations(&p);
            Ok((a.get("session-ssh.io/ssh-host").map(String::as_str)
                == Some("early.ssh.example.org"))
            .then_some(a))
        }
    })
    .await
    .unwrap();
    assert!(
        !early.contains_key(CERT) && !early.contains_key(AUTHORITY),
        "{early:?}"
    );

    // The pod as a kubelet would run it now: the downward-API file holds the annotation,
    // mounted in DIR/host-cert where serve looks. One CA line, no pinned key, logs in.
    let annotated = pods.get("jupyter-alice").await.unwrap();
    let secrets = cluster::mounted_secrets(&client, &ns, &annotated)
        .await
        .unwrap();
    let run = tempfile::tempdir().unwrap();
    let session = InjectedSession::launch(
        &hub_pod("jupyter-alice", "alice"),
        annotated,
        &session_ssh_tests::sshd::init_sshd_bin(),
        run.path(),
        secrets,
        0,
    )
    .unwrap();
    // (The volume's directory on this host; in the container it is DIR/host-cert.)
    let cert_vol = session.sandbox.volume_dir("session-ssh-host-cert").unwrap();
    let served = std::fs::read_to_string(cert_vol.join("ssh_host_ed25519_key-cert.pub")).unwrap();
    assert_eq!(served.trim(), cert);
    std::fs::write(&session.known_hosts, format!("{authority}\n")).unwrap();
    let ssh_as = |alias: &str| {
        Command::new("ssh")
            .args(session.ssh_opts())
            .args(["-o", &format!("HostKeyAlias={alias}")])
            .arg("jovyan@127.0.0.1")
            .arg("echo certified")
            .output()
            .unwrap()
    };
    let ok = ssh_as("alice.ssh.example.org");
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout) == "certified\n",
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        std::fs::read_to_string(session.dir.join("init-sshd.log")).unwrap_or_default()
    );
    let other = ssh_as("bob.ssh.example.org");
    assert!(!other.status.success(), "bob's name must not be accepted");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("not a listed principal"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    drop(session);

    // A restart of the webhook keeps the certificate (still good: not re-signed).
    wc.start_webhook().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = annotations(&pods.get("jupyter-alice").await.unwrap());
    assert_eq!(again.get(CERT), Some(&cert), "stable across reconciles");

    // CA turned off: the certificate and the line are withdrawn.
    std::fs::write(&path, &base).unwrap();
    wc.start_webhook().await.unwrap();
    wait_for("certificate annotations removed", WAIT, || {
        let pods = pods.clone();
        async move {
            let a = annotations(&pods.get("jupyter-alice").await?);
            Ok((!a.contains_key(CERT) && !a.contains_key(AUTHORITY)).then_some(()))
        }
    })
    .await
    .unwrap();
}
