//! The real `init-sshd` binary: install, then start as a non-root UID without a passwd entry
//! (setpriv), then a second start. Needs root (to switch UID) and util-linux `setpriv`;
//! skipped otherwise, because start edits the invoking user's ~/.bash_profile.
//! Full SSH sessions are covered by the workspace e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_init-sshd");
const UID: &str = "4242";

fn usable() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run DIR/bin/init-sshd start as UID 4242 with a clean, image-like environment.
fn start(dir: &Path, home: &Path, port: u16, hook: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", UID, "--regid", UID, "--clear-groups"])
        .arg(dir.join("bin/init-sshd"))
        .args(["start", "--dir"])
        .arg(dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--env-wait-ms",
            "0",
            // The TLS default (0.0.0.0:2443) would leave loopback and collide.
            "--tls-listen",
            "off",
        ])
        .env_clear()
        .env("PATH", "/opt/image/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("IMAGE_VAR", "from-image");
    if !hook.is_empty() {
        cmd.arg("--").args(hook);
    }
    cmd.output().unwrap()
}

fn banner(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn install_then_start_twice_as_another_uid() {
    if !usable() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("opt");
    let home = root.path().join("home");
    fs::create_dir_all(&home).unwrap();
    nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let keys = root.path().join("ak");
    fs::write(
        &keys,
        format!(
            "garbage\n{}",
            include_str!("../contract/src/keys/testdata/user.pub")
        ),
    )
    .unwrap();

    // install: as root, session UID unknown -> host key handed off readable.
    let out = Command::new(BIN)
        .args(["install", "--dir"])
        .arg(&dir)
        .arg("--keys")
        .arg(&keys)
        .arg("--keys-dir")
        .arg(root.path().join("missing-secret"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // emptyDir semantics: every UID of the pod may write.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("install-report.json")).unwrap()).unwrap();
    assert_eq!(report["accepted"].as_array().unwrap().len(), 1);
    assert_eq!(report["refused"][0]["line"], 1);

    // start: hook status passes through; serve listens; key now private to 4242.
    let port = free_port();
    let out = start(&dir, &home, port, &["sh", "-c", "exit 5"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(banner(port).starts_with("SSH-2.0-"));
    let key = fs::metadata(dir.join("ssh_host_ed25519_key")).unwrap();
    assert_eq!((key.uid(), key.mode() & 0o777), (4242, 0o600));
    let pid: i32 = fs::read_to_string(dir.join("serve.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("serve"));
    let env_sh = fs::read_to_string(dir.join("env.sh")).unwrap();
    assert!(env_sh.contains("export IMAGE_VAR='from-image'"));
    assert!(env_sh.contains("export PATH='/opt/image/bin:/usr/bin:/bin'"));
    let profile = fs::read_to_string(home.join(".bash_profile")).unwrap();
    assert!(profile.contains(&dir.join("env.sh").display().to_string()));

    // Second start (container restart): no second serve, same pid, no hook -> 0.
    let out = start(&dir, &home, port, &[]);
    assert_eq!(out.status.code(), Some(0));
    let again: i32 = fs::read_to_string(dir.join("serve.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(again, pid);
    let servers = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).into_owned();
                c.contains("serve") && c.contains(&dir.display().to_string())
            })
        })
        .count();
    assert_eq!(servers, 1);
    let log = fs::read_to_string(dir.join("init-sshd.log")).unwrap();
    assert!(log.contains("serve already running"), "{log}");

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
}
