//! The injected pods run "as far as this machine allows": `session-ssh-webhook
//! inject` mutates the fixture pods, then the stored spec's `session-ssh-install`
//! init container and the session container's postStart hook run in the pod
//! sandbox (same paths, env and UID), and the real OpenSSH client logs in.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use session_ssh_tests::injected::{ENTRYPOINT_VAR, InjectedSession};
use session_ssh_tests::podrun::Secrets;
use session_ssh_tests::repo_root;

fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        // Relative paths are from the workspace root, as scripts/test.sh gives them.
        return repo_root().join(p);
    }
    let p = repo_root().join("target/debug").join(name);
    assert!(p.exists(), "{name} not built: set {env} or run cargo build");
    p
}

fn inject(pod: &Path, config: &Path) -> (Pod, Pod) {
    let out = Command::new(bin("SESSION_SSH_WEBHOOK_BIN", "session-ssh-webhook"))
        .args(["inject", "--config"])
        .arg(config)
        .arg("-f")
        .arg(pod)
        .output()
        .expect("run session-ssh-webhook inject");
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original: Pod =
        serde_yaml::from_str(&std::fs::read_to_string(pod).expect("read fixture")).expect("pod");
    let mutated: Pod = serde_yaml::from_slice(&out.stdout).expect("mutated pod YAML");
    (original, mutated)
}

fn launch(fixture: &str, config: &str, secrets: Secrets) -> (InjectedSession, tempfile::TempDir) {
    let root = repo_root();
    let (original, mutated) = inject(
        &root.join("webhook/tests/fixtures").join(fixture),
        &root.join(config),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let session = InjectedSession::launch(
        &original,
        mutated,
        &bin("INIT_SSHD_BIN", "init-sshd"),
        work.path(),
        secrets,
        0,
    )
    .expect("bring the injected pod up");
    assert!(
        session.install.status.success(),
        "install must exit 0: {}",
        String::from_utf8_lossy(&session.install.stderr)
    );
    assert!(
        session.post_start.status.success(),
        "postStart must exit 0: {}",
        String::from_utf8_lossy(&session.post_start.stderr)
    );
    (session, work)
}

fn stdout_ok(s: &InjectedSession, cmd: &str) -> String {
    let out = s.ssh(cmd).expect("run ssh");
    assert!(
        out.status.success(),
        "ssh {cmd:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(s.dir.join("init-sshd.log")).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn jupyterhub_pod_runs_and_the_user_logs_in_with_ssh() {
    let (s, _work) = launch(
        "jupyterhub-alice.pod.yaml",
        "manifests/examples/jupyterhub/config.yaml",
        BTreeMap::new(),
    );
    assert!(
        !s.secrets.is_empty(),
        "the jupyterhub preset mounts the per-user key Secret"
    );
    // The session runs as the pod's user, in its home, with the entrypoint's env.
    assert_eq!(stdout_ok(&s, "id -u"), s.identity.uid.to_string());
    assert_eq!(stdout_ok(&s, "cd && pwd"), "/home/jovyan");
    assert_eq!(
        stdout_ok(&s, &format!("echo ${}", ENTRYPOINT_VAR.0)),
        ENTRYPOINT_VAR.1
    );
    // A login shell keeps it too (the ~/.bash_profile block).
    assert_eq!(
        stdout_ok(&s, &format!("bash -lc 'echo ${}'", ENTRYPOINT_VAR.0)),
        ENTRYPOINT_VAR.1
    );
    // SSH inside TLS, the way an SNI ingress reaches the session, proven by the same host key.
    let out = Command::new("ssh")
        .args(s.ssh_tls_opts())
        .arg("jovyan@session.ssh.test")
        .arg("echo via-tls")
        .output()
        .expect("ssh through TLS");
    assert!(
        out.status.success(),
        "ssh through TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "via-tls");
    // The host key is the session user's alone.
    let meta = std::fs::metadata(s.dir.join("ssh_host_ed25519_key")).expect("host key");
    assert_eq!(meta.mode() & 0o077, 0, "host key readable by others");
    assert_eq!(i64::from(meta.uid()), s.identity.uid);
}

#[test]
fn kubeflow_pod_runs_with_keys_from_the_annotation() {
    let root = repo_root();
    let fixture = root.join("webhook/tests/fixtures/kubeflow-notebook.pod.yaml");
    let work = tempfile::tempdir().expect("tempdir");
    // The user's key goes into the pod's keys annotation (the downward-API source).
    let key = work.path().join("ann_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let mut pod: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&fixture).expect("fixture")).expect("yaml");
    pod["metadata"]["annotations"]["session-ssh.io/authorized-keys"] = pubkey.clone().into();
    let annotated = work.path().join("pod.yaml");
    std::fs::write(&annotated, serde_yaml::to_string(&pod).expect("yaml")).expect("write");
    let (original, mutated) = inject(
        &annotated,
        &root.join("manifests/examples/kubeflow/config.yaml"),
    );
    let run_dir = work.path().join("run");
    std::fs::create_dir(&run_dir).expect("mkdir");
    let s = InjectedSession::launch(
        &original,
        mutated,
        &bin("INIT_SSHD_BIN", "init-sshd"),
        &run_dir,
        BTreeMap::new(),
        0,
    )
    .expect("bring the injected pod up");
    assert!(
        s.post_start.status.success(),
        "postStart must exit 0: {}",
        String::from_utf8_lossy(&s.post_start.stderr)
    );
    let report = std::fs::read_to_string(s.dir.join("install-report.json")).expect("report");
    let fp = Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .expect("fingerprint");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.split_whitespace().nth(1).expect("fingerprint field");
    assert!(
        report.contains(fp),
        "the annotation key is accepted: {report}"
    );
    // Log in with the annotation's key instead of the generated Secret key.
    let out = Command::new("ssh")
        .args(s.ssh_opts().iter().map(|o| {
            if o == &s.key.display().to_string() {
                key.display().to_string()
            } else {
                o.clone()
            }
        }))
        .arg("jovyan@127.0.0.1")
        .arg("id -u")
        .output()
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh with the annotation key: {}\npostStart: {}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&s.post_start.stderr),
        std::fs::read_to_string(s.dir.join("init-sshd.log")).unwrap_or_default()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        s.identity.uid.to_string()
    );
    // The Kubeflow pod states no runAsUser: the session runs as the image's jovyan and
    // install as the init image's 65532, yet the host key ends up the session user's alone.
    assert_eq!(s.identity.uid, 1000, "the image's user runs the session");
    let report_meta = std::fs::metadata(s.dir.join("install-report.json")).expect("report");
    assert_eq!(
        report_meta.uid(),
        65532,
        "install ran as the init image's USER"
    );
    let meta = std::fs::metadata(s.dir.join("ssh_host_ed25519_key")).expect("host key");
    assert_eq!(meta.mode() & 0o077, 0, "host key readable by others");
    assert_eq!(i64::from(meta.uid()), s.identity.uid);
}
