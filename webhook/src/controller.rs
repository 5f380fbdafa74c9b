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
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use session_ssh_contract::names::SESSION_ID;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::routes::{MANAGED_BY, MANAGER};

mod apply;
pub mod desired;
mod discover;
use desired::Session;

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
    /// The route kind the cluster serves for the configured SNI mode.
    route_kind: discover::Discovered,
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
        info!(secret = %src.secret(), pattern = ?config.host_ca_pattern(), "host CA configured");
    }
    let route_kind = discover::Discovered::new(&client, config.ingress.mode).await;
    // Routes we own are watched like Services: a deleted one comes back within seconds. So are
    // the served kinds of the other modes: during a rolling change of mode, a replica still on
    // the old one can re-apply a route this one deleted, and only its event brings the pod
    // back to this replica, which then deletes it again.
    let mut routes = Vec::new();
    if let discover::RouteKind::Served(ar) = route_kind.get(&client).await {
        routes.push(ar);
    }
    for (mode, _) in crate::routes::sni::kinds() {
        if mode == config.ingress.mode {
            continue;
        }
        if let discover::RouteKind::Served(ar) = discover::ask(&client, mode).await {
            routes.push(ar);
        }
    }
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        ca,
        config,
        failures: Mutex::new(HashMap::new()),
        route_kind,
    });
    let mut controller = Controller::new(pods, watcher::Config::default().labels(SESSION_ID))
        .owns(services, watcher::Config::default().labels(&managed));
    for ar in routes {
        let api = Api::<kube::api::DynamicObject>::all_with(ctx.client.clone(), &ar);
        controller = controller.owns_with(api, ar, watcher::Config::default().labels(&managed));
    }
    controller
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
    let Some(session) = Session::of(&pod) else {
        debug!(namespace = ?pod.namespace(), pod = %pod.name_any(), "not an active injected pod; nothing to do");
        return Ok(Action::await_change());
    };
    let action = apply::sync(&pod, &session, &ctx).await?;
    // The one place a success resets the backoff ([`error_policy`] counts the failures).
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&session.uid);
    }
    Ok(action)
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
