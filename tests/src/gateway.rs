//! The SSH gateway as the tests run it: its own host key and user CA made with
//! `ssh-keygen`, the real binary watching the real apiserver, a known_hosts file that
//! trusts only its host key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::reaper::{self, Proc};
use crate::{free_port, repo_root};

/// The gateway binary: SESSION_SSH_GATEWAY_BIN, else the cargo build.
pub fn gateway_bin() -> Result<PathBuf> {
    let root = repo_root();
    if let Some(p) = std::env::var_os("SESSION_SSH_GATEWAY_BIN") {
        let p = PathBuf::from(p);
        let p = if p.is_absolute() { p } else { root.join(p) };
        if !p.is_file() {
            bail!("SESSION_SSH_GATEWAY_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    ["target/release/session-ssh-gateway", "target/debug/session-ssh-gateway"]
        .iter()
        .map(|r| root.join(r))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no session-ssh-gateway binary: `cargo build -p session-ssh-gateway` or set SESSION_SSH_GATEWAY_BIN"))
}

/// `ssh-keygen -t ed25519` into `path` (and `path.pub`).
pub fn keygen(path: &Path, comment: &str) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The keys a gateway deployment shares between its replicas.
#[derive(Debug)]
pub struct GatewayKeys {
    pub host_key: PathBuf,
    pub user_ca: PathBuf,
    /// The CA's public line: the webhook's `gateway.userCaPublicKey`.
    pub user_ca_public: String,
}

impl GatewayKeys {
    pub fn generate(dir: &Path) -> Result<GatewayKeys> {
        let host_key = dir.join("gateway_host_ed25519_key");
        let user_ca = dir.join("gateway_user_ca");
        keygen(&host_key, "session-ssh-gateway host")?;
        keygen(&user_ca, "session-ssh-gateway user CA")?;
        let user_ca_public = std::fs::read_to_string(user_ca.with_extension("pub"))?
            .trim()
            .to_owned();
        Ok(GatewayKeys {
            host_key,
            user_ca,
            user_ca_public,
        })
    }
}

/// One running gateway process.
#[derive(Debug)]
pub struct Gateway {
    pub port: u16,
    pub log: PathBuf,
    proc: Proc,
}

impl Gateway {
    /// Starts a gateway on a free 127.0.0.1 port and waits until it accepts.
    pub fn start(
        keys: &GatewayKeys,
        kubeconfig: &Path,
        preset: &str,
        namespaces: &[&str],
        work: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Gateway> {
        let bin = gateway_bin()?;
        let port = free_port(0);
        let log = work.join(format!("gateway-{port}.log"));
        let f = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--host-key")
            .arg(&keys.host_key)
            .arg("--user-ca")
            .arg(&keys.user_ca)
            .arg("--preset")
            .arg(preset)
            .arg("--log-format")
            .arg("json");
        for ns in namespaces {
            cmd.arg("--namespace").arg(ns);
        }
        cmd.env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        let proc = reaper::spawn(&mut cmd).with_context(|| format!("spawn {}", bin.display()))?;
        let gw = Gateway { port, log, proc };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("gateway not listening after 30s:\n{}", gw.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(gw)
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a node failure would.
    pub fn kill(&mut self) {
        self.proc.kill_group();
        let _ = self.proc.wait();
    }

    /// A known_hosts file that trusts only this gateway's host key at `[127.0.0.1]:port`.
    pub fn known_hosts(keys: &GatewayKeys, port: u16, path: &Path) -> Result<()> {
        let public = std::fs::read_to_string(keys.host_key.with_extension("pub"))?;
        let two: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(path, format!("[127.0.0.1]:{port} {}\n", two.join(" ")))?;
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// OpenSSH client options for `key` through a gateway on `port` (host key pinned).
pub fn ssh_opts(key: &Path, known_hosts: &Path, port: u16) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "-i".to_owned(),
        key.display().to_string(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-p".to_owned(),
        port.to_string(),
    ])
    .collect()
}

/// `ssh opts user@127.0.0.1 cmd`.
pub fn ssh(opts: &[String], user: &str, cmd: &str) -> Result<Output> {
    Ok(Command::new("ssh")
        .args(opts)
        .arg(format!("{user}@127.0.0.1"))
        .arg(cmd)
        .output()?)
}
