//! Tests for `install`: real files in temporary directories, the real copy of this binary.

use super::*;
use session_ssh_contract::names::file::{AUTHORIZED_KEYS, BIN, INSTALL_REPORT as REPORT};
use std::os::unix::fs::{MetadataExt, symlink};

const USER_PUB: &str = include_str!("../../contract/src/keys/testdata/user.pub");
const ECDSA_PUB: &str = include_str!("../../contract/src/keys/testdata/ecdsa256.pub");
const RSA_PUB: &str = include_str!("../../contract/src/keys/testdata/rsa3072.pub");

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    session_ssh_contract::wildcard::matches(pattern, text, false)
}

#[test]
fn wildcard_matching() {
    assert!(wildcard(b"*", b"anything"));
    assert!(wildcard(b"proj-?", b"proj-1"));
    assert!(!wildcard(b"proj-?", b"proj-12"));
    assert!(wildcard(b"*.pub", b"id.pub"));
    assert!(!wildcard(b"*.pub", b"id.PUB"), "paths are case-sensitive");
    assert!(wildcard(b"a*b*c", b"aXbYc"));
    assert!(!wildcard(b"a*b*c", b"aXbY"));
}

#[test]
fn glob_over_repo_folders() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("work/alpha/.ssh/authorized_keys"), "a");
    write(&r.join("work/beta/.ssh/authorized_keys"), "b");
    write(&r.join("work/gamma/README"), "no keys here");
    write(&r.join("work/.hidden/.ssh/authorized_keys"), "hidden");
    fs::create_dir_all(r.join("work/dir/.ssh/authorized_keys")).unwrap();
    let pattern = format!("{}/work/*/.ssh/authorized_keys", r.display());
    let got = expand(&pattern);
    assert_eq!(
        got,
        vec![
            r.join("work/alpha/.ssh/authorized_keys"),
            r.join("work/beta/.ssh/authorized_keys")
        ]
    );
    // Literal paths, missing paths, directories.
    let lit = r.join("work/alpha/.ssh/authorized_keys");
    assert_eq!(expand(&lit.display().to_string()), vec![lit]);
    assert!(expand(&format!("{}/nope/*/x", r.display())).is_empty());
    assert!(expand(&format!("{}/work/dir/.ssh/authorized_keys", r.display())).is_empty());
    // A dot pattern component matches dot entries.
    assert_eq!(expand(&format!("{}/work/.h*/.ssh/*", r.display())).len(), 1);
}

#[test]
fn secret_mount_layout_is_read_once_per_key_file() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret");
    let real = secret.join("..2025_01_01_00_00_00.123");
    write(&real.join("alice"), USER_PUB);
    write(&real.join("bob"), &format!("# bob's keys\n{ECDSA_PUB}"));
    symlink("..2025_01_01_00_00_00.123", secret.join("..data")).unwrap();
    symlink("..data/alice", secret.join("alice")).unwrap();
    symlink("..data/bob", secret.join("bob")).unwrap();
    let (entries, refused, missing) = gather(&[], std::slice::from_ref(&secret));
    assert!(
        refused.is_empty() && missing.is_empty(),
        "{refused:?} {missing:?}"
    );
    let sources: Vec<&str> = entries.iter().map(Entry::source).collect();
    assert_eq!(
        sources,
        vec![
            secret.join("alice").display().to_string(),
            secret.join("bob").display().to_string()
        ]
    );
    assert_eq!(entries[1].line(), 2);
}

#[test]
fn full_install_writes_binary_keys_report_and_host_key() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let dir = r.join("opt/session-ssh");
    write(
        &r.join("work/proj/.ssh/authorized_keys"),
        &format!("garbage\n{USER_PUB}restrict,bogus {RSA_PUB}"),
    );
    write(&r.join("secret/keys"), &format!("{ECDSA_PUB}{USER_PUB}"));
    let opts = Options {
        dir: dir.clone(),
        keys: vec![
            format!("{}/work/*/.ssh/authorized_keys", r.display()),
            format!("{}/missing/authorized_keys", r.display()),
        ],
        keys_dirs: vec![r.join("secret"), r.join("no-such-secret")],
        host_key_dir: Some(r.join("no-host-key")),
        session_uid: Some(nix::unistd::geteuid().as_raw()),
    };
    let report = run(&opts);
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // Binary: a byte copy of the running test executable, 0755.
    let bin = dir.join(BIN);
    let meta = fs::metadata(&bin).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o755);
    assert_eq!(meta.len(), fs::metadata("/proc/self/exe").unwrap().len());

    // Keys: user (repo, first wins) and ecdsa (secret); the secret's copy of user is a duplicate.
    let repo = r
        .join("work/proj/.ssh/authorized_keys")
        .display()
        .to_string();
    let secret = r.join("secret/keys").display().to_string();
    let accepted: Vec<(String, usize)> = report
        .accepted
        .iter()
        .map(|a| (a.source.clone(), a.line))
        .collect();
    assert_eq!(accepted, vec![(repo.clone(), 2), (secret.clone(), 1)]);
    assert_eq!(report.accepted[0].key_type, "ssh-ed25519");
    assert_eq!(report.accepted[0].comment, "test-only-user");
    let refused: Vec<(String, usize)> = report
        .refused
        .iter()
        .map(|a| (a.source.clone(), a.line))
        .collect();
    assert_eq!(refused, vec![(repo.clone(), 1), (repo.clone(), 3)]);
    assert!(report.refused[1].reason.contains("bogus"));
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!(report.duplicates[0].first, format!("{repo}:2"));
    assert_eq!(report.missing.len(), 2);

    // The merged file parses back to exactly the accepted keys, each with its source above.
    let text = fs::read_to_string(dir.join(AUTHORIZED_KEYS)).unwrap();
    assert!(text.contains(&format!("# {repo}:2\n{}", USER_PUB.trim())));
    let (merged, bad) = AuthorizedKeys::parse(&text, "merged");
    assert!(bad.is_empty());
    let fps: Vec<&str> = merged.entries().iter().map(Entry::fingerprint).collect();
    let want: Vec<&str> = report
        .accepted
        .iter()
        .map(|a| a.fingerprint.as_str())
        .collect();
    assert_eq!(fps, want);

    // Report on disk matches; host key generated and private (we are the session uid).
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(REPORT)).unwrap()).unwrap();
    assert_eq!(json["accepted"].as_array().unwrap().len(), 2);
    assert_eq!(json["refused"][0]["line"], 1);
    assert_eq!(json["accepted"][0]["type"], "ssh-ed25519");
    assert_eq!(json["host_key"]["origin"], "generated");
    let hk = fs::metadata(dir.join(session_ssh_contract::names::file::HOST_KEY)).unwrap();
    assert_eq!(hk.mode() & 0o777, 0o600);

    // Second run (init container re-run): same keys, host key kept.
    let again = run(&opts);
    assert_eq!(again.accepted, report.accepted);
    assert_eq!(again.host_key.unwrap().origin, "kept");
}

#[test]
fn unknown_session_uid_hands_off_key_readable() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    let report = run(&Options {
        dir: dir.clone(),
        ..Options::default()
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.accepted.is_empty());
    let hk = fs::metadata(dir.join(session_ssh_contract::names::file::HOST_KEY)).unwrap();
    assert_eq!(hk.mode() & 0o777, 0o644);
    // An empty key set still writes a (comment-only) authorized_keys.
    let text = fs::read_to_string(dir.join(AUTHORIZED_KEYS)).unwrap();
    assert!(text.lines().all(|l| l.starts_with('#')));
}

#[test]
fn odd_dir_is_reported_not_fatal() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let report = run(&Options {
        dir: file,
        keys: vec!["/nonexistent/*/keys".into()],
        ..Options::default()
    });
    assert!(report.errors.len() >= 3, "{:?}", report.errors);
    assert_eq!(report.missing, vec!["/nonexistent/*/keys".to_string()]);
}
