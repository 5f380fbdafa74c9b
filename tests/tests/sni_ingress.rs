//! SSH inside TLS through a real SNI router (issue 6, "What it must show" 1).
//!
//! Two real init-sshd sessions (install + start, and install + serve), each with its own host
//! key and TLS port, behind Debian nginx's stream `ssl_preread` passthrough. The real OpenSSH
//! client uses exactly the documented ProxyCommand
//! `openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect ROUTER -servername %h` and reaches each
//! session by its hostname, which the host key proves (StrictHostKeyChecking=yes).
//!
//! Also the optional host CA: certificates from the real `ssh-keygen -s` and one
//! `@cert-authority` line trusting both sessions.
//!
//! Needs Debian: openssh-client, openssl, nginx, libnginx-mod-stream, bubblewrap, util-linux.

// Test helpers: a panic with a message is the failure report.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use session_ssh_tests::sni::SniRouter;
use session_ssh_tests::sshd::run::{self, Out};
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T, USER, net};

const A: &str = "a.ssh.test";
const B: &str = "b.ssh.test";

/// Two sessions behind one router, and a client config as a user would write it.
struct Ingress {
    a: Sshd,
    a_tls: u16,
    b: Sshd,
    b_tls: u16,
    router: SniRouter,
    /// ~/.ssh/config of the test user.
    config: PathBuf,
    known_hosts: PathBuf,
}

fn host_pub(s: &Sshd) -> String {
    let line = fs::read_to_string(s.dir.join("ssh_host_ed25519_key.pub")).expect("host pub");
    let mut it = line.split_whitespace();
    format!("{} {}", it.next().expect("type"), it.next().expect("blob"))
}

impl Ingress {
    fn start() -> Ingress {
        // Session a: install + start (start passes --tls-listen from its env to serve).
        let a_tls = net::free_port();
        let a = Builder::new()
            .image_env("INIT_SSHD_TLS_LISTEN", &format!("127.0.0.1:{a_tls}"))
            .image_env("INIT_SSHD_TLS_HANDSHAKE_SECS", "3")
            .image_env("INIT_SSHD_TLS_NAME", A)
            .home_file("whoami.txt", "session-a\n")
            .start();
        // Session b: install + serve in the foreground, authorizing the SAME client key, so
        // only the host key tells the two apart.
        let b_tls = net::free_port();
        let b = Builder::new()
            .authorized_keys(&format!("{}\n", a.client.public))
            .image_env("INIT_SSHD_TLS_LISTEN", &format!("127.0.0.1:{b_tls}"))
            .image_env("INIT_SSHD_TLS_HANDSHAKE_SECS", "3")
            .image_env("INIT_SSHD_TLS_NAME", B)
            .home_file("whoami.txt", "session-b\n")
            .serve_foreground()
            .start();
        for (s, p) in [(&a, a_tls), (&b, b_tls)] {
            assert!(
                net::wait_port(p, Duration::from_secs(10)),
                "TLS port {p} not accepting\n{}",
                s.logs()
            );
        }
        assert_ne!(host_pub(&a), host_pub(&b), "two sessions, two host keys");

        let router = SniRouter::start(&[(A, a_tls), (B, b_tls)]);
        let config = a.root.join("client/config");
        let known_hosts = a.root.join("client/known_hosts_sni");
        // The documented user config: one Host block for the ingress domain.
        let text = format!(
            "Host *.ssh.test\n\
             \x20 ProxyCommand openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect 127.0.0.1:{port} -servername %h\n\
             \x20 User {USER}\n\
             \x20 IdentityFile {key}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 UserKnownHostsFile {kh}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 BatchMode yes\n\
             \x20 ConnectTimeout 15\n\
             \x20 ServerAliveInterval 15\n",
            port = router.port,
            key = a.client.private.display(),
            kh = known_hosts.display(),
        );
        fs::write(&config, text).expect("write ssh config");
        let ing = Ingress {
            a,
            a_tls,
            b,
            b_tls,
            router,
            config,
            known_hosts,
        };
        ing.trust(&[(A, &ing.a), (B, &ing.b)]);
        ing
    }

    /// known_hosts: `name` → that session's host key, nothing else.
    fn trust(&self, entries: &[(&str, &Sshd)]) {
        let mut text = String::new();
        for (name, s) in entries {
            text.push_str(&format!("{name} {}\n", host_pub(s)));
        }
        fs::write(&self.known_hosts, text).expect("write known_hosts");
    }

    fn ssh(&self, host: &str, remote: &str) -> Out {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(&self.config).arg(host).arg(remote);
        c.env_remove("SSH_AUTH_SOCK");
        run::run(&mut c, b"", T)
    }

    fn diag(&self, out: &Out) -> String {
        format!(
            "{}\n--- router error.log ---\n{}\n--- router access.log ---\n{}\n--- a ---\n{}\n--- b ---\n{}",
            out.describe(),
            self.router.error_log(),
            self.router.access_log(),
            self.a.logs(),
            self.b.logs()
        )
    }

    fn ssh_ok(&self, host: &str, remote: &str) -> String {
        let out = self.ssh(host, remote);
        assert!(out.success(), "{}", self.diag(&out));
        out.stdout_str()
    }
}

#[test]
fn each_session_is_reached_by_its_hostname_proven_by_its_host_key() {
    let ing = Ingress::start();
    assert_eq!(ing.ssh_ok(A, "cat ~/whoami.txt"), "session-a\n");
    assert_eq!(ing.ssh_ok(B, "cat ~/whoami.txt"), "session-b\n");

    // The router really routed by SNI, and each server saw TLS with that name.
    assert!(
        ing.router
            .wait_access(&format!("sni={A} upstream=127.0.0.1:{}", ing.a_tls), T),
        "{}",
        ing.router.access_log()
    );
    assert!(
        ing.router
            .wait_access(&format!("sni={B} upstream=127.0.0.1:{}", ing.b_tls), T),
        "{}",
        ing.router.access_log()
    );
    for (s, name) in [(&ing.a, A), (&ing.b, B)] {
        let logs = s.logs();
        assert!(
            logs.contains(&format!("sni=\"{name}\""))
                && logs.contains("TLS connection; SSH follows"),
            "session {name} log lacks its TLS connection:\n{logs}"
        );
    }

    // Cross check: b's key trusted under name a must fail (routing reaches a, whose key differs).
    ing.trust(&[(A, &ing.b), (B, &ing.a)]);
    for host in [A, B] {
        let out = ing.ssh(host, "true");
        assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));
        assert!(
            out.stderr_str()
                .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || out.stderr_str().contains("Host key verification failed"),
            "{}",
            ing.diag(&out)
        );
    }
    // A name the router does not know reaches no session.
    ing.trust(&[(A, &ing.a), (B, &ing.b), ("c.ssh.test", &ing.a)]);
    let out = ing.ssh("c.ssh.test", "true");
    assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));

    // The certificate install made: ECDSA P-256 naming the session host; key private to serve.
    for (s, name) in [(&ing.a, A), (&ing.b, B)] {
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(s.dir.join("tls.crt"))
            .output()
            .expect("openssl x509");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains(&format!("DNS:{name}")), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
        assert!(text.contains("prime256v1"), "{text}");
        let mode = fs::metadata(s.dir.join("tls.key"))
            .expect("tls.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "tls.key mode after serve");
    }
}

/// The documented ProxyCommand ends with `ssh`, also when ssh's SIGHUP to it cannot land
/// (SIGHUP ignored, as under `nohup` or some CI runners): `-quiet` implies `-ign_eof`, and
/// without `-no_ign_eof` the `openssl` process would wait for the server to drop the
/// connection, holding ssh's stderr and lingering on the user's laptop. (`-nocommands`, which
/// keeps data bytes from being read as commands, is proven by every other test here: an 8 MiB
/// SFTP transfer holds those bytes.)
#[test]
fn the_documented_proxy_command_ends_with_ssh() {
    let ing = Ingress::start();
    // A host-key mismatch: ssh gives up within milliseconds of the TLS connection opening,
    // while the server still waits for the login (grace time).
    ing.trust(&[(A, &ing.b), (B, &ing.a)]);
    let needle = format!("-connect 127.0.0.1:{} -servername {A}", ing.router.port);
    let ssh_ignoring_hup = |config: &std::path::Path| {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(config).arg(A).arg("true");
        c.env_remove("SSH_AUTH_SOCK");
        // SAFETY: signal() is async-signal-safe; it runs in the child before exec.
        unsafe {
            c.pre_exec(|| {
                nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_IGN);
                Ok(())
            });
        }
        c
    };

    let out = run::run(&mut ssh_ignoring_hup(&ing.config), b"", T);
    assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));
    assert!(
        out.stderr_str()
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "ssh's stderr must be complete once it exits: {}",
        ing.diag(&out)
    );
    let left = wait_no_process(&needle, Duration::from_secs(3));
    assert!(left.is_empty(), "openssl outlived ssh: {left:?}");

    // The same command without -no_ign_eof lingers: what the check above would catch.
    let old = ing.a.root.join("client/config-ign-eof");
    let text = fs::read_to_string(&ing.config).expect("config");
    fs::write(&old, text.replace(" -no_ign_eof", "")).expect("old config");
    let mut c = ssh_ignoring_hup(&old);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = session_ssh_tests::reaper::spawn(&mut c).expect("spawn ssh");
    let status = child.wait().expect("wait ssh");
    assert_eq!(status.code(), Some(255));
    let left = wait_no_process(&needle, Duration::from_secs(1));
    assert!(
        !left.is_empty(),
        "without -no_ign_eof openssl was expected to linger"
    );
    child.kill_group();
    for (pid, _) in left {
        session_ssh_tests::sshd::procs::kill9(pid);
    }
}

/// Waits up to `limit` for no live process to contain `needle`; returns what is left.
fn wait_no_process(needle: &str, limit: Duration) -> Vec<(u32, String)> {
    let end = std::time::Instant::now() + limit;
    loop {
        let left = session_ssh_tests::sshd::procs::alive_using(needle);
        if left.is_empty() || std::time::Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sftp_batch(ing: &Ingress, host: &str, batch: &str) -> Out {
    let f = ing.a.root.join(format!("batch-{host}"));
    fs::write(&f, batch).expect("batch");
    let mut c = Command::new("sftp");
    c.arg("-F").arg(&ing.config).arg("-b").arg(&f).arg(host);
    c.env_remove("SSH_AUTH_SOCK");
    run::run(&mut c, b"", T)
}

#[test]
fn sftp_and_local_forwarding_work_through_the_router() {
    let ing = Ingress::start();
    let root = ing.a.root.clone();
    let up = root.join("up.bin");
    let sum = run::write_random_file(&up, 8 << 20, 6);
    for host in [A, B] {
        let down = root.join(format!("down-{host}.bin"));
        let out = sftp_batch(
            &ing,
            host,
            &format!(
                "put {} up.bin\nget up.bin {}\n",
                up.display(),
                down.display()
            ),
        );
        assert!(out.success(), "{}", ing.diag(&out));
        assert_eq!(run::sha256_file(&down), sum, "{host}: sftp round trip");
    }
    // Each upload landed in its own session's home.
    assert_eq!(run::sha256_file(&ing.a.home.join("up.bin")), sum);
    assert_eq!(run::sha256_file(&ing.b.home.join("up.bin")), sum);

    // ssh -L through the router to a TCP/HTTP server.
    let http = net::http_server("hello through the ingress\n");
    let lport = net::free_port();
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(&ing.config)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port))
        .arg(B)
        .env_remove("SSH_AUTH_SOCK");
    let fwd = Bg::spawn(&mut c);
    assert!(
        net::wait_port(lport, T),
        "-L port not listening: {}",
        fwd.what
    );
    let body = net::http_get(lport).expect("GET through -L");
    assert!(
        body.contains("hello through the ingress"),
        "{body}\n{}",
        fwd.stop()
    );
}

/// Open `n` raw connections to the TLS port that send `bytes` (maybe none) and stay open.
fn raw_conns(port: u16, n: usize, bytes: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect TLS port");
            if !bytes.is_empty() {
                let _ = s.write_all(bytes);
            }
            s
        })
        .collect()
}

/// The ways a read can learn that the server ended the connection: an orderly close, a reset
/// (unread data on the server side turns close into RST), or an abort.
fn closed_by_peer(r: &std::io::Result<usize>) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
    }
}

fn assert_closed_by_server(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let r = s.read(&mut buf);
        if closed_by_peer(&r) {
            break;
        }
        match r {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // WouldBlock/TimedOut: the read timeout ran out with the connection still open.
            Err(e) => panic!(
                "server did not close a garbage connection: {e} ({:?})",
                e.kind()
            ),
        }
        assert!(total < 1 << 16, "server keeps talking to garbage");
    }
}

#[test]
fn read_errors_that_mean_closed_are_told_apart_from_a_timeout() {
    use std::io::{Error, ErrorKind};
    for kind in [
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted,
        ErrorKind::BrokenPipe,
    ] {
        assert!(closed_by_peer(&Err(Error::from(kind))), "{kind:?}");
    }
    assert!(closed_by_peer(&Ok(0)));
    for kind in [ErrorKind::WouldBlock, ErrorKind::TimedOut] {
        assert!(!closed_by_peer(&Err(Error::from(kind))), "{kind:?}");
    }
    assert!(!closed_by_peer(&Ok(5)));
}

#[test]
fn plain_tcp_or_garbage_on_the_tls_port_leaves_plain_ssh_alone() {
    let ing = Ingress::start();
    let a = &ing.a;
    // Idle connections (handshake never starts), an SSH banner instead of a ClientHello,
    // random bytes, and the OpenSSH client speaking plain SSH to the TLS port.
    let idle = raw_conns(ing.a_tls, 5, b"");
    let banner = raw_conns(ing.a_tls, 3, b"SSH-2.0-OpenSSH_9.2\r\n");
    let mut noise = vec![0u8; 4096];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    let garbage = raw_conns(ing.a_tls, 3, &noise);
    let mut plain_to_tls = Command::new("ssh");
    // -p first: OpenSSH keeps the first value it gets for an option.
    plain_to_tls
        .args(["-p", &ing.a_tls.to_string()])
        .args(a.opts())
        .arg(a.host())
        .arg("true");
    let out = run::run(&mut plain_to_tls, b"", T);
    assert_eq!(
        out.code(),
        Some(255),
        "plain SSH on the TLS port must fail: {}",
        out.describe()
    );

    // The plain port (and the TLS route) keep serving while all of that is open.
    assert_eq!(a.exec_ok("echo plain-ok"), "plain-ok\n");
    assert_eq!(ing.ssh_ok(A, "echo tls-ok"), "tls-ok\n");
    for s in banner.into_iter().chain(garbage) {
        assert_closed_by_server(s);
    }
    // The idle ones are dropped by the handshake timeout (3 s here), and nothing above hurt
    // the server.
    for s in idle {
        assert_closed_by_server(s);
    }
    assert_eq!(a.exec_ok("echo still-ok"), "still-ok\n");
    let logs = a.logs();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(logs.contains("TLS handshake timed out"), "{logs}");
}

#[test]
fn a_tls_port_that_cannot_be_bound_leaves_plain_ssh_serving() {
    // Someone else holds the TLS port: serve logs it and keeps serving plain SSH.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let s = Builder::new()
        .image_env("INIT_SSHD_TLS_LISTEN", &format!("127.0.0.1:{port}"))
        .start();
    assert_eq!(s.exec_ok("echo plain-ok"), "plain-ok\n");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !s
        .logs()
        .contains("TLS listener not running; plain SSH is unaffected")
    {
        assert!(std::time::Instant::now() < end, "{}", s.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.exec_ok("echo still-ok"), "still-ok\n");
}

/// Signs `host_pub` (a session's `ssh_host_ed25519_key.pub`) with the real
/// `ssh-keygen -s CA -h` for `principal`, and puts the certificate where `init-sshd serve`
/// looks by default (`DIR/host-cert/`), replaced by rename as the kubelet does.
fn install_host_cert(ca: &std::path::Path, s: &Sshd, host_pub: &std::path::Path, principal: &str) {
    let work = ca.parent().expect("ca dir");
    let tmp = work.join(format!("for-{principal}.pub"));
    fs::copy(host_pub, &tmp).expect("copy host pub");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args([
            "-h",
            "-I",
            &format!("e2e {principal}"),
            "-n",
            principal,
            "-V",
            "-5m:+1h",
        ])
        .arg(&tmp)
        .output()
        .expect("ssh-keygen -s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = work.join(format!("for-{principal}-cert.pub"));
    let dir = s.dir.join("host-cert");
    fs::create_dir_all(&dir).expect("host-cert dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let staged = dir.join(".staged");
    fs::copy(&cert, &staged).expect("stage cert");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&staged, dir.join("ssh_host_ed25519_key-cert.pub")).expect("rename cert");
}

/// Issue 6, host CA: certificates made by the real `ssh-keygen -s` appear in the running
/// servers' `DIR/host-cert/`; then one `@cert-authority` line (the form the controller
/// publishes) trusts both sessions behind the router with StrictHostKeyChecking=yes, a
/// certificate for another name is refused, and users who pinned the plain key are
/// unaffected.
#[test]
fn one_cert_authority_line_trusts_every_session_behind_the_router() {
    let ing = Ingress::start();
    let work = ing.a.root.join("host-ca");
    fs::create_dir_all(&work).expect("ca dir");
    let ca = work.join("ca");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e-host-ca", "-f"])
        .arg(&ca)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_pub = fs::read_to_string(work.join("ca.pub")).expect("ca.pub");
    let ca_pub = ca_pub.trim();
    let pub_of = |s: &Sshd| s.dir.join("ssh_host_ed25519_key.pub");

    // Before any certificate: the CA line alone trusts nothing.
    let ca_only = |pattern: &str| {
        fs::write(
            &ing.known_hosts,
            format!("@cert-authority {pattern} {ca_pub}\n"),
        )
        .expect("known_hosts");
    };
    ca_only("*.ssh.test");
    let out = ing.ssh(A, "true");
    assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));
    assert!(
        out.stderr_str().contains("Host key verification failed"),
        "{}",
        ing.diag(&out)
    );

    // Certificates arrive while the servers run (no restart).
    install_host_cert(&ca, &ing.a, &pub_of(&ing.a), A);
    install_host_cert(&ca, &ing.b, &pub_of(&ing.b), B);
    assert_eq!(ing.ssh_ok(A, "cat ~/whoami.txt"), "session-a\n");
    assert_eq!(ing.ssh_ok(B, "cat ~/whoami.txt"), "session-b\n");
    for s in [&ing.a, &ing.b] {
        assert!(s.logs().contains("host certificate loaded"), "{}", s.logs());
    }
    // It really was the certificate that was checked.
    let mut c = Command::new("ssh");
    c.arg("-v").arg("-F").arg(&ing.config).arg(A).arg("true");
    c.env_remove("SSH_AUTH_SOCK");
    let out = run::run(&mut c, b"", T);
    assert!(out.success(), "{}", ing.diag(&out));
    assert!(
        out.stderr_str()
            .contains("Server host certificate: ssh-ed25519-cert-v01@openssh.com")
            && out
                .stderr_str()
                .contains("matches the ED25519-CERT host certificate"),
        "{}",
        out.stderr_str()
    );

    // The form the controller publishes also names `[host]:port` (what ssh looks up for
    // `Port 443` in its ssh-config block, or a NodePort), with and without that port.
    ca_only("*.ssh.test,[*.ssh.test]:*");
    for port in ["22", "443", "30022"] {
        for host in [A, B] {
            let mut c = Command::new("ssh");
            c.arg("-F")
                .arg(&ing.config)
                .args(["-p", port])
                .arg(host)
                .arg("true");
            c.env_remove("SSH_AUTH_SOCK");
            let out = run::run(&mut c, b"", T);
            assert!(out.success(), "{host} port {port}: {}", ing.diag(&out));
        }
    }

    // A certificate for another hostname is refused (b's name on a's key).
    install_host_cert(&ca, &ing.a, &pub_of(&ing.a), B);
    let out = ing.ssh(A, "true");
    assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));
    assert!(
        out.stderr_str().contains("Host key verification failed")
            && out.stderr_str().contains("name is not a listed principal"),
        "{}",
        ing.diag(&out)
    );
    // The plain pinned key keeps working while a certificate is presented.
    ing.trust(&[(A, &ing.a), (B, &ing.b)]);
    assert_eq!(ing.ssh_ok(A, "cat ~/whoami.txt"), "session-a\n");
    assert_eq!(ing.ssh_ok(B, "cat ~/whoami.txt"), "session-b\n");

    // A certificate of another key (b's, put into a) is not served at all.
    install_host_cert(&ca, &ing.a, &pub_of(&ing.b), A);
    assert_eq!(ing.ssh_ok(A, "echo pinned-ok"), "pinned-ok\n");
    assert!(
        ing.a.logs().contains("host certificate ignored"),
        "{}",
        ing.a.logs()
    );
    ca_only("*.ssh.test,[*.ssh.test]:*");
    let out = ing.ssh(A, "true");
    assert_eq!(out.code(), Some(255), "{}", ing.diag(&out));
}
