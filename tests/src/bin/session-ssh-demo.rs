//! The no-cluster demo: inject a realistic JupyterHub pod, run the injected init
//! container and postStart hook in a local sandbox as the session user, serve SSH
//! on 127.0.0.1 and print how to connect. Ctrl-C (or --check) cleans up.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use session_ssh_tests::injected::InjectedSession;
use session_ssh_tests::{reaper, repo_root};

struct Args {
    pod: PathBuf,
    config: PathBuf,
    webhook: PathBuf,
    init_sshd: PathBuf,
    work: PathBuf,
    check: bool,
}

fn parse_args() -> Result<Args> {
    let root = repo_root();
    let mut a = Args {
        pod: root.join("webhook/tests/fixtures/jupyterhub-alice.pod.yaml"),
        config: root.join("manifests/examples/jupyterhub/config.yaml"),
        webhook: std::env::var_os("SESSION_SSH_WEBHOOK_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/session-ssh-webhook")),
        init_sshd: std::env::var_os("INIT_SSHD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/x86_64-unknown-linux-musl/release/init-sshd")),
        work: root.join(".work/demo"),
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().context(format!("{arg} needs a value"));
        match arg.as_str() {
            "--pod" => a.pod = val()?.into(),
            "--config" => a.config = val()?.into(),
            "--webhook" => a.webhook = val()?.into(),
            "--init-sshd" => a.init_sshd = val()?.into(),
            "--work" => a.work = val()?.into(),
            "--check" => a.check = true,
            "-h" | "--help" => {
                println!(
                    "session-ssh-demo [--pod POD.yaml] [--config CONFIG.yaml] [--webhook BIN] \
                     [--init-sshd BIN] [--work DIR] [--check]\n\n--check: connect once and exit \
                     instead of waiting for Ctrl-C"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    Ok(a)
}

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m[{n}] {text}\x1b[0m");
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() -> Result<()> {
    // From here on, Ctrl-C, SIGTERM or SIGHUP at any step kills the sandbox and its server.
    reaper::install();
    let a = parse_args()?;
    for (what, p) in [
        ("pod", &a.pod),
        ("config", &a.config),
        ("webhook binary", &a.webhook),
        ("init-sshd binary", &a.init_sshd),
    ] {
        if !p.exists() {
            bail!("{what} not found at {} (run scripts/demo.sh)", p.display());
        }
    }
    let _ = fs::remove_dir_all(&a.work);
    fs::create_dir_all(&a.work)?;
    let work = fs::canonicalize(&a.work)?;

    step(1, "A JupyterHub pod as KubeSpawner makes it");
    let original_yaml = fs::read_to_string(&a.pod)?;
    let original: Pod = serde_yaml::from_str(&original_yaml)?;
    println!("  {}", a.pod.display());

    step(2, "session-ssh-webhook inject: what the webhook changes");
    let patch = run(Command::new(&a.webhook)
        .args(["inject", "--patch", "--config"])
        .arg(&a.config)
        .arg("-f")
        .arg(&a.pod))?;
    let ops: Vec<serde_json::Value> = serde_json::from_str(&patch).context("patch JSON")?;
    for op in &ops {
        let summary = op["value"]
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("");
        println!(
            "  {:<8} {} {}",
            op["op"].as_str().unwrap_or("?"),
            op["path"].as_str().unwrap_or("?"),
            summary
        );
    }
    let mutated_yaml = run(Command::new(&a.webhook)
        .args(["inject", "--config"])
        .arg(&a.config)
        .arg("-f")
        .arg(&a.pod))?;
    fs::write(work.join("pod.mutated.yaml"), &mutated_yaml)?;
    let mutated: Pod = serde_yaml::from_str(&mutated_yaml)?;
    println!(
        "  full mutated pod: {}",
        work.join("pod.mutated.yaml").display()
    );

    step(
        3,
        "A key for you, in the per-user Secret the pod mounts; the pod starts",
    );
    let inj = InjectedSession::launch(
        &original,
        mutated,
        &a.init_sshd,
        &work,
        BTreeMap::new(),
        2222,
    )?;
    for name in &inj.secrets {
        println!(
            "  Secret {name}: authorized_keys = your new key ({})",
            inj.key.display()
        );
    }

    step(
        4,
        "Init container session-ssh-install ran (as the pod spec says)",
    );
    print_indented(&inj.install.stderr);
    if let Ok(report) = fs::read_to_string(inj.dir.join("install-report.json")) {
        println!("  install-report.json: {}", report.trim());
    }

    step(
        5,
        &format!(
            "Session container {:?} runs as uid {}; its postStart hook ran",
            inj.container, inj.identity.uid
        ),
    );
    print_indented(&inj.post_start.stderr);
    if !inj.post_start.status.success() {
        bail!("postStart hook failed: {}", inj.post_start.status);
    }

    step(6, "Logging in with the real OpenSSH client");
    let out = inj.ssh(
        "echo \"hello from $(id -un 2>/dev/null || id -u) in $HOME\"; id; \\
         echo \"from the image entrypoint: SESSION_ENTRYPOINT_VAR=$SESSION_ENTRYPOINT_VAR\"",
    )?;
    if !out.status.success() {
        bail!("ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    print_indented(&out.stdout);
    let port = inj.port;
    let key = inj.key.clone();
    let known = inj.known_hosts.clone();

    step(7, "Connect yourself");
    let k = key.display();
    let kh = known.display();
    println!("  ssh  -i {k} -o UserKnownHostsFile={kh} -p {port} jovyan@127.0.0.1");
    println!("  sftp -i {k} -o UserKnownHostsFile={kh} -P {port} jovyan@127.0.0.1");
    println!(
        "  through TLS, as an SNI ingress routes it (port {}):\n    ssh -i {k} -o UserKnownHostsFile={kh} \
         -o HostKeyAlias=[127.0.0.1]:{port} \\\n      -o ProxyCommand='openssl s_client -quiet -no_ign_eof -nocommands \
         -verify_quiet -connect 127.0.0.1:{} -servername %h' jovyan@session.ssh.test",
        inj.tls_port, inj.tls_port
    );
    println!(
        "\n  VS Code Remote-SSH: add to ~/.ssh/config, then \"Connect to Host\" session-ssh-demo"
    );
    println!("    Host session-ssh-demo");
    println!("      HostName 127.0.0.1");
    println!("      Port {port}");
    println!("      User jovyan");
    println!("      IdentityFile {k}");
    println!("      IdentitiesOnly yes");
    println!("      UserKnownHostsFile {kh}");
    println!("      ServerAliveInterval 30");

    if a.check {
        println!("\n--check: stopping the demo session");
    } else {
        let waiter = reaper::Waiter::new()?;
        println!("\nThe session runs until Ctrl-C.");
        let sig = waiter.wait()?;
        println!("\nSignal {sig}: cleaning up.");
    }
    drop(inj);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("  | {line}");
    }
}
