//! End-to-end: the SSH gateway in front of injected sessions, against the real
//! kube-apiserver and the real OpenSSH client. The webhook injects the pods (with the
//! gateway's user CA), the pod sandbox runs them, the gateway finds them by hub user name
//! from its pod watch and logs in to each with a per-connection certificate; each session's
//! own authorized_keys decides.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use session_ssh_tests::cluster;
use session_ssh_tests::cluster::webhook::{Platform, Tls, WebhookCluster};
use session_ssh_tests::free_port;
use session_ssh_tests::gateway::hub_cluster;
use session_ssh_tests::gateway::{
    Gateway, GatewayKeys, Session, create_pod, gateway_kubeconfig, keygen, mark_ready, ssh,
    ssh_opts, start_session, tls_cert, wait_published,
};

/// Runs `cmd` and returns its output, failing the test with `what` when it fails.
fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// -R, -A with ssh-add -l inside, scp (SFTP and legacy), rsync, through the gateway.
fn more_channels(a: &[String], work: &Path, key: &Path) {
    let user = "alice.smith@example.org";
    let dest = format!("{user}@127.0.0.1");
    // -R: a port opened in the session comes back to a listener on the laptop.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = target.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = target.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        buf
    });
    let rport = free_port(0);
    let out = run(
        Command::new("ssh")
            .args(a)
            .args([
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &format!("127.0.0.1:{rport}:127.0.0.1:{tport}"),
            ])
            .arg(&dest)
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{rport}; printf ping >&3; head -c4 <&3"
            )),
        "-R",
    );
    assert_eq!(text(&out.stdout), "pong");
    assert_eq!(&served.join().unwrap(), b"ping");

    // -A: the laptop's agent answers inside the session.
    let agent = work.join("agent.sock");
    // In the foreground, in a group of its own: nothing of it outlives the test.
    let mut agent_proc = session_ssh_tests::reaper::spawn(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent)
            .stdout(std::process::Stdio::null()),
    )
    .unwrap();
    for _ in 0..100 {
        if agent.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run(
        Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent),
        "ssh-add",
    );
    let fp = text(
        &run(
            Command::new("ssh-keygen").arg("-lf").arg(key),
            "fingerprint",
        )
        .stdout,
    );
    // The agent options go first: OpenSSH keeps the first value of an option.
    let out = run(
        Command::new("ssh")
            .arg("-o")
            .arg(format!("IdentityAgent={}", agent.display()))
            .arg("-A")
            .args(a)
            .env("SSH_AUTH_SOCK", &agent)
            .arg(&dest)
            .arg("ssh-add -l"),
        "-A",
    );
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        text(&out.stdout).contains(&fp),
        "ssh-add -l: {}",
        text(&out.stdout)
    );
    agent_proc.kill_group();
    let _ = agent_proc.wait();

    // scp (SFTP and the legacy protocol) and rsync both ways, contents equal.
    let file = work.join("small");
    std::fs::write(&file, b"through the gateway\n".repeat(5000)).unwrap();
    let mut scp_opts: Vec<String> = Vec::new();
    let mut it = a.iter();
    while let Some(o) = it.next() {
        if o == "-p" {
            scp_opts.extend(["-P".to_owned(), it.next().unwrap().clone()]);
        } else {
            scp_opts.push(o.clone());
        }
    }
    for (flag, name) in [(None, "scp"), (Some("-O"), "scp -O")] {
        let mut cmd = Command::new("scp");
        cmd.args(&scp_opts)
            .args(flag)
            .arg(&file)
            .arg(format!("{dest}:/tmp/gw-scp"));
        run(&mut cmd, name);
        let back = work.join("scp-back");
        let mut cmd = Command::new("scp");
        cmd.args(&scp_opts)
            .args(flag)
            .arg(format!("{dest}:/tmp/gw-scp"))
            .arg(&back);
        run(&mut cmd, name);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(&file).unwrap(),
            "{name}"
        );
    }
    let rsh = std::iter::once("ssh".to_owned())
        .chain(a.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    run(
        Command::new("rsync")
            .args(["-a", "-e", &rsh])
            .arg(&file)
            .arg(format!("{dest}:/tmp/gw-rsync")),
        "rsync up",
    );
    let back = work.join("rsync-back");
    run(
        Command::new("rsync")
            .args(["-a", "-e", &rsh])
            .arg(format!("{dest}:/tmp/gw-rsync"))
            .arg(&back),
        "rsync down",
    );
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&file).unwrap());
}

/// Certificates made with `ssh-keygen -s` in the passport format, presented straight to the
/// sessions: the CA's passport for session A works at A and is refused by B; an expired one
/// and one from another CA are refused.
async fn passports_are_bound(
    a: &Session,
    b: &Session,
    keys: &GatewayKeys,
    work: &Path,
    wc: &WebhookCluster,
) {
    let pods = Api::<Pod>::namespaced(wc.client().await.unwrap(), &wc.session_namespaces[0]);
    let principal = |name: &str| {
        let pods = pods.clone();
        let name = name.to_owned();
        async move {
            pods.get(&name).await.unwrap().metadata.labels.unwrap()["session-ssh.io/session-id"]
                .clone()
        }
    };
    let (pa, pb) = (principal(&a.name).await, principal(&b.name).await);
    assert_ne!(pa, pb);
    let fp = text(
        &Command::new("ssh-keygen")
            .arg("-lf")
            .arg(a.key.with_extension("pub"))
            .output()
            .unwrap()
            .stdout,
    );
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    let other_ca = work.join("other_ca");
    keygen(&other_ca, "not the gateway").unwrap();
    let mint = |name: &str, ca: &Path, principal: &str, validity: &str| {
        let key = work.join(name);
        keygen(&key, name).unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(ca)
            .args(["-I", name, "-n", principal, "-V", validity])
            .args(["-O", "clear", "-O", "permit-pty"])
            .arg("-O")
            .arg(format!("critical:user-key@session-ssh.io={fp}"))
            .args(["-O", "critical:client-address@session-ssh.io=127.0.0.1"])
            .arg(key.with_extension("pub"))
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen -s");
        key
    };
    let direct = |s: &Session, key: &Path| {
        let opts: Vec<String> = s
            .run
            .ssh_opts()
            .into_iter()
            .map(|o| {
                if o == s.run.key.display().to_string() {
                    key.display().to_string()
                } else {
                    o
                }
            })
            .collect();
        Command::new("ssh")
            .args(&opts)
            .arg("jovyan@127.0.0.1")
            .arg("echo in")
            .output()
            .unwrap()
    };
    let good = mint("for-a", &keys.user_ca, &pa, "-1m:+3m");
    let out = direct(a, &good);
    assert_eq!(
        text(&out.stdout).trim(),
        "in",
        "a passport for A at A: {}",
        text(&out.stderr)
    );
    let out = direct(b, &good);
    assert_eq!(
        out.status.code(),
        Some(255),
        "a passport for A must not open B"
    );
    let expired = mint("expired", &keys.user_ca, &pa, "20200101:20200102");
    assert_eq!(
        direct(a, &expired).status.code(),
        Some(255),
        "an expired passport"
    );
    let forged = mint("forged", &other_ca, &pa, "-1m:+3m");
    assert_eq!(
        direct(a, &forged).status.code(),
        Some(255),
        "a passport from another CA"
    );
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.contains("principals"),
        "B's log names the principal mismatch:\n{log}"
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn hub_users_reach_their_own_sessions_through_the_gateway() {
    let (mut wc, ns) = hub_cluster().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let keys = GatewayKeys::generate(work.path()).unwrap();
    let ca = keys.user_ca_public.clone();
    let alice = start_session(
        &mut wc,
        &ns,
        work.path(),
        "alice.smith@example.org",
        "",
        &ca,
    )
    .await
    .unwrap();
    let bob = start_session(&mut wc, &ns, work.path(), "bob", "", &ca)
        .await
        .unwrap();

    let (cert, key) = tls_cert(work.path()).unwrap();
    // Two replicas with the same keys behind one address, as a Service would put them.
    let kubeconfig = gateway_kubeconfig(&wc, work.path()).await.unwrap();
    let tls_env = [
        ("GATEWAY_TLS_CERT", cert.to_str().unwrap()),
        ("GATEWAY_TLS_KEY", key.to_str().unwrap()),
    ];
    let start = || {
        Gateway::start(
            &keys,
            &kubeconfig,
            "jupyterhub",
            &[&ns],
            work.path(),
            &tls_env,
        )
        .unwrap()
    };
    let (g1, g2) = (start(), start());
    let lb = session_ssh_tests::sni::SniRouter::balancer(&[g1.port, g2.port]);
    let port = lb.port;
    let gw_log = || format!("{}\n{}", g1.log_text(), g2.log_text());
    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, port, &known).unwrap();
    let a = ssh_opts(&alice.key, &known, port);
    let b = ssh_opts(&bob.key, &known, port);
    let diag = |what: &str, out: &std::process::Output| {
        format!(
            "{what}: status {:?}\nstdout: {}\nstderr: {}\ngateway log:\n{}\nalice's server:\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr),
            gw_log(),
            std::fs::read_to_string(&alice.log).unwrap_or_default()
        )
    };

    // The index fills from the watch; the first login may race it.
    let mut out = ssh(&a, "alice.smith@example.org", "id -un; exit 3").unwrap();
    for _ in 0..50 {
        if out.status.code() == Some(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = ssh(&a, "alice.smith@example.org", "id -un; exit 3").unwrap();
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        diag("exec with exit 3", &out)
    );
    assert_eq!(text(&out.stdout).trim(), "jovyan", "{}", diag("user", &out));
    // Upper case is the same hub user.
    let out = ssh(&a, "Alice.Smith@Example.org", "true").unwrap();
    assert!(out.status.success(), "{}", diag("upper case name", &out));

    // Each key only reaches its own session; unknown names get the same refusal.
    for (opts, user, what) in [
        (
            &b,
            "alice.smith@example.org",
            "bob's key at alice's session",
        ),
        (&a, "bob", "alice's key at bob's session"),
        (&a, "nobody", "unknown name"),
    ] {
        let out = ssh(opts, user, "true").unwrap();
        assert_eq!(out.status.code(), Some(255), "{}", diag(what, &out));
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{}",
            diag(what, &out)
        );
    }
    let out = ssh(&b, "bob", "echo bob-here").unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "bob-here",
        "{}",
        diag("bob", &out)
    );

    // The session logged the gateway login with the real client address.
    let log = std::fs::read_to_string(&alice.log).unwrap();
    assert!(
        log.contains("through the gateway"),
        "alice's server log:\n{log}"
    );

    // A PTY, and an exit signal.
    let out = ssh(
        &[a.clone(), vec!["-tt".into()]].concat(),
        "alice.smith@example.org",
        "tty",
    )
    .unwrap();
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{}",
        diag("pty", &out)
    );
    // OpenSSH exits 255 on an exit-signal; its debug log names the request.
    let verbose = [vec!["-v".to_owned()], a.clone()].concat();
    let out = ssh(&verbose, "alice.smith@example.org", "kill -TERM $$").unwrap();
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        diag("exit signal", &out)
    );
    assert!(
        text(&out.stderr).contains("rtype exit-signal"),
        "{}",
        diag("exit signal", &out)
    );

    // SFTP of 256 MiB both ways, sha256 equal.
    let data = work.path().join("payload");
    let st = Command::new("head")
        .args(["-c", "268435456", "/dev/urandom"])
        .stdout(std::fs::File::create(&data).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let back = work.path().join("back");
    let batch = format!(
        "put {} /tmp/gw-payload\nget /tmp/gw-payload {}\n",
        data.display(),
        back.display()
    );
    let mut sftp_opts: Vec<String> = a.iter().filter(|o| *o != "-p").cloned().collect();
    let pos = sftp_opts
        .iter()
        .position(|o| *o == port.to_string())
        .unwrap();
    sftp_opts.remove(pos);
    let out = Command::new("sftp")
        .args(&sftp_opts)
        .args(["-P", &port.to_string(), "-b", "-"])
        .arg("alice.smith@example.org@127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(batch.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", diag("sftp", &out));
    let sum = |p: &Path| {
        text(&Command::new("sha256sum").arg(p).output().unwrap().stdout)[..64].to_owned()
    };
    assert_eq!(sum(&data), sum(&back));

    // -L: a port inside the session's network, reached from the laptop.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = target.local_addr().unwrap().port();
    let lport = free_port(0);
    let mut fwd = Command::new("ssh")
        .args(&a)
        .args([
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("{lport}:127.0.0.1:{tport}"),
        ])
        .arg("alice.smith@example.org@127.0.0.1")
        .spawn()
        .unwrap();
    let served = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = target.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        buf
    });
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
            conn = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = conn.expect("the -L port never opened");
    {
        use std::io::{Read, Write};
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }
    assert_eq!(&served.join().unwrap(), b"ping");
    let _ = fwd.kill();
    let _ = fwd.wait();

    more_channels(&a, work.path(), &alice.key);

    // The VS Code pattern: no TTY, a script on bash's stdin.
    let mut vs = Command::new("ssh")
        .args(&a)
        .args(["-T", "alice.smith@example.org@127.0.0.1", "bash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = vs.stdin.take().unwrap();
        stdin.write_all(b"echo vscode-$((6*7)); exit 0\n").unwrap();
    }
    let out = vs.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "vscode-42", "VS Code pattern");

    // A key added to the session while it runs (the file init-sshd re-reads) works through
    // the gateway at once.
    let ak = alice.run.dir.join("authorized_keys");
    let mut lines = std::fs::read_to_string(&ak).unwrap();
    lines.push_str(&std::fs::read_to_string(bob.key.with_extension("pub")).unwrap());
    std::fs::write(&ak, lines).unwrap();
    let mut out = ssh(&b, "alice.smith@example.org", "echo added-key").unwrap();
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        out = ssh(&b, "alice.smith@example.org", "echo added-key").unwrap();
    }
    assert_eq!(
        text(&out.stdout).trim(),
        "added-key",
        "{}",
        diag("added key", &out)
    );

    passports_are_bound(&alice, &bob, &keys, work.path(), &wc).await;

    // SSH inside TLS on the same port, with the README's ProxyCommand.
    let mut tls = a.clone();
    tls.extend([
        "-o".to_owned(),
        format!(
            "ProxyCommand=openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect 127.0.0.1:{} -servername ssh.example.org",
            port
        ),
    ]);
    let out = ssh(&tls, "alice.smith@example.org", "echo over-tls").unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "over-tls",
        "{}",
        diag("TLS", &out)
    );

    // One JSON line per login, with the session it reached.
    let glog = gw_log();
    assert!(
        glog.lines().any(|l| l.contains("\"outcome\":\"accepted\"")
            && l.contains("alice.smith@example.org")
            && l.contains(&ns)),
        "gateway log:\n{glog}"
    );
}

/// A login with keyboard-interactive allowed (so the hint shows), no terminal, no agent.
fn refused_with_hint(opts: &[String], user: &str) -> std::process::Output {
    let mut o: Vec<String> = vec![
        "-o".into(),
        "BatchMode=no".into(),
        "-o".into(),
        "PreferredAuthentications=publickey,keyboard-interactive".into(),
        "-o".into(),
        "NumberOfPasswordPrompts=1".into(),
    ];
    o.extend(opts.iter().cloned());
    Command::new("ssh")
        .args(&o)
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Reads what the gateway sends after `send`, until it closes (bounded).
fn raw_exchange(port: u16, send: &[u8], within: Duration) -> (Vec<u8>, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(send).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test]
async fn key_options_refusals_bad_input_and_two_replicas() {
    let (mut wc, ns) = hub_cluster().await.unwrap();
    let client = wc.client().await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    let work = tempfile::tempdir().unwrap();
    let keys = GatewayKeys::generate(work.path()).unwrap();
    let ca = keys.user_ca_public.clone();
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let aport = allowed.local_addr().unwrap().port();
    let carol = start_session(
        &mut wc,
        &ns,
        work.path(),
        "carol",
        "from=\"192.0.2.0/24\"",
        &ca,
    )
    .await
    .unwrap();
    let dave = start_session(
        &mut wc,
        &ns,
        work.path(),
        "dave",
        &format!("restrict,port-forwarding,permitopen=\"127.0.0.1:{aport}\""),
        &ca,
    )
    .await
    .unwrap();
    // erin's server never becomes ready; frank's is "ready" but nothing listens.
    create_pod(&client, &ns, "jupyter-erin", "erin")
        .await
        .unwrap();
    create_pod(&client, &ns, "jupyter-frank", "frank")
        .await
        .unwrap();
    mark_ready(&pods, "jupyter-frank").await.unwrap();
    wait_published(&pods, "jupyter-frank").await.unwrap();

    // Two replicas with the same keys behind one address, a short login grace time.
    let env = [("GATEWAY_LOGIN_GRACE_SECS", "3")];
    let kubeconfig = gateway_kubeconfig(&wc, work.path()).await.unwrap();
    let g1 = Gateway::start(&keys, &kubeconfig, "jupyterhub", &[&ns], work.path(), &env).unwrap();
    let mut g2 =
        Gateway::start(&keys, &kubeconfig, "jupyterhub", &[&ns], work.path(), &env).unwrap();
    let lb = session_ssh_tests::sni::SniRouter::balancer(&[g1.port, g2.port]);
    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, lb.port, &known).unwrap();
    let d = ssh_opts(&dave.key, &known, lb.port);
    let c = ssh_opts(&carol.key, &known, lb.port);
    let logs = || format!("g1:\n{}\ng2:\n{}", g1.log_text(), g2.log_text());

    // restrict: commands run, no PTY; permitopen: only that port.
    let mut out = ssh(&d, "dave", "echo restricted-ok").unwrap();
    for _ in 0..50 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = ssh(&d, "dave", "echo restricted-ok").unwrap();
    }
    assert_eq!(
        text(&out.stdout).trim(),
        "restricted-ok",
        "{}\n{}",
        text(&out.stderr),
        logs()
    );
    let out = ssh(&[d.clone(), vec!["-tt".into()]].concat(), "dave", "tty").unwrap();
    assert!(
        text(&out.stderr).contains("PTY allocation request failed"),
        "restrict must refuse the PTY: {:?}\nstdout: {}\nstderr: {}\n{}\ndave's server:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        logs(),
        std::fs::read_to_string(&dave.log).unwrap_or_default()
    );
    let inside = format!("exec 3<>/dev/tcp/127.0.0.1/{aport} && echo opened; true");
    // The session's own policy on -L, seen through the gateway: a -W to the allowed port
    // works, any other port is refused.
    let allowed_thread = std::thread::spawn(move || {
        let (s, _) = allowed.accept().unwrap();
        drop(s);
    });
    let ok = Command::new("ssh")
        .args(&d)
        .args(["-W", &format!("127.0.0.1:{aport}")])
        .arg("dave@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "-W to the permitted port: {}",
        text(&ok.stderr)
    );
    allowed_thread.join().unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let oport = other.local_addr().unwrap().port();
    let no = Command::new("ssh")
        .args(&d)
        .args(["-W", &format!("127.0.0.1:{oport}")])
        .arg("dave@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!no.status.success(), "-W to another port must be refused");
    assert!(
        text(&no.stderr).contains("open failed"),
        "{}",
        text(&no.stderr)
    );
    let _ = inside;

    // from=: carol's own key, from an address her line does not allow.
    let out = ssh(&c, "carol", "true").unwrap();
    assert_eq!(out.status.code(), Some(255));
    let srv = std::fs::read_to_string(&carol.log).unwrap();
    assert!(srv.contains("from="), "carol's server log:\n{srv}");

    // Ambiguous: a second server claims dave's name.
    create_pod(&client, &ns, "jupyter-dave-copy", "dave")
        .await
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // The same refusal and hint for an unknown name, a refused key, a server not ready,
    // a server that is down and an ambiguous name; each slower than the rejection time.
    let hint = "Log in as your hub user name";
    let mut stderrs = Vec::new();
    for (opts, user, what) in [
        (&d, "zed", "unknown name"),
        (&c, "carol", "refused key"),
        (&d, "erin", "not ready"),
        (&d, "frank", "server down"),
        (&d, "dave", "ambiguous"),
    ] {
        let started = std::time::Instant::now();
        let out = refused_with_hint(opts, user);
        let took = started.elapsed();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{what}: {err}");
        assert!(
            err.contains(hint) && err.contains("Permission denied"),
            "{what}: {err}\n{}",
            logs()
        );
        assert!(
            took >= Duration::from_millis(500),
            "{what}: refused in {took:?}"
        );
        stderrs.push(err.replace(user, "USER"));
    }
    assert!(
        stderrs.windows(2).all(|w| w[0] == w[1]),
        "refusals differ: {stderrs:#?}"
    );
    assert!(logs().contains("\"event\":\"ambiguous\""), "{}", logs());
    pods.delete("jupyter-dave-copy", &Default::default())
        .await
        .unwrap();

    // Garbage instead of a banner: no hint, closed; a client that stops mid-handshake is
    // closed by the grace time.
    let (got, closed) = raw_exchange(
        g1.port,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(closed, "garbage left the connection open");
    assert!(
        !text(&got).contains(hint),
        "garbage got the hint: {}",
        text(&got)
    );
    let (_, closed) = raw_exchange(g1.port, b"SSH-2.0-stalls\r\n", Duration::from_secs(15));
    assert!(closed, "a stalled handshake outlived the grace time");

    // Metrics: logins by outcome, the admin's ambiguity counter, the index; ready.
    let (status, _) = g1.http_get("/readyz").unwrap();
    assert!(status.contains("200"), "{status}");
    let metric = |body: &str, name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    let (m1, m2) = (
        g1.http_get("/metrics").unwrap().1,
        g2.http_get("/metrics").unwrap().1,
    );
    let sum = |name: &str| metric(&m1, name) + metric(&m2, name);
    assert!(sum("session_ssh_gateway_logins_total{outcome=\"accepted\"}") >= 3);
    assert!(sum("session_ssh_gateway_logins_total{outcome=\"refused\"}") >= 5);
    assert!(sum("session_ssh_gateway_ambiguous_names_total") >= 1);
    assert!(sum("session_ssh_gateway_upstream_connect_seconds_count") >= 3);
    assert!(metric(&m1, "session_ssh_gateway_index_pods") >= 4, "{m1}");

    // The per-source failure limit: a third gateway allowing 3 failed logins a minute closes
    // the 4th connection from this address before SSH starts.
    let g3 = Gateway::start(
        &keys,
        &kubeconfig,
        "jupyterhub",
        &[&ns],
        work.path(),
        &[("GATEWAY_MAX_FAILURES_PER_MINUTE", "3")],
    )
    .unwrap();
    let d3 = ssh_opts(&dave.key, &known, g3.port);
    let known3 = work.path().join("known_hosts_g3");
    Gateway::known_hosts(&keys, g3.port, &known3).unwrap();
    let d3: Vec<String> = d3
        .into_iter()
        .map(|o| o.replace(known.to_str().unwrap(), known3.to_str().unwrap()))
        .collect();
    for _ in 0..3 {
        let out = ssh(&d3, "nobody", "true").unwrap();
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = ssh(&d3, "dave", "echo should-not-run").unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        !text(&out.stderr).contains("Permission denied") && text(&out.stdout).is_empty(),
        "the limited source got as far as authentication: {}",
        text(&out.stderr)
    );
    assert!(
        g3.log_text().contains("too many failed logins"),
        "{}",
        g3.log_text()
    );

    // Kill one replica: new logins through the same address keep working.
    g2.kill();
    for i in 0..6 {
        let out = ssh(&d, "dave", "echo still-here").unwrap();
        assert_eq!(
            text(&out.stdout).trim(),
            "still-here",
            "login {i} after the kill: {}\n{}",
            text(&out.stderr),
            lb.error_log()
        );
    }
}

/// `ssh-keygen -l -E sha256` of a public key file: `SHA256:...`.
fn fingerprint(pubfile: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pubfile)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn asyncssh_plink_and_psftp_through_the_gateway() {
    let mut wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let ns = wc.session_namespaces[0].clone();
    let probe = cluster::hub_pod("jupyter-probe", "probe", "").unwrap();
    wc.wait_active(&ns, &probe).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = GatewayKeys::generate(work.path()).unwrap();
    let alice = start_session(&mut wc, &ns, work.path(), "alice", "", &keys.user_ca_public)
        .await
        .unwrap();
    // PuTTY with an RSA key: add it to the session's keys, as a user would.
    let rsa = work.path().join("id_rsa");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    let ak = alice.run.dir.join("authorized_keys");
    let mut lines = std::fs::read_to_string(&ak).unwrap();
    lines.push_str(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap());
    std::fs::write(&ak, lines).unwrap();
    let ppk = work.path().join("id_rsa.ppk");
    let st = Command::new("puttygen")
        .arg(&rsa)
        .args(["-O", "private", "-o"])
        .arg(&ppk)
        .status()
        .unwrap();
    assert!(st.success(), "puttygen (apt-get install putty-tools)");

    let kubeconfig = gateway_kubeconfig(&wc, work.path()).await.unwrap();
    let gw = Gateway::start(&keys, &kubeconfig, "jupyterhub", &[&ns], work.path(), &[]).unwrap();
    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, gw.port, &known).unwrap();
    let a = ssh_opts(&alice.key, &known, gw.port);
    for _ in 0..50 {
        if ssh(&a, "alice", "true").unwrap().status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // asyncssh (PyPI): commands, PTY, SFTP and forwarding, as the direct interop test.
    let http = session_ssh_tests::sshd::net::http_server("asyncssh via gateway\n");
    let out = Command::new(session_ssh_tests::sshd::python())
        .arg(session_ssh_tests::repo_root().join("tests/python/interop.py"))
        .args(["--port", &gw.port.to_string(), "--user", "alice"])
        .arg("--key")
        .arg(&alice.key)
        .arg("--known-hosts")
        .arg(&known)
        .args(["--forward-port", &http.port.to_string()])
        .args(["--forward-expect", "asyncssh via gateway\n"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "asyncssh: {}\n{}\ngateway:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        gw.log_text()
    );

    // plink and psftp, the gateway's host key pinned by fingerprint.
    let hostkey = fingerprint(&keys.host_key.with_extension("pub"));
    let putty = |prog: &str| {
        let mut c = Command::new(prog);
        c.args([
            "-batch",
            "-P",
            &gw.port.to_string(),
            "-hostkey",
            &hostkey,
            "-i",
        ])
        .arg(&ppk);
        c
    };
    let out = putty("plink")
        .args(["-ssh", "alice@127.0.0.1", "echo plink-$((40+2))"])
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "plink-42",
        "plink: {}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    let file = work.path().join("psftp-up");
    std::fs::write(&file, b"psftp through the gateway\n".repeat(1000)).unwrap();
    let back = work.path().join("psftp-back");
    let script = work.path().join("psftp.batch");
    std::fs::write(
        &script,
        format!(
            "put {} /tmp/psftp-file\nget /tmp/psftp-file {}\n",
            file.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = putty("psftp")
        .arg("-b")
        .arg(&script)
        .arg("alice@127.0.0.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "psftp: {}", text(&out.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&file).unwrap());
    // The session saw the RSA key's own fingerprint (the key decided, not the gateway).
    let log = std::fs::read_to_string(&alice.log).unwrap();
    let rsa_fp = fingerprint(&rsa.with_extension("pub"));
    assert!(
        log.contains(&rsa_fp),
        "alice's server log lacks {rsa_fp}:\n{log}"
    );
}
