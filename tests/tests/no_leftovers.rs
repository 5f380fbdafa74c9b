//! Nothing a run starts outlives it (issue 18): the test fixtures and the demo, ended by
//! Ctrl-C (SIGINT to the whole process group), SIGTERM (as `timeout` sends it) or SIGHUP,
//! leave no process and no listening port behind.
//!
//! Needs what the sshd and SNI tests need (bubblewrap, nginx, openssl), and for the demo the
//! static binaries (INIT_SSHD_BIN, SESSION_SSH_WEBHOOK_BIN as scripts/test.sh sets them).

// Test helpers: a panic with a message is the failure report.
#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use session_ssh_tests::reaper;
use session_ssh_tests::sshd::procs;

/// How the signal is delivered.
#[derive(Debug, Clone, Copy)]
enum Send {
    /// To the whole process group, as a terminal's Ctrl-C does.
    Group(Signal),
    /// To the process alone, as `timeout` and `kill` do.
    Process(Signal),
}

const CASES: [Send; 3] = [
    Send::Group(Signal::SIGINT),
    Send::Process(Signal::SIGTERM),
    Send::Process(Signal::SIGHUP),
];

/// A program under test, started in a process group of its own with TMPDIR under `tmp`.
struct Subject {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    tmp: tempfile::TempDir,
}

impl Subject {
    fn spawn(mut cmd: Command) -> Subject {
        let tmp = tempfile::Builder::new()
            .prefix("leftovers-")
            .tempdir()
            .expect("tempdir");
        cmd.env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Its own group (not registered: the test signals it), like a shell job.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn subject");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Subject {
            child,
            lines,
            seen: Vec::new(),
            tmp,
        }
    }

    /// Reads lines until one contains `needle`; panics with what was seen at the deadline.
    fn wait_line(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let done = l.contains(needle);
                    self.seen.push(l);
                    if done {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        panic!(
                            "subject exited ({st}) before {needle:?}:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        panic!("no {needle:?} within {limit:?}:\n{}", self.seen.join("\n"));
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    fn signal(&mut self, how: Send) {
        let r = match how {
            Send::Group(s) => killpg(self.pgid(), s),
            Send::Process(s) => kill(self.pgid(), s),
        };
        r.expect("send signal");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            assert!(
                Instant::now() < end,
                "{how:?}: subject still running after 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (bounded) for every process that names or mounts `tmp` to be gone and for
/// every port to refuse connections; returns what is still there.
fn leftovers(tmp: &Path, ports: &[u16], pids: &[u32]) -> Vec<String> {
    let needle = unique_name(tmp);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left: Vec<String> = procs::alive_using(&needle)
            .into_iter()
            .map(|(p, c)| format!("process {p}: {c}"))
            .collect();
        for &p in pids {
            if procs::alive(p) {
                left.push(format!("process {p}: {}", procs::cmdline(p)));
            }
        }
        for &port in ports {
            if TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_millis(500),
            )
            .is_ok()
            {
                left.push(format!("port {port} still accepts"));
            }
        }
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The temp dir's own random name: found in mount tables also where /tmp is a mount of its own.
fn unique_name(tmp: &Path) -> String {
    tmp.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("temp dir name")
}

/// Kills whatever a failed case left, so one failure does not leak into the next tests.
fn sweep(tmp: &Path) {
    for (p, _) in procs::alive_using(&unique_name(tmp)) {
        procs::kill9(p);
    }
}

fn numbers(seen: &[String], prefix: &str) -> Vec<u32> {
    seen.iter()
        .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

#[test]
fn test_fixtures_leave_nothing_behind_on_ctrl_c_sigterm_and_sighup() {
    reaper::install();
    for how in CASES {
        let mut s = Subject::spawn(Command::new(env!("CARGO_BIN_EXE_session-ssh-fixtures")));
        s.wait_line("READY", Duration::from_secs(120));
        let ports: Vec<u16> = numbers(&s.seen, "port ")
            .into_iter()
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        let pids = numbers(&s.seen, "pid ");
        assert_eq!(ports.len(), 5, "{:?}", s.seen);
        s.signal(how);
        let left = leftovers(s.tmp.path(), &ports, &pids);
        sweep(s.tmp.path());
        assert!(left.is_empty(), "{how:?} left:\n{}", left.join("\n"));
    }
}

fn bin(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| session_ssh_tests::repo_root().join(fallback))
}

#[test]
fn the_demo_leaves_nothing_behind_on_ctrl_c_sigterm_and_sighup() {
    reaper::install();
    let init_sshd = bin(
        "INIT_SSHD_BIN",
        "target/x86_64-unknown-linux-musl/release/init-sshd",
    );
    let webhook = bin(
        "SESSION_SSH_WEBHOOK_BIN",
        "target/x86_64-unknown-linux-musl/release/session-ssh-webhook",
    );
    for how in CASES {
        let work = tempfile::Builder::new()
            .prefix("demo-work-")
            .tempdir()
            .expect("work");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-ssh-demo"));
        cmd.arg("--webhook")
            .arg(&webhook)
            .arg("--init-sshd")
            .arg(&init_sshd)
            .arg("--work")
            .arg(work.path().join("demo"));
        let mut s = Subject::spawn(cmd);
        s.wait_line("The session runs until Ctrl-C", Duration::from_secs(120));
        // "ssh  -i KEY -o UserKnownHostsFile=KH -p PORT jovyan@127.0.0.1" and the TLS port.
        let port = s
            .seen
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("ssh  -i ")?
                    .split(" -p ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u16>()
                    .ok()
            })
            .expect("demo prints its ssh port");
        let tls = s
            .seen
            .iter()
            .find_map(|l| {
                l.split("routes it (port ")
                    .nth(1)?
                    .split(')')
                    .next()?
                    .parse::<u16>()
                    .ok()
            })
            .expect("demo prints its TLS port");
        s.signal(how);
        let mut left = leftovers(work.path(), &[port, tls], &[]);
        left.extend(leftovers(s.tmp.path(), &[], &[]));
        sweep(work.path());
        sweep(s.tmp.path());
        assert!(left.is_empty(), "demo, {how:?} left:\n{}", left.join("\n"));
    }
}
