//! A real Kubernetes control plane for end-to-end tests: runs the Go binary from
//! `tests/controlplane` (embedded etcd, kube-apiserver, kube-controller-manager of
//! the release k8s-openapi is compiled for), waits for its `READY kubeconfig=PATH`
//! line and hands out `kube::Client`s.
//!
//! The binary is `$SESSION_SSH_CONTROLPLANE`, or `tests/controlplane/bin/controlplane`
//! built on first use with `tests/controlplane/build.sh` (needs Go). Its stdin is
//! a pipe held by this process: when the test process ends, however it ends, the
//! control plane sees EOF, stops and removes its state dir. Its log (stderr) is
//! kept in memory (last lines appear in errors) and copied to
//! `$SESSION_SSH_CONTROLPLANE_LOG` when that is set.

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub mod certmanager;
pub mod crds;
pub mod webhook;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Cold starts on a loaded 2-core machine take seconds; this is the bound for a stuck one.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_LINES: usize = 400;

type LogTail = Arc<Mutex<VecDeque<String>>>;

/// A running control plane; dropping it stops it (SIGTERM, bounded wait, SIGKILL).
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    // Held only so that its closing (drop, or our process dying) stops the child.
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    log: LogTail,
}

impl ControlPlane {
    /// Starts a control plane of its own in a fresh state dir and waits until it is ready.
    pub fn start() -> Result<ControlPlane> {
        let bin = binary()?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // A path that does not exist yet: the control plane creates it and removes it whole.
        let dir = std::env::temp_dir().join(format!(
            "session-ssh-cp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(&bin)
            .arg("--dir")
            .arg(&dir)
            .arg("--watch-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdin = child.stdin.take();
        let log: LogTail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || collect_log(stderr, &log));
        }
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if let Some(path) = line.strip_prefix("READY kubeconfig=") {
                        let _ = tx.send(PathBuf::from(path));
                    }
                }
            });
        }
        let mut cp = ControlPlane {
            child,
            stdin,
            dir,
            kubeconfig: PathBuf::new(),
            log,
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(path) => {
                    cp.kubeconfig = path;
                    eprintln!(
                        "control plane ready in {:.1}s: {}",
                        started.elapsed().as_secs_f64(),
                        cp.kubeconfig.display()
                    );
                    return Ok(cp);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without READY: the process is exiting; let it finish the log.
                    let _ = wait_exit(&mut cp.child, Duration::from_secs(10));
                    bail!("control plane exited before READY\n{}", cp.log_tail(60));
                }
            }
            if let Ok(Some(status)) = cp.child.try_wait() {
                bail!(
                    "control plane exited ({status}) before READY\n{}",
                    cp.log_tail(60)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "control plane not READY after {START_TIMEOUT:?}\n{}",
                    cp.log_tail(60)
                );
            }
        }
    }

    /// The admin kubeconfig (client certificate in group system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state dir the control plane owns and removes when it stops.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client acting as cluster admin. Make one per test: a client belongs to
    /// the tokio runtime it was made on.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// The API server URL, e.g. `https://127.0.0.1:41234`.
    pub fn server(&self) -> Result<String> {
        let (server, _) = self.cluster_of_kubeconfig()?;
        Ok(server)
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. a ServiceAccount
    /// token from a TokenRequest) against this control plane.
    pub fn write_token_kubeconfig(&self, path: &Path, token: &str) -> Result<()> {
        let (server, ca) = self.cluster_of_kubeconfig()?;
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "token"}}],
            "current-context": "test",
        });
        std::fs::write(path, serde_yaml::to_string(&doc)?)
            .with_context(|| format!("write {}", path.display()))
    }

    /// A client that authenticates with `token` only, so RBAC applies to it.
    pub async fn token_client(&self, token: &str) -> Result<kube::Client> {
        let file = tempfile::NamedTempFile::new()?;
        self.write_token_kubeconfig(file.path(), token)?;
        let kc = Kubeconfig::read_from(file.path())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    fn cluster_of_kubeconfig(&self) -> Result<(String, String)> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let cluster = kc
            .clusters
            .into_iter()
            .find_map(|c| c.cluster)
            .ok_or_else(|| anyhow!("no cluster in {}", self.kubeconfig.display()))?;
        let server = cluster
            .server
            .ok_or_else(|| anyhow!("cluster without server"))?;
        let ca = cluster
            .certificate_authority_data
            .ok_or_else(|| anyhow!("cluster without certificate-authority-data"))?;
        Ok((server, ca))
    }

    /// Makes the apiserver send requests for Service `namespace/name:port` (a
    /// webhook's clientConfig.service) to `to`; TLS is still verified against
    /// `name.namespace.svc`. There is no kube-proxy: this file is the route.
    pub fn map_service(
        &self,
        namespace: &str,
        name: &str,
        port: i32,
        to: SocketAddr,
    ) -> Result<()> {
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.join("service-endpoints");
        let key = format!("{namespace}/{name}:{port}");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(key.as_str()))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!("{key} {to}\n"));
        // Replace atomically: the apiserver reads the file on every call.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The last `n` lines the control plane logged.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = log.len().saturating_sub(n);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Closes the control plane's stdin, as the death of this process would, and
    /// waits up to `timeout` for it to exit; returns its exit status if it did.
    pub fn close_stdin_and_wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.stdin = None;
        wait_exit(&mut self.child, timeout)
    }

    /// Stops the control plane (SIGTERM, then SIGKILL after a bounded wait) and
    /// returns whether it exited cleanly on SIGTERM with status 0.
    pub fn stop(&mut self) -> bool {
        self.stdin = None;
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        match wait_exit(&mut self.child, STOP_TIMEOUT) {
            Some(status) => status.success(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                false
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One control plane for the whole test process, started on first use. It is
/// never dropped: it stops when this process exits and closes its stdin.
pub fn shared() -> Result<&'static ControlPlane> {
    static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| ControlPlane::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("shared control plane: {e}"))
}

/// The control plane binary; built once per process unless the env var names one.
pub fn binary() -> Result<PathBuf> {
    crate::gobuilt::binary(
        "SESSION_SSH_CONTROLPLANE",
        "controlplane",
        "bin/controlplane",
    )
}

fn collect_log(stderr: impl std::io::Read, log: &LogTail) {
    let mut copy = std::env::var_os("SESSION_SSH_CONTROLPLANE_LOG")
        .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        if let Some(f) = copy.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return None,
        }
    }
    None
}

/// A name no other test in this process (or a previous run) has used.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}",
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfffff
    )
}

/// Polls `check` every 100 ms until it returns `Some`, failing after `timeout`
/// with the last error it returned.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if started.elapsed() > timeout {
            bail!("{what}: not done after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a namespace with `labels` and waits for its `default` ServiceAccount:
/// the ServiceAccount admission plugin rejects pods until the controller made it.
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Namespace> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("create namespace {name}"))?;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), name);
    wait_for(
        &format!("default ServiceAccount in {name}"),
        Duration::from_secs(60),
        || async { Ok(sas.get_opt("default").await?.map(|_| ())) },
    )
    .await?;
    Ok(created)
}

/// Deletes a namespace and waits until the namespace controller has emptied and removed it.
pub async fn delete_namespace(client: &kube::Client, name: &str, timeout: Duration) -> Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(name, &DeleteParams::default()).await?;
    wait_for(&format!("namespace {name} removed"), timeout, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// A token of ServiceAccount `ns/name` from the TokenRequest API.
pub async fn service_account_token(
    client: &kube::Client,
    ns: &str,
    name: &str,
    expiration_seconds: i64,
) -> Result<String> {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(expiration_seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let resp = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for {ns}/{name}"))?;
    resp.status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("TokenRequest for {ns}/{name} returned no token"))
}

/// The real KubeSpawner pod (fixture `jupyterhub-alice`) as `user`'s server `server`
/// (`""`: the default server), named `name`, for the namespace it is created in.
pub fn hub_pod(name: &str, user: &str, server: &str) -> Result<Pod> {
    let path = crate::repo_root().join("webhook/tests/fixtures/jupyterhub-alice.pod.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut pod: Pod = serde_yaml::from_str(&text)?;
    pod.metadata.namespace = None;
    pod.metadata.name = Some(name.to_owned());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert("hub.jupyter.org/username".into(), user.into());
    labels.insert("hub.jupyter.org/servername".into(), server.into());
    // KubeSpawner keeps the unescaped name in an annotation too.
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert("hub.jupyter.org/username".into(), user.into());
    Ok(pod)
}

/// What a kubelet would mount for `pod`: every Secret volume whose Secret exists,
/// read from the apiserver, as file name -> bytes (for the pod sandbox).
pub async fn mounted_secrets(
    client: &kube::Client,
    ns: &str,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Result<crate::podrun::Secrets> {
    let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns);
    let mut secrets = crate::podrun::Secrets::new();
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    for name in volumes.filter_map(|v| v.secret.as_ref()?.secret_name.clone()) {
        if let Some(s) = api.get_opt(&name).await? {
            let files = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            secrets.insert(name, files);
        }
    }
    Ok(secrets)
}
