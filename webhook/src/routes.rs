//! What the controller makes for one session pod, as pure functions: the Service name,
//! the Service object and the connection annotations (host, port, a ready `~/.ssh/config`
//! block); the hostname itself comes from [`crate::hostname`]. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

use session_ssh_contract::names::{
    self, KNOWN_HOSTS, PORT_SSH, PORT_SSH_TLS, SESSION_ID, SSH_CONFIG, SSH_HOST, SSH_PORT,
};

use crate::config::IngressMode;
use crate::hostname::{is_dns1035_label, lower_dashes, with_hash};

/// Field manager of every server-side apply and patch the controller makes.
pub const MANAGER: &str = "session-ssh-webhook";
/// Label on every object the controller makes (its watch selects on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "session-ssh-webhook");
/// Every annotation the controller writes on a pod.
/// All of them describe the current address, so they are withdrawn together.
pub const CONNECTION_ANNOTATIONS: [&str; 6] = [
    SSH_HOST,
    SSH_PORT,
    SSH_CONFIG,
    KNOWN_HOSTS,
    names::HOST_CERTIFICATE,
    names::CERT_AUTHORITY,
];

/// The Service name for a pod: the pod name itself when it is a DNS-1035 label, else the
/// name lowered, dots and other characters made `-`, prefixed `s-` when it does not start
/// with a letter, cut to fit and suffixed with 8 hex of the SHA-256 of the pod name, so
/// two pods whose names sanitize alike still get different Services.
pub fn service_name(pod: &str) -> String {
    if is_dns1035_label(pod) {
        return pod.to_owned();
    }
    let mut clean = lower_dashes(pod);
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "s-");
    }
    with_hash(&clean, pod)
}

/// Names of the container ports of a pod.
fn port_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.name.as_deref())
        .collect()
}

/// The Service to apply for a pod (only the fields the controller owns). Ports target the
/// session container's named ports, so a non-default `ports.ssh` needs nothing here;
/// `ssh-tls` is left out when the pod has no TLS port. The ownerReference makes the
/// garbage collector delete the Service with the pod.
pub fn service(pod: &Pod, name: &str, session_id: &str, uid: &str, mode: IngressMode) -> Value {
    let names = port_names(pod);
    let mut ports = vec![json!({
        "name": "ssh", "protocol": "TCP", "port": 22, "targetPort": PORT_SSH,
    })];
    if names.contains(&PORT_SSH_TLS) {
        ports.push(json!({
            "name": "ssh-tls", "protocol": "TCP", "port": 443, "targetPort": PORT_SSH_TLS,
        }));
    }
    let kind = match mode {
        IngressMode::None
        | IngressMode::Gateway
        | IngressMode::Traefik
        | IngressMode::IngressNginx => "ClusterIP",
        IngressMode::Nodeport => "NodePort",
        IngressMode::Loadbalancer => "LoadBalancer",
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(pod, name, session_id, uid),
        "spec": {
            "type": kind,
            "selector": { SESSION_ID: session_id },
            "ports": ports,
        },
    })
}

/// Metadata of an object the controller makes for a pod: name, namespace, our labels,
/// and the pod as controlling owner. `blockOwnerDeletion: false` because setting it true
/// needs `update` on `pods/finalizers`, a right the webhook does not have.
pub fn owned_metadata(pod: &Pod, name: &str, session_id: &str, uid: &str) -> Value {
    json!({
        "name": name,
        "namespace": pod.metadata.namespace,
        "labels": { MANAGED_BY.0: MANAGED_BY.1, SESSION_ID: session_id },
        "ownerReferences": [{
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }],
    })
}

/// Where users connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Routed by SNI through TLS on 443 (needs the openssl ProxyCommand).
    pub sni: bool,
}

/// The endpoint for the applied Service: the rendered host template if any, else the
/// mode's own address. None while it is not known yet (no load balancer address, pod not
/// on a node).
pub fn endpoint(
    mode: IngressMode,
    host: Option<String>,
    svc: &Service,
    pod: &Pod,
) -> Option<Endpoint> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let (own_host, port) = match mode {
        IngressMode::None => (Some(format!("{name}.{ns}.svc")), 22),
        IngressMode::Nodeport => {
            let node_port = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some("ssh")))
                .and_then(|p| p.node_port)
                .and_then(|p| u16::try_from(p).ok())?;
            let node = pod.status.as_ref().and_then(|s| s.host_ip.clone());
            (node, node_port)
        }
        IngressMode::Loadbalancer => {
            let lb = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()));
            // A host template names the load balancer only once it exists.
            lb.as_ref()?;
            (lb, 22)
        }
        // Through the ingress on 443, only by the hostname its route names.
        IngressMode::Gateway | IngressMode::Traefik | IngressMode::IngressNginx => {
            return Some(Endpoint {
                host: host?,
                port: 443,
                sni: true,
            });
        }
    };
    Some(Endpoint {
        host: host.or(own_host)?,
        port,
        sni: false,
    })
}

/// A `Host` block for `~/.ssh/config`. Keepalives keep idle sessions through NAT and
/// proxies; host keys are verified as usual (never `StrictHostKeyChecking no`).
pub fn ssh_config(alias: &str, ep: &Endpoint) -> String {
    let mut out = format!(
        "Host {alias}\n    HostName {}\n    Port {}\n",
        ep.host, ep.port
    );
    if ep.sni {
        out.push_str(
            "    ProxyCommand openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect %h:443 -servername %h\n",
        );
    }
    out.push_str("    ServerAliveInterval 30\n    ServerAliveCountMax 4\n");
    out
}

/// The connection annotations for a pod.
pub fn annotations(alias: &str, ep: &Endpoint) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SSH_HOST.to_owned(), ep.host.clone()),
        (SSH_PORT.to_owned(), ep.port.to_string()),
        (SSH_CONFIG.to_owned(), ssh_config(alias, ep)),
    ])
}

pub mod sni;

#[cfg(test)]
mod tests;
