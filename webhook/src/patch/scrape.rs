//! The session server's Prometheus metrics in the pod: the container port, and the
//! `prometheus.io/*` annotations that the common `kubernetes-pods` scrape job reads.
//!
//! Metrics are an extra: a port some container already declares turns them off for the pod
//! (with a warning) but never SSH; annotations the pod has under `prometheus.io/` are the
//! admin's (another exporter in the pod, or scraping turned off on purpose) and are left
//! alone, ours are then not added.

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::{Value, json};
use session_ssh_contract::names::PORT_METRICS;

use super::ops::MetaOps;
use crate::config::Config;

/// The annotation prefix the Prometheus kubernetes-pods job reads.
const PREFIX: &str = "prometheus.io/";

/// Where the metrics go for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrape {
    /// The container port serve listens on for GET /metrics.
    pub port: u16,
    /// Add `prometheus.io/scrape|port|path` (the pod has none of its own).
    pub annotate: bool,
}

/// The metrics of a pod that gets SSH: None when off in the config or when the port is
/// declared by one of the pod's containers (init sidecars share the network too).
pub(super) fn plan(
    pod: &Pod,
    spec: &PodSpec,
    cfg: &Config,
    warnings: &mut Vec<String>,
) -> Option<Scrape> {
    let port = cfg.ports.metrics?;
    let taken = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|p| p.container_port == i32::from(port))
        });
    if let Some(c) = taken {
        warnings.push(format!(
            "session-ssh: container {:?} declares port {port}; SSH is injected without metrics (ports.metrics)",
            c.name
        ));
        return None;
    }
    let annotate = !pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, _)| k.starts_with(PREFIX));
    Some(Scrape { port, annotate })
}

/// The named container port.
pub(super) fn container_port(s: &Scrape) -> Value {
    json!({ "name": PORT_METRICS, "containerPort": s.port, "protocol": "TCP" })
}

/// The scrape annotations, when the pod may get them.
pub(super) fn annotate(meta: &mut MetaOps, s: &Scrape) {
    if s.annotate {
        meta.annotation("prometheus.io/scrape", "true");
        meta.annotation("prometheus.io/port", &s.port.to_string());
        meta.annotation("prometheus.io/path", "/metrics");
    }
}
