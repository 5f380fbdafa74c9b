//! init-sshd e2e: the connection information file that `start` writes in the home (issue 14,
//! item 3) holds an `ssh` command and a known_hosts line that work, checked by running them
//! with the real OpenSSH client; `init-sshd info` prints the same text.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::process::Command;

use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Builder, T};

/// The line after the one that starts with `heading`, trimmed.
fn after(text: &str, heading: &str) -> String {
    text.lines()
        .skip_while(|l| !l.starts_with(heading))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_information_file_holds_a_command_and_known_hosts_line_that_work() {
    let s = Builder::new().start();
    let path = s.home.join("ssh-connect.txt");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), s.logs()));
    let command = after(&text, "Connect:");
    assert_eq!(
        command,
        format!("ssh -p {} jovyan@127.0.0.1", s.port),
        "{text}"
    );
    let known = after(&text, "known_hosts line");
    let kh = s.root.join("client/known_hosts_from_info");
    fs::write(&kh, format!("{known}\n")).expect("write known_hosts");

    // Exactly the file's command; the options only pin the client to this test's key and to
    // the known_hosts line from the file (strict checking: a wrong line fails the login).
    let opts = format!(
        "-F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none \
         -o IdentityFile={} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes",
        s.client.private.display(),
        kh.display()
    );
    let rest = command.strip_prefix("ssh ").expect("an ssh command");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ssh {opts} {rest} 'echo works-$((40+2))'"))
        .env_remove("SSH_AUTH_SOCK");
    let out = run(&mut c, b"", T);
    assert!(out.success(), "{}", s.diag(&out));
    assert_eq!(out.stdout_str(), "works-42\n", "{}", s.diag(&out));

    let printed = s.exec_ok(&format!(
        "{}/bin/init-sshd info --dir {}",
        s.dir_in, s.dir_in
    ));
    assert_eq!(printed, text, "`init-sshd info` prints the file");
}
