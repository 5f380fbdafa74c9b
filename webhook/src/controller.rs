//! The controller in `serve`: for every injected session pod, a Service (owned by the
//! pod) by server-side apply, and the connection info written back on the pod.
//!
//! Several replicas may run it at once. Every write is an idempotent server-side apply
//! (or a merge patch of the same values) under one field manager, computed only from the
//! pod and the config, so replicas converge on the same objects instead of fighting:
//! the second replica's apply is a no-op. Replicas with different configs (during a
//! rollout) flip a Service between their modes until the old ones are gone.
//!
//! Errors never stop the server: they are logged and the pod is retried with an
//! exponential backoff; a missing or unreachable cluster is retried the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::patch::{SESSION_ID, STATUS};
use crate::routes::{self, MANAGED_BY, MANAGER, sni};

/// Why one reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// How often a pod is looked at again when nothing changes (repairs edited Services).
const RESYNC: Duration = Duration::from_secs(600);
/// Retry while an address is not known yet (load balancer pending, pod not on a node).
const PENDING: Duration = Duration::from_secs(30);
/// Longest backoff after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

struct Ctx {
    client: Client,
    /// Events on the pod (`kubectl describe pod`) when its connection info changes.
    recorder: Recorder,
    config: Arc<Config>,
    /// The host CA, when `hostKeys.ca` names one.
    ca: Option<crate::hostca::CaSource>,
    /// Consecutive failures per pod UID, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Start the controller in the background. It never returns an error to the server:
/// without a usable cluster it logs and retries with backoff.
pub fn spawn(config: Config) -> tokio::task::JoinHandle<()> {
    let config = Arc::new(config);
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            match Client::try_default().await {
                Ok(client) => {
                    run(client, config.clone()).await;
                    warn!("controller stopped; restarting");
                }
                Err(err) => {
                    warn!(error = %err, retry_in_s = delay.as_secs(), "controller: no Kubernetes client");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    })
}

/// Run the controller until its watch streams end.
pub async fn run(client: Client, config: Arc<Config>) {
    let pods = Api::<Pod>::all(client.clone());
    let services = Api::<Service>::all(client.clone());
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    info!(mode = config.ingress.mode.as_str(), "controller started");
    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        // The Deployment sets POD_NAME (downward API): which replica acted.
        instance: std::env::var("POD_NAME").ok(),
    };
    let ca = crate::hostca::CaSource::from_config(&config.host_keys.ca);
    if let Some(src) = &ca {
        info!(secret = %src.secret(), pattern = ?crate::hostca::host_pattern(&config), "host CA configured");
    }
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        ca,
        config,
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(pods, watcher::Config::default().labels(SESSION_ID))
        .owns(services, watcher::Config::default().labels(&managed))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(namespace = ?obj.namespace, pod = %obj.name, "reconciled"),
                Err(err) => debug!(error = %err, "controller event"),
            }
        })
        .await;
}

fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action> {
    let (Some(ns), Some(uid)) = (pod.namespace(), pod.uid()) else {
        return Ok(Action::await_change());
    };
    let name = pod.name_any();
    let injected = pod.annotations().get(STATUS).map(String::as_str) == Some("injected");
    let Some(session_id) = pod.labels().get(SESSION_ID).cloned() else {
        return Ok(Action::await_change());
    };
    if !injected || pod.metadata.deletion_timestamp.is_some() {
        debug!(%ns, pod = %name, injected, "not an active injected pod; nothing to do");
        return Ok(Action::await_change());
    }
    let cfg = &ctx.config;
    let svc_name = routes::service_name(&name);
    let services = Api::<Service>::namespaced(ctx.client.clone(), &ns);

    // Never take over a Service that belongs to another pod (a hand-made one, or a
    // crafted name equal to another pod's sanitized name): forcing the apply would.
    if let Some(existing) = services
        .get_opt(&svc_name)
        .await
        .map_err(kube("get Service"))?
    {
        let owner = existing
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        if owner.as_deref() != Some(uid.as_str()) {
            warn!(%ns, pod = %name, service = %svc_name, owner = ?owner,
                "Service name taken by an object this pod does not own; not touching it");
            ctx.event(
                &pod,
                EventType::Warning,
                "ServiceNameTaken",
                format!(
                    "Service {svc_name} exists and belongs to another owner; no SSH route made"
                ),
            )
            .await;
            ctx.forget(&uid);
            return Ok(Action::requeue(RESYNC));
        }
    }

    let desired = routes::service(&pod, &svc_name, &session_id, &uid, cfg.ingress.mode);
    if cfg.ingress.mode.is_sni()
        && desired["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.len() < 2)
    {
        warn!(%ns, pod = %name, mode = cfg.ingress.mode.as_str(),
            "pod has no session-ssh-tls port (ports.sshTls null when it was injected): its route has no backend");
    }
    let applied = services
        .patch(
            &svc_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube("apply Service"))?;
    info!(%ns, pod = %name, service = %svc_name, mode = cfg.ingress.mode.as_str(), "Service applied");
    let host = match &cfg.ingress.host_template {
        None => None,
        Some(t) => match routes::render_host(t, &name, &ns, &session_id, pod.labels()) {
            Ok(h) => Some(h),
            Err(err) => {
                warn!(%ns, pod = %name, error = %err, "host template not rendered; using the mode's address");
                None
            }
        },
    };
    sync_routes(
        &ctx,
        &pod,
        &ns,
        &svc_name,
        &session_id,
        &uid,
        host.as_deref(),
    )
    .await?;

    let Some(endpoint) = routes::endpoint(cfg.ingress.mode, host, &applied, &pod) else {
        // Info from an earlier mode or address would send users to the wrong place.
        let stale: Vec<&str> = routes::CONNECTION_ANNOTATIONS
            .into_iter()
            .filter(|k| pod.annotations().contains_key(*k))
            .collect();
        if !stale.is_empty() {
            let nulls: serde_json::Map<String, serde_json::Value> = stale
                .iter()
                .map(|k| ((*k).to_owned(), serde_json::Value::Null))
                .collect();
            let patch = json!({"metadata": {"uid": uid, "annotations": nulls}});
            Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube("annotate pod"))?;
            info!(%ns, pod = %name, "stale connection info removed");
        }
        ctx.forget(&uid);
        // Pending addresses come by a Service status change or the node binding (both
        // trigger a reconcile); the periodic retry is only a safety net.
        debug!(%ns, pod = %name, mode = cfg.ingress.mode.as_str(), "address not known yet");
        let again = if cfg.ingress.mode.is_sni() {
            RESYNC
        } else {
            PENDING
        };
        return Ok(Action::requeue(again));
    };
    let alias = if cfg.ingress.host_template.is_some() {
        endpoint.host.clone()
    } else {
        svc_name.clone()
    };
    let mut wanted = routes::annotations(&alias, &endpoint);
    // The session's stable host key, so users can pin it (no trust on first use).
    let published = crate::hostkey::published_key(ctx.client.clone(), &pod, &cfg.host_keys).await;
    if let Some(key) = &published
        && let Some(line) = crate::hostkey::known_hosts_line(&endpoint.host, endpoint.port, key)
    {
        wanted.insert(crate::hostkey::KNOWN_HOSTS.to_owned(), line);
    }
    let mut patch_annotations: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    // Certificates only for pods whose server reads them (admitted while a CA was
    // configured); a CA turned off withdraws them.
    let delivers = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.name == crate::hostca::VOLUME);
    match &ctx.ca {
        Some(src) if delivers => {
            if let Some(key) = &published {
                let req = cert_request(&pod, &ns, &svc_name, &endpoint, cfg);
                wanted.extend(certify(&ctx, src, &pod, key, &req).await);
            }
        }
        _ => {
            if ctx.ca.is_some() {
                debug!(%ns, pod = %name, "admitted before the host CA was configured; no certificate until restarted");
            }
            for k in [crate::hostca::CERTIFICATE, crate::hostca::CERT_AUTHORITY] {
                if pod.annotations().contains_key(k) {
                    patch_annotations.insert(k.to_owned(), serde_json::Value::Null);
                }
            }
        }
    }
    let current = pod.annotations();
    if !patch_annotations.is_empty() || wanted.iter().any(|(k, v)| current.get(k) != Some(v)) {
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
        for (k, v) in &wanted {
            patch_annotations.insert(k.clone(), json!(v));
        }
        // A merge patch of our annotations only; the uid precondition keeps it off a
        // newer pod of the same name.
        let patch = json!({"metadata": {"uid": uid, "annotations": patch_annotations}});
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube("annotate pod"))?;
        info!(%ns, pod = %name, host = %endpoint.host, port = endpoint.port, "connection info published");
        ctx.event(
            &pod,
            EventType::Normal,
            "SSHRoute",
            format!(
                "ssh {}:{} (ingress mode {}, Service {svc_name})",
                endpoint.host,
                endpoint.port,
                cfg.ingress.mode.as_str()
            ),
        )
        .await;
    }
    ctx.forget(&uid);
    Ok(Action::requeue(RESYNC))
}

/// Apply the route of the configured SNI mode; delete this pod's routes of the other
/// modes (left from an earlier config). A kind the cluster lacks (no CRD) or the
/// webhook may not read counts as absent for the cleanup.
async fn sync_routes(
    ctx: &Ctx,
    pod: &Pod,
    ns: &str,
    name: &str,
    session_id: &str,
    uid: &str,
    host: Option<&str>,
) -> Result<()> {
    let cfg = &ctx.config.ingress;
    for (mode, ar) in sni::kinds() {
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &ar);
        if mode == cfg.mode {
            let Some(host) = host else {
                warn!(%ns, pod = %pod.name_any(), mode = mode.as_str(), "no hostname for the route");
                continue;
            };
            let Some(route) = sni::route(mode, cfg, pod, name, session_id, uid, host) else {
                continue;
            };
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&route),
            )
            .await
            .map_err(kube("apply route"))?;
            info!(%ns, pod = %pod.name_any(), kind = %ar.kind, %host, "route applied");
            continue;
        }
        let existing = match api.get_opt(name).await {
            Ok(o) => o,
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {
                debug!(%ns, kind = %ar.kind, code = s.code, "route kind not readable; no cleanup");
                None
            }
            Err(e) => return Err(kube("get route")(e)),
        };
        let owned = existing.is_some_and(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        });
        if owned {
            api.delete(name, &DeleteParams::default())
                .await
                .map_err(kube("delete route"))?;
            info!(%ns, pod = %pod.name_any(), kind = %ar.kind, "route of another mode deleted");
        }
    }
    Ok(())
}

/// What the host certificate of a pod must say: valid for the hostname users connect
/// to and the Service's cluster DNS name; the key id names the pod and its identity.
fn cert_request(
    pod: &Pod,
    ns: &str,
    svc_name: &str,
    endpoint: &routes::Endpoint,
    cfg: &Config,
) -> crate::hostca::CertRequest {
    let mut principals = vec![endpoint.host.clone()];
    let cluster_name = format!("{svc_name}.{ns}.svc");
    if !principals.contains(&cluster_name) {
        principals.push(cluster_name);
    }
    let identity = crate::hostkey::identity(pod, &cfg.host_keys)
        .map(|i| i.display)
        .unwrap_or_default();
    crate::hostca::CertRequest {
        principals,
        key_id: format!("session-ssh {ns}/{} {identity}", pod.name_any()),
        validity: cfg.host_keys.ca.validity_seconds,
    }
}

/// The certificate and CA annotations for a pod: the current certificate kept while it
/// is still good, else a new one. Any good certificate is kept, not only one this
/// replica signed, so replicas that both signed converge on whichever was written last.
/// Empty when there is no usable CA or signing fails (logged; users who pinned the key
/// are not affected).
async fn certify(
    ctx: &Ctx,
    src: &crate::hostca::CaSource,
    pod: &Pod,
    host_public: &str,
    req: &crate::hostca::CertRequest,
) -> Vec<(String, String)> {
    use crate::hostca::{CERT_AUTHORITY, CERTIFICATE};
    let Some(ca) = src.get(ctx.client.clone()).await else {
        return Vec::new();
    };
    let now = crate::hostca::unix_now();
    let cert = match pod.annotations().get(CERTIFICATE) {
        Some(c) if ca.still_good(c, host_public, req, now) => c.clone(),
        _ => match ca.sign(host_public, req, now) {
            Ok(c) => {
                info!(namespace = ?pod.namespace(), pod = %pod.name_any(), principals = ?req.principals,
                    validity_s = req.validity, "host certificate signed");
                c
            }
            Err(err) => {
                warn!(namespace = ?pod.namespace(), pod = %pod.name_any(), error = %err, "host certificate not signed");
                return Vec::new();
            }
        },
    };
    let mut out = vec![(CERTIFICATE.to_owned(), cert)];
    if let Some(pattern) = crate::hostca::host_pattern(&ctx.config) {
        out.push((
            CERT_AUTHORITY.to_owned(),
            crate::hostca::authority_line(&pattern, &ca),
        ));
    }
    out
}

impl Ctx {
    /// Publish an event on the pod; a failure only logs (events are a courtesy).
    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            debug!(pod = %pod.name_any(), error = %err, "event not published");
        }
    }

    fn forget(&self, uid: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
    }
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let uid = pod.uid().unwrap_or_default();
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(uid).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = Duration::from_secs(1u64 << n.min(9)).min(MAX_BACKOFF);
    warn!(namespace = ?pod.namespace(), pod = %pod.name_any(), error = %err,
        failures = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}
