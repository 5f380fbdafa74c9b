//! The mutation: a pure function from a pod and the config to a JSON patch, in two steps:
//! [`decide`] (skip with a reason, or a [`Plan`]) and [`render`] (the plan as operations).
//!
//! Never breaks a pod: anything it cannot handle safely becomes [`Mutation::Skip`] with a
//! bounded [`SkipReason`], a warning, and a patch that only records the reason.
//! Assumes `/metadata` and `/spec` exist in the pod document (true for every API object;
//! `inject` adds them to bare pod templates).

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use session_ssh_contract::names::{self, REASON, SESSION_ID, STATUS};
use tracing::debug;

use crate::config::Config;
use crate::hostkey::SecretRef;

mod decide;
mod ops;
mod render;
mod scrape;
pub use decide::{Decision, Plan, decide};
use ops::MetaOps;
pub use ops::pointer;

/// Why a pod was left unchanged. A bounded set: the values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Neither the selector nor an opt-in annotation/label selects the pod.
    NotSelected,
    /// `session-ssh.io/inject: "false"`.
    OptedOut,
    /// The pod already carries `session-ssh.io/status: injected`.
    AlreadyInjected,
    /// No container qualifies as the session container.
    NoSessionContainer,
    /// The session container has an `httpGet`, `tcpSocket` or `sleep` postStart hook,
    /// which cannot be chained after an exec hook.
    UnsupportedPostStart,
    /// A container already declares the SSH or SSH-TLS port.
    PortTaken,
    /// A volume, container, port name or mount path the webhook adds already exists.
    NameCollision,
    /// A Windows pod (`spec.os.name: windows`); init-sshd is a Linux binary.
    WindowsPod,
    /// `hostNetwork: true`: the SSH port would open on the node itself.
    HostNetwork,
    /// The init image is not known to be on every node (the pre-pull DaemonSet is not
    /// ready): an image that cannot be pulled would hold the pod in Init.
    InitImageNotReady,
}

impl SkipReason {
    /// Stable kebab-case name (metric label, reason annotation prefix).
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::NotSelected => "not-selected",
            SkipReason::OptedOut => "opted-out",
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::NoSessionContainer => "no-session-container",
            SkipReason::UnsupportedPostStart => "unsupported-post-start",
            SkipReason::PortTaken => "port-taken",
            SkipReason::NameCollision => "name-collision",
            SkipReason::WindowsPod => "windows-pod",
            SkipReason::HostNetwork => "host-network",
            SkipReason::InitImageNotReady => "init-image-not-ready",
        }
    }

    /// True when the pod asked for (or matched) SSH and did not get it: these get a
    /// warning and a reason annotation; the others are silent.
    pub fn is_unsafe(&self) -> bool {
        !matches!(
            self,
            SkipReason::NotSelected | SkipReason::OptedOut | SkipReason::AlreadyInjected
        )
    }
}

/// The outcome of [`mutate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// The pod gets SSH (or, on an injected pod that lacks it, just its session id label).
    Patch {
        /// RFC 6902 patch against the pod.
        patch: Patch,
        /// Admission warnings (e.g. a key source that could not be used).
        warnings: Vec<String>,
        /// The host-key Secret the patched pod mounts (admission creates it).
        host_key: Option<SecretRef>,
    },
    /// The pod stays as it is.
    Skip {
        /// Why.
        reason: SkipReason,
        /// Admission warnings (empty for silent skips).
        warnings: Vec<String>,
        /// Only the status/reason annotations; empty when they are already there.
        patch: Patch,
    },
}

impl Mutation {
    /// The patch to send, whatever the outcome.
    pub fn patch(&self) -> &Patch {
        match self {
            Mutation::Patch { patch, .. } | Mutation::Skip { patch, .. } => patch,
        }
    }

    /// The admission warnings.
    pub fn warnings(&self) -> &[String] {
        match self {
            Mutation::Patch { warnings, .. } | Mutation::Skip { warnings, .. } => warnings,
        }
    }
}

/// How the session id label is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionId {
    /// Keep an existing valid label; else derive it from the pod name; else (a
    /// `generateName` pod, whose name a webhook never sees) a random id.
    Derive,
    /// Like `Derive`, with this value instead of a random one for a `generateName` pod
    /// (deterministic output for golden tests).
    DeriveOr(String),
    /// Use this value (tests, callers with their own scheme) unless the pod has one.
    Fixed(String),
    /// Leave it out: used for workload pod templates, whose pods all share the template;
    /// the webhook then adds a distinct id to each pod it admits.
    Omit,
}

/// Mutate a pod as the admission webhook does.
pub fn mutate(pod: &Pod, cfg: &Config) -> Mutation {
    mutate_with(pod, cfg, SessionId::Derive)
}

/// [`mutate`] with an explicit session id policy: [`decide`], then [`render`].
pub fn mutate_with(pod: &Pod, cfg: &Config, id: SessionId) -> Mutation {
    mutate_gated(pod, cfg, id, &ImageGate::Open)
}

/// Whether the init image may be injected now (see `prepull`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ImageGate {
    /// No pre-pull DaemonSet is configured, or it is ready on every node.
    #[default]
    Open,
    /// Why not: the pod is admitted without SSH, with this reason.
    Closed(String),
}

/// [`mutate_with`] behind the init image's gate: a pod that would get SSH is skipped
/// (with the reason) while the gate is closed.
pub fn mutate_gated(pod: &Pod, cfg: &Config, id: SessionId, gate: &ImageGate) -> Mutation {
    let mut warnings = Vec::new();
    let mut decision = decide(pod, cfg, &id, &mut warnings);
    if let (Decision::Inject(_), ImageGate::Closed(why)) = (&decision, gate) {
        decision = Decision::Skip {
            reason: SkipReason::InitImageNotReady,
            detail: Some(why.clone()),
        };
    }
    render(pod, cfg, decision, warnings)
}

/// A [`Decision`] made into the patch to send.
pub fn render(pod: &Pod, cfg: &Config, decision: Decision<'_>, warnings: Vec<String>) -> Mutation {
    let mut meta = MetaOps::new(pod);
    match decision {
        Decision::LabelOnly {
            session_id,
            host_key,
        } => {
            meta.label(SESSION_ID, &session_id);
            Mutation::Patch {
                patch: Patch(meta.ops),
                warnings: vec![],
                host_key,
            }
        }
        // Silent skips say nothing, not even the warnings gathered on the way.
        Decision::Skip {
            reason,
            detail: None,
        } => Mutation::Skip {
            reason,
            warnings: vec![],
            patch: Patch(vec![]),
        },
        Decision::Skip {
            reason,
            detail: Some(detail),
        } => skip(meta, reason, &detail, warnings),
        Decision::Inject(plan) => {
            let ops = render::injection(&mut meta, cfg, &plan);
            debug!(
                container = %plan.session.name,
                key_files = plan.keys.files.len(),
                key_dirs = plan.keys.dirs.len(),
                ops = ops.len(),
                "planned injection"
            );
            Mutation::Patch {
                patch: Patch(ops),
                warnings,
                host_key: plan.host_key,
            }
        }
    }
}

/// An unsafe skip: warning plus status/reason annotations (none when already recorded,
/// so a second pass is a no-op).
fn skip(
    mut meta: MetaOps,
    reason: SkipReason,
    detail: &str,
    mut warnings: Vec<String>,
) -> Mutation {
    let text = format!("{}: {detail}", reason.as_str());
    warnings.push(format!("session-ssh: not injected: {text}"));
    meta.annotation(STATUS, names::STATUS_SKIPPED);
    meta.annotation(REASON, &text);
    Mutation::Skip {
        reason,
        warnings,
        patch: Patch(meta.ops),
    }
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
