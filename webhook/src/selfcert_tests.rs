//! The pure decisions of self-managed mode (the API round trips need a real apiserver).

use super::*;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

fn args() -> SelfTlsArgs {
    SelfTlsArgs {
        self_managed_tls: true,
        tls_secret: Some("session-ssh/session-ssh-webhook-tls".into()),
        webhook_config: Some("session-ssh".into()),
        service: Some("session-ssh-webhook.session-ssh".into()),
        renew_before_days: 30,
        check_seconds: 60,
    }
}

fn settings() -> Settings {
    args().settings().unwrap()
}

fn stored(s: &Settings, b: &TlsBundle, rv: &str) -> Secret {
    secret_object(s, b, Some(rv.to_owned()))
}

#[test]
fn flags_are_validated() {
    let s = settings();
    assert_eq!(s.secret_ns, "session-ssh");
    assert_eq!(s.secret_name, "session-ssh-webhook-tls");
    assert_eq!(
        s.spec.dns_names[3],
        "session-ssh-webhook.session-ssh.svc.cluster.local"
    );
    for (field, value, needle) in [
        ("secret", "no-slash", "NAMESPACE/NAME"),
        ("secret", "a/b/c", "NAMESPACE/NAME"),
        ("secret", "", "--tls-secret is required"),
        ("service", "svc", "NAME.NAMESPACE"),
        ("service", "svc.ns.extra", "NAME.NAMESPACE"),
        ("config", "", "--webhook-config is required"),
    ] {
        let mut a = args();
        match field {
            "secret" => a.tls_secret = Some(value.into()),
            "service" => a.service = Some(value.into()),
            _ => a.webhook_config = Some(value.into()),
        }
        let err = a.settings().unwrap_err().to_string();
        assert!(err.contains(needle), "{field}={value}: {err}");
    }
    let mut a = args();
    a.renew_before_days = 365;
    let err = a.settings().unwrap_err().to_string();
    assert!(err.contains("shorter than"), "{err}");
}

#[test]
fn missing_secret_is_created() {
    assert_eq!(plan(None, &settings(), SystemTime::now()), Plan::Create);
}

#[test]
fn a_good_secret_is_used_as_is() {
    let s = settings();
    let b = issue(&s, None).unwrap();
    assert_eq!(
        plan(Some(&stored(&s, &b, "7")), &s, SystemTime::now()),
        Plan::Use(b)
    );
}

#[test]
fn near_expiry_renews_with_the_resource_version_and_keeps_the_old_ca() {
    let s = settings();
    let b = issue(&s, None).unwrap();
    // 340 days from now the 1-year certificate is inside the 30-day renewal window.
    let later = SystemTime::now() + Duration::from_secs(340 * 86_400);
    match plan(Some(&stored(&s, &b, "42")), &s, later) {
        Plan::Renew {
            resource_version,
            keep_ca_pem,
            why,
        } => {
            assert_eq!(resource_version.as_deref(), Some("42"));
            assert_eq!(keep_ca_pem.as_deref(), Some(b.ca_pem.as_str()));
            assert!(why.contains("certificate expires"), "{why}");
            // The renewed bundle trusts the new CA first and the old one after it.
            let renewed = issue(&s, keep_ca_pem.as_deref()).unwrap();
            assert!(renewed.ca_pem.ends_with(&b.ca_pem));
            assert_eq!(renewed.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
            // And a renewed Secret is itself usable (the current CA is the first block).
            assert!(matches!(
                plan(Some(&stored(&s, &renewed, "43")), &s, SystemTime::now()),
                Plan::Use(_)
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_ca_is_not_kept() {
    let s = settings();
    let b = issue(&s, None).unwrap();
    let after_ca = SystemTime::now() + Duration::from_secs(11 * 365 * 86_400);
    match plan(Some(&stored(&s, &b, "1")), &s, after_ca) {
        Plan::Renew { keep_ca_pem, .. } => assert_eq!(keep_ca_pem, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_secrets_are_renewed() {
    let s = settings();
    let b = issue(&s, None).unwrap();
    let other = issue(&s, None).unwrap();
    let now = SystemTime::now();
    let renew_why = |secret: Secret| match plan(Some(&secret), &s, now) {
        Plan::Renew { why, .. } => why,
        p => panic!("{p:?}"),
    };

    let mut missing = stored(&s, &b, "1");
    missing.data.as_mut().unwrap().remove("tls.key");
    assert!(renew_why(missing).contains("lacks"));

    let mut mismatched = stored(&s, &b, "1");
    mismatched
        .data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), ByteString(other.key_pem.into_bytes()));
    assert!(renew_why(mismatched).contains("does not fit"));

    let mut garbage = stored(&s, &b, "1");
    garbage
        .data
        .as_mut()
        .unwrap()
        .insert("tls.crt".into(), ByteString(b"junk".to_vec()));
    assert!(renew_why(garbage).contains("unreadable"));

    let mut renamed = stored(&s, &b, "1");
    renamed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(TLS_NAMES.into(), "old-name".into());
    assert!(renew_why(renamed).contains("differ"));

    let empty = Secret {
        metadata: ObjectMeta {
            resource_version: Some("9".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    assert!(matches!(
        plan(Some(&empty), &s, now),
        Plan::Renew { resource_version: Some(ref rv), keep_ca_pem: None, .. } if rv == "9"
    ));
}

#[test]
fn the_secret_object_is_a_tls_secret() {
    let s = settings();
    let b = issue(&s, None).unwrap();
    let secret = secret_object(&s, &b, None);
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("session-ssh"));
    let data = secret.data.unwrap();
    assert_eq!(data["tls.crt"].0, b.cert_pem.as_bytes());
    assert_eq!(data["tls.key"].0, b.key_pem.as_bytes());
    assert_eq!(data["ca.crt"].0, b.ca_pem.as_bytes());
}

fn mwc(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("session-ssh".into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(
            bundles
                .iter()
                .enumerate()
                .map(|(i, b)| MutatingWebhook {
                    name: format!("w{i}.session-ssh.io"),
                    client_config: WebhookClientConfig {
                        ca_bundle: b.map(|p| ByteString(p.as_bytes().to_vec())),
                        ..WebhookClientConfig::default()
                    },
                    ..MutatingWebhook::default()
                })
                .collect(),
        ),
    }
}

#[test]
fn ca_bundle_patch_touches_only_what_differs() {
    let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(
        ca_bundle_patch(&mwc(&[Some(ca), Some(ca)]), ca)
            .0
            .is_empty()
    );
    assert!(ca_bundle_patch(&mwc(&[]), ca).0.is_empty());

    let patch = ca_bundle_patch(&mwc(&[Some(ca), None, Some("old")]), ca);
    let json = serde_json::to_value(&patch).unwrap();
    let want = session_ssh_certs::ca_bundle(ca);
    assert_eq!(
        json,
        serde_json::json!([
            {"op": "test", "path": "/webhooks/1/name", "value": "w1.session-ssh.io"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": want},
            {"op": "test", "path": "/webhooks/2/name", "value": "w2.session-ssh.io"},
            {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": want},
        ])
    );
    // Applied to the object, every webhook ends up with the CA (caBundle is base64 on the wire).
    let mut doc = serde_json::to_value(mwc(&[Some(ca), None, Some("old")])).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    let after: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
    assert!(ca_bundle_patch(&after, ca).0.is_empty());
}

#[test]
fn files_are_written_once_and_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let b = issue(&settings(), None).unwrap();
    files.write(&b).unwrap();
    let mtime = || {
        std::fs::metadata(dir.path().join("tls.crt"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let first = mtime();
    std::thread::sleep(Duration::from_millis(20));
    files.write(&b).unwrap();
    assert_eq!(mtime(), first, "unchanged content is not rewritten");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
        b.ca_pem
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The loader accepts what was written.
    crate::tls::load_certified_key(&files.cert, &files.key, &crate::tls::provider()).unwrap();
}
