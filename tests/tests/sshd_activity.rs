//! init-sshd e2e: SSH activity reaches JupyterHub and keeps a session from being culled
//! (issue 14, item 1), against a real hub (PyPI `jupyterhub`, the npm proxy) and its own
//! idle culler (PyPI `jupyterhub-idle-culler`, as a hub-managed service).
//!
//! The hub spawns each user's server itself (SimpleLocalProcessSpawner), so the server gets
//! the hub's own `JUPYTERHUB_API_TOKEN` and `JUPYTERHUB_ACTIVITY_URL`; the spawned "server"
//! is a stand-in that writes its environment to a file and answers HTTP. That environment
//! becomes the session container's, where the real `init-sshd install` + `start` run, and
//! the real OpenSSH client works over SSH only: the hub never sees any other traffic.
//!
//! Alice runs a command that prints every second; Carol only uploads with `sftp` now and
//! then; Bob has an open shell that does nothing and an `ssh -N` connection with keepalives
//! both ways. Alice's and Carol's `last_activity` move, Bob's does not; the culler stops
//! Bob's server and leaves the other two running.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use session_ssh_tests::hub::Hub;
use session_ssh_tests::reaper::{self, Proc};
use session_ssh_tests::sshd::run::{run, write_random_file};
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T};

/// serve's report interval in this test (60 s in a pod).
const INTERVAL_SECS: u64 = 2;
/// The culler's idle timeout and check period.
const CULL_TIMEOUT_SECS: u64 = 20;
const CULL_EVERY_SECS: u64 = 4;

/// The spawned server stand-in (`server ENV_DIR`) and the culler's launcher (`culler ARGS`).
/// Both leave when the hub does: the hub starts them in sessions of their own, out of reach
/// of the harness's process-group kill.
const HUB_CHILD: &str = r#"
import http.server, json, os, runpy, sys, threading, time, urllib.parse

parent = os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()

if sys.argv[1] == "culler":
    sys.argv = ["jupyterhub_idle_culler"] + sys.argv[2:]
    runpy.run_module("jupyterhub_idle_culler", run_name="__main__")
    sys.exit(0)

keep = ["JUPYTERHUB_API_TOKEN", "JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_SERVER_NAME",
        "JUPYTERHUB_USER", "JUPYTERHUB_API_URL"]
out = os.path.join(sys.argv[2], os.environ["JUPYTERHUB_USER"] + ".json")
with open(out + ".tmp", "w") as f:
    json.dump({k: os.environ.get(k, "") for k in keep}, f)
os.replace(out + ".tmp", out)

class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass

port = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port
http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"#;

fn hub_config(work: &Path) -> String {
    let script = work.join("hub_child.py");
    std::fs::write(&script, HUB_CHILD).unwrap();
    let envs = work.join("server-env");
    std::fs::create_dir_all(&envs).unwrap();
    let (script, envs, homes) = (
        script.display(),
        envs.display(),
        work.join("hub-homes").display().to_string(),
    );
    format!(
        r#"
import sys
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{homes}/{{username}}"
c.Spawner.cmd = [sys.executable, "{script}", "server", "{envs}"]
c.Spawner.start_timeout = 60
# Only SSH may move last_activity here: no proxy-traffic sampling during the test.
c.JupyterHub.last_activity_interval = 3600
c.JupyterHub.services.append({{
    "name": "idle-culler",
    "command": [sys.executable, "{script}", "culler",
                "--timeout={CULL_TIMEOUT_SECS}", "--cull-every={CULL_EVERY_SECS}"],
}})
# The scopes jupyterhub-idle-culler's README lists.
c.JupyterHub.load_roles.append({{
    "name": "idle-culler",
    "services": ["idle-culler"],
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
}})
"#
    )
}

/// Starts `user`'s default server through the REST API and returns the environment the hub
/// gave it.
fn spawn_server(hub: &Hub, work: &Path, user: &str) -> HashMap<String, String> {
    let (code, body) = hub
        .api("POST", &format!("/users/{user}/server"), None)
        .unwrap();
    assert!(matches!(code, 201 | 202), "spawn {user}: {code} {body}");
    let file = work.join("server-env").join(format!("{user}.json"));
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = hub.user_model(user).unwrap()["servers"][""]["ready"] == true;
        if ready && let Ok(text) = std::fs::read_to_string(&file) {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(
            Instant::now() < end,
            "{user}'s server not ready in 60 s\n{}",
            hub.log_text()
        );
        sleep(Duration::from_millis(300));
    }
}

/// The server's `last_activity` to the second (None: no server).
fn last_activity(hub: &Hub, user: &str) -> Option<String> {
    let model = hub.user_model(user).unwrap();
    let at = model["servers"][""]["last_activity"].as_str()?;
    Some(at.get(..19).unwrap_or(at).to_owned())
}

/// `user`'s last_activity once it has not changed for three report intervals.
fn settled(hub: &Hub, user: &str, sessions: &[(&str, &Sshd)]) -> Option<String> {
    let quiet = Duration::from_secs(3 * INTERVAL_SECS + 1);
    let end = Instant::now() + Duration::from_secs(45);
    let mut seen = (last_activity(hub, user), Instant::now());
    loop {
        sleep(Duration::from_millis(500));
        let now = last_activity(hub, user);
        if now != seen.0 {
            seen = (now, Instant::now());
        } else if seen.1.elapsed() >= quiet {
            return seen.0;
        }
        assert!(
            Instant::now() < end,
            "{user}'s last_activity kept moving: {:?}\n{}",
            seen.0,
            diag(hub, sessions)
        );
    }
}

fn has_server(hub: &Hub, user: &str) -> bool {
    hub.user_model(user).unwrap()["servers"]
        .as_object()
        .is_some_and(|s| s.contains_key(""))
}

/// A session container with the server's environment, reporting every INTERVAL_SECS, with
/// server keepalives every second (they must not count).
fn session_for(env: &HashMap<String, String>) -> Sshd {
    let mut b = Builder::new()
        .image_env(
            "INIT_SSHD_ACTIVITY_INTERVAL_SECS",
            &INTERVAL_SECS.to_string(),
        )
        .image_env("INIT_SSHD_KEEPALIVE_SECS", "1");
    for (k, v) in env {
        b = b.image_env(k, v);
    }
    b.start()
}

/// `ssh -tt` into a login shell that is never typed into (stdin held open); killed on drop.
struct IdleShell(Proc);

impl IdleShell {
    fn open(s: &Sshd) -> IdleShell {
        let mut c = s.ssh();
        c.args(["-tt", s.host()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        IdleShell(reaper::spawn(&mut c).unwrap())
    }

    fn connected(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for IdleShell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sftp` uploads of a small file, one about every 1.5 s, until dropped (SFTP channels only:
/// each upload is a connection of its own).
struct Uploads {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Uploads {
    fn start(s: &Sshd) -> Uploads {
        let file = s.root.join("upload.bin");
        write_random_file(&file, 256 * 1024, 7);
        let batch = s.root.join("upload.batch");
        std::fs::write(&batch, format!("put {} up.bin\n", file.display())).unwrap();
        let mut cmd = Command::new("sftp");
        cmd.args(s.opts()).arg("-b").arg(&batch).arg(s.host());
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stop2, done2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if run(&mut cmd, b"", T).success() {
                    done2.fetch_add(1, Ordering::SeqCst);
                }
                sleep(Duration::from_millis(1500));
            }
        });
        Uploads {
            stop,
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reports_logged(hub: &Hub, user: &str) -> usize {
    let needle = format!("POST /hub/api/users/{user}/activity");
    hub.log_text()
        .lines()
        .filter(|l| l.contains(&needle) && l.contains(" 200 "))
        .count()
}

fn diag(hub: &Hub, sessions: &[(&str, &Sshd)]) -> String {
    let mut s = String::new();
    for (who, sshd) in sessions {
        s.push_str(&format!("=== {who}'s session\n{}", sshd.logs()));
    }
    let log = hub.log_text();
    let tail: Vec<&str> = log.lines().rev().take(80).collect();
    s.push_str("=== hub log (tail)\n");
    for l in tail.into_iter().rev() {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn stamp(t0: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
}

#[test]
fn ssh_activity_moves_last_activity_and_keeps_the_culler_away() {
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let hub = Hub::start(work.path(), &hub_config(work.path())).unwrap();
    hub.create_users(&["alice", "bob", "carol"]).unwrap();
    let alice_env = spawn_server(&hub, work.path(), "alice");
    let bob_env = spawn_server(&hub, work.path(), "bob");
    let carol_env = spawn_server(&hub, work.path(), "carol");
    assert!(alice_env["JUPYTERHUB_ACTIVITY_URL"].ends_with("/users/alice/activity"));
    stamp(t0, "hub up, the servers spawned by the hub");

    let alice = session_for(&alice_env);
    let bob = session_for(&bob_env);
    let carol = session_for(&carol_env);
    let all = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    for (who, s) in all {
        assert!(
            s.logs().contains("reporting SSH activity to JupyterHub"),
            "{who}: reporting not on\n{}",
            s.logs()
        );
    }
    // Alice works over SSH only: a command that prints every second.
    let busy = Bg::spawn(
        alice
            .ssh()
            .arg(alice.host())
            .arg("for i in $(seq 1 150); do echo tick $i; sleep 1; done"),
    );
    let busy_since = Instant::now();
    // Bob has a shell open and does nothing, plus a forwarding-only connection with client
    // keepalives (server ones run every second too).
    let mut shell = IdleShell::open(&bob);
    let _idle = Bg::spawn(
        bob.ssh()
            .args(["-N", "-o", "ServerAliveInterval=1", bob.host()]),
    );
    // Carol only moves files.
    let uploads = Uploads::start(&carol);
    stamp(
        t0,
        "sessions up; alice busy over SSH, carol uploading with sftp, bob idle",
    );

    // Bob's shell printed its prompt once at login (bytes to the client): let that report
    // land, then nothing of Bob's may move while Alice's does.
    let b1 = settled(&hub, "bob", &all);
    let (a1, c1) = (last_activity(&hub, "alice"), last_activity(&hub, "carol"));
    sleep(Duration::from_secs(4 * INTERVAL_SECS));
    let (a2, b2) = (last_activity(&hub, "alice"), last_activity(&hub, "bob"));
    let c2 = last_activity(&hub, "carol");
    stamp(
        t0,
        &format!(
            "last_activity: alice {a1:?} -> {a2:?}; carol {c1:?} -> {c2:?}; bob {b1:?} -> {b2:?}"
        ),
    );
    assert!(
        c1.is_some() && c2 > c1,
        "carol's last_activity did not move with SFTP uploads ({} done): {c1:?} -> {c2:?}\n{}",
        uploads.done.load(Ordering::SeqCst),
        diag(&hub, &all)
    );
    assert!(
        a1.is_some() && a2 > a1,
        "alice's last_activity did not move with SSH work: {a1:?} -> {a2:?}\n{}",
        diag(&hub, &all)
    );
    assert!(
        b1.is_some() && b2 == b1,
        "bob's last_activity moved with an idle connection: {b1:?} -> {b2:?}\n{}",
        diag(&hub, &all)
    );

    // The culler (timeout CULL_TIMEOUT_SECS) stops Bob's server and not Alice's.
    let end = Instant::now() + Duration::from_secs(CULL_TIMEOUT_SECS + 6 * CULL_EVERY_SECS + 30);
    while has_server(&hub, "bob") {
        for busy in ["alice", "carol"] {
            assert!(
                has_server(&hub, busy),
                "{busy}'s server was culled while working over SSH\n{}",
                diag(&hub, &all)
            );
        }
        assert!(
            Instant::now() < end,
            "bob's idle server was not culled\n{}",
            diag(&hub, &all)
        );
        sleep(Duration::from_millis(500));
    }
    stamp(t0, "bob's server culled");
    assert!(
        shell.connected(),
        "bob's idle shell ended before the culler came\n{}",
        diag(&hub, &all)
    );
    // Two more culler rounds: the busy servers stay.
    sleep(Duration::from_secs(2 * CULL_EVERY_SECS + 1));
    for busy in ["alice", "carol"] {
        assert!(
            has_server(&hub, busy),
            "{busy}'s server was culled while working over SSH\n{}",
            diag(&hub, &all)
        );
    }
    let busy_secs = busy_since.elapsed().as_secs_f64();
    let reports = reports_logged(&hub, "alice");
    stamp(
        t0,
        &format!(
            "alice's and carol's servers still running; alice: {reports} activity reports in \
             {busy_secs:.0} s of SSH work (interval {INTERVAL_SECS} s: at most {:.0}); carol: {} \
             after {} uploads; bob's idle session: {} (its login)",
            busy_secs / INTERVAL_SECS as f64 + 1.0,
            reports_logged(&hub, "carol"),
            uploads.done.load(Ordering::SeqCst),
            reports_logged(&hub, "bob")
        ),
    );
    assert!(
        reports as f64 <= busy_secs / INTERVAL_SECS as f64 + 1.0,
        "more than one report per interval\n{}",
        diag(&hub, &all)
    );
    assert!(reports >= 3, "{reports} reports\n{}", diag(&hub, &all));
    drop(busy);
    drop(uploads);
}

/// Sessions without a hub (Renku, Kubeflow, plain pods) do not try: one line at start.
#[test]
fn no_hub_in_the_environment_means_no_reporting() {
    let s = Builder::new().start();
    assert_eq!(s.exec_ok("echo hi"), "hi\n");
    let logs = s.logs();
    assert!(
        logs.contains("activity reporting off") && logs.contains("JUPYTERHUB_ACTIVITY_URL"),
        "{logs}"
    );
    assert!(
        !logs.contains("activity report to JupyterHub failed"),
        "{logs}"
    );
}
