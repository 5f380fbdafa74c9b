//! The generated material checked by a real TLS stack (rustls) and by the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use session_ssh_certs::{Ca, CaSpec, ServerCert, ServerCertSpec};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Decode PEM CERTIFICATE blocks by hand so the test does not reuse the crate's own parser.
fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut b64 = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                b64.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                out.push(CertificateDer::from(STANDARD.decode(&b64).unwrap()));
            }
            l if inside => b64.push_str(l),
            _ => {}
        }
    }
    out
}

fn pem_key(pem: &str) -> PrivateKeyDer<'static> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 expected"
    );
    PrivateKeyDer::Pkcs8(STANDARD.decode(body).unwrap().into())
}

/// A full TLS 1.3 handshake in memory plus one application record each way.
fn handshake(trusted_ca_pem: &str, server: &ServerCert, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for c in pem_certs(trusted_ca_pem) {
        roots.add(c).unwrap();
    }
    let client_cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pem_certs(&server.cert_pem), pem_key(&server.key_pem))?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = ClientConnection::new(Arc::new(client_cfg), name)?;
    let mut srv = ServerConnection::new(Arc::new(server_cfg))?;

    client.writer().write_all(b"ping").unwrap();
    for _ in 0..10 {
        pump(&mut client, &mut srv)?;
        pump(&mut srv, &mut client)?;
        if !client.is_handshaking() && !srv.is_handshaking() {
            break;
        }
    }
    pump(&mut client, &mut srv)?;
    let mut got = [0u8; 4];
    srv.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    Ok(())
}

fn pump<A, B, DA, DB>(from: &mut A, to: &mut B) -> Result<(), rustls::Error>
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

#[test]
fn service_names_and_ips_verify_against_the_ca() {
    let ca = Ca::generate().unwrap();
    let spec = ServerCertSpec::for_service("session-ssh-webhook", "session-ssh")
        .with_ip(IpAddr::from([127, 0, 0, 1]));
    let leaf = ca.issue_server(&spec).unwrap();
    for name in [
        "session-ssh-webhook",
        "session-ssh-webhook.session-ssh",
        "session-ssh-webhook.session-ssh.svc",
        "session-ssh-webhook.session-ssh.svc.cluster.local",
        "127.0.0.1",
    ] {
        handshake(ca.cert_pem(), &leaf, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn wrong_name_is_rejected() {
    let ca = Ca::generate().unwrap();
    let leaf = ca
        .issue_server(&ServerCertSpec::for_service("webhook", "ns"))
        .unwrap();
    let err = handshake(ca.cert_pem(), &leaf, "other.ns.svc").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
            ) | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        ),
        "{err:?}"
    );
}

#[test]
fn another_ca_is_not_trusted() {
    let ca = Ca::generate().unwrap();
    let other = Ca::generate().unwrap();
    let leaf = ca.issue_server(&ServerCertSpec::localhost()).unwrap();
    let err = handshake(other.cert_pem(), &leaf, "localhost").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    // Two CAs that share a subject: the verifier finds the wrong one by name and the
    // signature check still refuses it.
    let twin_spec = CaSpec {
        common_name: "twin".into(),
        validity: Duration::from_secs(86_400),
    };
    let twin_a = Ca::generate_with(&twin_spec).unwrap();
    let twin_b = Ca::generate_with(&twin_spec).unwrap();
    let leaf = twin_a.issue_server(&ServerCertSpec::localhost()).unwrap();
    let err = handshake(twin_b.cert_pem(), &leaf, "localhost").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn a_reloaded_ca_issues_certificates_the_original_verifies() {
    let ca = Ca::generate_with(&CaSpec {
        common_name: "test CA ünïcode".into(),
        validity: Duration::from_secs(86_400),
    })
    .unwrap();
    let reloaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    let leaf = reloaded.issue_server(&ServerCertSpec::localhost()).unwrap();
    handshake(ca.cert_pem(), &leaf, "localhost").unwrap();
    handshake(ca.cert_pem(), &leaf, "::1").unwrap();
}

#[test]
fn expiry_window() {
    let ca = Ca::generate().unwrap();
    let now = SystemTime::now();
    let short = ca
        .issue_server(&ServerCertSpec::localhost().with_validity(Duration::from_secs(86_400)))
        .unwrap();
    let day = Duration::from_secs(86_400);
    assert!(session_ssh_certs::expires_within(&short.cert_pem, 30 * day, now).unwrap());
    assert!(!session_ssh_certs::expires_within(&short.cert_pem, Duration::ZERO, now).unwrap());
    assert!(!session_ssh_certs::expires_within(ca.cert_pem(), 30 * day, now).unwrap());
    assert!(session_ssh_certs::expires_within(ca.cert_pem(), 11 * 365 * day, now).unwrap());
    assert!(session_ssh_certs::not_after("garbage").is_err());
}

#[test]
fn pem_files_secret_and_ca_bundle() {
    let ca = Ca::generate().unwrap();
    let bundle = ca
        .issue_bundle(&ServerCertSpec::for_service("wh", "ns"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    bundle.write_pem_files(dir.path()).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(read("ca.crt"), ca.cert_pem());
    assert_eq!(read("tls.crt"), bundle.cert_pem);
    assert_eq!(read("tls.key"), bundle.key_pem);
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Writing again replaces the files (rename over the old ones).
    let second = ca
        .issue_bundle(&ServerCertSpec::for_service("wh", "ns"))
        .unwrap();
    second.write_pem_files(dir.path()).unwrap();
    assert_eq!(read("tls.crt"), second.cert_pem);

    assert_eq!(
        STANDARD.decode(bundle.ca_bundle()).unwrap(),
        ca.cert_pem().as_bytes()
    );
    assert_eq!(bundle.ca_bundle(), ca.ca_bundle());

    let yaml = bundle.secret_manifest("wh-tls", "ns").unwrap();
    assert!(yaml.contains("type: kubernetes.io/tls\n"), "{yaml}");
    assert!(yaml.contains("  name: wh-tls\n  namespace: ns\n"), "{yaml}");
    for (key, want) in [
        ("ca.crt", &bundle.ca_pem),
        ("tls.crt", &bundle.cert_pem),
        ("tls.key", &bundle.key_pem),
    ] {
        let line = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap();
        assert_eq!(STANDARD.decode(line).unwrap(), want.as_bytes(), "{key}");
    }
    assert!(bundle.secret_manifest("Bad Name", "ns").is_err());
    assert!(bundle.secret_manifest("ok", "ns\nkind: x").is_err());
    // Debug never prints the private key.
    assert!(!format!("{bundle:?}").contains("PRIVATE KEY"));
}

#[test]
fn cli_pem_check_and_ca_bundle() {
    let exe = env!("CARGO_BIN_EXE_session-ssh-certs");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "pem",
            "--service",
            "wh",
            "--namespace",
            "ns",
            "--ip",
            "127.0.0.1",
            "--days",
            "10",
        ])
        .arg("--out-dir")
        .arg(dir.path())
        .arg("--ca-key-out")
        .arg(dir.path().join("ca.key"))
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let cert_pem = std::fs::read_to_string(dir.path().join("tls.crt")).unwrap();
    let key_pem = std::fs::read_to_string(dir.path().join("tls.key")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        session_ssh_certs::ca_bundle(&ca_pem)
    );
    let leaf = ServerCert {
        cert_der: Vec::new(),
        cert_pem: cert_pem.clone(),
        key_pem,
    };
    handshake(&ca_pem, &leaf, "wh.ns.svc").unwrap();
    handshake(&ca_pem, &leaf, "127.0.0.1").unwrap();

    // 10-day certificate: fine for a 5-day window, due for a 30-day one.
    let check = |days: &str| {
        std::process::Command::new(exe)
            .args(["check", "--within-days", days, "--cert"])
            .arg(dir.path().join("tls.crt"))
            .env_clear()
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(check("5"), Some(0));
    assert_eq!(check("30"), Some(1));

    // Issue again from the saved CA: the new leaf verifies against the same ca.crt.
    let again = std::process::Command::new(exe)
        .args([
            "secret",
            "--service",
            "wh",
            "--namespace",
            "ns",
            "--secret-name",
            "wh-tls",
        ])
        .arg("--ca-cert")
        .arg(dir.path().join("ca.crt"))
        .arg("--ca-key")
        .arg(dir.path().join("ca.key"))
        .env_clear()
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let yaml = String::from_utf8(again.stdout).unwrap();
    let ca_line = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca.crt: "))
        .unwrap();
    assert_eq!(STANDARD.decode(ca_line).unwrap(), ca_pem.as_bytes());

    let bad = std::process::Command::new(exe)
        .args(["ca-bundle", "--ca-cert", "/nonexistent/ca.crt"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/ca.crt"));
}
