//! What the controller wants for one pod, computed without I/O: which pod is a session,
//! its Service, its hostname, and the connection annotations to write or withdraw. The
//! applier (`super::apply`) only reads the cluster and writes these.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{Map, Value, json};
use session_ssh_contract::names::{self, SESSION_ID};
use session_ssh_contract::pod::is_injected;

use crate::config::Config;
use crate::routes::{self, Endpoint};

/// An active injected session pod: what every write names.
#[derive(Debug, Clone)]
pub struct Session {
    /// Namespace.
    pub ns: String,
    /// Pod name.
    pub name: String,
    /// Pod UID (owner references, preconditions).
    pub uid: String,
    /// The session id label.
    pub session_id: String,
    /// The Service name for this pod.
    pub service: String,
}

impl Session {
    /// The session of `pod`, or None when the controller has nothing to do with it (not
    /// injected, no session id, being deleted).
    pub fn of(pod: &Pod) -> Option<Session> {
        let (ns, uid) = (pod.namespace()?, pod.uid()?);
        let session_id = pod.labels().get(SESSION_ID)?.clone();
        if !is_injected(pod) || pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let name = pod.name_any();
        Some(Session {
            service: routes::service_name(&name),
            ns,
            name,
            uid,
            session_id,
        })
    }
}

/// The Service to apply, and whether an SNI mode lacks its TLS port (a warning).
pub fn service(pod: &Pod, s: &Session, cfg: &Config) -> (Value, bool) {
    let desired = routes::service(pod, &s.service, &s.session_id, &s.uid, cfg.ingress.mode);
    let no_tls_backend = cfg.ingress.mode.is_sni()
        && desired["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.len() < 2);
    (desired, no_tls_backend)
}

/// The session's hostname from `ingress.hostTemplate` (None without a template; an error
/// when the pod lacks what the template names).
pub fn host(
    pod: &Pod,
    s: &Session,
    cfg: &Config,
) -> Option<Result<String, crate::hostname::Error>> {
    let t = cfg.ingress.host_template.as_ref()?;
    Some(crate::hostname::render_host(
        t,
        &s.name,
        &s.ns,
        &s.session_id,
        pod.labels(),
    ))
}

/// The `Host` alias of the ssh-config block: the hostname with a template, else the
/// Service name.
pub fn alias(s: &Session, ep: &Endpoint, cfg: &Config) -> String {
    if cfg.ingress.host_template.is_some() {
        ep.host.clone()
    } else {
        s.service.clone()
    }
}

/// The connection annotations for an endpoint, with the session's known_hosts line when
/// its host key is published.
pub fn connection(
    s: &Session,
    ep: &Endpoint,
    cfg: &Config,
    host_key: Option<&str>,
) -> BTreeMap<String, String> {
    let mut wanted = routes::annotations(&alias(s, ep, cfg), ep);
    if let Some(key) = host_key {
        wanted.insert(names::HOST_PUBLIC_KEY.to_owned(), key.trim().to_owned());
    }
    let line = host_key.and_then(|key| {
        if ep.sni {
            crate::hostkey::known_hosts_line_sni(&ep.host, key)
        } else {
            crate::hostkey::known_hosts_line(&ep.host, ep.port, key)
        }
    });
    if let Some(line) = line {
        wanted.insert(names::KNOWN_HOSTS.to_owned(), line);
    }
    wanted
}

/// The pod reads a host certificate: it was admitted while a CA was configured.
pub fn reads_certificate(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.name == names::HOST_CERT_VOLUME)
}

/// The merge patch that makes the pod's annotations `wanted`, with `withdraw` removed
/// (those present only); None when nothing would change. The uid precondition keeps it
/// off a newer pod of the same name.
pub fn annotation_patch(
    pod: &Pod,
    uid: &str,
    wanted: &BTreeMap<String, String>,
    withdraw: &[&str],
) -> Option<Value> {
    let current = pod.annotations();
    let mut out: Map<String, Value> = withdraw
        .iter()
        .filter(|k| current.contains_key(**k) && !wanted.contains_key(**k))
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    let changed = wanted.iter().any(|(k, v)| current.get(k) != Some(v));
    if out.is_empty() && !changed {
        return None;
    }
    for (k, v) in wanted {
        out.insert(k.clone(), json!(v));
    }
    Some(json!({"metadata": {"uid": uid, "annotations": out}}))
}

/// What the host certificate of a pod must say: valid for the hostname users connect
/// to and the Service's cluster DNS name; the key id names the pod and its identity.
pub fn cert_request(
    pod: &Pod,
    s: &Session,
    endpoint: &Endpoint,
    cfg: &Config,
) -> crate::hostca::CertRequest {
    let mut principals = vec![endpoint.host.clone()];
    let cluster_name = format!("{}.{}.svc", s.service, s.ns);
    if !principals.contains(&cluster_name) {
        principals.push(cluster_name);
    }
    let identity = crate::hostkey::identity(pod, &cfg.host_keys)
        .map(|i| i.display)
        .unwrap_or_default();
    crate::hostca::CertRequest {
        principals,
        key_id: format!("session-ssh {}/{} {identity}", s.ns, s.name),
        validity: cfg.host_keys.ca.validity_seconds,
    }
}
