//! Which route kind the cluster serves for the configured SNI mode: the newest TLSRoute
//! version (v1, v1alpha3, v1alpha2), Traefik's IngressRouteTCP, or the Ingress. Asked at
//! start and, while nothing is served, again at most once a minute (a CRD installed later
//! is picked up without a restart).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::core::ApiResource;
use tracing::{info, warn};

use crate::config::IngressMode;
use crate::routes::sni;

/// How long a "not served" answer is trusted before asking again.
const RECHECK: Duration = Duration::from_secs(60);

/// The route kind of the configured mode.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteKind {
    /// The mode makes no route object.
    NotNeeded,
    Served(ApiResource),
    /// Why no route can be made (for the log and the pod's annotation).
    Missing(String),
}

/// The last answer and when it was given.
#[derive(Debug)]
pub struct Discovered {
    mode: IngressMode,
    last: Mutex<(RouteKind, Instant)>,
}

impl Discovered {
    pub async fn new(client: &Client, mode: IngressMode) -> Discovered {
        let kind = ask(client, mode).await;
        log(mode, &kind);
        Discovered {
            mode,
            last: Mutex::new((kind, Instant::now())),
        }
    }

    /// The kind now: a "missing" answer older than a minute is asked again.
    pub async fn get(&self, client: &Client) -> RouteKind {
        let (kind, at) = self
            .last
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone());
        if !matches!(kind, RouteKind::Missing(_)) || at.elapsed() < RECHECK {
            return kind;
        }
        let kind = ask(client, self.mode).await;
        log(self.mode, &kind);
        if let Ok(mut g) = self.last.lock() {
            *g = (kind.clone(), Instant::now());
        }
        kind
    }
}

fn log(mode: IngressMode, kind: &RouteKind) {
    match kind {
        RouteKind::NotNeeded => {}
        RouteKind::Served(ar) => {
            info!(mode = mode.as_str(), api_version = %ar.api_version, kind = %ar.kind, "route kind served")
        }
        RouteKind::Missing(why) => {
            warn!(mode = mode.as_str(), reason = %why, "no route can be made")
        }
    }
}

/// Whether `group/version` lists `plural` (discovery; a missing group or version is no).
async fn serves(client: &Client, api_version: &str, plural: &str) -> Result<bool, String> {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(format!("discovery of {api_version}: {e}")),
    }
}

/// The route kind of `mode`, asked now and not logged (for the kinds of other modes, whose
/// routes the controller only cleans up).
pub async fn ask(client: &Client, mode: IngressMode) -> RouteKind {
    let candidates: Vec<ApiResource> = match mode {
        IngressMode::Gateway => sni::TLSROUTE_VERSIONS
            .iter()
            .map(|v| sni::tlsroute(v))
            .collect(),
        IngressMode::Traefik | IngressMode::IngressNginx => sni::kinds()
            .into_iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, ar)| ar)
            .collect(),
        IngressMode::None | IngressMode::Nodeport | IngressMode::Loadbalancer => {
            return RouteKind::NotNeeded;
        }
    };
    for ar in &candidates {
        match serves(client, &ar.api_version, &ar.plural).await {
            Ok(true) => return RouteKind::Served(ar.clone()),
            Ok(false) => {}
            Err(why) => return RouteKind::Missing(why),
        }
    }
    let tried: Vec<&str> = candidates.iter().map(|a| a.api_version.as_str()).collect();
    let kind = candidates.first().map_or("route", |a| a.kind.as_str());
    RouteKind::Missing(format!(
        "the cluster serves no {kind} ({}): install its CRD; ingress.mode {} makes no route until then",
        tried.join(", "),
        mode.as_str()
    ))
}
