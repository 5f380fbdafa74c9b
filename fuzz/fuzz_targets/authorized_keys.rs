//! authorized_keys text (key lines and their options: `from=`, `permitopen=`, `restrict`,
//! `command=`, `expiry-time=`, `cert-authority`, ...): never a panic, and
//! - every non-empty, non-comment line is either accepted or refused, never both;
//! - an accepted line, parsed again on its own, is accepted as the same key and kind;
//! - an accepted plain key authorizes (or refuses with a reason) without a panic, and an
//!   accepted login names the line's fingerprint and place.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use session_ssh_contract::keys::{AuthorizedKeys, Decision};
use ssh_key::PublicKey;

const PEERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (keys, refused) = AuthorizedKeys::parse(&text, "fuzz");
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: BTreeSet<usize> = body
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .map(|(i, _)| i + 1)
        .collect();
    let accepted: BTreeSet<usize> = keys.entries().iter().map(|e| e.line()).collect();
    let refused_lines: BTreeSet<usize> = refused.iter().map(|r| r.line).collect();
    assert_eq!(
        accepted.len(),
        keys.entries().len(),
        "a line accepted twice"
    );
    assert_eq!(refused_lines.len(), refused.len(), "a line refused twice");
    assert!(
        accepted.is_disjoint(&refused_lines),
        "a line both accepted and refused"
    );
    let all: BTreeSet<usize> = accepted.union(&refused_lines).copied().collect();
    assert_eq!(all, lines, "accepted + refused must be the key lines");
    for r in &refused {
        assert!(
            !r.reason.trim().is_empty(),
            "refused without a reason: line {}",
            r.line
        );
    }
    for e in keys.entries() {
        let (alone, no) = AuthorizedKeys::parse(e.text(), "again");
        assert!(
            no.is_empty(),
            "{:?} accepted, then refused alone: {no:?}",
            e.text()
        );
        let [again] = alone.entries() else {
            panic!("{:?} accepted, then not one entry alone", e.text());
        };
        assert_eq!(again.fingerprint(), e.fingerprint());
        assert_eq!(again.is_cert_authority(), e.is_cert_authority());
        let key = PublicKey::new(e.key().clone(), "");
        for peer in PEERS.into_iter().map(Some).chain([None]) {
            match keys.authorize_key(&key, peer, SystemTime::now()) {
                Decision::Accept(p) => {
                    assert!(!e.is_cert_authority() || keys.entries().len() > 1);
                    assert_eq!(p.fingerprint, e.fingerprint());
                    assert!(p.source.starts_with("fuzz:"), "{}", p.source);
                    let _ = p.may_open("localhost", 22);
                }
                Decision::Reject(reason) => assert!(!reason.is_empty()),
            }
        }
    }
});
