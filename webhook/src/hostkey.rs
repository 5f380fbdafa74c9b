//! Stable per-session host keys: one Secret per session identity in the pod's namespace.
//!
//! The identity comes from pod labels (JupyterHub user + server, Renku user + project, …)
//! or, failing that, the pod's controller owner, so a restarted session finds the same
//! Secret and users never see "REMOTE HOST IDENTIFICATION HAS CHANGED". The naming and
//! the Secret object are pure ([`identity`], [`secret_ref`], [`secret`]); only [`ensure`]
//! talks to the apiserver, and admission calls it (never on dryRun). Any failure there is
//! only logged: the Secret is mounted `optional: true`, so install then generates a key.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use ssh_key::LineEnding;
use ssh_key::private::{Ed25519Keypair, PrivateKey};

use session_ssh_contract::names;
use session_ssh_contract::pod::mounts_secret;

use crate::config::HostKeys;

pub mod cleanup;
use crate::naming::short_hash;

/// Readable part of the name is cut here: prefix (20) + 30 + `-` + hash (12) = 63.
const READABLE_MAX: usize = 30;
const HASH_LEN: usize = 12;

/// What can go wrong while making the Secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel's random source failed.
    #[error("no randomness for a host key: {0}")]
    Random(String),
    /// The key could not be encoded (not expected for ed25519).
    #[error("encoding the host key: {0}")]
    Encode(#[from] ssh_key::Error),
    /// The apiserver refused (other than AlreadyExists).
    #[error("creating Secret {name}: {source}")]
    Create {
        /// Secret name.
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Who a session is, as far as its host key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Unambiguous form (hashed into the name and the label).
    pub canonical: String,
    /// For people: `key=value,...` or `owner:Kind/name`.
    pub display: String,
    /// Values that make the Secret name readable.
    readable: String,
}

/// The Secret a pod's host key lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name (a DNS label, at most 63 characters).
    pub name: String,
    /// The identity it belongs to.
    pub identity: Identity,
}

/// The session identity of a pod, or None (no stable identity: install generates a key).
pub fn identity(pod: &Pod, cfg: &HostKeys) -> Option<Identity> {
    if !cfg.enabled {
        return None;
    }
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if !cfg.identity_labels.is_empty() {
        let values: Option<Vec<(&str, &str)>> = cfg
            .identity_labels
            .iter()
            .map(|k| labels.get(k).map(|v| (k.as_str(), v.as_str())))
            .collect();
        if let Some(values) = values {
            // Length prefixes: no two label sets encode to the same string.
            let canonical = values
                .iter()
                .map(|(k, v)| format!("{}:{k}={}:{v};", k.len(), v.len()))
                .collect::<String>();
            let display = values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let readable = values.iter().map(|(_, v)| *v).collect::<Vec<_>>().join("-");
            return Some(Identity {
                canonical: format!("labels;{canonical}"),
                display,
                readable,
            });
        }
    }
    if !cfg.owner_fallback {
        return None;
    }
    // The owner alone is shared by every replica, so the pod's own name is part of the
    // identity; it is stable only when the owner names its pods (a StatefulSet's `dev-0`).
    // A `generateName` pod (ReplicaSet, Job) gets no identity: a fresh key, never a shared one.
    let name = pod.metadata.name.as_deref().filter(|n| !n.is_empty())?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    if owner.name.is_empty() {
        return None;
    }
    let (kind, owner_name) = (&owner.kind, &owner.name);
    Some(Identity {
        canonical: format!(
            "owner;{}:{kind}/{}:{owner_name}/{name}",
            kind.len(),
            owner_name.len()
        ),
        display: format!("owner:{kind}/{owner_name},pod:{name}"),
        readable: name.to_owned(),
    })
}

/// The Secret for a pod, when it has an identity.
pub fn secret_ref(pod: &Pod, cfg: &HostKeys) -> Option<SecretRef> {
    let identity = identity(pod, cfg)?;
    Some(SecretRef {
        name: secret_name(&identity),
        identity,
    })
}

/// `session-ssh-hostkey-<readable>-<hash>`: the readable part helps people, the hash of
/// the canonical identity keeps distinct identities apart whatever sanitizing merged.
pub fn secret_name(id: &Identity) -> String {
    let mut readable = String::new();
    for c in id.readable.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            readable.push(c);
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
    }
    readable.truncate(READABLE_MAX);
    let readable = readable.trim_matches('-');
    let hash = short_hash(&id.canonical, HASH_LEN);
    if readable.is_empty() {
        format!("{}{hash}", names::HOST_KEY_SECRET_PREFIX)
    } else {
        format!("{}{readable}-{hash}", names::HOST_KEY_SECRET_PREFIX)
    }
}

/// A new ed25519 key: (OpenSSH private key PEM, public key line).
pub fn generate() -> Result<(String, String)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    let private = key.to_openssh(LineEnding::LF)?.to_string();
    let public = key.public_key().to_openssh()?;
    Ok((private, public))
}

/// The Secret object holding a fresh key for `r`.
pub fn secret(r: &SecretRef, namespace: &str) -> Result<Secret> {
    let (private, public) = generate()?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (names::HOST_KEY.to_owned(), "true".to_owned()),
                (
                    names::HOST_KEY_IDENTITY.to_owned(),
                    short_hash(&r.identity.canonical, HASH_LEN),
                ),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "session-ssh-webhook".to_owned(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                (
                    names::HOST_KEY_IDENTITY.to_owned(),
                    r.identity.display.clone(),
                ),
                (names::HOST_KEY_PUBLIC.to_owned(), public),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            names::file::HOST_KEY.to_owned(),
            ByteString(private.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// Whether [`ensure`] made the Secret or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// Created now.
    Created,
    /// Already there (an earlier run of this session): reused as it is.
    Existing,
}

impl Ensured {
    /// For log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Ensured::Created => "created",
            Ensured::Existing => "existing",
        }
    }
}

/// Create the Secret unless it exists. Create-first (not get-then-create) so two
/// admissions racing for one identity agree: the loser gets AlreadyExists and reuses.
pub async fn ensure(client: kube::Client, namespace: &str, r: &SecretRef) -> Result<Ensured> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let obj = secret(r, namespace)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(Ensured::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Ensured::Existing),
        Err(source) => Err(Error::Create {
            name: r.name.clone(),
            source,
        }),
    }
}

/// The known_hosts line ssh looks up for `host`:`port` (`[host]:port` unless port 22).
/// None when `public` is not an OpenSSH public key; its comment is dropped.
pub fn known_hosts_line(host: &str, port: u16, public: &str) -> Option<String> {
    let key = ssh_key::PublicKey::from_openssh(public.trim()).ok()?;
    let mut fields = public.split_whitespace();
    let (alg, blob) = (fields.next()?, fields.next()?);
    if alg != key.algorithm().as_str() {
        return None;
    }
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    Some(format!("{name} {alg} {blob}"))
}

/// The known_hosts line of a session behind an SNI route: its name bare and with `:443`,
/// since clients reach it through a ProxyCommand with or without `Port 443` in their config
/// (OpenSSH looks up `[host]:443` only when the port is 443).
pub fn known_hosts_line_sni(host: &str, public: &str) -> Option<String> {
    known_hosts_line(host, 443, public).map(|l| format!("{host},{l}"))
}

/// The public host key a running pod serves, read from its host-key Secret's annotation
/// (metadata only: the private key never leaves the apiserver here). None when the pod
/// does not mount one, the Secret is absent, or it was made after the pod (then install
/// generated its own key and the Secret's would be wrong).
pub async fn published_key(client: kube::Client, pod: &Pod, cfg: &HostKeys) -> Option<String> {
    let r = secret_ref(pod, cfg)?;
    if !mounts_secret(pod, &r.name) {
        return None;
    }
    let ns = pod.metadata.namespace.as_deref()?;
    let api: Api<Secret> = Api::namespaced(client, ns);
    let meta = match api.get_metadata_opt(&r.name).await {
        Ok(m) => m?,
        Err(err) => {
            tracing::debug!(%ns, secret = %r.name, error = %err, "host-key Secret not readable");
            return None;
        }
    };
    let made = meta.metadata.creation_timestamp.as_ref()?;
    let started = pod.metadata.creation_timestamp.as_ref()?;
    if made.0 > started.0 {
        tracing::debug!(%ns, secret = %r.name, "host-key Secret newer than the pod; key not published");
        return None;
    }
    meta.metadata
        .annotations?
        .get(names::HOST_KEY_PUBLIC)
        .cloned()
}

#[cfg(test)]
#[path = "hostkey_tests.rs"]
mod tests;
