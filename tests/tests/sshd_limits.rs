//! init-sshd limits and hygiene against the real OpenSSH client: the login grace time
//! also bounds peers that never send an SSH version line, unauthenticated connections are
//! capped (MaxStartups) so they cannot lock the user out, `-R` binds loopback only
//! (OpenSSH's `GatewayPorts no`), and the audit log names every login and channel.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::net::{echo_server, free_port, wait_port};
use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T};

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
fn silent_peers_are_dropped_after_the_grace_time_and_never_lock_the_user_out() {
    let s = Builder::new()
        .image_env("INIT_SSHD_LOGIN_GRACE_SECS", "3")
        .image_env("INIT_SSHD_MAX_STARTUPS", "3")
        .start();
    assert_eq!(s.exec_ok("echo up"), "up\n");

    // Three silent peers take every pre-auth slot: the next connection is closed at once.
    let peers: Vec<TcpStream> = (0..3).map(|_| silent(&s)).collect();
    thread::sleep(Duration::from_millis(300));
    let refused = s.exec(&[], "echo in", b"", T);
    assert!(
        !refused.success(),
        "a 4th unauthenticated connection got in past max-startups 3\n{}",
        s.diag(&refused)
    );
    assert!(
        s.logs().contains("too many unauthenticated connections"),
        "{}",
        s.logs()
    );

    // Each silent peer is closed by the server once the grace time is over (3 s), not
    // held forever waiting for a version line.
    let waits: Vec<Duration> = peers.into_iter().map(until_closed).collect();
    for w in &waits {
        assert!(
            *w < Duration::from_secs(10),
            "a silent peer was held {w:?} (grace 3 s)\n{}",
            s.logs()
        );
    }
    assert!(
        s.logs()
            .contains("no SSH version line within the login grace time"),
        "{}",
        s.logs()
    );
    // Their slots are free again: the user logs in.
    assert_eq!(s.exec_ok("echo back"), "back\n");
}

#[test]
fn a_peer_stalled_inside_the_key_exchange_is_cut_at_the_grace_time() {
    use std::io::Write;
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
        s.logs().contains("login grace time exceeded"),
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
