use super::*;
use crate::config::Config;
use ssh_key::LineEnding;
use ssh_key::private::Ed25519Keypair;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 24 * 3600;

fn ca_from_seed(seed: u8) -> Ca {
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
    let text = key.to_openssh(LineEnding::LF).unwrap();
    Ca::from_openssh(&text, "session-ssh/ca").unwrap()
}

fn host_key() -> String {
    crate::hostkey::generate().unwrap().1
}

fn req() -> CertRequest {
    CertRequest {
        principals: vec![
            "alice.ssh.example.org".into(),
            "jupyter-alice.hub.svc".into(),
        ],
        key_id: "session-ssh hub/jupyter-alice hub.jupyter.org/username=alice".into(),
        validity: 30 * DAY,
    }
}

fn fingerprint(ca: &Ca) -> ssh_key::Fingerprint {
    ca.key.public_key().fingerprint(HashAlg::Sha256)
}

#[test]
fn signs_a_host_certificate_for_the_principals_verifiable_with_the_ca() {
    let ca = ca_from_seed(1);
    let host = host_key();
    let line = ca.sign(&host, &req(), NOW).unwrap();
    assert!(
        line.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{line}"
    );
    let cert = Certificate::from_openssh(&line).unwrap();
    assert_eq!(cert.cert_type(), CertType::Host);
    assert_eq!(cert.valid_principals(), req().principals.as_slice());
    assert_eq!(cert.key_id(), req().key_id);
    assert_eq!(
        cert.valid_after(),
        NOW - BACKDATE,
        "backdated for clock skew"
    );
    assert_eq!(cert.valid_before(), NOW + 30 * DAY);
    let host_key = PublicKey::from_openssh(&host).unwrap();
    assert_eq!(
        cert.public_key(),
        host_key.key_data(),
        "certifies the host key"
    );
    assert_eq!(cert.signature_key(), ca.key.public_key().key_data());
    cert.validate_at(NOW, [&fingerprint(&ca)]).unwrap();
    // Not valid under another CA, nor before or after its window.
    let other = ca_from_seed(2);
    assert!(cert.validate_at(NOW, [&fingerprint(&other)]).is_err());
    assert!(
        cert.validate_at(NOW - BACKDATE - 1, [&fingerprint(&ca)])
            .is_err()
    );
    assert!(
        cert.validate_at(NOW + 30 * DAY + 1, [&fingerprint(&ca)])
            .is_err()
    );
    // Every signature gets its own nonce and serial.
    let again = Certificate::from_openssh(&ca.sign(&host, &req(), NOW).unwrap()).unwrap();
    assert_ne!(again.nonce(), cert.nonce());
}

#[test]
fn a_good_certificate_is_kept_and_a_stale_one_renewed() {
    let ca = ca_from_seed(1);
    let host = host_key();
    let line = ca.sign(&host, &req(), NOW).unwrap();
    assert!(ca.still_good(&line, &host, &req(), NOW));
    assert!(ca.still_good(&line, &host, &req(), NOW + 19 * DAY));
    // A third of the lifetime left: time to renew.
    assert!(!ca.still_good(&line, &host, &req(), NOW + 21 * DAY));
    // Another host key (the Secret was replaced), other names, another CA, garbage.
    assert!(!ca.still_good(&line, &host_key(), &req(), NOW));
    let mut moved = req();
    moved.principals[0] = "bob.ssh.example.org".into();
    assert!(!ca.still_good(&line, &host, &moved, NOW));
    let mut renamed = req();
    renamed.key_id.push('x');
    assert!(!ca.still_good(&line, &host, &renamed, NOW));
    assert!(!ca_from_seed(2).still_good(&line, &host, &req(), NOW));
    assert!(!ca.still_good("ssh-ed25519-cert-v01@openssh.com AAAA", &host, &req(), NOW));
    assert!(
        !ca.still_good(&host, &host, &req(), NOW),
        "a plain key is no cert"
    );
}

#[test]
fn the_ca_key_must_be_a_plain_openssh_ed25519_key() {
    let e = Ca::from_openssh("not a key", "ns/ca")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ns/ca") && e.contains("host_ca_key"), "{e}");
    let ca = ca_from_seed(3);
    assert!(ca.public_line().starts_with("ssh-ed25519 AAAA"));
    assert_eq!(ca.public_line().split_whitespace().count(), 2, "no comment");
    let host = host_key();
    assert!(ca.sign("ssh-ed25519 garbage", &req(), NOW).is_err());
    assert!(ca.sign(&host, &req(), NOW).is_ok());
}

#[test]
fn the_published_line_trusts_the_pattern_on_every_port() {
    let ca = ca_from_seed(1);
    assert_eq!(
        authority_line("*.ssh.example.org", &ca),
        format!(
            "@cert-authority *.ssh.example.org,[*.ssh.example.org]:* {}",
            ca.public_line()
        )
    );
}

fn cfg(yaml: &str) -> std::result::Result<Config, String> {
    Config::from_yaml(yaml, "t.yaml").map_err(|e| e.to_string())
}

#[test]
fn off_by_default_and_printed_by_check_config() {
    let c = Config::preset(crate::config::Platform::Generic);
    assert_eq!(c.host_keys.ca.secret_name, None);
    assert_eq!(c.host_keys.ca.validity_seconds, 30 * DAY);
    assert!(CaSource::from_config(&c.host_keys.ca).is_none());
    let yaml = c.to_yaml();
    for field in [
        "ca:",
        "secretName: null",
        "validitySeconds: 2592000",
        "hostPattern: null",
    ] {
        assert!(yaml.contains(field), "{field} in\n{yaml}");
    }
}

#[test]
fn the_pattern_comes_from_the_host_template_or_the_config() {
    let on = "hostKeys:\n  ca:\n    secretName: session-ssh-host-ca\n";
    let c = cfg(&format!(
        "{on}ingress:\n  mode: traefik\n  hostTemplate: '{{pod}}.{{namespace}}.ssh.example.org'\n"
    ))
    .unwrap();
    assert_eq!(c.host_ca_pattern().as_deref(), Some("*.ssh.example.org"));
    let c = cfg(&format!(
        "{on}ingress:\n  hostTemplate: '{{label:user}}-ssh.example.org'\n"
    ))
    .unwrap();
    assert_eq!(c.host_ca_pattern().as_deref(), Some("*-ssh.example.org"));
    // Mode none without a template: the Service DNS names.
    assert_eq!(cfg(on).unwrap().host_ca_pattern().as_deref(), Some("*.svc"));
    let c = cfg("hostKeys:\n  ca:\n    secretName: x\n    hostPattern: '*.lab.example'\ningress:\n  hostTemplate: '{pod}.ssh.example.org'\n")
    .unwrap();
    assert_eq!(c.host_ca_pattern().as_deref(), Some("*.lab.example"));
    // Nothing to derive from: a template ending in a placeholder, or a node address.
    let e = cfg(&format!("{on}ingress:\n  hostTemplate: 'ssh.{{pod}}'\n")).unwrap_err();
    assert!(e.contains("hostKeys.ca.hostPattern"), "{e}");
    let e = cfg(&format!("{on}ingress:\n  mode: nodeport\n")).unwrap_err();
    assert!(e.contains("hostKeys.ca.hostPattern"), "{e}");
    assert!(
        cfg(&format!("{on}ingress:\n  mode: nodeport\n").replace(
            "secretName: session-ssh-host-ca\n",
            "secretName: session-ssh-host-ca\n    hostPattern: '10.0.0.*'\n"
        ))
        .is_ok()
    );
}

#[test]
fn bad_ca_settings_name_their_field() {
    for (yaml, field) in [
        (
            "hostKeys:\n  ca:\n    secretName: Bad_Name\n",
            "hostKeys.ca.secretName",
        ),
        (
            "hostKeys:\n  ca:\n    secretName: x\n    namespace: a.b\n",
            "hostKeys.ca.namespace",
        ),
        (
            "hostKeys:\n  ca:\n    secretName: x\n    validitySeconds: 60\n",
            "hostKeys.ca.validitySeconds",
        ),
        (
            "hostKeys:\n  ca:\n    secretName: x\n    hostPattern: '*'\n",
            "hostKeys.ca.hostPattern",
        ),
        (
            "hostKeys:\n  ca:\n    secretName: x\n    hostPattern: 'a b'\n",
            "hostKeys.ca.hostPattern",
        ),
        (
            "hostKeys:\n  enabled: false\n  ca:\n    secretName: x\n",
            "hostKeys.ca.secretName",
        ),
        ("hostKeys:\n  ca:\n    secret: x\n", "hostKeys.ca"),
    ] {
        let e = cfg(yaml).unwrap_err();
        assert!(e.contains(field), "{yaml}: {e}");
    }
}

#[test]
fn the_source_uses_the_webhook_namespace_unless_configured() {
    let c = cfg("hostKeys:\n  ca:\n    secretName: host-ca\n    namespace: sec\n").unwrap();
    let src = CaSource::from_config(&c.host_keys.ca).unwrap();
    assert_eq!(src.secret(), "sec/host-ca");
}
