//! init-sshd e2e 1: exec (stdout, stderr, exit status), a PTY login shell, the VS Code
//! pattern (`ssh -T host bash` with a script on stdin).

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use session_ssh_tests::sshd::{Builder, T, procs};

/// The first `/dev/pts/N` in terminal output (which carries \r and escape sequences).
fn pts_in(text: &str) -> Option<String> {
    let i = text.find("/dev/pts/")?;
    let digits: String = text[i + 9..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("/dev/pts/{digits}"))
}

#[test]
fn exec_separates_stdout_stderr_and_returns_exit_3() {
    let s = Builder::new().start();
    let out = s.exec(&[], "echo to-out; echo to-err >&2; exit 3", b"", T);
    assert_eq!(out.code(), Some(3), "{}", s.diag(&out));
    assert_eq!(out.stdout_str(), "to-out\n", "{}", s.diag(&out));
    assert_eq!(out.stderr_str(), "to-err\n", "{}", s.diag(&out));
}

#[test]
fn exec_runs_as_the_container_user_in_home_with_shell_semantics() {
    let s = Builder::new().start();
    let out = s.exec_ok("id -u; id -g; pwd; echo $HOME; echo $USER; printf '%s\\n' a\\ b | wc -l");
    assert_eq!(
        out,
        format!("1000\n100\n{h}\n{h}\njovyan\n1\n", h = s.home_in),
        "{}",
        s.logs()
    );
}

#[test]
fn exec_passes_stdin_binary_safe_and_eof() {
    let s = Builder::new().start();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = s.exec(&[], "cat; echo done >&2", &data, T);
    s.assert_ok(&out);
    assert!(
        out.stdout == data,
        "stdin/stdout round trip differs ({} bytes back)",
        out.stdout.len()
    );
    assert_eq!(out.stderr_str(), "done\n");
}

#[test]
fn exec_without_pty_has_no_tty_and_no_ssh_tty() {
    let s = Builder::new().start();
    let out = s.exec(
        &[],
        "tty; r=$?; echo \"SSH_TTY=[$SSH_TTY]\"; exit $r",
        b"",
        T,
    );
    assert_eq!(
        out.code(),
        Some(1),
        "`tty` without a pty exits 1\n{}",
        s.diag(&out)
    );
    assert_eq!(
        out.stdout_str(),
        "not a tty\nSSH_TTY=[]\n",
        "{}",
        s.diag(&out)
    );
}

#[test]
fn exec_reports_ssh_connection_variables() {
    let s = Builder::new().start();
    let out = s.exec_ok("echo \"$SSH_CONNECTION\"; echo \"$SSH_CLIENT\"");
    let mut lines = out.lines();
    let conn: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert_eq!(conn.len(), 4, "SSH_CONNECTION = {out:?}");
    assert_eq!(conn[0], "127.0.0.1");
    assert_eq!(conn[2], "127.0.0.1");
    assert_eq!(conn[3], s.port.to_string());
    let client: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert_eq!(
        client,
        vec![conn[0], conn[1], conn[3]],
        "SSH_CLIENT = {out:?}"
    );
}

#[test]
fn pty_login_shell_has_a_pts_tty_term_and_exit_status() {
    let s = Builder::new().start();
    let mut c = s.ssh();
    c.env("TERM", "xterm-256color").arg("-tt").arg(s.host());
    let out = session_ssh_tests::sshd::run::run(
        &mut c,
        b"tty; echo \"term=$TERM ssh_tty=$SSH_TTY\"; echo \"arg0=$0\"; exit 7\n",
        T,
    );
    let text = out.stdout_str();
    assert_eq!(out.code(), Some(7), "shell exit status\n{}", s.diag(&out));
    let tty = pts_in(&text).unwrap_or_else(|| panic!("no /dev/pts/N from `tty`\n{}", s.diag(&out)));
    assert!(
        text.contains(&format!("term=xterm-256color ssh_tty={tty}")),
        "TERM / SSH_TTY in the pty shell\n{}",
        s.diag(&out)
    );
    // A login shell: argv[0] starts with '-'.
    assert!(
        text.contains("arg0=-bash"),
        "login shell argv[0]\n{}",
        s.diag(&out)
    );
}

#[test]
fn pty_exec_gets_window_size_from_client_and_merges_stderr() {
    let s = Builder::new().start();
    // `ssh -tt host cmd`: a pty for a command; stderr goes through the pty as well.
    let out = s.exec(&["-tt"], "stty size; echo err >&2; exit 4", b"", T);
    assert_eq!(out.code(), Some(4), "{}", s.diag(&out));
    let text = out.stdout_str();
    // The client's stdin is not a terminal, so it sends 0x0 or 80x24 style defaults; the
    // point is that `stty size` works on the pty (it fails without one).
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.trim().split(' ').count() == 2),
        "stty size on the pty\n{}",
        s.diag(&out)
    );
    assert!(
        text.contains("err"),
        "stderr through the pty\n{}",
        s.diag(&out)
    );
}

#[test]
fn pty_exec_ends_soon_after_its_shell_with_its_last_output_though_a_job_holds_the_terminal() {
    let s = Builder::new().start();
    // The shell exits while a job that ignores SIGHUP still has the terminal open: a quiet
    // one, and one that keeps writing. The channel ends soon after the shell, not with the
    // job (30 s), and carries everything the shell wrote before it exited.
    for job in [
        "sleep 30",
        "for i in $(seq 600); do echo bg; sleep 0.05; done",
    ] {
        let t0 = std::time::Instant::now();
        let cmd = format!("echo first; (trap '' HUP; {job}) & printf 'last-%s\\n' line; exit 5");
        let out = s.exec(&["-tt"], &cmd, b"", T);
        let took = t0.elapsed();
        assert_eq!(out.code(), Some(5), "{job}\n{}", s.diag(&out));
        let text = out.stdout_str();
        assert!(
            text.contains("first") && text.contains("last-line"),
            "{job}: the shell's output\n{}",
            s.diag(&out)
        );
        assert!(
            took < std::time::Duration::from_secs(20),
            "{job}: the session lasted {took:?}, as long as its background job\n{}",
            s.diag(&out)
        );
    }
}

#[test]
fn vscode_pattern_script_on_stdin_of_bash_without_tty() {
    let s = Builder::new().start();
    // What VS Code Remote-SSH does: `ssh -T host bash`, then writes its install script to stdin.
    let script = "set -e\n\
        echo \"vscode-start\"\n\
        tty || true\n\
        for i in 1 2 3; do echo \"line $i\"; done\n\
        uname -s\n\
        echo \"home=$HOME\"\n\
        read -r from_stdin\n\
        payload-line\n\
        echo \"read=$from_stdin\"\n\
        exit 0\n";
    let out = s.exec(&["-T"], "bash", script.as_bytes(), T);
    s.assert_ok(&out);
    let expected = format!(
        "vscode-start\nnot a tty\nline 1\nline 2\nline 3\nLinux\nhome={}\nread=payload-line\n",
        s.home_in
    );
    assert_eq!(out.stdout_str(), expected, "{}", s.diag(&out));
}

#[test]
fn login_shell_without_command_and_without_tty_reads_stdin() {
    let s = Builder::new().start();
    // `ssh -T host` with no command starts the login shell without a pty; it reads commands
    // from stdin.
    let out = s.exec(&["-T"], "", b"echo \"no-tty-login $0\"; exit 5\n", T);
    assert_eq!(out.code(), Some(5), "{}", s.diag(&out));
    assert!(
        out.stdout_str().contains("no-tty-login -bash"),
        "{}",
        s.diag(&out)
    );
}

#[test]
fn remote_signal_death_is_reported_to_the_client() {
    let s = Builder::new().start();
    let out = s.exec(&[], "kill -TERM $$", b"", T);
    // OpenSSH's client exits 255 when the remote command died from a signal (exit-signal);
    // a server that only sent exit-status would give 143 (128+15) or 0.
    assert_eq!(out.code(), Some(255), "{}", s.diag(&out));
}

#[test]
fn serve_in_the_foreground_without_start() {
    // `serve` alone (no `start`, so no env snapshot and no bash_profile block) is a working
    // server: what `kubectl exec ... init-sshd serve` would give for debugging.
    let s = Builder::new().serve_foreground().start();
    let out = s.exec(&[], "echo fg; exit 3", b"", T);
    assert_eq!(out.code(), Some(3), "{}", s.diag(&out));
    assert_eq!(out.stdout_str(), "fg\n");
    assert!(
        !s.home.join(".bash_profile").exists(),
        "serve alone must not write ~/.bash_profile"
    );
    assert!(procs::alive(s.serve_pid()));
}
