//! Optional host CA (issue 6): the controller certifies each session's host key for its
//! hostname, so one `@cert-authority` line in a user's known_hosts trusts every session.
//!
//! The CA key is an OpenSSH ed25519 private key the admin puts in a Secret (the webhook
//! only reads it: a CA that silently re-created itself would break every user's trust
//! line). Signing and checking are pure ([`Ca::sign`], [`Ca::still_good`]);
//! [`CaSource`] reads the Secret, cached briefly. Nothing here can stop a session: no
//! CA or a failed signature only means no certificate, and pinned keys keep working.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Certificate, HashAlg, PrivateKey, PublicKey};

use crate::config::HostCa;

/// Key in the CA Secret that holds the OpenSSH private key.
pub const SECRET_KEY: &str = "host_ca_key";

/// Certificates start this long before signing: session nodes' clocks may lag ours.
const BACKDATE: u64 = 300;
/// How long a read of the CA Secret (or its absence) is trusted.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// What can go wrong with the CA or a signature.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Secret has no `host_ca_key`.
    #[error("Secret {0} has no key `{SECRET_KEY}`")]
    MissingKey(String),
    /// `host_ca_key` is not an OpenSSH private key.
    #[error("Secret {secret}: `{SECRET_KEY}` is not an OpenSSH private key: {source}")]
    BadKey {
        /// `namespace/name`.
        secret: String,
        #[source]
        source: ssh_key::Error,
    },
    /// The key is passphrase-protected or not ed25519.
    #[error("Secret {secret}: {reason}")]
    Unusable {
        /// `namespace/name`.
        secret: String,
        /// Why.
        reason: String,
    },
    /// The apiserver refused the read.
    #[error("reading Secret {secret}: {source}")]
    Read {
        /// `namespace/name`.
        secret: String,
        #[source]
        source: kube::Error,
    },
    /// The host key to certify does not parse.
    #[error("host key: {0}")]
    HostKey(#[source] ssh_key::Error),
    /// Building or signing the certificate failed.
    #[error("signing: {0}")]
    Sign(#[from] ssh_key::Error),
    /// The kernel's random source failed.
    #[error("no randomness for a certificate nonce: {0}")]
    Random(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What a session's certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Host names the certificate is valid for (what users type).
    pub principals: Vec<String>,
    /// Names the session in the server's and the CA's logs.
    pub key_id: String,
    /// Lifetime in seconds.
    pub validity: u64,
}

/// A loaded host CA.
#[derive(Debug, Clone)]
pub struct Ca {
    key: PrivateKey,
    /// `ssh-ed25519 AAAA…`, without comment.
    public: String,
}

impl Ca {
    /// The CA from its OpenSSH private key text; `secret` names it in errors.
    pub fn from_openssh(text: &str, secret: &str) -> Result<Ca> {
        let key = PrivateKey::from_openssh(text.trim()).map_err(|source| Error::BadKey {
            secret: secret.to_owned(),
            source,
        })?;
        let unusable = |reason: &str| Error::Unusable {
            secret: secret.to_owned(),
            reason: reason.to_owned(),
        };
        if key.is_encrypted() {
            return Err(unusable(
                "the CA key has a passphrase; store it without one",
            ));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(unusable(
                "the CA key must be ed25519 (ssh-keygen -t ed25519)",
            ));
        }
        let mut public = key.public_key().clone();
        public.set_comment("");
        let public = public.to_openssh()?.trim().to_owned();
        Ok(Ca { key, public })
    }

    /// `ssh-ed25519 AAAA…` of the CA.
    pub fn public_line(&self) -> &str {
        &self.public
    }

    /// A host certificate for `host_public` (an OpenSSH public key line), valid from
    /// shortly before `now` for `req.validity` seconds, as one OpenSSH line.
    pub fn sign(&self, host_public: &str, req: &CertRequest, now: u64) -> Result<String> {
        let host = PublicKey::from_openssh(host_public.trim()).map_err(Error::HostKey)?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        let mut serial = [0u8; 8];
        getrandom::fill(&mut serial).map_err(|e| Error::Random(e.to_string()))?;
        let after = now.saturating_sub(BACKDATE);
        let before = now.saturating_add(req.validity);
        let mut b = Builder::new(nonce.to_vec(), host.key_data().clone(), after, before)?;
        b.serial(u64::from_be_bytes(serial))?
            .cert_type(CertType::Host)?
            .key_id(req.key_id.clone())?
            .comment(req.principals.first().cloned().unwrap_or_default())?;
        for p in &req.principals {
            b.valid_principal(p.clone())?;
        }
        let cert = b.sign(&self.key)?;
        Ok(cert.to_openssh()?.trim().to_owned())
    }

    /// Whether `cert` (an OpenSSH certificate line) is ours for this request and need not
    /// be re-signed yet: signed by this CA, for this key, type and principals, and more
    /// than a third of its lifetime left. Keeps the annotation stable across reconciles.
    pub fn still_good(&self, cert: &str, host_public: &str, req: &CertRequest, now: u64) -> bool {
        let (Ok(cert), Ok(host)) = (
            Certificate::from_openssh(cert.trim()),
            PublicKey::from_openssh(host_public.trim()),
        ) else {
            return false;
        };
        let ca = self.key.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(now, [&ca]).is_ok()
            && cert.cert_type() == CertType::Host
            && cert.public_key() == host.key_data()
            && cert.valid_principals() == req.principals.as_slice()
            && cert.key_id() == req.key_id
            && cert.valid_before().saturating_sub(now) > req.validity / 3
    }
}

/// The known_hosts line that trusts the CA for `pattern` on port 22 and, as ssh looks up
/// `[host]:port` for other ports (443 through an SNI ingress), on every port.
pub fn authority_line(pattern: &str, ca: &Ca) -> String {
    format!(
        "@cert-authority {pattern},[{pattern}]:* {}",
        ca.public_line()
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The CA Secret, read through the apiserver and cached for a minute, so a rotated or
/// newly created CA is picked up without a restart and reconciles cost no extra reads.
pub struct CaSource {
    name: String,
    namespace: String,
    cache: Mutex<Option<(Instant, Option<Arc<Ca>>)>>,
}

impl CaSource {
    /// The configured source, or None when the CA is off. The namespace defaults to the
    /// webhook's own (`POD_NAMESPACE`, set by the Deployment).
    pub fn from_config(cfg: &HostCa) -> Option<CaSource> {
        let name = cfg.secret_name.clone()?;
        let namespace = cfg
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty());
        let Some(namespace) = namespace else {
            tracing::warn!(secret = %name, "host CA configured but no namespace (hostKeys.ca.namespace or POD_NAMESPACE); no certificates");
            return None;
        };
        Some(CaSource {
            name,
            namespace,
            cache: Mutex::new(None),
        })
    }

    /// `namespace/name` of the Secret.
    pub fn secret(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The CA now, or None (absent, unreadable or unusable: logged, retried after the TTL).
    pub async fn get(&self, client: kube::Client) -> Option<Arc<Ca>> {
        if let Ok(guard) = self.cache.lock()
            && let Some((at, ca)) = guard.as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return ca.clone();
        }
        let ca = match self.read(client).await {
            Ok(Some(ca)) => Some(Arc::new(ca)),
            Ok(None) => {
                tracing::warn!(secret = %self.secret(), "host CA Secret not found; no host certificates");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "host CA not usable; no host certificates");
                None
            }
        };
        if let Ok(mut guard) = self.cache.lock() {
            let before = guard
                .as_ref()
                .and_then(|(_, c)| c.as_ref().map(|c| c.public.clone()));
            if let Some(c) = &ca
                && before.as_deref() != Some(c.public_line())
            {
                // Once per new CA key: what admins hand to users.
                tracing::info!(secret = %self.secret(), public = %c.public_line(), "host CA loaded");
            }
            *guard = Some((Instant::now(), ca.clone()));
        }
        ca
    }

    async fn read(&self, client: kube::Client) -> Result<Option<Ca>> {
        let api: Api<Secret> = Api::namespaced(client, &self.namespace);
        let secret = api
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::Read {
                secret: self.secret(),
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_KEY))
            .ok_or_else(|| Error::MissingKey(self.secret()))?;
        let text = String::from_utf8_lossy(&bytes.0);
        Ca::from_openssh(&text, &self.secret()).map(Some)
    }
}

#[cfg(test)]
#[path = "hostca_tests.rs"]
mod tests;
