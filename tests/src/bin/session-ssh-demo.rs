//! The no-cluster demo: inject a realistic JupyterHub pod, run the injected init
//! container and postStart hook in a local sandbox as the session user, serve SSH
//! on 127.0.0.1 and print how to connect. Ctrl-C (or --check) cleans up.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use session_ssh_tests::podrun::{PodSandbox, SandboxOpts, identity};
use session_ssh_tests::{free_port, repo_root};

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
        pod: root.join("webhook/tests/fixtures/jupyterhub.pod.yaml"),
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
        let summary = op["value"].get("name").and_then(|n| n.as_str()).unwrap_or("");
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
    println!("  full mutated pod: {}", work.join("pod.mutated.yaml").display());

    step(3, "A key for you, stored as the per-user Secret the pod mounts");
    let key = work.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "session-ssh-demo", "-f"])
        .arg(&key))?;
    let pubkey = fs::read(key.with_extension("pub"))?;
    let secrets = added_secret_volumes(&original, &mutated)
        .into_iter()
        .map(|name| {
            println!("  Secret {name}: authorized_keys = your new key");
            (name, BTreeMap::from([("authorized_keys".to_owned(), pubkey.clone())]))
        })
        .collect();

    let session = session_container(&mutated).context("no container got the postStart hook")?;
    let port = free_port(2222);
    let listen = format!("127.0.0.1:{port}");
    let opts = SandboxOpts {
        init_sshd_bin: a.init_sshd.clone(),
        secrets,
        session_env: vec![("INIT_SSHD_LISTEN".into(), listen.clone())],
        // What a docker-stacks entrypoint exports before exec'ing the server.
        entrypoint_env: vec![("JUPYTER_DEMO_ENTRYPOINT".into(), "exported-by-entrypoint".into())],
    };
    let mut sandbox = PodSandbox::new(mutated.clone(), opts)?;
    let spec = mutated.spec.as_ref().context("pod has no spec")?;
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == session)
        .context("session container")?;
    let id = identity(&mutated, container);

    step(4, "Init container session-ssh-install (as the pod spec says)");
    let out = sandbox.run_install()?;
    print_indented(&out.stderr);
    let dir = sandbox
        .volume_dir("session-ssh")
        .context("the pod has no session-ssh volume")?
        .to_path_buf();
    if let Ok(report) = fs::read_to_string(dir.join("install-report.json")) {
        println!("  install-report.json: {}", report.trim());
    }

    step(5, &format!("Session container {session:?} starts as uid {}; postStart hook", id.uid));
    sandbox.start_session(&session)?;
    let out = sandbox.run_post_start(&session)?;
    print_indented(&out.stderr);
    if !out.status.success() {
        bail!("postStart hook failed: {}", out.status);
    }

    let hostpub = fs::read_to_string(dir.join("ssh_host_ed25519_key.pub"))?;
    let hostkey: Vec<&str> = hostpub.split_whitespace().take(2).collect();
    let known = work.join("known_hosts");
    fs::write(&known, format!("[127.0.0.1]:{port} {}\n", hostkey.join(" ")))?;

    step(6, "Logging in with the real OpenSSH client");
    let ssh_opts = [
        "-F".to_owned(),
        "/dev/null".to_owned(),
        "-i".to_owned(),
        key.display().to_string(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", known.display()),
        "-o".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
    ];
    let out = run(Command::new("ssh")
        .args(&ssh_opts)
        .args(["-p", &port.to_string(), "jovyan@127.0.0.1"])
        .arg("echo \"hello from $(id -un 2>/dev/null || id -u) in $HOME\"; id; echo \"PATH=$PATH\""))?;
    print_indented(out.as_bytes());

    step(7, "Connect yourself");
    let k = key.display();
    let kh = known.display();
    println!("  ssh  -i {k} -o UserKnownHostsFile={kh} -p {port} jovyan@127.0.0.1");
    println!("  sftp -i {k} -o UserKnownHostsFile={kh} -P {port} jovyan@127.0.0.1");
    println!("\n  VS Code Remote-SSH: add to ~/.ssh/config, then \"Connect to Host\" session-ssh-demo");
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
        println!("\nThe session runs until Ctrl-C.");
        wait_for_ctrl_c()?;
        println!("\nCleaning up.");
    }
    drop(sandbox);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

fn wait_for_ctrl_c() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("  | {line}");
    }
}

/// Secret volumes the injection added: the key sources the demo fills in.
fn added_secret_volumes(before: &Pod, after: &Pod) -> Vec<String> {
    let names = |p: &Pod| -> Vec<String> {
        p.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .map(|v| {
                v.iter()
                    .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = names(before);
    names(after)
        .into_iter()
        .filter(|n| !old.contains(n))
        .collect()
}

/// The container whose postStart hook runs init-sshd.
pub fn session_container(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.containers.iter().find_map(|c| {
        let cmd = c.lifecycle.as_ref()?.post_start.as_ref()?.exec.as_ref()?.command.as_ref()?;
        cmd.iter()
            .any(|a| Path::new(a).ends_with("init-sshd"))
            .then(|| c.name.clone())
    })
}
