//! Unit tests for authorized_keys parsing and authorization. Fixtures in `testdata/` were made
//! with OpenSSH's `ssh-keygen` (test-only keys; the private halves were deleted).

use super::*;
use ssh_key::PrivateKey;
use ssh_key::certificate::Builder;
use ssh_key::private::Ed25519Keypair;
use std::time::Duration;

const CA_PUB: &str = include_str!("testdata/ca.pub");
const RSA_CA_PUB: &str = include_str!("testdata/rsa_ca.pub");
const USER_PUB: &str = include_str!("testdata/user.pub");
const CERT_ALICE_BOB: &str = include_str!("testdata/user_alice_bob-cert.pub");
const CERT_FORCED: &str = include_str!("testdata/user_forced-cert.pub");
const CERT_HOST: &str = include_str!("testdata/host-cert.pub");
const CERT_RSA_CA: &str = include_str!("testdata/user_rsa_ca-cert.pub");
const CERT_EXPIRED: &str = include_str!("testdata/user_expired-cert.pub");
const RSA3072: &str = include_str!("testdata/rsa3072.pub");
const RSA1024: &str = include_str!("testdata/rsa1024.pub");
const ECDSA256: &str = include_str!("testdata/ecdsa256.pub");
const ECDSA384: &str = include_str!("testdata/ecdsa384.pub");

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn pk(line: &str) -> PublicKey {
    PublicKey::from_openssh(line.trim()).unwrap()
}

fn cert(text: &str) -> Certificate {
    Certificate::from_openssh(text.trim()).unwrap()
}

/// A deterministic ed25519 key from a one-byte seed.
fn seeded(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn line_for(key: &PrivateKey, options: &str, comment: &str) -> String {
    let pubkey = key.public_key().to_openssh().unwrap();
    let sep = if options.is_empty() { "" } else { " " };
    format!("{options}{sep}{pubkey} {comment}")
}

fn accept(d: Decision) -> Permissions {
    match d {
        Decision::Accept(p) => p,
        Decision::Reject(r) => panic!("expected accept, got reject: {r}"),
    }
}

fn reject(d: Decision) -> String {
    match d {
        Decision::Reject(r) => r,
        Decision::Accept(p) => panic!("expected reject, got accept: {p:?}"),
    }
}

#[test]
fn parses_every_supported_key_type_and_skips_blank_and_comments() {
    let text = format!(
        "# a comment\n\n   \n{}\n\t{}\n{}\n{}\n",
        USER_PUB.trim(),
        RSA3072.trim(),
        ECDSA256.trim(),
        ECDSA384.trim()
    );
    let (keys, refused) = AuthorizedKeys::parse(&text, "f");
    assert!(refused.is_empty(), "{refused:?}");
    let types: Vec<String> = keys.entries().iter().map(Entry::key_type).collect();
    assert_eq!(
        types,
        [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384"
        ]
    );
    let lines: Vec<usize> = keys.entries().iter().map(Entry::line).collect();
    assert_eq!(lines, [4, 5, 6, 7]);
    let e = &keys.entries()[0];
    assert_eq!(e.comment(), "test-only-user");
    assert_eq!(e.text(), USER_PUB.trim());
    assert_eq!(
        e.fingerprint(),
        pk(USER_PUB).fingerprint(HashAlg::Sha256).to_string()
    );
    assert!(e.fingerprint().starts_with("SHA256:"));
}

#[test]
fn windows_line_endings_and_bom() {
    let text = format!(
        "\u{feff}{}\r\n# c\r\n{}\r\n",
        USER_PUB.trim(),
        ECDSA256.trim()
    );
    let (keys, refused) = AuthorizedKeys::parse(&text, "win");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(keys.entries().len(), 2);
    assert_eq!(keys.entries()[1].line(), 3);
    assert_eq!(keys.entries()[1].comment(), "ecdsa256");
}

#[test]
fn refuses_bad_lines_with_source_and_line_number() {
    let good = USER_PUB.trim();
    let truncated = &good[..good.len() - 20];
    let text = [
        "garbage line here",
        truncated,
        &format!("no-such-opt {good}"),
        RSA1024.trim(),
        "ssh-ed25519",
        "ssh-ed25519 !!!notbase64!!!",
        CERT_ALICE_BOB.trim(),
        &format!("ssh-rsa {}", &good["ssh-ed25519 ".len()..]),
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        good,
    ]
    .join("\n");
    let (keys, refused) = AuthorizedKeys::parse(&text, "/src/keys");
    assert_eq!(keys.entries().len(), 1);
    assert_eq!(keys.entries()[0].line(), 10);
    let lines: Vec<usize> = refused.iter().map(|r| r.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(refused.iter().all(|r| r.source == "/src/keys"));
    assert!(
        refused[2].reason.contains("unknown option"),
        "{}",
        refused[2]
    );
    assert!(refused[3].reason.contains("1024 bits"), "{}", refused[3]);
    assert!(
        refused[6].reason.contains("cert-authority"),
        "{}",
        refused[6]
    );
    assert_eq!(refused[0].to_string().split(':').next(), Some("/src/keys"));
}

#[test]
fn plain_key_accepts_with_default_permissions() {
    let (keys, _) = AuthorizedKeys::parse(USER_PUB, "ak");
    let p = accept(keys.authorize_key(&pk(USER_PUB), ip("10.0.0.1"), now()));
    assert!(p.pty && p.port_forwarding && p.agent_forwarding && p.x11_forwarding);
    assert_eq!(p.command, None);
    assert!(p.may_open("example.org", 443));
    assert_eq!(p.source, "ak:1");
    // A different key is refused; so is the right key without a peer address (no from=: ok).
    let other = seeded(7);
    reject(keys.authorize_key(other.public_key(), ip("10.0.0.1"), now()));
    accept(keys.authorize_key(&pk(USER_PUB), None, now()));
}

#[test]
fn restrict_and_no_options_are_enforced() {
    let k = seeded(1);
    let (keys, refused) = AuthorizedKeys::parse(&line_for(&k, "restrict,pty", "r"), "ak");
    assert!(refused.is_empty());
    let p = accept(keys.authorize_key(k.public_key(), None, now()));
    assert!(p.pty);
    assert!(!p.port_forwarding && !p.agent_forwarding && !p.x11_forwarding);
    assert!(!p.may_open("localhost", 80));

    let (keys, _) = AuthorizedKeys::parse(&line_for(&k, "no-pty,no-agent-forwarding", "r"), "ak");
    let p = accept(keys.authorize_key(k.public_key(), None, now()));
    assert!(!p.pty && !p.agent_forwarding && p.port_forwarding && p.x11_forwarding);
}

#[test]
fn command_and_permitopen() {
    let k = seeded(2);
    let line = line_for(
        &k,
        r#"command="echo \"hi there\"",permitopen="db.internal:5432",permitopen="[::1]:*""#,
        "c",
    );
    let (keys, refused) = AuthorizedKeys::parse(&line, "ak");
    assert!(refused.is_empty(), "{refused:?}");
    let p = accept(keys.authorize_key(k.public_key(), None, now()));
    assert_eq!(p.command.as_deref(), Some(r#"echo "hi there""#));
    assert!(p.may_open("db.internal", 5432));
    assert!(p.may_open("DB.INTERNAL", 5432));
    assert!(!p.may_open("db.internal", 5433));
    assert!(!p.may_open("other", 5432));
    assert!(p.may_open("::1", 22));
    assert!(p.may_open("[::1]", 8080));
}

#[test]
fn permitopen_parsing() {
    let p = PermitOpen::parse("*:*").unwrap();
    assert!(p.allows("anything", 1));
    let p = PermitOpen::parse("host:*").unwrap();
    assert!(p.allows("host", 65535) && !p.allows("hos", 1));
    let p = PermitOpen::parse("*:22").unwrap();
    assert!(p.allows("x", 22) && !p.allows("x", 23));
    for bad in [
        "host",
        "host:",
        ":22",
        "host:0",
        "host:70000",
        "::1:22",
        "[::1]",
        "a b:1",
    ] {
        assert!(PermitOpen::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn from_patterns_enforced() {
    let k = seeded(3);
    let line = line_for(&k, r#"from="127.0.0.0/8,!127.0.0.2,10.1.*""#, "f");
    let (keys, refused) = AuthorizedKeys::parse(&line, "ak");
    assert!(refused.is_empty(), "{refused:?}");
    accept(keys.authorize_key(k.public_key(), ip("127.0.0.1"), now()));
    accept(keys.authorize_key(k.public_key(), ip("10.1.9.9"), now()));
    accept(keys.authorize_key(k.public_key(), ip("::ffff:127.0.0.1"), now()));
    let r = reject(keys.authorize_key(k.public_key(), ip("127.0.0.2"), now()));
    assert!(r.contains("from="), "{r}");
    reject(keys.authorize_key(k.public_key(), ip("192.168.0.1"), now()));
    // Unknown peer with from=: fail closed.
    reject(keys.authorize_key(k.public_key(), None, now()));
}

#[test]
fn later_line_with_same_key_can_grant() {
    let k = seeded(4);
    let text = format!(
        "{}\n{}",
        line_for(&k, r#"from="10.0.0.1""#, "a"),
        line_for(&k, "no-pty", "b")
    );
    let (keys, _) = AuthorizedKeys::parse(&text, "ak");
    let p = accept(keys.authorize_key(k.public_key(), ip("10.0.0.9"), now()));
    assert_eq!(p.source, "ak:2");
    assert!(!p.pty);
}

#[test]
fn expiry_time() {
    let k = seeded(5);
    let (keys, _) = AuthorizedKeys::parse(&line_for(&k, r#"expiry-time="20300101""#, "e"), "ak");
    let t2030 = UNIX_EPOCH + Duration::from_secs(options::parse_expiry("20300101").unwrap());
    accept(keys.authorize_key(k.public_key(), None, t2030 - Duration::from_secs(1)));
    accept(keys.authorize_key(k.public_key(), None, t2030));
    let r = reject(keys.authorize_key(k.public_key(), None, t2030 + Duration::from_secs(1)));
    assert!(r.contains("expiry"), "{r}");
    let (keys, _) =
        AuthorizedKeys::parse(&line_for(&k, r#"expiry-time="202001011200Z""#, "e"), "ak");
    reject(keys.authorize_key(k.public_key(), None, now()));
}

#[test]
fn cert_authority_key_is_not_a_login_key() {
    let text = format!("cert-authority {}", CA_PUB.trim());
    let (keys, refused) = AuthorizedKeys::parse(&text, "ak");
    assert!(refused.is_empty());
    assert!(keys.entries()[0].is_cert_authority());
    reject(keys.authorize_key(&pk(CA_PUB), None, now()));
}

#[test]
fn ssh_keygen_certificate_with_user_name_or_principals() {
    let c = cert(CERT_ALICE_BOB);
    let (keys, _) = AuthorizedKeys::parse(&format!("cert-authority {}", CA_PUB.trim()), "ak");
    let p = accept(keys.authorize_cert(&c, "alice", ip("127.0.0.1"), now()));
    assert_eq!(
        p.fingerprint,
        pk(USER_PUB).fingerprint(HashAlg::Sha256).to_string()
    );
    // ssh-keygen's default extensions grant everything.
    assert!(p.pty && p.port_forwarding && p.agent_forwarding && p.x11_forwarding);
    accept(keys.authorize_cert(&c, "bob", None, now()));
    let r = reject(keys.authorize_cert(&c, "mallory", None, now()));
    assert!(r.contains("principals"), "{r}");

    // principals= replaces the user-name check.
    let (keys, _) = AuthorizedKeys::parse(
        &format!(r#"cert-authority,principals="bob,carol" {}"#, CA_PUB.trim()),
        "ak",
    );
    accept(keys.authorize_cert(&c, "jovyan", None, now()));
    let (keys, _) = AuthorizedKeys::parse(
        &format!(r#"cert-authority,principals="carol" {}"#, CA_PUB.trim()),
        "ak",
    );
    reject(keys.authorize_cert(&c, "alice", None, now()));

    // Same CA key without cert-authority does not accept certificates.
    let (keys, _) = AuthorizedKeys::parse(CA_PUB, "ak");
    reject(keys.authorize_cert(&c, "alice", None, now()));
    // A different CA does not either.
    let (keys, _) = AuthorizedKeys::parse(&format!("cert-authority {}", RSA_CA_PUB.trim()), "ak");
    reject(keys.authorize_cert(&c, "alice", None, now()));
}

#[test]
fn certificate_critical_options_are_honoured() {
    let c = cert(CERT_FORCED);
    let (keys, _) = AuthorizedKeys::parse(&format!("cert-authority {}", CA_PUB.trim()), "ak");
    let p = accept(keys.authorize_cert(&c, "alice", ip("127.0.0.5"), now()));
    assert_eq!(p.command.as_deref(), Some("echo forced"));
    assert!(!p.pty, "cert made with -O no-pty");
    accept(keys.authorize_cert(&c, "alice", ip("::1"), now()));
    let r = reject(keys.authorize_cert(&c, "alice", ip("10.0.0.1"), now()));
    assert!(r.contains("source-address"), "{r}");
    reject(keys.authorize_cert(&c, "alice", None, now()));

    // command= on the CA line must agree with force-command.
    let (keys, _) = AuthorizedKeys::parse(
        &format!(r#"cert-authority,command="other" {}"#, CA_PUB.trim()),
        "ak",
    );
    reject(keys.authorize_cert(&c, "alice", ip("127.0.0.1"), now()));
    let (keys, _) = AuthorizedKeys::parse(
        &format!(r#"cert-authority,command="echo forced" {}"#, CA_PUB.trim()),
        "ak",
    );
    accept(keys.authorize_cert(&c, "alice", ip("127.0.0.1"), now()));
}

#[test]
fn certificate_type_window_and_rsa_ca() {
    let (keys, _) = AuthorizedKeys::parse(
        &format!(
            "cert-authority {}\ncert-authority,restrict {}",
            CA_PUB.trim(),
            RSA_CA_PUB.trim()
        ),
        "ak",
    );
    let r = reject(keys.authorize_cert(&cert(CERT_HOST), "alice", None, now()));
    assert!(r.contains("user certificate"), "{r}");
    let r = reject(keys.authorize_cert(&cert(CERT_EXPIRED), "alice", None, now()));
    assert!(r.contains("not valid now"), "{r}");
    // ssh-keygen signs with rsa-sha2-512 by default: accepted, and restrict applies.
    let p = accept(keys.authorize_cert(&cert(CERT_RSA_CA), "alice", None, now()));
    assert!(!p.pty && !p.port_forwarding);
    assert_eq!(p.source, "ak:2");
}

/// A certificate built in-process, signed by `ca`, for `user_key`.
fn build_cert(
    ca: &PrivateKey,
    user_key: &PrivateKey,
    principals: &[&str],
    critical: &[(&str, &str)],
    extensions: &[&str],
    window: (u64, u64),
) -> Certificate {
    let mut b = Builder::new(
        [9u8; 32],
        user_key.public_key().key_data().clone(),
        window.0,
        window.1,
    )
    .unwrap();
    b.cert_type(CertType::User).unwrap();
    if principals.is_empty() {
        b.all_principals_valid().unwrap();
    }
    for p in principals {
        b.valid_principal(*p).unwrap();
    }
    for (k, v) in critical {
        b.critical_option(*k, *v).unwrap();
    }
    for e in extensions {
        b.extension(*e, "").unwrap();
    }
    b.sign(ca).unwrap()
}

#[test]
fn built_certificates_edge_cases() {
    let ca = seeded(10);
    let user = seeded(11);
    let ca_line = format!("cert-authority {}", ca.public_key().to_openssh().unwrap());
    let (keys, _) = AuthorizedKeys::parse(&ca_line, "ak");
    let t = unix_seconds(now());
    let all = ["permit-pty", "permit-port-forwarding"];

    let good = build_cert(&ca, &user, &["u"], &[], &all, (t - 10, t + 3600));
    let p = accept(keys.authorize_cert(&good, "u", None, now()));
    assert!(p.pty && p.port_forwarding && !p.agent_forwarding && !p.x11_forwarding);

    // No principals ("valid for everyone"): refused here, on purpose.
    let any = build_cert(&ca, &user, &[], &[], &all, (t - 10, t + 3600));
    reject(keys.authorize_cert(&any, "u", None, now()));

    // Unknown critical option: refused.
    let crit = build_cert(
        &ca,
        &user,
        &["u"],
        &[("verify-required", "")],
        &all,
        (t - 10, t + 3600),
    );
    let r = reject(keys.authorize_cert(&crit, "u", None, now()));
    assert!(r.contains("critical option"), "{r}");

    // Malformed source-address: refused.
    let bad_src = build_cert(
        &ca,
        &user,
        &["u"],
        &[("source-address", "nonsense")],
        &all,
        (t - 10, t + 3600),
    );
    reject(keys.authorize_cert(&bad_src, "u", ip("127.0.0.1"), now()));

    // Not yet valid, and exactly at valid_before (exclusive).
    let future = build_cert(&ca, &user, &["u"], &[], &all, (t + 100, t + 200));
    reject(keys.authorize_cert(&future, "u", None, now()));
    let edge = build_cert(&ca, &user, &["u"], &[], &all, (t - 100, t));
    reject(keys.authorize_cert(&edge, "u", None, UNIX_EPOCH + Duration::from_secs(t)));

    // Tampered certificate: signature no longer verifies.
    let mut bytes = good.to_bytes().unwrap();
    let pos = bytes.windows(32).position(|w| w == [9u8; 32]).unwrap();
    bytes[pos] ^= 1;
    let tampered = Certificate::from_bytes(&bytes).unwrap();
    let r = reject(keys.authorize_cert(&tampered, "u", None, now()));
    assert!(r.contains("signature"), "{r}");

    // Signed by another CA with the same structure.
    let rogue = build_cert(&seeded(12), &user, &["u"], &[], &all, (t - 10, t + 3600));
    reject(keys.authorize_cert(&rogue, "u", None, now()));

    // expiry-time and from= on the CA line apply to certificates too.
    let (keys, _) = AuthorizedKeys::parse(
        &format!(r#"from="10.0.0.0/8",expiry-time="20200101" {}"#, &ca_line),
        "ak",
    );
    assert_eq!(
        keys.entries().len(),
        0,
        "options must precede cert-authority's key"
    );
    let (keys, refused) = AuthorizedKeys::parse(
        &format!(
            r#"cert-authority,from="10.0.0.0/8" {}"#,
            ca.public_key().to_openssh().unwrap()
        ),
        "ak",
    );
    assert!(refused.is_empty(), "{refused:?}");
    accept(keys.authorize_cert(&good, "u", ip("10.2.3.4"), now()));
    reject(keys.authorize_cert(&good, "u", ip("11.2.3.4"), now()));
}

#[test]
fn load_reads_file_and_reports_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authorized_keys");
    std::fs::write(&path, format!("junk\n{USER_PUB}")).unwrap();
    let keys = AuthorizedKeys::load(&path).unwrap();
    assert_eq!(keys.entries().len(), 1);
    assert_eq!(keys.entries()[0].source(), path.display().to_string());
    assert!(matches!(
        AuthorizedKeys::load(&dir.path().join("missing")),
        Err(Error::Read { .. })
    ));
}

#[test]
fn never_panics_on_odd_input() {
    let inputs = [
        "\u{0}\u{1}\u{2}",
        "\"\"\"",
        "=,=,=",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",
        "restrict,",
        "restrict ",
        "from=\"\" ssh-ed25519 AAAA",
        "ecdsa-sha2-nistp256 AAAAC3NzaC1lZDI1NTE5AAAAIBl",
        "cert-authority,principals=\"\\\"\" ssh-ed25519 AAAA",
        "\u{feff}ssh-ed25519 x",
        "command=\"\\",
    ];
    for input in inputs {
        let (keys, refused) = AuthorizedKeys::parse(input, "fuzz");
        assert_eq!(keys.entries().len(), 0, "{input:?}");
        assert_eq!(refused.len(), 1, "{input:?}");
    }
}

mod passports {
    use super::*;
    use crate::keys::passport::{self, Holder, Vouched};
    use std::time::Duration;

    fn vouched(fp: &str, client: &str) -> Vouched {
        Vouched {
            holder: Holder::Key(fp.to_owned()),
            client: client.parse().unwrap(),
            key_id: "gw-conn-7".into(),
        }
    }

    fn mint_for(ca: &PrivateKey, principal: &str, v: &Vouched, at: SystemTime) -> Certificate {
        passport::mint(ca, seeded(50).public_key(), principal, v, [9; 32], at).unwrap()
    }

    #[test]
    fn round_trip_then_the_sessions_own_entry_decides() {
        let (ca, user) = (seeded(40), seeded(41));
        let fp = user.public_key().fingerprint(HashAlg::Sha256).to_string();
        let cert = mint_for(&ca, "sess-a", &vouched(&fp, "203.0.113.9"), now());
        let got = passport::verify(&cert, ca.public_key(), "sess-a", now()).unwrap();
        assert_eq!(got, vouched(&fp, "203.0.113.9"));

        // restrict and from= of that key's line apply, against the real client address.
        let text = line_for(&user, "restrict,from=\"203.0.113.0/24\"", "u");
        let (keys, bad) = AuthorizedKeys::parse(&text, "ak");
        assert!(bad.is_empty());
        let perms = accept(keys.authorize_vouched(&fp, got.client, now()));
        assert!(!perms.pty && !perms.port_forwarding);
        let r = reject(keys.authorize_vouched(&fp, ip("198.51.100.1").unwrap(), now()));
        assert!(r.contains("from="), "{r}");
        // A key the session does not list is refused.
        let other = seeded(42)
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        reject(keys.authorize_vouched(&other, got.client, now()));
    }

    #[test]
    fn another_session_another_ca_and_expiry_are_refused() {
        let ca = seeded(40);
        let v = vouched("SHA256:abc", "10.0.0.1");
        let cert = mint_for(&ca, "sess-a", &v, now());
        let e = passport::verify(&cert, ca.public_key(), "sess-b", now()).unwrap_err();
        assert!(e.contains("principals"), "{e}");
        let e = passport::verify(&cert, seeded(43).public_key(), "sess-a", now()).unwrap_err();
        assert!(e.contains("signature"), "{e}");
        assert!(!passport::is_from(&cert, seeded(43).public_key()));
        let later = now() + Duration::from_secs(passport::MAX_LIFETIME_SECS + 1);
        let e = passport::verify(&cert, ca.public_key(), "sess-a", later).unwrap_err();
        assert!(e.contains("not valid now"), "{e}");
    }

    #[test]
    fn a_certificate_with_other_options_or_a_long_life_is_no_passport() {
        let ca = seeded(40);
        let subject = seeded(50);
        let t = unix_seconds(now());
        let build = |lifetime: u64, opt: Option<(&str, &str)>| {
            let mut b = ssh_key::certificate::Builder::new(
                vec![1; 16],
                subject.public_key().key_data().clone(),
                t - 10,
                t - 10 + lifetime,
            )
            .unwrap();
            b.cert_type(CertType::User).unwrap();
            b.valid_principal("sess-a").unwrap();
            b.critical_option(passport::OPT_USER_KEY, "SHA256:x")
                .unwrap();
            b.critical_option(passport::OPT_CLIENT, "10.0.0.1").unwrap();
            if let Some((k, v)) = opt {
                b.critical_option(k, v).unwrap();
            }
            b.sign(&ca).unwrap()
        };
        passport::verify(&build(120, None), ca.public_key(), "sess-a", now()).unwrap();
        let e = passport::verify(&build(3600, None), ca.public_key(), "sess-a", now());
        assert!(e.unwrap_err().contains("lifetime"));
        let e = passport::verify(
            &build(120, Some(("force-command", "id"))),
            ca.public_key(),
            "sess-a",
            now(),
        );
        assert!(e.unwrap_err().contains("unknown option"));
        let e = passport::verify(
            &build(120, Some((passport::OPT_HUB_USER, "alice"))),
            ca.public_key(),
            "sess-a",
            now(),
        );
        assert!(e.unwrap_err().contains("exactly one holder"));
    }
}
