//! The real `session-ssh-webhook serve` process: readiness, SIGTERM, startup errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use session_ssh_certs::{Ca, ServerCertSpec};

const BIN: &str = env!("CARGO_BIN_EXE_session-ssh-webhook");

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn serve_becomes_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    ca.issue_bundle(&ServerCertSpec::localhost())
        .unwrap()
        .write_pem_files(dir.path())
        .unwrap();
    std::fs::write(dir.path().join("config.yaml"), "platform: jupyterhub\n").unwrap();
    let (listen, metrics) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(["--listen", &listen.to_string()])
        .env("SESSION_SSH_METRICS_LISTEN", metrics.to_string())
        .env("SESSION_SSH_SHUTDOWN_DELAY_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut ready = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(r) = get(metrics, "/readyz")
            && r.starts_with("HTTP/1.0 200")
        {
            ready = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.is_some(), "not ready in 20 s");
    assert!(
        get(metrics, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.0 200")
    );
    assert!(
        get(metrics, "/metrics")
            .unwrap()
            .contains("session_ssh_build_info{version=")
    );

    // The shell's builtin kill: no procps needed.
    let term = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("exits after SIGTERM");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(TcpStream::connect(listen).is_err());
}

#[test]
fn missing_certificate_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "platform: jupyterhub\n").unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--tls-cert")
        .arg(dir.path().join("missing.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.crt"), "{err}");
}

#[test]
fn self_managed_mode_requires_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "platform: jupyterhub\n").unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(["--self-managed-tls", "--tls-secret", "session-ssh/tls"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--service is required"), "{err}");
}
