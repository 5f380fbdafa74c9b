//! Starts one of each kind of long-lived process tree the test harness makes, prints what to
//! look for afterwards, then waits to be killed by a signal. `tests/tests/no_leftovers.rs`
//! sends SIGINT, SIGTERM or SIGHUP and checks that nothing of it is left.
//!
//! The trees: a sandbox whose PID 1 ignores signals with `init-sshd start`'s detached server
//! in it (plain and TLS listeners), a sandbox with `serve` in the foreground, an nginx master
//! with its workers, an `ssh -N -L` forward through nginx with its `openssl` ProxyCommand,
//! and an `ssh` command that would run for ten minutes.
//!
//! Output, one per line: `port N` (something listens there now), `pid N` (a process of it),
//! then `READY`. Everything it makes lives under `$TMPDIR`.

// A panic with a message is the failure report of this test helper.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use session_ssh_tests::reaper;
use session_ssh_tests::sni::SniRouter;
use session_ssh_tests::sshd::{Bg, Builder, net, run};

fn main() {
    reaper::install();
    let tls = net::free_port();
    let a = Builder::new()
        .image_env("INIT_SSHD_TLS_LISTEN", &format!("127.0.0.1:{tls}"))
        .image_env("INIT_SSHD_TLS_NAME", "a.ssh.test")
        .start();
    let b = Builder::new()
        .authorized_keys(&format!("{}\n", a.client.public))
        .serve_foreground()
        .start();
    assert!(net::wait_port(tls, Duration::from_secs(10)), "TLS port");
    let router = SniRouter::start(&[("a.ssh.test", tls)]);

    let config = a.root.join("client/config-probe");
    let host_pub = fs::read_to_string(a.dir.join("ssh_host_ed25519_key.pub")).expect("host key");
    let kh = a.root.join("client/known_hosts_probe");
    fs::write(&kh, format!("a.ssh.test {host_pub}")).expect("known_hosts");
    fs::write(
        &config,
        format!(
            "Host a.ssh.test\n  ProxyCommand openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet \
             -connect 127.0.0.1:{} -servername %h\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  \
             BatchMode yes\n",
            router.port,
            session_ssh_tests::sshd::USER,
            a.client.private.display(),
            kh.display()
        ),
    )
    .expect("config");
    let lport = net::free_port();
    let http = net::http_server("probe\n");
    let mut fwd = Command::new("ssh");
    fwd.arg("-F")
        .arg(&config)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port))
        .arg("a.ssh.test")
        .env_remove("SSH_AUTH_SOCK");
    let fwd = Bg::spawn(&mut fwd);
    assert!(net::wait_port(lport, Duration::from_secs(30)), "-L port");

    // A client command that runs on: run::run waits in a thread of its own.
    let mut long = b.ssh();
    long.arg(b.host()).arg("sleep 600");
    std::thread::spawn(move || run::run(&mut long, b"", Duration::from_secs(900)));

    let mut out = std::io::stdout().lock();
    for p in [a.port, tls, b.port, router.port, lport] {
        writeln!(out, "port {p}").expect("stdout");
    }
    writeln!(out, "pid {}", fwd.child.id()).expect("stdout");
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    // Keep every fixture alive until a signal ends the process.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
