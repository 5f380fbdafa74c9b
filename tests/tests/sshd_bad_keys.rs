//! init-sshd e2e 6: bad authorized_keys input never blocks the session and never lets a wrong
//! key in; key options `from=`, `restrict`, `command=` are enforced; keys are re-read on change;
//! cert-authority logins.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use session_ssh_tests::sshd::net::{free_port, http_server, wait_port};
use session_ssh_tests::sshd::run::{Out, run};
use session_ssh_tests::sshd::{Bg, Builder, KeyPair, Sshd, T};

fn login(s: &Sshd, key: &KeyPair, cmd: &str) -> Out {
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&key.private)).arg(s.host()).arg(cmd);
    run(&mut c, b"", T)
}

fn refused(out: &Out) -> bool {
    out.code() == Some(255) && out.stderr_str().contains("Permission denied")
}

#[test]
fn only_the_good_key_logs_in_and_the_report_names_each_bad_line() {
    let b = Builder::new();
    let good = b.client.clone();
    let unknown_opt = b.keygen("unknown_opt", "ed25519");
    let wrong = b.keygen("wrong", "ed25519");
    let truncated: String = good.blob().chars().take(30).collect();
    // Line numbers matter: the report must name 2, 3 and 4 (1 is a comment, 6 is blank).
    let text = format!(
        "# team keys\n\
         this is not a key at all\n\
         ssh-ed25519 {truncated} truncated@e2e\n\
         frobnicate=\"yes\" {}\n\
         {}\n\
         \n",
        unknown_opt.public, good.public
    );
    let s = b.authorized_keys(&text).start();
    let src = s
        .root
        .join("keys-src/authorized_keys")
        .display()
        .to_string();

    let ok = login(&s, &good, "echo good-in");
    s.assert_ok(&ok);
    assert_eq!(ok.stdout_str(), "good-in\n");
    let out = login(&s, &unknown_opt, "echo should-not-run");
    assert!(
        refused(&out),
        "a key with an unknown option must be refused\n{}",
        s.diag(&out)
    );
    let out = login(&s, &wrong, "echo should-not-run");
    assert!(
        refused(&out),
        "a key not in the file must be refused\n{}",
        s.diag(&out)
    );

    let report = s.report();
    let refused_lines: Vec<(String, u64)> = report["refused"]
        .as_array()
        .unwrap_or_else(|| panic!("report.refused: {report}"))
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap_or("").to_string(),
                r["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for line in [2u64, 3, 4] {
        assert!(
            refused_lines
                .iter()
                .any(|(s, l)| s.contains(&src) && *l == line),
            "report must refuse {src}:{line}: {report:#}"
        );
        let r = report["refused"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["line"] == line)
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            r["reason"].as_str().is_some_and(|t| !t.is_empty()),
            "refused line {line} needs a reason: {r}"
        );
    }
    assert_eq!(
        refused_lines.len(),
        3,
        "exactly three refused lines: {report:#}"
    );
    let accepted = report["accepted"].as_array().cloned().unwrap_or_default();
    assert_eq!(accepted.len(), 1, "one accepted key: {report:#}");
    assert_eq!(accepted[0]["line"], 5, "{report:#}");
    assert_eq!(
        accepted[0]["fingerprint"].as_str(),
        Some(good.fingerprint().as_str()),
        "{report:#}"
    );
    assert!(
        report["host_key"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{report:#}"
    );
    // The merged file holds only the good line.
    let merged = fs::read_to_string(s.dir.join("authorized_keys")).expect("DIR/authorized_keys");
    assert!(merged.contains(good.blob()));
    assert!(!merged.contains(unknown_opt.blob()));
    assert!(!merged.contains("not a key"));
}

#[test]
fn install_with_only_bad_keys_still_succeeds_and_nobody_logs_in() {
    let b = Builder::new();
    let client = b.client.clone();
    let s = b.authorized_keys("garbage\nssh-rsa AAAA\n").start();
    assert_eq!(s.report()["accepted"].as_array().map(Vec::len), Some(0));
    let out = login(&s, &client, "true");
    assert!(refused(&out), "{}", s.diag(&out));
}

#[test]
fn from_option_is_enforced() {
    let b = Builder::new();
    let elsewhere = b.keygen("elsewhere", "ed25519");
    let here = b.keygen("here", "ed25519");
    let s = b
        .authorized_keys(&format!(
            "from=\"10.9.9.9\" {}\nfrom=\"10.0.0.0/8,127.0.0.0/8\" {}\n",
            elsewhere.public, here.public
        ))
        .start();
    let out = login(&s, &elsewhere, "echo in");
    assert!(
        refused(&out),
        "from=10.9.9.9 must refuse 127.0.0.1\n{}",
        s.diag(&out)
    );
    let out = login(&s, &here, "echo in");
    s.assert_ok(&out);
    // A negated pattern wins over a positive one.
    let b = Builder::new();
    let neg = b.keygen("neg", "ed25519");
    let s = b
        .authorized_keys(&format!("from=\"!127.0.0.1,*\" {}\n", neg.public))
        .start();
    let out = login(&s, &neg, "echo in");
    assert!(refused(&out), "negated from= must refuse\n{}", s.diag(&out));
}

#[test]
fn restrict_means_no_pty_and_no_port_forwarding() {
    let b = Builder::new();
    let limited = b.keygen("limited", "ed25519");
    let client = b.client.public.clone();
    let s = b
        .authorized_keys(&format!("restrict {}\n{client}\n", limited.public))
        .start();
    // Commands still run.
    let out = login(&s, &limited, "echo restricted-ok");
    s.assert_ok(&out);
    assert_eq!(out.stdout_str(), "restricted-ok\n");
    // No pty: the shell runs without one.
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&limited.private))
        .arg("-tt")
        .arg(s.host())
        .arg("tty");
    let out = run(&mut c, b"", T);
    // OpenSSH's client closes the session when a forced (-tt) pty is refused (exit 255).
    assert!(
        !out.stdout_str().contains("/dev/pts/") && out.code() == Some(255),
        "restrict must refuse the pty\n{}",
        s.diag(&out)
    );
    assert!(
        out.stderr_str().contains("PTY allocation request failed"),
        "{}",
        s.diag(&out)
    );
    // No -L.
    let http = http_server("secret\n");
    let lport = free_port();
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&limited.private))
        .args(["-N", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port))
        .arg(s.host());
    let bg = Bg::spawn(&mut c);
    assert!(
        wait_port(lport, Duration::from_secs(15)),
        "ssh -L did not listen"
    );
    let mut st = TcpStream::connect(("127.0.0.1", lport)).expect("connect");
    st.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = std::io::Write::write_all(&mut st, b"GET / HTTP/1.0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = st.read_to_end(&mut buf);
    assert!(
        buf.is_empty(),
        "restrict must refuse -L, got {:?}",
        String::from_utf8_lossy(&buf)
    );
    let err = bg.stop();
    assert!(
        err.contains("open failed"),
        "ssh should report the refusal: {err}"
    );
    // -R refused as well.
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&limited.private))
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:{}:127.0.0.1:{}", free_port(), http.port))
        .arg(s.host());
    let out = run(&mut c, b"", T);
    assert_eq!(
        out.code(),
        Some(255),
        "restrict must refuse -R\n{}",
        s.diag(&out)
    );
    // The unrestricted key on the same server gets a pty.
    let out = s.exec(&["-tt"], "tty", b"", T);
    assert!(out.stdout_str().contains("/dev/pts/"), "{}", s.diag(&out));
}

#[test]
fn forced_command_runs_instead_and_sees_original_command() {
    let b = Builder::new();
    let forced = b.keygen("forced", "ed25519");
    let s = b
        .authorized_keys(&format!(
            "command=\"echo forced:$SSH_ORIGINAL_COMMAND\",no-pty {}\n",
            forced.public
        ))
        .start();
    let out = login(&s, &forced, "rm -rf /tmp/nothing");
    s.assert_ok(&out);
    assert_eq!(
        out.stdout_str(),
        "forced:rm -rf /tmp/nothing\n",
        "{}",
        s.diag(&out)
    );
}

#[test]
fn authorized_keys_are_reread_when_they_change() {
    let b = Builder::new();
    let later = b.keygen("later", "ed25519");
    let s = b.start();
    let out = login(&s, &later, "true");
    assert!(refused(&out), "{}", s.diag(&out));
    let path = s.dir.join("authorized_keys");
    let mut text = fs::read_to_string(&path).expect("read");
    text.push_str(&format!("{}\n", later.public));
    fs::write(&path, text).expect("write");
    let mut ok = false;
    let mut last = None;
    for _ in 0..20 {
        let out = login(&s, &later, "echo later-in");
        if out.success() {
            ok = true;
            break;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        ok,
        "new key not accepted after the file changed\n{}",
        last.map(|o| s.diag(&o)).unwrap_or_default()
    );
}

#[test]
fn cert_authority_with_principals_accepts_signed_user_keys_only() {
    let b = Builder::new();
    let ca = b.keygen("user_ca", "ed25519");
    let user = b.keygen("certuser", "ed25519");
    let other = b.keygen("certother", "ed25519");
    let cdir = b.root.join("client");
    let sign = |key: &KeyPair, principal: &str| {
        let out = run(
            Command::new("ssh-keygen")
                .args(["-q", "-s"])
                .arg(&ca.private)
                .args(["-I", "e2e-cert", "-n", principal, "-V", "-5m:+1h"])
                .arg(key.private.with_extension("pub")),
            b"",
            T,
        );
        assert!(out.success(), "sign: {}", out.describe());
    };
    sign(&user, "jovyan");
    sign(&other, "mallory");
    let s = b
        .authorized_keys(&format!(
            "cert-authority,principals=\"jovyan\" {}\n",
            ca.public
        ))
        .start();
    let with_cert = |key: &KeyPair| {
        let mut c = Command::new("ssh");
        c.args(s.opts_with_key(&key.private))
            .arg("-o")
            .arg(format!(
                "CertificateFile={}",
                cdir.join(format!(
                    "{}-cert.pub",
                    key.private
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("")
                ))
                .display()
            ))
            .arg(s.host())
            .arg("echo cert-in");
        run(&mut c, b"", T)
    };
    let out = with_cert(&user);
    s.assert_ok(&out);
    assert_eq!(out.stdout_str(), "cert-in\n");
    let out = with_cert(&other);
    assert!(
        refused(&out),
        "a cert without the principal must be refused\n{}",
        s.diag(&out)
    );
    // The CA-signed key without its certificate is just an unknown key (copied away from
    // its -cert.pub, which ssh would otherwise load next to the identity).
    let bare = s.root.join("client/bare/certuser");
    std::fs::create_dir_all(bare.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&user.private, &bare).expect("copy key");
    let bare = KeyPair {
        private: bare,
        public: user.public.clone(),
    };
    let out = login(&s, &bare, "true");
    assert!(refused(&out), "{}", s.diag(&out));
}
