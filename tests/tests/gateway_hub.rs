//! End-to-end: hub-token login through the SSH gateway, against a real JupyterHub (PyPI
//! `jupyterhub`, DummyAuthenticator, the npm proxy), the real kube-apiserver, the webhook
//! and the real OpenSSH client. A user with no SSH key types a hub API token as the
//! password; the gateway asks the hub who owns it, and the session (configured by the
//! webhook's `gateway.hubTokenLogin`) checks the owner again.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use session_ssh_tests::gateway::hub_cluster;
use session_ssh_tests::gateway::{
    Gateway, GatewayKeys, gateway_kubeconfig, ssh, ssh_opts, start_session, start_session_cfg,
};
use session_ssh_tests::hub::Hub;

const ALICE: &str = "alice.smith@example.org";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Options for a login with no key at all: only `method` (keyboard-interactive or
/// password), one prompt, answered by `askpass` from `$HUB_TOKEN`.
fn token_opts(known_hosts: &Path, method: &str) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        &format!("PreferredAuthentications={method}"),
        "-o",
        "NumberOfPasswordPrompts=1",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// `program opts... args...` with the token answering the password prompt and `input`
/// on stdin.
fn with_token(
    program: &str,
    opts: &[String],
    args: &[&str],
    askpass: &Path,
    token: &str,
) -> Output {
    with_token_input(program, opts, args, askpass, token, "")
}

fn with_token_input(
    program: &str,
    opts: &[String],
    args: &[&str],
    askpass: &Path,
    token: &str,
    input: &str,
) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(opts)
        .args(args)
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("HUB_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn askpass(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("askpass.sh");
    std::fs::write(&p, "#!/bin/sh\nprintf '%s\\n' \"$HUB_TOKEN\"\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    p
}

#[tokio::test]
async fn hub_token_login_through_the_gateway() {
    let (mut wc, ns) = hub_cluster().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let hub = Hub::start(work.path(), "").unwrap();
    hub.create_users(&[ALICE, "bob"]).unwrap();

    let keys = GatewayKeys::generate(work.path()).unwrap();
    let ca = keys.user_ca_public.clone();
    let kubeconfig = gateway_kubeconfig(&wc, work.path()).await.unwrap();
    // The gateway's host key certified by a host CA (ssh-keygen -s), as an admin would.
    let host_ca = work.path().join("host_ca");
    session_ssh_tests::gateway::keygen(&host_ca, "host CA").unwrap();
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&host_ca)
        .args(["-I", "gateway", "-h", "-n", "127.0.0.1", "-V", "-1m:+1h"])
        .arg(keys.host_key.with_extension("pub"))
        .status()
        .unwrap();
    assert!(signed.success());
    let host_cert = work.path().join("gateway_host_ed25519_key-cert.pub");
    let gw = Gateway::start(
        &keys,
        &kubeconfig,
        "jupyterhub",
        &[&ns],
        work.path(),
        &[
            ("GATEWAY_HUB_API_URL", &hub.api_url),
            ("GATEWAY_HOST_CERT", host_cert.to_str().unwrap()),
        ],
    )
    .unwrap();
    // Alice's session takes hub-token logins of its hub user, and its connection
    // information names the gateway; Bob's takes none (the default).
    let gw_public = std::fs::read_to_string(keys.host_key.with_extension("pub")).unwrap();
    // (A server setting rides along: the webhook's config reaches serve's command line.)
    let alice_cfg = format!(
        "  hubTokenLogin: true\n  host: 127.0.0.1\n  port: {}\n  hostPublicKey: \"{}\"\nserver:\n  maxConnections: 17\n",
        gw.port,
        gw_public.trim()
    );
    let alice = start_session_cfg(&mut wc, &ns, work.path(), ALICE, "", &ca, &[], &alice_cfg)
        .await
        .unwrap();
    let bob = start_session(&mut wc, &ns, work.path(), "bob", "", &ca)
        .await
        .unwrap();

    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, gw.port, &known).unwrap();
    let diag = |what: &str, out: &Output| {
        format!(
            "{what}: status {:?}\nstdout: {}\nstderr: {}\ngateway log:\n{}\nalice's server:\n{}\nhub log (tail):\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr),
            gw.log_text(),
            std::fs::read_to_string(&alice.log).unwrap_or_default(),
            hub.log_text()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };

    // Keys keep working next to tokens (and the first login waits for the pod watch).
    let a = ssh_opts(&alice.key, &known, gw.port);
    let mut out = ssh(&a, ALICE, "true").unwrap();
    for _ in 0..50 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = ssh(&a, ALICE, "true").unwrap();
    }
    assert!(out.status.success(), "{}", diag("alice's key", &out));

    // Only the host CA's line in known_hosts: the gateway's certificate is trusted.
    let ca_known = work.path().join("ca_known_hosts");
    std::fs::write(
        &ca_known,
        format!(
            "@cert-authority * {}",
            std::fs::read_to_string(host_ca.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    let by_ca = ssh_opts(&alice.key, &ca_known, gw.port);
    let out = ssh(&by_ca, ALICE, "echo via-host-ca").unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "via-host-ca",
        "{}",
        diag("host certificate", &out)
    );
    let served = std::fs::read_to_string(&alice.log).unwrap();
    assert!(
        served.contains("max_connections=17"),
        "server.maxConnections did not reach serve:\n{served}"
    );
    // The harness sets ports.sshTls null: no TLS listener (issue 17 item 2).
    assert!(
        served.contains("serving") && !served.contains("serving SSH inside TLS"),
        "ports.sshTls null still listens for TLS:\n{served}"
    );
    // ... and her Service (the controller's, from the stored pod) has no ssh-tls port.
    let services = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(
        wc.client().await.unwrap(),
        &ns,
    );
    let ports =
        session_ssh_tests::cluster::wait_for("alice's Service", Duration::from_secs(30), || {
            let services = services.clone();
            let name = alice.name.clone();
            async move {
                Ok(services.get_opt(&name).await?.map(|s| {
                    let ports = s.spec.and_then(|s| s.ports).unwrap_or_default();
                    ports.into_iter().filter_map(|p| p.name).collect::<Vec<_>>()
                }))
            }
        })
        .await
        .unwrap();
    assert_eq!(
        ports,
        ["ssh"],
        "ports.sshTls null: the Service has only ssh"
    );

    // The connection information in her session names the gateway: its command and its
    // known_hosts line work as written, with host-key checking on.
    let info = std::fs::read_to_string(alice.run.dir.join("connect.txt")).unwrap();
    let command = info
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ssh -p "))
        .unwrap_or_else(|| panic!("no ssh command in:\n{info}"));
    let known_line = info
        .lines()
        .skip_while(|l| !l.starts_with("known_hosts line"))
        .nth(1)
        .unwrap_or_else(|| panic!("no known_hosts line in:\n{info}"))
        .trim();
    assert!(command.ends_with(&format!("{ALICE}@127.0.0.1")), "{info}");
    let info_known = work.path().join("info_known_hosts");
    std::fs::write(&info_known, format!("{known_line}\n")).unwrap();
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-i"])
        .arg(&alice.key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", info_known.display()))
        .args(&words)
        .arg("echo from-the-info-file")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "from-the-info-file",
        "{}\ninformation file:\n{info}",
        diag("the information file's command", &out)
    );

    let pass = askpass(work.path());
    let alice_token = hub.user_token(ALICE, None).unwrap();
    let bob_token = hub.user_token("bob", None).unwrap();
    let dest = format!("{ALICE}@127.0.0.1");
    let port = gw.port.to_string();

    // Alice's own token, both methods: a shell command in her session.
    for method in ["keyboard-interactive", "password"] {
        let o = [token_opts(&known, method), vec!["-p".into(), port.clone()]].concat();
        let out = with_token(
            "ssh",
            &o,
            &[&dest, "echo token-login-$((6*7))"],
            &pass,
            &alice_token,
        );
        assert_eq!(
            text(&out.stdout).trim(),
            "token-login-42",
            "{}",
            diag(method, &out)
        );
    }

    // sftp with the token only: a file up and back, byte for byte.
    let local = work.path().join("up.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let back = work.path().join("back.bin");
    // (`sftp -b` would turn on BatchMode, which allows no password prompt: commands on stdin.)
    let commands = format!(
        "put {} token-up.bin\nget token-up.bin {}\nrm token-up.bin\n",
        local.display(),
        back.display()
    );
    let o = [
        token_opts(&known, "keyboard-interactive"),
        vec!["-P".into(), port.clone()],
    ]
    .concat();
    let out = with_token_input("sftp", &o, &[&dest], &pass, &alice_token, &commands);
    assert!(out.status.success(), "{}", diag("sftp with a token", &out));
    assert_eq!(std::fs::read(&back).unwrap(), data, "sftp round trip");

    // Refused alike: another user's valid token, a made-up token, Alice's token without
    // an access scope, Alice's token at an unknown name, and Bob's own token at his
    // session, which does not take hub-token logins.
    let read_only = hub
        .user_token(ALICE, Some(&[&format!("read:users!user={ALICE}")]))
        .unwrap();
    let o = [
        token_opts(&known, "keyboard-interactive"),
        vec!["-p".into(), port.clone()],
    ]
    .concat();
    let nobody = "nobody@127.0.0.1".to_owned();
    let bob_dest = "bob@127.0.0.1".to_owned();
    for (what, who, token) in [
        ("bob's token at alice's session", &dest, bob_token.as_str()),
        ("a made-up token", &dest, "0123456789abcdef0123456789abcdef"),
        ("a token without access:servers", &dest, read_only.as_str()),
        (
            "alice's token at an unknown name",
            &nobody,
            alice_token.as_str(),
        ),
        (
            "bob's token, session without hub logins",
            &bob_dest,
            bob_token.as_str(),
        ),
    ] {
        let out = with_token("ssh", &o, &[who, "echo in"], &pass, token);
        assert_eq!(out.status.code(), Some(255), "{}", diag(what, &out));
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{}",
            diag(what, &out)
        );
        assert!(!text(&out.stdout).contains("in"), "{}", diag(what, &out));
    }
    let bob_log = std::fs::read_to_string(&bob.log).unwrap_or_default();
    assert!(
        bob_log.contains("not enabled for this session"),
        "bob's server must refuse the hub-token passport itself:\n{bob_log}"
    );

    // The session's own login lines are in its container log too (`kubectl logs`), out of
    // the user's files: the key login and the hub-token logins.
    let container_log = std::fs::read_to_string(alice.run.sandbox.container_log()).unwrap();
    let logins: Vec<serde_json::Value> = container_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "login")
        .collect();
    assert!(
        logins.iter().any(|v| v["outcome"] == "accepted"
            && v["fingerprint"] == format!("hub-token:{ALICE}")),
        "container log:\n{container_log}"
    );
    assert!(
        logins.iter().any(|v| v["outcome"] == "accepted"
            && v["fingerprint"]
                .as_str()
                .is_some_and(|f| f.starts_with("SHA256:"))),
        "container log:\n{container_log}"
    );

    // The audit line names the token's owner; no token is ever written to the log.
    let log = gw.log_text();
    assert!(
        log.lines().any(|l| l.contains("\"outcome\":\"accepted\"")
            && l.contains(&format!("\"token_owner\":\"{ALICE}\""))),
        "gateway log:\n{log}"
    );
    for t in [&alice_token, &bob_token, &read_only] {
        assert!(!log.contains(t.as_str()), "a token in the gateway log");
    }
}
