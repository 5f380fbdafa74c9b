//! End-to-end: the gateway's cap on connections not yet logged in (`--max-startups`),
//! against the real apiserver, an injected session and the real OpenSSH client. A table
//! full of silent connections must not lock a real user out: each new connection evicts
//! the oldest one that has not logged in (issue 17's pre-auth flood, at the gateway).

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use session_ssh_tests::gateway::hub_cluster;
use session_ssh_tests::gateway::{
    Gateway, GatewayKeys, gateway_kubeconfig, ssh, ssh_opts, start_session,
};

const MAX_STARTUPS: usize = 4;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A metric's value in a Prometheus text body (0 when absent).
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// A client that connects and never sends a byte.
fn silent(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Whether the gateway closed `s` (it may first have sent its version line).
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_full_startup_table_evicts_the_oldest_instead_of_locking_users_out() {
    let (mut wc, ns) = hub_cluster().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = GatewayKeys::generate(work.path()).unwrap();
    let gina = start_session(&mut wc, &ns, work.path(), "gina", "", &keys.user_ca_public)
        .await
        .unwrap();
    // A grace time far longer than the test's bound on a login: only eviction can let a
    // login through a full table in time.
    let max = MAX_STARTUPS.to_string();
    let env = [
        ("GATEWAY_MAX_STARTUPS", max.as_str()),
        ("GATEWAY_LOGIN_GRACE_SECS", "120"),
    ];
    let kubeconfig = gateway_kubeconfig(&wc, work.path()).await.unwrap();
    let gw = Gateway::start(&keys, &kubeconfig, "jupyterhub", &[&ns], work.path(), &env).unwrap();
    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, gw.port, &known).unwrap();
    let opts = ssh_opts(&gina.key, &known, gw.port);
    let evicted = || {
        metric(
            &gw.http_get("/metrics").unwrap().1,
            "session_ssh_gateway_startups_evicted_total",
        )
    };

    // The gateway's index knows gina once a login works.
    let mut out = ssh(&opts, "gina", "echo ready").unwrap();
    for _ in 0..50 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = ssh(&opts, "gina", "echo ready").unwrap();
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(evicted(), 0);

    // Fill the table with silent connections, past the 1.5 s in which the gateway waits
    // for a first byte, so that they sit in the SSH handshake.
    let mut flood: Vec<TcpStream> = (0..MAX_STARTUPS).map(|_| silent(gw.port)).collect();
    std::thread::sleep(Duration::from_secs(2));

    // Three rounds: a real login gets in within a few seconds, then the flood refills the
    // place the login gave back.
    for round in 1..=3u64 {
        let started = Instant::now();
        let out = ssh(&opts, "gina", "echo in-through-a-full-table").unwrap();
        assert_eq!(
            text(&out.stdout).trim(),
            "in-through-a-full-table",
            "round {round}: {}\n{}",
            text(&out.stderr),
            gw.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round}: the login took {:?}",
            started.elapsed()
        );
        assert_eq!(evicted(), round, "round {round}\n{}", gw.log_text());
        flood.push(silent(gw.port));
    }
    // The oldest three silent connections were cut, the newest ones are still waiting.
    std::thread::sleep(Duration::from_secs(2));
    for (i, s) in flood.iter_mut().enumerate() {
        assert_eq!(
            closed(s),
            i < 3,
            "silent connection {i} (the 3 oldest must be cut)\n{}",
            gw.log_text()
        );
    }
    assert!(
        gw.log_text().contains("max-startups reached"),
        "{}",
        gw.log_text()
    );

    // The flood goes away: logins work and nothing more is evicted.
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let out = ssh(&opts, "gina", "echo after-the-flood").unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "after-the-flood",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(evicted(), 3);
}
