//! What the controller makes for one session pod, as pure functions: the Service name,
//! the Service object, the hostname from `ingress.hostTemplate`, and the connection
//! annotations (host, port, a ready `~/.ssh/config` block). No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

use crate::config::IngressMode;
use crate::naming::{is_dns_label, is_dns_subdomain, is_qualified_name, short_hash};
use crate::patch::{PORT_SSH, PORT_SSH_TLS, SESSION_ID};

/// Field manager of every server-side apply and patch the controller makes.
pub const MANAGER: &str = "session-ssh-webhook";
/// Label on every object the controller makes (its watch selects on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "session-ssh-webhook");
/// Annotation: host name or address users connect to.
pub const SSH_HOST: &str = "session-ssh.io/ssh-host";
/// Annotation: TCP port users connect to.
pub const SSH_PORT: &str = "session-ssh.io/ssh-port";
/// Annotation: a ready `Host` block for `~/.ssh/config`.
pub const SSH_CONFIG: &str = "session-ssh.io/ssh-config";
/// Every annotation the controller writes on a pod.
/// All of them describe the current address, so they are withdrawn together.
pub const CONNECTION_ANNOTATIONS: [&str; 6] = [
    SSH_HOST,
    SSH_PORT,
    SSH_CONFIG,
    crate::hostkey::KNOWN_HOSTS,
    crate::hostca::CERTIFICATE,
    crate::hostca::CERT_AUTHORITY,
];

/// Why a host template cannot be rendered for a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The pod lacks a label the template refers to.
    #[error("pod has no label `{0}`")]
    MissingLabel(String),
    /// The rendered host is not a valid DNS name.
    #[error("`{0}` is not a valid DNS name")]
    InvalidHost(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Hex digits of the hash suffix added to altered names.
const HASH_LEN: usize = 8;

/// DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// Lowercase, every character outside `[a-z0-9-]` becomes `-`.
fn lower_dashes(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `clean` cut so that `-` + hash fits in 63, then the hash of the original appended.
fn with_hash(clean: &str, original: &str) -> String {
    let keep = 63 - 1 - HASH_LEN;
    let mut head: String = clean.chars().take(keep).collect();
    while head.ends_with('-') {
        head.pop();
    }
    let hash = short_hash(original, HASH_LEN);
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

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

/// One DNS label (DNS-1123) from an arbitrary value: kept when already valid, else
/// sanitized and suffixed with the hash of the value (also for an empty value).
pub fn dns_label(value: &str) -> String {
    if is_dns_label(value) {
        return value.to_owned();
    }
    let clean = lower_dashes(value);
    with_hash(clean.trim_start_matches('-'), value)
}

/// A piece of a host template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Pod,
    Namespace,
    SessionId,
    Label(&'a str),
}

fn parse_template(t: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched `}}` in `{t}`"));
        }
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{t}`"))?;
        let name = &after[..close];
        out.push(match name {
            "pod" => Piece::Pod,
            "namespace" => Piece::Namespace,
            "session-id" => Piece::SessionId,
            _ => match name.strip_prefix("label:") {
                Some(key) if is_qualified_name(key) => Piece::Label(key),
                _ => {
                    return Err(format!(
                        "`{{{name}}}` is not one of {{pod}}, {{namespace}}, {{session-id}}, {{label:KEY}}"
                    ));
                }
            },
        });
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    Ok(out)
}

/// Validate `ingress.hostTemplate` at config load: known placeholders, literal text of
/// lowercase letters, digits, `-` and `.`, at least one placeholder (one host per session).
pub fn check_host_template(t: &str) -> std::result::Result<(), String> {
    let pieces = parse_template(t)?;
    for p in &pieces {
        if let Piece::Literal(s) = p
            && !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        {
            return Err(format!(
                "`{s}`: literal text may hold only a-z, 0-9, `-` and `.`"
            ));
        }
    }
    if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) {
        return Err("needs a placeholder, else every session gets the same host".to_owned());
    }
    Ok(())
}

/// The literal text after the template's last placeholder (`.ssh.example.org` of
/// `{pod}.{namespace}.ssh.example.org`): what every rendered host ends with.
pub fn template_tail(t: &str) -> Option<String> {
    let pieces = parse_template(t).ok()?;
    let last = pieces
        .iter()
        .rposition(|p| !matches!(p, Piece::Literal(_)))?;
    let tail: String = pieces[last + 1..]
        .iter()
        .filter_map(|p| match p {
            Piece::Literal(s) => Some(*s),
            _ => None,
        })
        .collect();
    (!tail.is_empty()).then_some(tail)
}

/// One DNS label of a host being rendered.
#[derive(Default)]
struct LabelBuf {
    text: String,
    /// Raw values of the placeholders in this label.
    values: Vec<String>,
    /// Two placeholders follow each other without literal text between them.
    adjacent: bool,
    /// The last piece was a placeholder.
    after_placeholder: bool,
    /// Some sanitized value contains `-` (so a `-` separator does not split uniquely).
    dashed: bool,
}

impl LabelBuf {
    fn placeholder(&mut self, raw: &str) {
        let v = dns_label(raw);
        self.adjacent |= self.after_placeholder;
        self.dashed |= v.contains('-');
        self.text.push_str(&v);
        self.values.push(raw.to_owned());
        self.after_placeholder = true;
    }

    fn literal(&mut self, s: &str) {
        self.text.push_str(s);
        self.after_placeholder &= s.is_empty();
    }

    /// The finished label. Two values in one label (`{user}-{server}`) could be split in
    /// more than one way when a value holds `-` or nothing separates them
    /// (`a-b`+`c` = `a`+`b-c`): such a label gets the hash of the raw values, so distinct
    /// sessions never share a host. Too long labels are cut with a hash too.
    fn finish(self) -> String {
        let ambiguous = self.values.len() > 1 && (self.adjacent || self.dashed);
        if ambiguous {
            with_hash(&self.text, &self.values.join("\0"))
        } else if self.text.len() > 63 {
            with_hash(&self.text, &self.text)
        } else {
            self.text
        }
    }
}

/// Render the session's hostname. Every placeholder value becomes a DNS label of its own
/// ([`dns_label`]); see [`LabelBuf::finish`] for labels that join several values.
pub fn render_host(
    template: &str,
    pod: &str,
    namespace: &str,
    session_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String> {
    let mut done: Vec<String> = Vec::new();
    let mut cur = LabelBuf::default();
    // An invalid template was refused at config load; render what parses.
    for piece in parse_template(template).unwrap_or_default() {
        match piece {
            Piece::Literal(s) => {
                let mut parts = s.split('.');
                cur.literal(parts.next().unwrap_or_default());
                for part in parts {
                    done.push(std::mem::take(&mut cur).finish());
                    cur.literal(part);
                }
            }
            Piece::Pod => cur.placeholder(pod),
            Piece::Namespace => cur.placeholder(namespace),
            Piece::SessionId => cur.placeholder(session_id),
            Piece::Label(key) => {
                let v = labels
                    .get(key)
                    .ok_or_else(|| Error::MissingLabel(key.to_owned()))?;
                cur.placeholder(v);
            }
        }
    }
    done.push(cur.finish());
    let host = done.join(".");
    if is_dns_subdomain(&host) {
        Ok(host)
    } else {
        Err(Error::InvalidHost(host))
    }
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
