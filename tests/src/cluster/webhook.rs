//! session-ssh installed into a test control plane from `manifests/`, with the
//! webhook running as a local process instead of the Deployment.
//!
//! The manifests are rendered through a test overlay (kustomize) on top of the
//! platform example (or the default self-signed overlay) and applied as they are;
//! in [`Tls::Url`] mode the overlay points `clientConfig.url` at the local process
//! with a caBundle from `session_ssh_certs`. The Deployment is stored but inert (no
//! deployment controller, no kubelet); the local process runs with its args.
//! In [`Tls::SelfManaged`] mode the MutatingWebhookConfiguration keeps its
//! `clientConfig.service`, the control plane routes that Service to the local
//! process, and the webhook makes its own certificate and caBundle.
//!
//! The webhook authenticates with a TokenRequest token of the manifests'
//! ServiceAccount, so the manifests' RBAC is what it gets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::reaper::{self, Proc};

use super::{ControlPlane, create_namespace, service_account_token, wait_for};

/// Namespace, ServiceAccount and objects the manifests define.
pub const NAMESPACE: &str = "session-ssh";
pub const SERVICE_ACCOUNT: &str = "session-ssh-webhook";
pub const SERVICE: &str = "session-ssh-webhook";
pub const WEBHOOK_CONFIG: &str = "session-ssh";
pub const TLS_SECRET: &str = "session-ssh-webhook-tls";
/// Annotation the webhook sets on every pod it injected.
pub const STATUS_ANNOTATION: &str = "session-ssh.io/status";

/// How the apiserver reaches and trusts the local webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `clientConfig.url: https://127.0.0.1:PORT/mutate`, caBundle and serving
    /// certificate made by `session_ssh_certs` before the webhook starts.
    Url,
    /// The manifests' `clientConfig.service`; the webhook runs with the
    /// self-signed overlay's flags and makes its TLS Secret and caBundle itself.
    SelfManaged,
    /// `manifests/overlays/cert-manager` (the platform must be [`Platform::Default`]):
    /// real cert-manager issues the TLS Secret, which is kept in the webhook's TLS dir
    /// as a Secret volume is, and its cainjector fills the caBundle.
    CertManager,
}

/// Which manifests to install: `manifests/overlays/self-signed` or an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Default,
    Jupyterhub,
    Renku,
    Kubeflow,
}

impl Platform {
    fn base(self) -> &'static str {
        match self {
            Platform::Default => "overlays/self-signed",
            Platform::Jupyterhub => "examples/jupyterhub",
            Platform::Renku => "examples/renku",
            Platform::Kubeflow => "examples/kubeflow",
        }
    }
}

/// A control plane with session-ssh installed and the webhook running locally.
#[derive(Debug)]
pub struct WebhookCluster {
    pub cp: ControlPlane,
    pub tls: Tls,
    pub work: tempfile::TempDir,
    /// Objects as rendered and applied.
    pub rendered: Vec<Value>,
    /// Labels a namespace needs to be selected by the webhook configuration.
    pub namespace_labels: BTreeMap<String, String>,
    /// Namespaces the manifests bind rights in (created, labelled for injection).
    pub session_namespaces: Vec<String>,
    pub port: u16,
    pub metrics_port: u16,
    args: Vec<String>,
    /// The webhook's config file, and what the manifests put in it.
    config_path: PathBuf,
    config_base: String,
    kubeconfig: PathBuf,
    webhook: Option<Proc>,
    /// Replicas beyond the first (see [`WebhookCluster::start_with_replicas`]).
    pub replicas: Vec<Replica>,
    log: PathBuf,
    /// Environment beyond the harness's own (see [`WebhookCluster::set_env`]).
    env: Vec<(String, String)>,
    /// In [`Tls::CertManager`] mode: the TLS Secret's volume, then cert-manager (dropped
    /// in this order).
    tls_volume: Option<super::certmanager::SecretVolume>,
    pub cert_manager: Option<super::certmanager::CertManager>,
}

/// A further webhook process with the same args on its own ports.
#[derive(Debug)]
pub struct Replica {
    child: Proc,
    pub port: u16,
    pub metrics_port: u16,
}

/// With `Tls::CertManager`: the issued Secret as the webhook's volume, and cert-manager.
type CertManagerParts = (
    Option<super::certmanager::SecretVolume>,
    Option<super::certmanager::CertManager>,
);

impl WebhookCluster {
    /// Starts a control plane of its own, installs the manifests and starts the webhook.
    pub async fn start(platform: Platform, tls: Tls) -> Result<WebhookCluster> {
        Self::start_with_replicas(platform, tls, 1).await
    }

    /// Like [`WebhookCluster::start`] with `replicas` webhook processes started at
    /// the same moment (as a Deployment's replicas are): in self-managed mode they
    /// race for the TLS Secret. The first one is the one the methods act on.
    pub async fn start_with_replicas(
        platform: Platform,
        tls: Tls,
        replicas: usize,
    ) -> Result<WebhookCluster> {
        let cp = ControlPlane::start()?;
        let client = cp.client().await?;
        let work = tempfile::Builder::new()
            .prefix("session-ssh-e2e-")
            .tempdir()?;
        let port = free_port()?;
        let metrics_port = free_port()?;

        let tls_dir = work.path().join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let ca_bundle = match tls {
            Tls::Url => {
                let ca = session_ssh_certs::Ca::generate()?;
                let bundle = ca.issue_bundle(&session_ssh_certs::ServerCertSpec::localhost())?;
                bundle.write_pem_files(&tls_dir)?;
                Some(bundle.ca_bundle())
            }
            Tls::SelfManaged | Tls::CertManager => None,
        };
        if tls == Tls::CertManager && platform != Platform::Default {
            bail!(
                "Tls::CertManager renders manifests/overlays/cert-manager: use Platform::Default"
            );
        }
        let rendered = render(work.path(), platform, tls, port, ca_bundle.as_deref())?;
        let (namespace_labels, session_namespaces) = namespaces_of(&rendered)?;
        let labels: Vec<(&str, &str)> = namespace_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for ns in &session_namespaces {
            create_namespace(&client, ns, &labels).await?;
        }
        let mut cert_manager = None;
        if tls == Tls::CertManager {
            let cm = super::certmanager::CertManager::start(&cp, work.path(), NAMESPACE).await?;
            cert_manager = Some(cm);
        }
        apply_all(&client, &rendered).await?;
        let mut tls_volume = None;
        if let Some(cm) = cert_manager.as_mut() {
            let volume = super::certmanager::SecretVolume::mount(
                &client,
                NAMESPACE,
                TLS_SECRET,
                &["tls.crt", "tls.key", "ca.crt"],
                &tls_dir,
                Duration::from_secs(120),
            )
            .await;
            cm.check_running()?;
            tls_volume = Some(volume.with_context(|| cm.log_tail())?);
        }
        let certs = (tls_volume, cert_manager);
        Self::launch(
            cp,
            work,
            rendered,
            tls,
            (port, metrics_port),
            replicas,
            certs,
        )
        .await
    }

    /// session-ssh installed by other means (`helm install`): `installed` are the objects
    /// as installed, their session namespaces already made. Starts the webhook with their
    /// args (self-managed TLS), config and ServiceAccount, and routes their Service to it.
    pub async fn attach(cp: ControlPlane, installed: Vec<Value>) -> Result<WebhookCluster> {
        let work = tempfile::Builder::new()
            .prefix("session-ssh-e2e-")
            .tempdir()?;
        std::fs::create_dir_all(work.path().join("tls"))?;
        let ports = (free_port()?, free_port()?);
        Self::launch(
            cp,
            work,
            installed,
            Tls::SelfManaged,
            ports,
            1,
            (None, None),
        )
        .await
    }

    /// The webhook's config read again from the installed objects' ConfigMap (e.g. after
    /// `helm upgrade` made a new one), then a restart so the webhook uses it.
    pub async fn reload_installed(&mut self, installed: Vec<Value>) -> Result<()> {
        let config = config_of(&self.client().await?, &installed).await?;
        std::fs::write(&self.config_path, &config)?;
        self.config_base = config;
        self.rendered = installed;
        self.start_webhook().await
    }

    /// Starts `replicas` webhook processes for the installed `rendered` objects.
    async fn launch(
        cp: ControlPlane,
        work: tempfile::TempDir,
        rendered: Vec<Value>,
        tls: Tls,
        (port, metrics_port): (u16, u16),
        replicas: usize,
        (tls_volume, cert_manager): CertManagerParts,
    ) -> Result<WebhookCluster> {
        let client = cp.client().await?;
        let tls_dir = work.path().join("tls");
        let (namespace_labels, session_namespaces) = namespaces_of(&rendered)?;
        let mwc = rendered
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .ok_or_else(|| anyhow!("manifests have no MutatingWebhookConfiguration"))?;

        // The webhook's own identity: a token of the manifests' ServiceAccount.
        let token = service_account_token(&client, NAMESPACE, SERVICE_ACCOUNT, 3600).await?;
        let kubeconfig = work.path().join("webhook.kubeconfig");
        cp.write_token_kubeconfig(&kubeconfig, &token)?;

        // Its config: what the manifests' ConfigMap holds.
        let config = config_of(&client, &rendered).await?;
        let config_path = work.path().join("config.yaml");
        std::fs::write(&config_path, &config)?;

        let args = webhook_args(&rendered, tls, &config_path, &tls_dir, port, metrics_port)?;
        if tls != Tls::Url {
            let svc_port = mwc["webhooks"][0]["clientConfig"]["service"]["port"]
                .as_i64()
                .unwrap_or(443) as i32;
            cp.map_service(
                NAMESPACE,
                SERVICE,
                svc_port,
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            )?;
        }
        let log = work.path().join("webhook.log");
        let mut wc = WebhookCluster {
            cp,
            tls,
            work,
            rendered,
            namespace_labels,
            session_namespaces,
            port,
            metrics_port,
            args,
            config_path,
            config_base: config,
            kubeconfig,
            webhook: None,
            replicas: Vec::new(),
            log,
            env: Vec::new(),
            tls_volume,
            cert_manager,
        };
        wc.webhook = Some(wc.spawn(wc.port, wc.metrics_port, 0)?);
        for i in 1..replicas {
            let (port, metrics_port) = (free_port()?, free_port()?);
            let child = wc.spawn(port, metrics_port, i)?;
            wc.replicas.push(Replica {
                child,
                port,
                metrics_port,
            });
        }
        wc.wait_ready(wc.metrics_port).await?;
        for i in 0..wc.replicas.len() {
            wc.wait_ready(wc.replicas[i].metrics_port).await?;
        }
        Ok(wc)
    }

    /// An admin client of the control plane.
    pub async fn client(&self) -> Result<kube::Client> {
        self.cp.client().await
    }

    /// Creates a namespace selected by the webhook configuration (or not).
    pub async fn namespace(&self, name: &str, selected: bool) -> Result<()> {
        let client = self.client().await?;
        let labels: Vec<(&str, &str)> = if selected {
            self.namespace_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        create_namespace(&client, name, &labels).await?;
        Ok(())
    }

    /// Applies plain manifest files (no kustomize) as the admin would, e.g. the gateway's
    /// ServiceAccount and RBAC from manifests/gateway.
    pub async fn apply_files(&self, paths: &[PathBuf]) -> Result<()> {
        let mut objects = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc)?;
                if !v.is_null() {
                    objects.push(v);
                }
            }
        }
        apply_all(&self.client().await?, &objects).await
    }

    /// The manifests' config plus `extra` (top-level keys the manifests do not set), then
    /// a restart of the webhook so it reads it.
    pub async fn set_config_extra(&mut self, extra: &str) -> Result<()> {
        std::fs::write(
            &self.config_path,
            format!("{}\n{extra}\n", self.config_base.trim_end()),
        )?;
        self.start_webhook().await
    }

    /// Sets the webhook's environment beyond the harness's own (the manifests' `env:`
    /// entries are not passed by default), then restarts it.
    pub async fn set_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.start_webhook().await
    }

    /// Starts (or restarts) the local webhook and waits for its /readyz.
    pub async fn start_webhook(&mut self) -> Result<()> {
        self.stop_webhook();
        self.webhook = Some(self.spawn(self.port, self.metrics_port, 0)?);
        self.wait_ready(self.metrics_port).await
    }

    /// Spawns one webhook process with the manifests' args on the given ports.
    fn spawn(&self, port: u16, metrics_port: u16, index: usize) -> Result<Proc> {
        let bin = webhook_bin()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut args = with_ports(&self.args, port, metrics_port);
        if index > 0 && self.tls != Tls::CertManager {
            // Each replica has its own TLS emptyDir, as each pod of the Deployment has.
            let dir = self.work.path().join(format!("tls-{index}"));
            std::fs::create_dir_all(&dir)?;
            let shared = self.work.path().join("tls");
            for file in [session_ssh_certs::CERT_FILE, session_ssh_certs::KEY_FILE] {
                if self.tls == Tls::Url {
                    std::fs::copy(shared.join(file), dir.join(file))?;
                }
                for a in args.iter_mut() {
                    if *a == shared.join(file).display().to_string() {
                        *a = dir.join(file).display().to_string();
                    }
                }
            }
        }
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("POD_NAME", format!("session-ssh-webhook-e2e-{index}"))
            // SESSION_SSH_WEBHOOK_LOG: a filter for a debugging run, e.g. kube_runtime=debug.
            .env(
                "RUST_LOG",
                std::env::var("SESSION_SSH_WEBHOOK_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        reaper::spawn(&mut cmd).with_context(|| format!("spawn {}", bin.display()))
    }

    /// Waits for /readyz of the process serving metrics on `metrics_port`.
    async fn wait_ready(&mut self, metrics_port: u16) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(metrics_port, "/readyz") {
                return Ok(());
            }
            let exited = self
                .webhook
                .iter_mut()
                .chain(self.replicas.iter_mut().map(|r| &mut r.child))
                .find_map(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!(
                    "a webhook process exited ({status}) before ready:\n{}",
                    self.webhook_log()
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("webhook not ready after 60s:\n{}", self.webhook_log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the local webhook (SIGTERM, bounded wait, SIGKILL).
    pub fn stop_webhook(&mut self) {
        if let Some(mut child) = self.webhook.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to the running webhook (SIGSTOP freezes it: connections are
    /// accepted by the kernel but never answered).
    pub fn signal_webhook(&self, sig: Signal) -> Result<()> {
        let child = self
            .webhook
            .as_ref()
            .ok_or_else(|| anyhow!("webhook not running"))?;
        kill(Pid::from_raw(child.id() as i32), sig)?;
        Ok(())
    }

    /// The webhook's Prometheus metrics text.
    pub fn metrics(&self) -> Result<String> {
        match http_get(self.metrics_port, "/metrics")? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics: HTTP {code}: {body}"),
        }
    }

    /// The apiserver's own Prometheus metrics (`GET /metrics` as admin).
    pub async fn apiserver_metrics(&self) -> Result<String> {
        let client = self.client().await?;
        let req = http::Request::get("/metrics").body(Vec::new())?;
        Ok(client.request_text(req).await?)
    }

    pub fn webhook_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Every line of the webhook's log where the apiserver refused it something: the
    /// manifests' RBAC lacks a verb the code uses (e.g. list/watch of its own routes).
    /// Host-key Secrets are left out: a test namespace without the per-namespace binding
    /// refuses them by design (the session then makes its own key).
    pub fn forbidden_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("forbidden") && !l.contains("host-key Secret"))
            .map(str::to_owned)
            .collect()
    }

    /// `timeoutSeconds` of the installed webhook configuration.
    pub fn timeout_seconds(&self) -> u64 {
        self.rendered
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .and_then(|m| m["webhooks"][0]["timeoutSeconds"].as_u64())
            .unwrap_or(10)
    }

    /// Creates what the platform's installation provides and a pod from it
    /// names (z2jh's PriorityClass, Kubeflow's ServiceAccount): the apiserver's
    /// Priority and ServiceAccount admission refuse the pod without them.
    pub async fn prepare_for(&self, ns: &str, pod: &Pod) -> Result<()> {
        let client = self.client().await?;
        let spec = pod.spec.as_ref();
        let priority_class = spec
            .and_then(|s| s.priority_class_name.as_deref())
            .filter(|pc| !pc.starts_with("system-"));
        if let Some(pc) = priority_class {
            let obj = PriorityClass {
                metadata: ObjectMeta {
                    name: Some(pc.to_string()),
                    ..Default::default()
                },
                value: 0,
                ..Default::default()
            };
            ignore_exists(
                Api::<PriorityClass>::all(client.clone())
                    .create(&PostParams::default(), &obj)
                    .await,
            )?;
        }
        if let Some(sa) = spec.and_then(|s| s.service_account_name.as_deref()) {
            let obj = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(sa.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            ignore_exists(
                Api::<ServiceAccount>::namespaced(client, ns)
                    .create(&PostParams::default(), &obj)
                    .await,
            )?;
        }
        Ok(())
    }

    /// Waits until the apiserver calls the webhook for pods in `ns`: a dry-run
    /// create comes back injected (the apiserver loads webhook configurations
    /// asynchronously, and a self-managed webhook patches its caBundle late).
    pub async fn wait_active(&self, ns: &str, probe: &Pod) -> Result<()> {
        self.prepare_for(ns, probe).await?;
        let client = self.client().await?;
        let pods = Api::<Pod>::namespaced(client, ns);
        let pp = PostParams {
            dry_run: true,
            ..Default::default()
        };
        wait_for(
            "webhook called by the apiserver",
            Duration::from_secs(60),
            || async {
                let pod = pods.create(&pp, probe).await?;
                Ok(is_injected(&pod).then_some(()))
            },
        )
        .await
        .with_context(|| self.webhook_log())
    }
}

impl Drop for WebhookCluster {
    fn drop(&mut self) {
        self.stop_webhook();
        // Before the control plane goes (fields drop in order, `cp` first).
        self.tls_volume = None;
        self.cert_manager = None;
        for r in &mut self.replicas {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// The labels a namespace needs to be selected by the webhook configuration, and the
/// namespaces the manifests bind rights in (besides the webhook's own).
fn namespaces_of(rendered: &[Value]) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mwc = rendered
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .ok_or_else(|| anyhow!("manifests have no MutatingWebhookConfiguration"))?;
    let labels: BTreeMap<String, String> =
        serde_json::from_value(mwc["webhooks"][0]["namespaceSelector"]["matchLabels"].clone())
            .unwrap_or_default();
    let mut namespaces: Vec<String> = rendered
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .filter(|ns| *ns != NAMESPACE)
        .map(String::from)
        .collect();
    namespaces.sort();
    namespaces.dedup();
    Ok((labels, namespaces))
}

/// `args` with --listen / --metrics-listen set to the given 127.0.0.1 ports.
fn with_ports(args: &[String], port: u16, metrics_port: u16) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        out.push(a.clone());
        let value = match a.as_str() {
            "--listen" => format!("127.0.0.1:{port}"),
            "--metrics-listen" => format!("127.0.0.1:{metrics_port}"),
            _ => continue,
        };
        it.next();
        out.push(value);
    }
    out
}

fn ignore_exists<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the webhook marked the pod as injected and added its init container.
pub fn is_injected(pod: &Pod) -> bool {
    let status = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .map(String::as_str);
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == "session-ssh-install"));
    status == Some("injected") && init
}

/// The session-ssh-webhook binary: $SESSION_SSH_WEBHOOK_BIN or cargo's target dir.
pub fn webhook_bin() -> Result<PathBuf> {
    let root = crate::repo_root();
    if let Some(p) = std::env::var_os("SESSION_SSH_WEBHOOK_BIN") {
        let p = PathBuf::from(p);
        let p = if p.is_absolute() { p } else { root.join(p) };
        if !p.is_file() {
            bail!("SESSION_SSH_WEBHOOK_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    ["target/release/session-ssh-webhook", "target/debug/session-ssh-webhook"]
        .iter()
        .map(|r| root.join(r))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("no session-ssh-webhook binary: `cargo build -p session-ssh-webhook` or set SESSION_SSH_WEBHOOK_BIN")
        })
}

/// Renders manifests/<base> through a generated test overlay; returns the objects.
fn render(
    work: &Path,
    platform: Platform,
    tls: Tls,
    port: u16,
    ca_bundle: Option<&str>,
) -> Result<Vec<Value>> {
    // kustomize refuses absolute bases and files outside the root: copy the tree.
    let manifests = work.join("manifests");
    copy_dir(&crate::repo_root().join("manifests"), &manifests)?;
    let overlay = work.join("e2e-overlay");
    std::fs::create_dir_all(&overlay)?;

    // Everything is applied as rendered: the Deployment, PDB and NetworkPolicy
    // stay inert without a kube-controller for them (and are validated by the
    // apiserver); the Deployment's args are what the local process runs with.
    let mut patches = Vec::new();
    if let (Tls::Url, Some(ca)) = (tls, ca_bundle) {
        let ops = json!([
            { "op": "remove", "path": "/webhooks/0/clientConfig/service" },
            { "op": "add", "path": "/webhooks/0/clientConfig/url",
              "value": format!("https://127.0.0.1:{port}/mutate") },
            { "op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca },
        ]);
        patches.push(json!({
            "target": { "kind": "MutatingWebhookConfiguration", "name": WEBHOOK_CONFIG },
            "patch": serde_json::to_string(&ops)?,
        }));
    }
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [format!("../manifests/{}", match tls {
            Tls::CertManager => "overlays/cert-manager",
            _ => platform.base(),
        })],
        "patches": patches,
    });
    std::fs::write(
        overlay.join("kustomization.yaml"),
        serde_yaml::to_string(&kustomization)?,
    )?;

    let (program, args) = kustomize_command()?;
    let out = Command::new(&program)
        .args(&args)
        .arg(&overlay)
        .output()
        .with_context(|| format!("run {program} (set SESSION_SSH_KUSTOMIZE)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

/// `$SESSION_SSH_KUSTOMIZE` (e.g. `kustomize build`), else the control plane
/// binary's `kustomize` (kubectl 1.35's kustomize, so no kubectl is needed).
pub fn kustomize_command() -> Result<(String, Vec<String>)> {
    if let Ok(cmd) = std::env::var("SESSION_SSH_KUSTOMIZE") {
        let mut words = cmd.split_whitespace().map(String::from);
        let program = words
            .next()
            .ok_or_else(|| anyhow!("SESSION_SSH_KUSTOMIZE is empty"))?;
        return Ok((program, words.collect()));
    }
    let bin = super::binary()?;
    Ok((bin.display().to_string(), vec!["kustomize".into()]))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Server-side applies every object, in the rendered order (Namespaces first).
async fn apply_all(client: &kube::Client, objects: &[Value]) -> Result<()> {
    let pp = PatchParams::apply("session-ssh-e2e").force();
    for obj in objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discover {api_version} {kind}"))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.patch(name, &pp, &Patch::Apply(obj))
            .await
            .with_context(|| format!("apply {kind} {name}"))?;
    }
    Ok(())
}

/// The config file the manifests' ConfigMap holds, as stored by the apiserver.
async fn config_of(client: &kube::Client, objects: &[Value]) -> Result<String> {
    let name = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .find(|n| n.starts_with("session-ssh-config"))
        .ok_or_else(|| anyhow!("manifests have no session-ssh-config ConfigMap"))?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get(name)
        .await?;
    cm.data
        .and_then(|d| d.get("config.yaml").cloned())
        .ok_or_else(|| anyhow!("ConfigMap {name} has no config.yaml"))
}

/// The rendered Deployment's `serve` arguments with the paths and listeners
/// of the local process; in URL mode without the self-managed TLS flags.
fn webhook_args(
    objects: &[Value],
    tls: Tls,
    config: &Path,
    tls_dir: &Path,
    port: u16,
    metrics_port: u16,
) -> Result<Vec<String>> {
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == SERVICE);
    let rendered: Vec<String> = match deployment {
        Some(d) => {
            serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone())?
        }
        None => Vec::new(),
    };
    let local: BTreeMap<&str, String> = [
        ("--config", config.display().to_string()),
        ("--listen", format!("127.0.0.1:{port}")),
        ("--metrics-listen", format!("127.0.0.1:{metrics_port}")),
        (
            "--tls-cert",
            tls_dir
                .join(session_ssh_certs::CERT_FILE)
                .display()
                .to_string(),
        ),
        (
            "--tls-key",
            tls_dir
                .join(session_ssh_certs::KEY_FILE)
                .display()
                .to_string(),
        ),
        ("--log-format", "plain".to_string()),
    ]
    .into_iter()
    .collect();
    let self_tls = ["--tls-secret", "--webhook-config", "--service"];
    let mut args = vec!["serve".to_string()];
    let mut it = rendered.into_iter().skip_while(|a| a == "serve");
    while let Some(flag) = it.next() {
        if flag == "--self-managed-tls" {
            if tls == Tls::SelfManaged {
                args.push(flag);
            }
            continue;
        }
        let value = it.next().unwrap_or_default();
        if let Some(v) = local.get(flag.as_str()) {
            args.extend([flag, v.clone()]);
        } else if self_tls.contains(&flag.as_str()) {
            if tls == Tls::SelfManaged {
                args.extend([flag, value]);
            }
        } else {
            args.extend([flag, value]);
        }
    }
    for (flag, v) in &local {
        if !args.iter().any(|a| a == flag) {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    // No endpoints to drain here: stop at once.
    args.extend(["--shutdown-delay-seconds".into(), "0".into()]);
    Ok(args)
}

/// A port the kernel just handed out on 127.0.0.1.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Minimal HTTP/1.0 GET against 127.0.0.1:port; returns status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {resp:.80}"))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
