//! The `inject` and `check-config` commands as a user runs them: real binary, real
//! files and stdin, exit codes and messages.

// Test helpers outside #[test] fns: clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_session-ssh-webhook")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("SESSION_SSH_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &Path, body: &str) -> String {
    let p = dir.join("config.yaml");
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn inject_file_and_stdin_give_the_golden_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "platform: jupyterhub\n");
    let pod = fixture("jupyterhub-alice.pod.yaml");
    let out = run(
        &["inject", "--config", &cfg, "-f", pod.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let golden = std::fs::read_to_string(fixture("jupyterhub-alice.mutated.yaml")).unwrap();
    assert_eq!(text(&out.stdout), golden);
    assert!(text(&out.stderr).contains("Pod/jupyter-alice: injected"));

    let body = std::fs::read_to_string(&pod).unwrap();
    let out = run(
        &["inject", "--config", &cfg, "-f", "-", "--patch"],
        Some(&body),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let golden = std::fs::read_to_string(fixture("jupyterhub-alice.patch.json")).unwrap();
    assert_eq!(text(&out.stdout), golden);
}

#[test]
fn force_injects_what_the_selector_would_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "platform: generic\n");
    let pod = fixture("kubeflow-notebook.pod.yaml");
    let p = pod.to_str().unwrap();
    let out = run(&["inject", "--config", &cfg, "-f", p], None);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("not injected (not-selected)"));
    assert!(!text(&out.stdout).contains("session-ssh-install"));
    let out = run(&["inject", "--config", &cfg, "-f", p, "--force"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("session-ssh-install"));
}

#[test]
fn bad_input_exits_non_zero_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "platform: jupyterhub\n");
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (
            &["-f", "/nonexistent/pod.yaml"],
            None,
            "cannot read /nonexistent/pod.yaml",
        ),
        (
            &["-f", "-"],
            Some("kind: Service\nmetadata: {name: s}\n"),
            "kind \"Service\" has no pod template",
        ),
        (&["-f", "-"], Some("{ not yaml"), "not valid YAML"),
        (&["-f", "-"], Some(""), "no YAML document"),
    ];
    for (args, stdin, want) in cases {
        let mut all = vec!["inject", "--config", cfg.as_str()];
        all.extend_from_slice(args);
        let out = run(&all, *stdin);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("session-ssh-webhook: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn check_config_prints_every_field_or_names_the_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "platform: renku\ninitContainer:\n  image: registry.example.org/init-sshd:1\n",
    );
    let out = run(&["check-config", "--config", &cfg], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    assert!(y.contains("image: registry.example.org/init-sshd:1"), "{y}");
    assert!(y.contains("- jupyter-server"), "{y}");
    assert!(y.contains("volumeSizeLimit: null"), "{y}");

    let bad = config(tmp.path(), "platform: renku\nkeys:\n  extraSecret: [a]\n");
    let out = run(&["check-config", "--config", &bad], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{bad}: field `keys.extraSecret`")),
        "{err}"
    );
    assert!(err.contains("unknown field `extraSecret`"), "{err}");
}
