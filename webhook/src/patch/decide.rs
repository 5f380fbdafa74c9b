//! The first half of the mutation: every choice, nothing built. A pod is skipped with a
//! reason, or gets a [`Plan`] that names the session container, the key sources and the
//! host-key Secret; [`super::render`] turns that into the patch.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, VolumeMount};
use session_ssh_contract::names::{INJECT, NAME_PREFIX, SESSION_ID};
use session_ssh_contract::pod::{is_injected, mounts_secret};
use session_ssh_contract::{argv, login};

use super::{SessionId, SkipReason};
use crate::config::Config;
use crate::hostkey::{self, SecretRef};
use crate::keys::{self, KeyPlan};
use crate::naming;

/// What [`decide`] chose for a pod that gets SSH.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The pod's spec.
    pub spec: &'a PodSpec,
    /// Index of the session container in `spec.containers`.
    pub index: usize,
    /// The session container.
    pub session: &'a Container,
    /// Where the authorized keys come from.
    pub keys: KeyPlan,
    /// The session's host-key Secret: mounted by the pod, created by admission.
    pub host_key: Option<SecretRef>,
    /// The controller's host certificate reaches serve as a file (host CA configured).
    pub host_cert: bool,
    /// The session id label to set (None: leave it out).
    pub session_id: Option<String>,
    /// What `start` puts in the information file that the session cannot know itself
    /// (boxed: rarely set, and it would double the size of every `Decision`).
    pub info: Box<argv::Info>,
    /// The hub user whose hub-token logins the session accepts (`gateway.hubTokenLogin`).
    pub hub_user: Option<String>,
    /// The server's metrics port and scrape annotations (None: no metrics).
    pub metrics: Option<super::scrape::Scrape>,
}

/// The outcome of [`decide`].
#[derive(Debug)]
pub enum Decision<'a> {
    /// Inject SSH.
    Inject(Plan<'a>),
    /// Injected already (from a workload template by `inject`): give this pod its own
    /// session id; `host_key` is the Secret its template mounts, if any.
    LabelOnly {
        /// The session id label.
        session_id: String,
        /// The host-key Secret the pod mounts.
        host_key: Option<SecretRef>,
    },
    /// Leave the pod as it is. `detail` is set for the skips that deserve a warning and a
    /// reason annotation ([`SkipReason::is_unsafe`]).
    Skip {
        /// Why.
        reason: SkipReason,
        /// What exactly, for the warning and the annotation.
        detail: Option<String>,
    },
}

fn skip(reason: SkipReason, detail: impl Into<String>) -> Decision<'static> {
    Decision::Skip {
        reason,
        detail: Some(detail.into()),
    }
}

fn silent(reason: SkipReason) -> Decision<'static> {
    Decision::Skip {
        reason,
        detail: None,
    }
}

/// Decide what to do with `pod`; warnings for the admin are pushed onto `warnings`.
pub fn decide<'a>(
    pod: &'a Pod,
    cfg: &Config,
    id: &SessionId,
    warnings: &mut Vec<String>,
) -> Decision<'a> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if is_injected(pod) {
        return match session_id(pod, id) {
            Some(v) if !labels.contains_key(SESSION_ID) => Decision::LabelOnly {
                session_id: v,
                // A pod injected from a template mounts what its template says: name
                // only a Secret it actually references.
                host_key: hostkey::secret_ref(pod, &cfg.host_keys)
                    .filter(|r| mounts_secret(pod, &r.name)),
            },
            _ => silent(SkipReason::AlreadyInjected),
        };
    }
    let opted_in = match opt_in(annotations, labels, warnings) {
        Some(false) => return silent(SkipReason::OptedOut),
        Some(true) => true,
        None => false,
    };
    if !opted_in && !selected(labels, cfg) {
        return silent(SkipReason::NotSelected);
    }
    let spec = match eligible(pod) {
        Ok(spec) => spec,
        Err((reason, detail)) => return skip(reason, detail),
    };
    let Some(index) = session_container(spec, labels, cfg) else {
        return skip(
            SkipReason::NoSessionContainer,
            "no container matches sessionContainer",
        );
    };
    let session = &spec.containers[index];
    if let Err((reason, detail)) = check_conflicts(spec, session, cfg) {
        return skip(reason, detail);
    }
    let keys = keys::plan(pod, session, cfg, warnings);
    let host_key = hostkey::secret_ref(pod, &cfg.host_keys);
    let host_cert = host_key.is_some() && cfg.host_keys.ca.secret_name.is_some();
    let session_id = session_id(pod, id);
    let info = Box::new(argv::Info {
        file: cfg.info_file.clone(),
        ..info(pod, cfg, session_id.as_deref())
    });
    Decision::Inject(Plan {
        spec,
        index,
        session,
        keys,
        host_key,
        host_cert,
        session_id,
        info,
        hub_user: hub_user(pod, cfg),
        metrics: super::scrape::plan(pod, spec, cfg, warnings),
    })
}

/// The pod's hub user, when hub-token logins are on: as the hub spells it (the contract's
/// reading, the one the gateway routes by).
fn hub_user(pod: &Pod, cfg: &Config) -> Option<String> {
    if !cfg.gateway.hub_token_login {
        return None;
    }
    login::hub_server(pod).map(|(user, _)| user)
}

/// Host and port for the information file, when admission knows them: the SSH gateway's
/// address, host key and this session's login name there when `gateway.host` is set; else
/// the SNI modes' host from `ingress.hostTemplate`, port 443. Other modes learn their
/// address only after the Service exists (the controller publishes it on the pod); a pod
/// without a name yet (`generateName`) cannot render `{pod}`.
fn info(pod: &Pod, cfg: &Config, session_id: Option<&str>) -> argv::Info {
    if let Some(host) = &cfg.gateway.host
        && let Some(user) = login::names(pod, cfg.platform.login()).into_iter().next()
    {
        return argv::Info {
            host: Some(host.clone()),
            port: Some(cfg.gateway.port),
            user: Some(user),
            host_key: cfg
                .gateway
                .host_public_key
                .as_ref()
                .map(|k| k.trim().to_owned()),
            file: None,
        };
    }
    let m = &pod.metadata;
    let (Some(t), Some(name), Some(ns)) = (
        cfg.ingress.host_template.as_ref(),
        m.name.as_deref().filter(|n| !n.is_empty()),
        m.namespace.as_deref().filter(|n| !n.is_empty()),
    ) else {
        return argv::Info::default();
    };
    if !cfg.ingress.mode.is_sni() {
        return argv::Info::default();
    }
    let existing = m.labels.as_ref().and_then(|l| l.get(SESSION_ID)).cloned();
    let Some(sid) = session_id.map(str::to_owned).or(existing) else {
        return argv::Info::default();
    };
    let empty = BTreeMap::new();
    let labels = m.labels.as_ref().unwrap_or(&empty);
    match crate::hostname::render_host(t, name, ns, &sid, labels) {
        Ok(host) => argv::Info {
            host: Some(host),
            port: Some(443),
            ..Default::default()
        },
        Err(_) => argv::Info::default(),
    }
}

/// The per-pod `session-ssh.io/inject` annotation (else label): Some(true/false), or None
/// when absent or not a boolean (then a warning says it was ignored).
fn opt_in(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<bool> {
    let (kind, v) = annotations
        .get(INJECT)
        .map(|v| ("annotation", v))
        .or_else(|| labels.get(INJECT).map(|v| ("label", v)))?;
    match v.as_str() {
        "false" => Some(false),
        "true" => Some(true),
        _ => {
            warnings.push(format!(
                "session-ssh: ignoring {kind} {INJECT}={v:?} (expected \"true\" or \"false\")"
            ));
            None
        }
    }
}

/// The spec, when the pod is one init-sshd can serve at all.
fn eligible(pod: &Pod) -> Result<&PodSpec, (SkipReason, String)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err((SkipReason::NoSessionContainer, "pod has no spec".into()));
    };
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return Err((SkipReason::WindowsPod, "spec.os.name is windows".into()));
    }
    if spec.host_network == Some(true) {
        return Err((
            SkipReason::HostNetwork,
            "hostNetwork would expose the SSH port on the node".into(),
        ));
    }
    Ok(spec)
}

fn selected(labels: &BTreeMap<String, String>, cfg: &Config) -> bool {
    let s = &cfg.selector;
    !s.require_opt_in
        && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && s.has_labels.iter().all(|k| labels.contains_key(k))
}

fn session_container(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    cfg: &Config,
) -> Option<usize> {
    let sc = &cfg.session_container;
    let by_name = |name: &str| spec.containers.iter().position(|c| c.name == name);
    sc.name_from_label
        .as_ref()
        .and_then(|l| labels.get(l))
        .and_then(|n| by_name(n))
        .or_else(|| sc.names.iter().find_map(|n| by_name(n)))
        .or_else(|| (sc.fallback_to_first && !spec.containers.is_empty()).then_some(0))
}

type Conflict = Result<(), (SkipReason, String)>;

/// Anything the injection would collide with, first found first.
fn check_conflicts(spec: &PodSpec, session: &Container, cfg: &Config) -> Conflict {
    post_start_kind(session)?;
    ports_and_names(spec, cfg)?;
    let clash = |m: &&VolumeMount| {
        m.mount_path.trim_end_matches('/') == cfg.mount_path.trim_end_matches('/')
    };
    if let Some(m) = session.volume_mounts.iter().flatten().find(clash) {
        return Err((
            SkipReason::NameCollision,
            format!(
                "container {:?} already mounts {:?} at {}",
                session.name, m.name, m.mount_path
            ),
        ));
    }
    Ok(())
}

/// Only an exec postStart hook can be chained after ours.
fn post_start_kind(session: &Container) -> Conflict {
    let Some(ps) = session
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    else {
        return Ok(());
    };
    let kind = if ps.http_get.is_some() {
        "httpGet"
    } else if ps.tcp_socket.is_some() {
        "tcpSocket"
    } else if ps.sleep.is_some() {
        "sleep"
    } else {
        return Ok(());
    };
    Err((
        SkipReason::UnsupportedPostStart,
        format!("container {:?} has a {kind} postStart hook", session.name),
    ))
}

/// Our ports and names against every container's (init sidecars share the network too)
/// and every volume's.
fn ports_and_names(spec: &PodSpec, cfg: &Config) -> Conflict {
    let ours: BTreeSet<i32> = [Some(cfg.ports.ssh), cfg.ports.ssh_tls]
        .into_iter()
        .flatten()
        .map(i32::from)
        .collect();
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        for p in c.ports.iter().flatten() {
            if ours.contains(&p.container_port) {
                return Err((
                    SkipReason::PortTaken,
                    format!("container {:?} declares port {}", c.name, p.container_port),
                ));
            }
            if let Some(n) = p.name.as_deref().filter(|n| n.starts_with(NAME_PREFIX)) {
                return Err((
                    SkipReason::NameCollision,
                    format!("container {:?} has a port named {n:?}", c.name),
                ));
            }
        }
        if c.name.starts_with(NAME_PREFIX) {
            return Err((
                SkipReason::NameCollision,
                format!("a container is already named {:?}", c.name),
            ));
        }
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(NAME_PREFIX))
    {
        return Err((
            SkipReason::NameCollision,
            format!("a volume is already named {:?}", v.name),
        ));
    }
    Ok(())
}

fn session_id(pod: &Pod, id: &SessionId) -> Option<String> {
    let existing = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SESSION_ID))
        .filter(|v| !v.is_empty() && naming::is_label_value(v));
    if let Some(v) = existing {
        return Some(v.clone());
    }
    match id {
        SessionId::Omit => None,
        SessionId::Fixed(v) => Some(v.clone()),
        SessionId::Derive | SessionId::DeriveOr(_) => Some(match pod.metadata.name.as_deref() {
            Some(name) if !name.is_empty() => naming::session_id_for_name(name),
            _ => match id {
                SessionId::DeriveOr(v) => v.clone(),
                _ => naming::random_session_id(),
            },
        }),
    }
}
