//! init-sshd's connection limits against the real OpenSSH client: keepalive drops a dead
//! client after the configured count, the idle timeout closes idle connections and spares
//! busy ones, and --max-connections closes connections beyond it until one ends.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T};

/// A one-connection TCP relay (client → relay → server) that can turn into a black hole:
/// it keeps both sockets open but forwards nothing more either way, like a client whose
/// host vanished. It reports when the server closes its side.
struct Relay {
    port: u16,
    hole: Arc<AtomicBool>,
    server_closed: mpsc::Receiver<Instant>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = l.local_addr().expect("relay addr").port();
        let hole = Arc::new(AtomicBool::new(false));
        let (tx, server_closed) = mpsc::channel();
        let h = hole.clone();
        thread::spawn(move || {
            let Ok((client, _)) = l.accept() else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            let (c2, s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let h2 = h.clone();
            thread::spawn(move || pump(c2, s2, &h2, None));
            pump(server, client, &h, Some(tx));
        });
        Relay {
            port,
            hole,
            server_closed,
        }
    }

    fn black_hole(&self) {
        self.hole.store(true, Ordering::SeqCst);
    }
}

/// Copy `from` → `to` until `from` ends (reading on, and dropping what it reads, once the
/// hole is open); then report the time on `eof`. Bounded by a 120 s read timeout.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    hole: &AtomicBool,
    eof: Option<mpsc::Sender<Instant>>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if !hole.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    if let Some(tx) = eof {
        let _ = tx.send(Instant::now());
    }
}

/// `ssh` with the default options, but to 127.0.0.1:`port` (a relay) with the server's
/// host key accepted there; no client keepalives.
fn ssh_via(s: &Sshd, port: u16) -> Command {
    let line = fs::read_to_string(&s.known_hosts).expect("known_hosts");
    let kh = s.root.join(format!("known_hosts_{port}"));
    let ours = format!("[127.0.0.1]:{}", s.port);
    fs::write(&kh, line.replace(&ours, &format!("[127.0.0.1]:{port}"))).expect("write");
    let mut c = Command::new("ssh");
    for o in s.opts() {
        if o.starts_with("Port=") {
            c.arg(format!("Port={port}"));
        } else if o.starts_with("UserKnownHostsFile=") {
            c.arg(format!("UserKnownHostsFile={}", kh.display()));
        } else {
            c.arg(o);
        }
    }
    c.args(["-o", "ServerAliveInterval=0"]);
    c.env_remove("SSH_AUTH_SOCK");
    c
}

#[test]
fn a_dead_client_is_dropped_after_the_configured_keepalive_count() {
    // Interval 1 s, 6 unanswered: dropped about 7 s after the client went dead (the 7th
    // interval finds 6 unanswered).
    let s = Builder::new()
        .image_env("INIT_SSHD_KEEPALIVE_SECS", "1")
        .image_env("INIT_SSHD_KEEPALIVE_COUNT", "6")
        .start();
    let relay = Relay::start(s.port);
    let mut c = ssh_via(&s, relay.port);
    c.arg("-N").arg(s.host());
    let _client = Bg::spawn(&mut c);
    assert!(
        s.wait_log("login accepted", 1, Duration::from_secs(30)),
        "no login through the relay\n{}",
        s.logs()
    );
    // A few keepalives answered while the relay still forwards: the client is alive.
    thread::sleep(Duration::from_secs(3));
    assert!(
        relay.server_closed.try_recv().is_err(),
        "a live client was dropped\n{}",
        s.logs()
    );
    let dead = Instant::now();
    relay.black_hole();
    let closed = relay
        .server_closed
        .recv_timeout(Duration::from_secs(40))
        .unwrap_or_else(|_| panic!("the server kept a dead client 40 s\n{}", s.logs()));
    let held = closed.duration_since(dead);
    eprintln!("a dead client was dropped after {held:?} (interval 1 s, count 6)");
    // 6 unanswered keepalives of 1 s; a keepalive whose answer the hole swallowed may
    // count as the first, so 5.5 s (the default count would be 5 s at the most).
    assert!(
        held >= Duration::from_millis(5500),
        "dropped after {held:?}, before 6 keepalives of 1 s\n{}",
        s.logs()
    );
    assert!(
        held <= Duration::from_secs(17),
        "dropped only after {held:?} (expected about 7 s)\n{}",
        s.logs()
    );
    assert!(
        s.wait_log("Keepalive timeout", 1, Duration::from_secs(5)),
        "{}",
        s.logs()
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let s = Builder::new()
        .image_env("INIT_SSHD_IDLE_TIMEOUT_SECS", "2")
        .start();
    thread::scope(|scope| {
        let busy = scope.spawn(|| {
            s.exec(
                &["-o", "ServerAliveInterval=0"],
                "for i in 1 2 3 4 5 6; do echo $i; sleep 1; done",
                b"",
                T,
            )
        });
        let mut idle = s.ssh();
        idle.args(["-N", "-o", "ServerAliveInterval=0"])
            .arg(s.host());
        let out = run(&mut idle, b"", Duration::from_secs(30));
        assert!(
            !out.timed_out,
            "an idle connection outlived the 2 s idle timeout by far\n{}",
            s.diag(&out)
        );
        assert!(
            out.elapsed >= Duration::from_secs(2),
            "closed after {:?}, before the idle timeout\n{}",
            out.elapsed,
            s.diag(&out)
        );
        let busy = busy.join().expect("busy");
        s.assert_ok(&busy);
        assert_eq!(busy.stdout_str(), "1\n2\n3\n4\n5\n6\n");
    });
    assert!(
        s.wait_log("Inactivity timeout", 1, Duration::from_secs(5)),
        "{}",
        s.logs()
    );
}

#[test]
fn connections_beyond_max_connections_are_closed_until_one_ends() {
    let s = Builder::new()
        .image_env("INIT_SSHD_MAX_CONNECTIONS", "2")
        .start();
    let hold = || {
        let mut c = s.ssh();
        c.arg("-N").arg(s.host());
        Bg::spawn(&mut c)
    };
    let first = hold();
    let _second = hold();
    assert!(
        s.wait_log("login accepted", 2, Duration::from_secs(30)),
        "two held connections did not log in\n{}",
        s.logs()
    );
    let third = s.exec(&[], "echo third", b"", T);
    assert!(
        !third.success(),
        "a third connection got in past max-connections 2\n{}",
        s.diag(&third)
    );
    assert!(
        third.elapsed < Duration::from_secs(10),
        "the third connection was held {:?} before it was closed",
        third.elapsed
    );
    assert!(
        s.log_text().contains("connection limit reached; closed"),
        "{}",
        s.logs()
    );
    // One ends: its place is free again (once the server has seen it go).
    drop(first);
    let end = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = s.exec(&[], "echo again", b"", T);
        if out.success() || Instant::now() > end {
            break out;
        }
        thread::sleep(Duration::from_millis(500));
    };
    s.assert_ok(&out);
    assert_eq!(out.stdout_str(), "again\n");
}
