//! init-sshd e2e 3: `ssh -L` to an HTTP server in the "container", `ssh -D` (SOCKS, names
//! resolved by the server), `ssh -R` reached from inside the session, direct-streamlocal
//! (VS Code's socket mode), `ssh -A` with a real ssh-agent.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use session_ssh_tests::sshd::container::set_mode;
use session_ssh_tests::sshd::net::{
    echo_server, free_port, http_get, http_get_on, http_server, socks5_connect, wait_port,
};
use session_ssh_tests::sshd::run::run;
use session_ssh_tests::sshd::{Bg, Builder, T};

#[test]
fn local_forward_to_http_server_in_container() {
    let s = Builder::new().start();
    let http = http_server("hello from the container\n");
    let lport = free_port();
    let dead = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes"])
        .arg("-L")
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port))
        .arg("-L")
        .arg(format!("127.0.0.1:{dead}:127.0.0.1:1"))
        .arg(s.host());
    let bg = Bg::spawn(&mut c);
    assert!(
        wait_port(lport, Duration::from_secs(15)),
        "ssh -L did not listen\n{}",
        s.logs()
    );
    // A forward to a closed port fails cleanly (connection closed, no data) ...
    if let Ok(mut st) = TcpStream::connect(("127.0.0.1", dead)) {
        st.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = st.read_to_end(&mut buf);
        assert!(buf.is_empty(), "data from a refused forward: {buf:?}");
    }
    // ... and the working one still serves, several times over one SSH connection.
    for _ in 0..5 {
        let resp = http_get(lport).unwrap_or_else(|e| panic!("GET via -L: {e}\n{}", s.logs()));
        assert!(resp.starts_with("HTTP/1.0 200 OK"), "response: {resp}");
        assert!(
            resp.ends_with("hello from the container\n"),
            "response: {resp}"
        );
    }
    let err = bg.stop();
    assert!(
        err.contains("open failed") || err.contains("connect failed"),
        "ssh should report the refused forward: {err}"
    );
}

#[test]
fn dynamic_forward_socks_resolves_localhost_on_the_server() {
    let s = Builder::new().start();
    let http = http_server("socks ok\n");
    let dport = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-D"])
        .arg(format!("127.0.0.1:{dport}"))
        .arg(s.host());
    let _bg = Bg::spawn(&mut c);
    assert!(
        wait_port(dport, Duration::from_secs(15)),
        "ssh -D did not listen"
    );
    // "localhost" is resolved by the server (a static binary without glibc NSS).
    let st = socks5_connect(dport, "localhost", http.port).unwrap_or_else(|e| {
        panic!(
            "socks connect to localhost:{}: {e}\n{}",
            http.port,
            s.logs()
        )
    });
    let resp = http_get_on(st, "localhost").expect("GET via -D");
    assert!(resp.ends_with("socks ok\n"), "response: {resp}");
    let st = socks5_connect(dport, "127.0.0.1", http.port).expect("socks by address");
    let resp = http_get_on(st, "127.0.0.1").expect("GET via -D");
    assert!(resp.ends_with("socks ok\n"), "response: {resp}");
}

#[test]
fn remote_forward_is_reachable_from_inside_the_session() {
    let s = Builder::new().start();
    let echo = echo_server("hello-from-laptop\n");
    let rport = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:{rport}:127.0.0.1:{}", echo.port))
        .arg(s.host());
    let bg = Bg::spawn(&mut c);
    assert!(
        wait_port(rport, Duration::from_secs(15)),
        "ssh -R: nothing listens on {rport} in the container\n{}",
        s.logs()
    );
    // From the "container" side: a process in the session connects to the remote-bound port.
    let out = s.exec(
        &[],
        &format!("exec 3<>/dev/tcp/127.0.0.1/{rport}; echo ping >&3; timeout 10 head -n 2 <&3"),
        b"",
        T,
    );
    s.assert_ok(&out);
    assert_eq!(
        out.stdout_str(),
        "hello-from-laptop\nping\n",
        "{}",
        s.diag(&out)
    );
    // The forward goes away with the connection.
    drop(bg);
    thread::sleep(Duration::from_secs(1));
    let mut gone = false;
    for _ in 0..50 {
        if TcpStream::connect(("127.0.0.1", rport)).is_err() {
            gone = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        gone,
        "remote forward port {rport} still open after the client left\n{}",
        s.logs()
    );
}

#[test]
fn local_forward_to_unix_socket_streamlocal() {
    let s = Builder::new().start();
    let sockdir = s.root.join("sock");
    fs::create_dir(&sockdir).expect("mkdir");
    set_mode(&sockdir, 0o777);
    let path = sockdir.join("app.sock");
    let l = UnixListener::bind(&path).expect("bind unix");
    set_mode(&path, 0o777);
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || {
                let mut c = c;
                let _ = c.write_all(b"unix-hello\n");
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let lport = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:{}", path.display()))
        .arg(s.host());
    let _bg = Bg::spawn(&mut c);
    assert!(
        wait_port(lport, Duration::from_secs(15)),
        "ssh -L (socket) did not listen"
    );
    let mut st = TcpStream::connect(("127.0.0.1", lport)).expect("connect");
    st.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    st.write_all(b"ping\n").expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 16 {
        match st.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "unix-hello\nping\n",
        "direct-streamlocal round trip\n{}",
        s.logs()
    );
}

#[test]
fn agent_forwarding_lists_and_signs_with_the_forwarded_key() {
    let b = Builder::new();
    let agent_key = b.keygen("agent_key", "ed25519");
    let client_pub = b.client.public.clone();
    let s = b
        .authorized_keys(&format!("{client_pub}\n{}\n", agent_key.public))
        .start();

    let sock = s.root.join("client/agent.sock");
    let mut agent = Command::new("ssh-agent");
    agent.arg("-D").arg("-a").arg(&sock);
    let _agent = Bg::spawn(&mut agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let add = run(
        Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&agent_key.private),
        b"",
        T,
    );
    assert!(add.success(), "ssh-add: {}", add.describe());

    let mut c = Command::new("ssh");
    c.args(s.base_opts())
        .arg("-o")
        .arg(format!("IdentityFile={}", s.client.private.display()))
        .arg("-o")
        .arg(format!("IdentityAgent={}", sock.display()))
        .env("SSH_AUTH_SOCK", &sock)
        .arg("-A")
        .arg(s.host())
        // List the key, then prove the agent signs: log in again from inside the session
        // with only the forwarded agent (no key file), as `git push` would.
        .arg(format!(
            "test -S \"$SSH_AUTH_SOCK\" && ssh-add -l && ssh -F /dev/null -o BatchMode=yes \
             -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
             -p {} jovyan@127.0.0.1 echo nested-login-ok",
            s.port
        ));
    let out = run(&mut c, b"", T);
    s.assert_ok(&out);
    let text = out.stdout_str();
    assert!(
        text.contains(&agent_key.fingerprint()),
        "ssh-add -l in the session must list {}\n{}",
        agent_key.fingerprint(),
        s.diag(&out)
    );
    assert!(text.contains("nested-login-ok"), "{}", s.diag(&out));
    // Without -A there is no agent in the session.
    let out = s.exec(&[], "echo \"[${SSH_AUTH_SOCK:-}]\"", b"", T);
    assert_eq!(out.stdout_str(), "[]\n", "{}", s.diag(&out));
}
