//! init-sshd e2e 4: environment parity. The "container" is a PID + mount namespace whose PID 1
//! is an entrypoint that exports a variable and then execs its main process (what
//! `unshare --pid --fork --mount-proc entrypoint.sh` gives, made with bwrap so that
//! /etc/profile and /etc/passwd can be the image's). `start` runs in it via nsenter with only
//! the image's env, like a postStart hook. /etc/profile resets PATH like Debian's.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use session_ssh_tests::sshd::procs;
use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Builder, Sshd, T};

const PROBE: &str = "echo \"etc_profile=${E2E_ETC_PROFILE_READ:-no}\"\n\
echo \"entry=${ENTRY_ONLY:-missing}\"\n\
echo \"image=${IMAGE_VAR:-missing}\"\n\
echo \"userprofile=${USER_PROFILE_VAR:-missing}\"\n\
echo \"path=$PATH\"\n\
image-tool\n\
exit 0\n";

/// A server in a container whose image puts `ROOT/image/bin` on PATH and sets IMAGE_VAR, and
/// whose entrypoint exports ENTRY_ONLY; the user has an existing ~/.profile.
fn env_server(extra_home: Option<(&str, &str)>) -> (Sshd, String) {
    let b = Builder::new();
    let image_bin = b.root.join("image/bin");
    fs::create_dir_all(&image_bin).expect("mkdir");
    let tool = image_bin.join("image-tool");
    fs::write(&tool, "#!/bin/sh\necho image-tool-ran\n").expect("write tool");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(b.root.join("image"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let image_bin = image_bin.display().to_string();
    let mut b = b
        .image_env("PATH", &format!("{image_bin}:/usr/local/bin:/usr/bin:/bin"))
        .image_env("IMAGE_VAR", "from-image")
        .entry_export("ENTRY_ONLY", "from-entrypoint")
        .home_file(".profile", "export USER_PROFILE_VAR=kept\n");
    if let Some((rel, content)) = extra_home {
        b = b.home_file(rel, content);
    }
    (b.start(), image_bin)
}

fn assert_env(s: &Sshd, what: &str, text: &str, image_bin: &str, login: bool) {
    let ctx = format!("{what}:\n{text}\n{}", s.logs());
    if login {
        assert!(
            text.contains("etc_profile=yes"),
            "/etc/profile not read by the login shell — {ctx}"
        );
        assert!(
            text.contains("userprofile=kept"),
            "~/.profile not sourced — {ctx}"
        );
    }
    assert!(
        text.contains("entry=from-entrypoint"),
        "entrypoint-only variable lost — {ctx}"
    );
    assert!(
        text.contains("image=from-image"),
        "image variable lost — {ctx}"
    );
    // Output lines (not the pty's echo of the typed command), without terminal escapes.
    let path_line = text
        .lines()
        .filter(|l| !l.contains("$PATH"))
        .find_map(|l| l.find("path=").map(|i| l[i..].trim()))
        .unwrap_or_else(|| panic!("no path= line — {ctx}"));
    assert!(
        path_line.split([':', '=']).any(|p| p == image_bin),
        "image PATH entry missing after the /etc/profile reset ({path_line}) — {ctx}"
    );
    assert!(
        text.contains("image-tool-ran"),
        "image tool not found on PATH — {ctx}"
    );
}

#[test]
fn pty_login_shell_keeps_entrypoint_and_image_env_despite_profile_reset() {
    let (s, image_bin) = env_server(None);
    let out = s.exec(&["-tt"], "", PROBE.as_bytes(), T);
    assert_eq!(out.code(), Some(0), "{}", s.diag(&out));
    assert_env(&s, "ssh -tt", &out.stdout_str(), &image_bin, true);
}

#[test]
fn non_tty_login_shell_keeps_env_like_vscode() {
    let (s, image_bin) = env_server(None);
    // No command, no tty: the login shell reads the script from stdin (VS Code's connection).
    let out = s.exec(&["-T"], "", PROBE.as_bytes(), T);
    s.assert_ok(&out);
    assert_env(
        &s,
        "ssh -T (login shell)",
        &out.stdout_str(),
        &image_bin,
        true,
    );
}

#[test]
fn exec_command_gets_the_snapshot_env() {
    let (s, image_bin) = env_server(None);
    let out = s.exec(&[], PROBE, b"", T);
    s.assert_ok(&out);
    assert_env(&s, "ssh host cmd", &out.stdout_str(), &image_bin, false);
}

#[test]
fn env_snapshot_files_hold_the_entrypoint_env_without_per_process_vars() {
    let (s, image_bin) = env_server(None);
    let raw = fs::read(s.dir.join("env")).unwrap_or_else(|e| panic!("DIR/env: {e}\n{}", s.logs()));
    let vars: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let has = |kv: &str| vars.iter().any(|v| v == kv);
    assert!(has("ENTRY_ONLY=from-entrypoint"), "DIR/env: {vars:?}");
    assert!(has("IMAGE_VAR=from-image"), "DIR/env: {vars:?}");
    assert!(
        vars.iter()
            .any(|v| v.starts_with("PATH=") && v.contains(&image_bin)),
        "DIR/env PATH: {vars:?}"
    );
    for k in ["PWD", "OLDPWD", "SHLVL", "_"] {
        assert!(
            !vars.iter().any(|v| v.starts_with(&format!("{k}="))),
            "per-process variable {k} must not be in the snapshot: {vars:?}"
        );
    }
    // env.sh is valid POSIX shell that reproduces the snapshot.
    let out = run(
        std::process::Command::new("sh").arg("-c").arg(format!(
            ". {}; echo \"$ENTRY_ONLY|$IMAGE_VAR\"",
            s.dir.join("env.sh").display()
        )),
        b"",
        T,
    );
    assert_eq!(
        out.stdout_str(),
        "from-entrypoint|from-image\n",
        "{}",
        out.describe()
    );
}

#[test]
fn bash_profile_block_is_idempotent_and_second_start_starts_no_second_server() {
    let (s, _) = env_server(None);
    let profile = s.home.join(".bash_profile");
    let first = fs::read_to_string(&profile).unwrap_or_else(|e| panic!("~/.bash_profile: {e}"));
    let pid_before = s.serve_pid();
    // A container restart re-runs the postStart hook.
    let again = run(
        &mut s.container().exec(
            &[
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), s.home_in.clone()),
            ],
            &[
                &format!("{}/bin/init-sshd", s.dir_in),
                "start",
                "--dir",
                &s.dir_in,
                "--listen",
                &format!("127.0.0.1:{}", s.port),
            ],
        ),
        b"",
        T,
    );
    assert!(again.success(), "second start: {}", s.diag(&again));
    assert_eq!(
        fs::read_to_string(&profile).expect("read"),
        first,
        "second start changed ~/.bash_profile"
    );
    assert_eq!(s.serve_pid(), pid_before, "serve.pid changed");
    let serves: Vec<u32> = procs::pids_in_ns_of(s.container().pid1)
        .into_iter()
        .filter(|&p| procs::alive(p) && procs::cmdline(p).contains(" serve "))
        .collect();
    assert_eq!(serves, vec![pid_before], "exactly one serve process");
    // A fresh login still works.
    s.exec_ok("true");
}

#[test]
fn users_own_bash_profile_lines_win_over_the_block() {
    let (s, image_bin) = env_server(Some((
        ".bash_profile",
        "export IMAGE_VAR=user-override\nexport PATH=\"$HOME/mybin:$PATH\"\n",
    )));
    let out = s.exec(
        &["-T"],
        "",
        b"echo \"image=$IMAGE_VAR\"; echo \"path=$PATH\"; echo \"entry=$ENTRY_ONLY\"\n",
        T,
    );
    s.assert_ok(&out);
    let text = out.stdout_str();
    assert!(
        text.contains("image=user-override"),
        "user's line must win\n{}",
        s.diag(&out)
    );
    assert!(text.contains("entry=from-entrypoint"), "{}", s.diag(&out));
    let path = text.lines().find(|l| l.starts_with("path=")).unwrap_or("");
    assert!(
        path.starts_with(&format!("path={}/mybin:", s.home_in)),
        "user's PATH prepend must come last (win): {path}"
    );
    assert!(path.contains(&image_bin), "image PATH kept: {path}");
    let content = fs::read_to_string(s.home.join(".bash_profile")).expect("read");
    assert!(
        content.contains("export IMAGE_VAR=user-override"),
        "user's lines kept: {content}"
    );
}

#[test]
fn client_lang_is_accepted_and_other_vars_are_not() {
    let s = Builder::new().start();
    let mut c = s.ssh();
    c.env("LANG", "C.UTF-8")
        .env("LC_MESSAGES", "C")
        .env("E2E_NOT_ALLOWED", "leaked")
        .args(["-o", "SendEnv=LANG LC_* E2E_NOT_ALLOWED"])
        .arg(s.host())
        .arg("echo \"$LANG|$LC_MESSAGES|${E2E_NOT_ALLOWED:-unset}\"");
    let out = run(&mut c, b"", T);
    s.assert_ok(&out);
    assert_eq!(out.stdout_str(), "C.UTF-8|C|unset\n", "{}", s.diag(&out));
}
