//! init-sshd e2e: keys added while the session runs take effect without a restart, and a
//! removed key is refused (issue 14, item 4). Sources as in a pod: the `--keys` file (the
//! project repo's file), a `--keys-dir` laid out and updated like the kubelet updates a
//! mounted Secret or the annotation's downward-API file, and `~/.ssh/authorized_keys`.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::os::unix::fs::chown;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Builder, KeyPair, Sshd, T, secretdir};

/// Within this a change must be seen (serve re-reads every second in this test).
const W: Duration = Duration::from_secs(15);

fn logs_in(s: &Sshd, key: &KeyPair) -> bool {
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&key.private))
        .env_remove("SSH_AUTH_SOCK")
        .arg(s.host())
        .arg("echo in");
    let out = run(&mut c, b"", T);
    out.success() && out.stdout_str() == "in\n"
}

fn until(s: &Sshd, key: &KeyPair, want: bool) -> bool {
    let end = Instant::now() + W;
    while Instant::now() < end {
        if logs_in(s, key) == want {
            return true;
        }
        sleep(Duration::from_millis(300));
    }
    false
}

#[test]
fn keys_added_to_every_source_log_in_without_restart_and_removed_ones_are_refused() {
    let b = Builder::new()
        .image_env("INIT_SSHD_KEYS_REFRESH_SECS", "1")
        .keys_dir();
    let repo = b.keygen("id_repo", "ed25519");
    let secret = b.keygen("id_secret", "ed25519");
    let home = b.keygen("id_home", "ed25519");
    let s = b.start();
    for k in [&repo, &secret, &home] {
        assert!(!logs_in(&s, k), "{} logs in before it was added", k.public);
    }

    let repo_file = s.root.join("keys-src/authorized_keys");
    let secret_dir = s.root.join("keys-secret");
    let ssh_dir = s.home.join(".ssh");
    fs::write(
        &repo_file,
        format!("{}\n{}\n", s.client.public, repo.public),
    )
    .expect("repo");
    secretdir::update(
        &secret_dir,
        &[("authorized_keys", &format!("{}\n", secret.public))],
    );
    fs::create_dir_all(&ssh_dir).expect("mkdir ~/.ssh");
    fs::write(
        ssh_dir.join("authorized_keys"),
        format!("{}\n", home.public),
    )
    .expect("home");
    for p in [&ssh_dir, &ssh_dir.join("authorized_keys")] {
        chown(p, Some(1000), Some(100)).expect("chown");
    }
    for (what, k) in [
        ("repo file", &repo),
        ("Secret", &secret),
        ("home file", &home),
    ] {
        assert!(
            until(&s, k, true),
            "key added to the {what} refused\n{}",
            s.logs()
        );
    }

    fs::write(&repo_file, format!("{}\n", s.client.public)).expect("repo");
    secretdir::update(&secret_dir, &[]);
    fs::remove_file(ssh_dir.join("authorized_keys")).expect("rm home file");
    for (what, k) in [
        ("repo file", &repo),
        ("Secret", &secret),
        ("home file", &home),
    ] {
        assert!(
            until(&s, k, false),
            "key removed from the {what} still logs in\n{}",
            s.logs()
        );
    }
    assert!(logs_in(&s, &s.client), "the key that stayed\n{}", s.logs());
}
