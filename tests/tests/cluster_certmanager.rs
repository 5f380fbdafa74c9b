//! Issue 16, item 3: real cert-manager (controller and cainjector built from the cert-manager
//! Go module, `tests/certmanager`) against the test apiserver. The cert-manager overlay
//! (`manifests/overlays/cert-manager`) issues the webhook's certificate, cainjector puts the
//! CA into the MutatingWebhookConfiguration, the apiserver calls the webhook through its
//! Service, and renewals are picked up with no failed admission.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure should panic

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use session_ssh_tests::cluster::webhook::{
    NAMESPACE, Platform, SERVICE, TLS_SECRET, Tls, WEBHOOK_CONFIG, WebhookCluster, is_injected,
};
use session_ssh_tests::cluster::{self, wait_for};

/// The overlay's serving Certificate.
const CERTIFICATE: &str = "session-ssh-webhook";
/// cert-manager refuses durations under an hour; renewing this long before the end puts
/// the next renewal 20 s after each issuance.
const SHORT_DURATION: &str = "1h";
const SHORT_RENEW_BEFORE: &str = "59m40s";
/// Certificates the webhook must serve in turn: the overlay's, the one the spec change
/// re-issues, and one renewed by cert-manager's own schedule.
const SERIALS: usize = 3;

fn probe_pod() -> Pod {
    let path =
        session_ssh_tests::repo_root().join("webhook/tests/fixtures/jupyterhub-alice.pod.yaml");
    let mut pod: Pod = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    pod.metadata.namespace = None;
    // The default config injects pods that opt in.
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("session-ssh.io/inject".into(), "true".into());
    pod
}

fn ca_bundle(m: &MutatingWebhookConfiguration) -> Option<Vec<u8>> {
    m.webhooks
        .as_ref()?
        .first()?
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
}

fn secret_file(s: &Secret, key: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

/// The serial of the leaf certificate in TLS Secret `s`.
fn leaf_serial(s: &Secret) -> Vec<u8> {
    let leaf = secret_file(s, "tls.crt");
    rustls_pemfile::certs(&mut &leaf[..])
        .next()
        .unwrap()
        .map(|c| session_ssh_certs::cert_info(&c).unwrap().serial)
        .unwrap()
}

/// The serial of the certificate the webhook serves, as the apiserver sees it: a TLS
/// handshake for the Service's name that must verify against `ca_pem`.
fn served_serial(port: u16, ca_pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc"))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no peer certificate"))?;
    let serial = session_ssh_certs::cert_info(leaf)?.serial;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let _ = sock.flush();
    Ok(serial)
}

fn certificates(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    Api::namespaced_with(client.clone(), NAMESPACE, &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn cert_manager_issues_injects_and_renews_without_a_failed_admission() {
    let started = Instant::now();
    let wc = WebhookCluster::start(Platform::Default, Tls::CertManager)
        .await
        .unwrap();
    eprintln!(
        "issued and serving after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mwc_rendered = wc
        .rendered
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert!(
        mwc_rendered["webhooks"][0]["clientConfig"]["caBundle"].is_null(),
        "the overlay ships a caBundle: injection would not be shown"
    );
    let client = wc.client().await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let issued = secrets.get(TLS_SECRET).await.unwrap();
    assert_eq!(issued.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = secret_file(&issued, "ca.crt");
    let ca_secret = secrets.get("session-ssh-ca").await.unwrap();
    assert_eq!(
        ca,
        secret_file(&ca_secret, "tls.crt"),
        "not issued by the overlay's CA"
    );

    // cainjector copies the Certificate's CA into the webhook configuration.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let bundle = wait_for("caBundle injected", Duration::from_secs(60), || async {
        Ok(ca_bundle(&mwcs.get(WEBHOOK_CONFIG).await?))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", wc.cert_manager.as_ref().unwrap().log_tail()));
    assert_eq!(bundle, ca, "caBundle is not the issued CA");

    // The apiserver calls the webhook through the Service and trusts it.
    let ns = cluster::unique_name("certmanager");
    wc.namespace(&ns, true).await.unwrap();
    let probe = probe_pod();
    wc.wait_active(&ns, &probe).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    // The Secret as it is now: cert-manager may issue again right after the first issuance
    // (seen once under load), and the webhook picks a change up on its next file poll.
    let first = wait_for(
        "the webhook serves the Secret's certificate",
        Duration::from_secs(30),
        || async {
            let issued = leaf_serial(&secrets.get(TLS_SECRET).await?);
            let served = served_serial(wc.port, &ca)?;
            Ok((served == issued).then_some(served))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", wc.cert_manager.as_ref().unwrap().log_tail()));
    if first != leaf_serial(&issued) {
        eprintln!("cert-manager issued again before the first check");
    }

    // A short duration: the spec change re-issues at once, then cert-manager renews on its
    // schedule. Pods are created without pause across both renewals.
    let patch = serde_json::json!({"spec": {"duration": SHORT_DURATION, "renewBefore": SHORT_RENEW_BEFORE}});
    certificates(&client)
        .patch(CERTIFICATE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mut serials = vec![first];
    let (mut admitted, mut failed) = (0u32, Vec::new());
    let mut after_last = 0u32;
    let deadline = Instant::now() + Duration::from_secs(240);
    while serials.len() < SERIALS || after_last < 5 {
        assert!(
            Instant::now() < deadline,
            "{} of {SERIALS} certificates served after 240 s ({admitted} pods admitted)\n{}\n{}",
            serials.len(),
            wc.cert_manager.as_ref().unwrap().log_tail(),
            wc.webhook_log()
        );
        let mut pod = probe.clone();
        pod.metadata.name = Some(format!("renew-{admitted}-{}", failed.len()));
        match pods.create(&PostParams::default(), &pod).await {
            Ok(p) if is_injected(&p) => admitted += 1,
            Ok(p) => failed.push(format!("{:?}: admitted but not mutated", p.metadata.name)),
            Err(e) => failed.push(format!("{e}")),
        }
        after_last += 1;
        let serial = served_serial(wc.port, &ca).unwrap();
        if serials.last() != Some(&serial) {
            eprintln!(
                "serving certificate {} after {:.1}s, {admitted} pods admitted",
                serials.len() + 1,
                started.elapsed().as_secs_f64()
            );
            serials.push(serial);
            after_last = 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        failed.is_empty(),
        "failed admissions across renewal: {failed:?}\n{}",
        wc.webhook_log()
    );
    let distinct: BTreeSet<&Vec<u8>> = serials.iter().collect();
    assert_eq!(
        distinct.len(),
        serials.len(),
        "a serial came back: {serials:?}"
    );

    // The leaf renewed; the CA (and so the caBundle) stayed.
    let now = mwcs.get(WEBHOOK_CONFIG).await.unwrap();
    assert_eq!(ca_bundle(&now), Some(ca));
    let metrics = wc.metrics().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "session_ssh_tls_reload_errors_total 0"),
        "the webhook refused a reload:\n{metrics}"
    );
    let cert = certificates(&client).get(CERTIFICATE).await.unwrap();
    let revision = cert.data["status"]["revision"].as_u64().unwrap_or(0);
    assert!(
        revision >= SERIALS as u64,
        "Certificate revision {revision}"
    );
    eprintln!(
        "{admitted} pods admitted, all mutated, across {} renewals in {:.1}s",
        SERIALS - 1,
        started.elapsed().as_secs_f64()
    );
}
