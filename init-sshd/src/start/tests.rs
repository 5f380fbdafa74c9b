//! Tests for `start`: a stand-in serve (a shell script at DIR/bin/init-sshd) shows how it is
//! launched; the real binary is exercised by the CLI run in the report and the e2e tests.

use super::*;
use session_ssh_contract::names::file::{LOG as LOG_FILE, SERVE_PID as PID_FILE};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

#[test]
fn start_lock_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let first = lock(dir.path()).unwrap();
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        let got = lock(&path).is_some();
        tx.send(()).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "second lock must wait");
    drop(first);
    assert!(waiter.join().unwrap());
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(lock(Path::new("/nonexistent/dir")).is_none());
}

#[test]
fn probe_address_for_wildcards() {
    assert_eq!(
        probe_addr("0.0.0.0:2222".parse().unwrap()),
        "127.0.0.1:2222".parse().unwrap()
    );
    assert_eq!(
        probe_addr("[::]:22".parse().unwrap()),
        "[::1]:22".parse().unwrap()
    );
    assert_eq!(
        probe_addr("10.1.2.3:22".parse().unwrap()),
        "10.1.2.3:22".parse().unwrap()
    );
}

#[test]
fn wait_for_port_is_bounded() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    assert!(wait_for_port(addr, Duration::from_secs(2)));
    drop(l);
    let t = Instant::now();
    assert!(!wait_for_port(addr, Duration::from_millis(300)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn running_serve_checks_pid_liveness_and_cmdline() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("opt");
    let proc_root = root.path().join("proc");
    fs::create_dir_all(&dir).unwrap();
    assert_eq!(running_serve(&dir, &proc_root), None, "no pid file");
    fs::write(dir.join(PID_FILE), "4242\n").unwrap();
    assert_eq!(running_serve(&dir, &proc_root), None, "pid not alive");
    fs::create_dir_all(proc_root.join("4242")).unwrap();
    let cmdline = |argv: &[&str]| {
        let mut b = argv.join("\0").into_bytes();
        b.push(0);
        fs::write(proc_root.join("4242/cmdline"), b).unwrap();
    };
    cmdline(&["/usr/bin/python3", "serve", "--dir", dir.to_str().unwrap()]);
    assert_eq!(
        running_serve(&dir, &proc_root),
        None,
        "pid reused by something else"
    );
    let bin = format!("{}/bin/init-sshd", dir.display());
    cmdline(&[&bin, "serve", "--dir", "/elsewhere"]);
    assert_eq!(
        running_serve(&dir, &proc_root),
        None,
        "serve for another dir"
    );
    cmdline(&[
        &bin,
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "0.0.0.0:2222",
    ]);
    assert_eq!(running_serve(&dir, &proc_root), Some(4242));
    // The same dir spelled differently still counts.
    let odd = format!("{}/bin/..", dir.display());
    fs::create_dir_all(dir.join("bin")).unwrap();
    cmdline(&[&bin, "serve", "--dir", &odd]);
    assert_eq!(running_serve(&dir, &proc_root), Some(4242));
}

/// Launch a stand-in "serve" and check it is detached: own session but not its leader,
/// stdin /dev/null, output in the log, only the snapshot's environment, pid recorded.
#[test]
fn launch_detaches_with_snapshot_env() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    fs::create_dir_all(dir.join("bin")).unwrap();
    let script = dir.join(session_ssh_contract::names::file::BIN);
    let report = dir.join("report");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             {{ echo \"args=$*\"; echo \"pid=$$\"; \
             echo \"sid=$(cut -d' ' -f6 /proc/$$/stat)\"; \
             echo \"stdin=$(readlink /proc/$$/fd/0)\"; \
             echo \"fds=$(ls /proc/$$/fd | wc -l)\"; \
             env | sort | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_=' | sed 's/^/env:/'; }} > '{}.tmp'\n\
             mv '{}.tmp' '{}'\n\
             echo to-stdout; echo to-stderr >&2\n\
             sleep 5\n",
            report.display(),
            report.display(),
            report.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut snap = envsnap::Snapshot::default();
    snap.vars.insert("PATH".into(), "/usr/bin:/bin".into());
    snap.vars.insert("ONLY_SNAPSHOT".into(), "yes".into());
    let opts = Options {
        dir: dir.clone(),
        listen: "127.0.0.1:1".parse().unwrap(),
        tls_listen: None,
        metrics_listen: None,
        wait: Duration::from_millis(10),
        env_wait: Duration::ZERO,
        log_max_bytes: 1 << 20,
        gateway: Default::default(),
        serve_args: Vec::new(),
        audit: Default::default(),
        hook: Vec::new(),
        proc_root: PathBuf::from("/proc"),
        info: crate::info::InfoArgs::default(),
    };
    let pid = launch(&opts, &snap).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !report.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = fs::read_to_string(&report).unwrap();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("pid"), pid.to_string());
    assert!(field("args").starts_with(&format!(
        "serve --dir {} --listen 127.0.0.1:1 --log-file",
        dir.display()
    )));
    let sid: u32 = field("sid").parse().unwrap();
    let my_sid = nix::unistd::getsid(None).unwrap().as_raw() as u32;
    assert_ne!(sid, my_sid, "new session");
    assert_ne!(sid, pid, "not the session leader");
    assert_eq!(field("stdin"), "/dev/null");
    let envs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .collect();
    assert_eq!(envs, ["ONLY_SNAPSHOT=yes", "PATH=/usr/bin:/bin"]);
    std::thread::sleep(Duration::from_millis(200));
    let log = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert!(
        log.contains("to-stdout") && log.contains("to-stderr"),
        "{log}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}
