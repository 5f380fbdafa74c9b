//! init-sshd limits and hygiene against the real OpenSSH client: peers that never send an
//! SSH version line go at the version deadline, unauthenticated connections are capped
//! (MaxStartups) and a new one evicts the oldest, so a flood of silent and slow peers
//! cannot lock the user out, `-R` binds loopback only
//! (OpenSSH's `GatewayPorts no`), and the audit log names every login and channel.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::net::{echo_server, free_port, wait_port};
use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T};

/// How long a log line may lag behind what the client saw.
const WAIT: Duration = Duration::from_secs(5);

/// A TCP peer that connects and then says nothing.
fn silent(s: &Sshd) -> TcpStream {
    let st = TcpStream::connect((s.host(), s.port)).expect("connect");
    st.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    st
}

/// Read until the server closes; returns how long that took.
fn until_closed(mut st: TcpStream) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match st.read(&mut buf) {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_full_startup_table_evicts_the_oldest_and_silent_peers_go_at_the_version_deadline() {
    let s = Builder::new()
        .image_env("INIT_SSHD_LOGIN_GRACE_SECS", "120")
        .image_env("INIT_SSHD_VERSION_TIMEOUT_SECS", "3")
        .image_env("INIT_SSHD_MAX_STARTUPS", "3")
        .start();
    assert_eq!(s.exec_ok("echo up"), "up\n");

    // Three silent peers take every pre-auth place: the user's login evicts the oldest
    // instead of being refused.
    let mut peers: Vec<TcpStream> = (0..3).map(|_| silent(&s)).collect();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s.exec_ok("echo in"), "in\n");
    let oldest = until_closed(peers.remove(0));
    assert!(
        oldest < Duration::from_secs(2),
        "the evicted peer was held {oldest:?} more\n{}",
        s.logs()
    );
    assert!(s.wait_log("max-startups reached", 1, WAIT), "{}", s.logs());

    // The others are closed at the version deadline (3 s), long before the 120 s grace.
    let waits: Vec<Duration> = peers.into_iter().map(until_closed).collect();
    for w in &waits {
        assert!(
            *w < Duration::from_secs(12),
            "a silent peer was held {w:?} (version deadline 3 s)\n{}",
            s.logs()
        );
    }
    assert!(
        s.wait_log("no SSH version line in time", 2, WAIT),
        "{}",
        s.logs()
    );
    assert_eq!(s.exec_ok("echo back"), "back\n");
}

/// A bounded flood against one server until `stop` (at most 45 s): a burst of silent
/// connections, then one more every 2 s, and 4 slow ones writing `SSH-2.0-...` one byte a
/// second, each replaced (at most one a second) once the server closes it. Returns how
/// many connections it opened.
fn flood(port: u16, stop: &AtomicBool) -> usize {
    let open = || TcpStream::connect(("127.0.0.1", port)).ok();
    let line = b"SSH-2.0-slow-flood-client-that-never-ends\r\n";
    let mut silent: Vec<TcpStream> = (0..20).filter_map(|_| open()).collect();
    let mut slow: Vec<(TcpStream, usize)> = (0..4).filter_map(|_| open()).map(|t| (t, 0)).collect();
    let mut opened = silent.len() + slow.len();
    for tick in 0..180u32 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        thread::sleep(Duration::from_millis(250));
        if tick % 8 == 0
            && let Some(t) = open()
        {
            silent.push(t);
            opened += 1;
        }
        if tick % 4 != 0 {
            continue;
        }
        let mut replaced = false;
        for (st, at) in &mut slow {
            let ok = st.write_all(&line[*at % line.len()..][..1]).is_ok();
            *at += 1;
            if !ok
                && !replaced
                && let Some(fresh) = open()
            {
                (*st, *at, replaced) = (fresh, 0, true);
                opened += 1;
            }
        }
    }
    opened
}

#[test]
fn a_legitimate_login_succeeds_within_seconds_during_a_flood_of_silent_and_slow_peers() {
    let s = Builder::new()
        .image_env("INIT_SSHD_LOGIN_GRACE_SECS", "120")
        .image_env("INIT_SSHD_MAX_STARTUPS", "4")
        .start();
    assert_eq!(s.exec_ok("echo up"), "up\n");
    let stop = AtomicBool::new(false);
    let port = s.port;
    let opened = thread::scope(|scope| {
        let flooding = scope.spawn(|| flood(port, &stop));
        // The table is full of flood connections by now.
        thread::sleep(Duration::from_secs(3));
        for round in 0..3 {
            let out = s.exec(&[], "echo ok", b"", T);
            assert!(
                out.success() && out.stdout_str() == "ok\n",
                "login {round} during the flood\n{}",
                s.diag(&out)
            );
            eprintln!("login {round} during the flood: {:?}", out.elapsed);
            assert!(
                out.elapsed < Duration::from_secs(10),
                "login {round} took {:?} during the flood\n{}",
                out.elapsed,
                s.logs()
            );
            thread::sleep(Duration::from_secs(1));
        }
        stop.store(true, Ordering::Relaxed);
        flooding.join().expect("flood")
    });
    assert!(opened >= 24, "the flood opened {opened} connections");
    let evictions = s
        .log_text()
        .lines()
        .filter(|l| l.contains("max-startups reached") && l.contains("evicted="))
        .count();
    eprintln!("flood: {opened} connections opened, {evictions} evicted");
    assert!(
        evictions >= 20,
        "{evictions} evictions logged\n{}",
        s.logs()
    );
}

#[test]
fn a_peer_stalled_inside_the_key_exchange_is_cut_at_the_grace_time() {
    let s = Builder::new()
        .image_env("INIT_SSHD_LOGIN_GRACE_SECS", "3")
        .start();
    // A version line, then nothing: russh's connection task would keep this socket open
    // past the grace time unless the server cuts it.
    let mut st = silent(&s);
    st.write_all(b"SSH-2.0-stalls\r\n").expect("write");
    let held = until_closed(st);
    assert!(
        held < Duration::from_secs(10),
        "a peer stalled in the key exchange was held {held:?} (grace 3 s)\n{}",
        s.logs()
    );
    assert!(
        s.wait_log("login grace time exceeded", 1, WAIT),
        "{}",
        s.logs()
    );
}

#[test]
fn an_authenticated_session_outlives_the_grace_time_and_frees_its_startup_slot() {
    let s = Builder::new()
        .image_env("INIT_SSHD_LOGIN_GRACE_SECS", "5")
        .image_env("INIT_SSHD_MAX_STARTUPS", "1")
        .start();
    // A logged-in session holds no startup slot: a second login works while it runs, and
    // the first is not cut at the grace time.
    let mut c = s.ssh();
    c.arg(s.host()).arg("sleep 8; echo done");
    let long = thread::spawn(move || run(&mut c, b"", T));
    // Well past its login (a slow machine included), well before its end.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(s.exec_ok("echo second"), "second\n");
    let out = long.join().expect("join");
    s.assert_ok(&out);
    assert_eq!(out.stdout_str(), "done\n");
}

/// Local addresses listening on `port` (from /proc/net/tcp, shared with the "container").
fn listeners(port: u16) -> Vec<String> {
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            (f.get(3) == Some(&"0A") && u16::from_str_radix(p, 16).ok() == Some(port))
                .then(|| addr.to_owned())
        })
        .collect()
}

#[test]
fn remote_forward_to_any_address_binds_loopback_only() {
    let s = Builder::new().start();
    let echo = echo_server("hi\n");
    let rport = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("*:{rport}:127.0.0.1:{}", echo.port))
        .arg(s.host());
    let _bg = Bg::spawn(&mut c);
    assert!(
        wait_port(rport, Duration::from_secs(15)),
        "ssh -R '*:{rport}' did not listen\n{}",
        s.logs()
    );
    // 0100007F is 127.0.0.1; 00000000 would be every address of the pod.
    assert_eq!(
        listeners(rport),
        vec!["0100007F".to_owned()],
        "{}",
        s.logs()
    );
}

#[test]
fn every_login_and_channel_has_an_audit_line() {
    let s = Builder::new().start();
    assert_eq!(s.exec_ok("echo audited"), "audited\n");
    let logs = fs::read_to_string(s.dir.join("init-sshd.log")).expect("init-sshd.log");
    let fp = s.client.fingerprint();
    let login = logs
        .lines()
        .find(|l| l.contains("login accepted"))
        .unwrap_or_else(|| panic!("no login line\n{logs}"));
    assert!(login.contains(&fp), "login line without {fp}: {login}");
    assert!(
        login.contains("127.0.0.1"),
        "login line without peer: {login}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("channel") && l.contains("exec")),
        "no exec channel line\n{logs}"
    );
}
