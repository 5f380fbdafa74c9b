//! The SSH gateway as the tests run it: its own host key and user CA made with
//! `ssh-keygen`, the real binary watching the real apiserver, a known_hosts file that
//! trusts only its host key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use session_ssh_contract::names;

use crate::cluster::webhook::{Platform, Tls, WebhookCluster, is_injected};
use crate::cluster::{self, wait_for};
use crate::injected::InjectedSession;
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
    /// Its /metrics, /healthz and /readyz.
    pub metrics_port: u16,
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
        let metrics_port = free_port(0);
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
            .env(
                "GATEWAY_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        let proc = reaper::spawn(&mut cmd).with_context(|| format!("spawn {}", bin.display()))?;
        let gw = Gateway {
            port,
            metrics_port,
            log,
            proc,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("gateway not listening after 30s:\n{}", gw.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(gw)
    }

    /// `GET path` on the metrics port: (status line, body).
    pub fn http_get(&self, path: &str) -> Result<(String, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // One write: the request in one piece, as a real scraper sends it.
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        ))
    }

    /// The gateway process id (for its RSS).
    pub fn pid(&self) -> u32 {
        self.proc.id()
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

/// The per-user Secret `ssh-keys-<slug>` holding `authorized_keys`, as the JupyterHub
/// guide tells users to store their keys.
pub async fn create_key_secret(
    client: &kube::Client,
    ns: &str,
    slug: &str,
    authorized_keys: &str,
) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("ssh-keys-{slug}")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "authorized_keys".to_owned(),
            ByteString(authorized_keys.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
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

/// The init-sshd binary the sessions run: INIT_SSHD_BIN, else the debug build.
pub fn init_sshd_bin() -> PathBuf {
    std::env::var_os("INIT_SSHD_BIN")
        .map(|p| repo_root().join(p))
        .unwrap_or_else(|| repo_root().join("target/debug/init-sshd"))
}

/// A hub user's server, injected by the webhook and running in the pod sandbox.
pub struct Session {
    pub run: InjectedSession,
    /// The user's private key (its line is in their Secret).
    pub key: PathBuf,
    /// The session's init-sshd log.
    pub log: PathBuf,
    pub name: String,
}

/// Creates `user`'s Secret (their key, with `options`) and server pod, runs it and marks it
/// Ready at 127.0.0.1 (what a kubelet would report).
pub async fn start_session(
    wc: &mut WebhookCluster,
    ns: &str,
    work: &Path,
    user: &str,
    options: &str,
    ca: &str,
) -> Result<Session> {
    start_session_env(wc, ns, work, user, options, ca, &[]).await
}

/// [`start_session`] with extra variables in the session container (the server reads its
/// `INIT_SSHD_*` settings from there).
pub async fn start_session_env(
    wc: &mut WebhookCluster,
    ns: &str,
    work: &Path,
    user: &str,
    options: &str,
    ca: &str,
    env: &[(&str, &str)],
) -> Result<Session> {
    start_session_cfg(wc, ns, work, user, options, ca, env, "").await
}

/// [`start_session_env`] with more of the webhook's `gateway:` settings at admission
/// (`gateway` lines, indented two spaces, e.g. `"  hubTokenLogin: true\n"`).
#[allow(clippy::too_many_arguments)]
pub async fn start_session_cfg(
    wc: &mut WebhookCluster,
    ns: &str,
    work: &Path,
    user: &str,
    options: &str,
    ca: &str,
    env: &[(&str, &str)],
    gateway_cfg: &str,
) -> Result<Session> {
    let client = wc.client().await?;
    // KubeSpawner's label value is a slug of the hub name; the annotation keeps the name.
    let slug = user.replace(['@', '.'], "-");
    let dir = work.join(&slug);
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("id_ed25519");
    keygen(&key, &format!("{user}@laptop"))?;
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let line = format!(
        "{options}{}{public}",
        if options.is_empty() { "" } else { " " }
    );
    create_key_secret(&client, ns, &slug, &line).await?;
    // Each session's server gets its own port (the sandbox shares the host's network).
    let port = free_port(0);
    wc.set_config_extra(&format!(
        "gateway:\n  userCaPublicKey: \"{ca}\"\n{gateway_cfg}ports:\n  ssh: {port}\n  sshTls: null\n"
    ))
    .await?;
    let name = format!("jupyter-{slug}");
    let (original, stored) = create_pod_env(&client, ns, &name, user, env).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let secrets = cluster::mounted_secrets(&client, ns, &stored).await?;
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir)?;
    let run =
        InjectedSession::launch(&original, stored, &init_sshd_bin(), &run_dir, secrets, port)?;
    if run.port != port {
        bail!("the session's port {port} was taken");
    }
    mark_ready(&pods, &name).await?;
    wait_published(&pods, &name)
        .await
        .with_context(|| format!("webhook log:\n{}", wc.webhook_log()))?;
    let log = run.dir.join("init-sshd.log");
    Ok(Session {
        run,
        key,
        log,
        name,
    })
}

/// A self-signed certificate for the gateway's TLS side (openssl).
pub fn tls_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ssh.example.org",
            "-addext",
            "subjectAltName=DNS:ssh.example.org",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("openssl req failed");
    }
    Ok((cert, key))
}

/// A hub server pod for `user` named `name`, created through the webhook.
pub async fn create_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    user: &str,
) -> Result<(Pod, Pod)> {
    create_pod_env(client, ns, name, user, &[]).await
}

/// [`create_pod`] with extra variables in the session container.
pub async fn create_pod_env(
    client: &kube::Client,
    ns: &str,
    name: &str,
    user: &str,
    env: &[(&str, &str)],
) -> Result<(Pod, Pod)> {
    // KubeSpawner's label value is a slug of the hub name; the annotation keeps the name.
    let slug = user.replace(['@', '.'], "-");
    let mut original = cluster::hub_pod(name, user, "")?;
    original
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("hub.jupyter.org/username".into(), slug);
    if let Some(c) = original
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
    {
        let vars = c.env.get_or_insert_with(Vec::new);
        for (k, v) in env {
            vars.push(k8s_openapi::api::core::v1::EnvVar {
                name: (*k).to_owned(),
                value: Some((*v).to_owned()),
                ..Default::default()
            });
        }
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &original).await?;
    let stored = pods.get(name).await?;
    if !is_injected(&stored) {
        bail!("not injected: {:?}", stored.metadata.annotations);
    }
    Ok((original, stored))
}

/// What a kubelet reports for a running, ready pod on this host.
pub async fn mark_ready(pods: &Api<Pod>, name: &str) -> Result<()> {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The controller publishes the session's host key, which the gateway pins.
pub async fn wait_published(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    wait_for("published host key", Duration::from_secs(60), || {
        let pods = pods.clone();
        let name = name.to_owned();
        async move {
            let p = pods.get(&name).await?;
            Ok(p.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(names::HOST_PUBLIC_KEY)
                .then_some(()))
        }
    })
    .await
}

/// The JupyterHub example installed, its hub namespace ready for sessions (the example
/// binds host-key rights there, so sessions get stable host keys the controller publishes
/// for the gateway to pin): the cluster and that namespace.
pub async fn hub_cluster() -> Result<(WebhookCluster, String)> {
    let wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url).await?;
    let ns = wc.session_namespaces[0].clone();
    let probe = cluster::hub_pod("jupyter-probe", "probe", "")?;
    wc.prepare_for(&ns, &probe).await?;
    wc.wait_active(&ns, &probe).await?;
    Ok((wc, ns))
}

/// A kubeconfig with a token of the manifests' gateway ServiceAccount: the gateway runs
/// with exactly the rights manifests/gateway grants it.
pub async fn gateway_kubeconfig(wc: &WebhookCluster, dir: &Path) -> Result<PathBuf> {
    let files =
        ["serviceaccount.yaml", "rbac.yaml"].map(|f| repo_root().join("manifests/gateway").join(f));
    wc.apply_files(&files).await?;
    let client = wc.client().await?;
    let token =
        cluster::service_account_token(&client, "session-ssh", "session-ssh-gateway", 3600).await?;
    let path = dir.join("gateway.kubeconfig");
    wc.cp.write_token_kubeconfig(&path, &token)?;
    Ok(path)
}
