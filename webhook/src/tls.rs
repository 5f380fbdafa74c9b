//! rustls (ring) server configuration whose certificate follows the files on disk.
//!
//! cert-manager and the kubelet rotate `tls.crt`/`tls.key` in place (an atomic symlink
//! swap for Secret volumes); self-managed mode rewrites them. The resolver hands every
//! new handshake the current key pair; established connections keep theirs, so nothing
//! is dropped on rotation.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No CERTIFICATE block in the certificate file.
    #[error("{0}: no PEM CERTIFICATE found")]
    NoCert(PathBuf),
    /// No private key block in the key file.
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    /// rustls refused the key, or the key does not belong to the certificate.
    #[error("{cert} / {key}: {source}")]
    Rustls {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// Building the server config failed.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// The crypto provider used everywhere: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Identity of a file version: a Secret volume update replaces the symlink target
/// (new inode), an in-place rewrite changes mtime/size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        len: m.len(),
    })
}

/// A certificate resolver that reloads `cert`/`key` when they change.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    seen: RwLock<Option<(Stamp, Stamp)>>,
    metrics: Arc<Metrics>,
}

impl CertReloader {
    /// A resolver for these files; call [`CertReloader::reload`] (or [`CertReloader::load`])
    /// before serving.
    pub fn new(cert_path: &Path, key_path: &Path, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(CertReloader {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider: provider(),
            current: RwLock::new(None),
            seen: RwLock::new(None),
            metrics,
        })
    }

    /// Load now, failing if the files are unusable (startup: a clear error beats a
    /// server that refuses every handshake).
    pub fn load(&self) -> Result<()> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let key = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        self.install(key);
        if let (Some(c), Some(k)) = stamps
            && let Ok(mut seen) = self.seen.write()
        {
            *seen = Some((c, k));
        }
        Ok(())
    }

    /// Reload if either file changed since the last attempt. Returns true when a new
    /// certificate is now in use. A bad pair (e.g. the cert was replaced but not yet the
    /// key) keeps the previous certificate and is retried when a file changes again.
    pub fn reload(&self) -> bool {
        let (Some(c), Some(k)) = (stamp(&self.cert_path), stamp(&self.key_path)) else {
            return false;
        };
        let unchanged = self
            .seen
            .read()
            .map(|s| *s == Some((c, k)))
            .unwrap_or(false);
        if unchanged {
            return false;
        }
        if let Ok(mut seen) = self.seen.write() {
            *seen = Some((c, k));
        }
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                self.install(key);
                true
            }
            Err(err) => {
                self.metrics.tls_reload_failed();
                warn!(error = %err, "TLS reload refused; keeping the previous certificate");
                false
            }
        }
    }

    fn install(&self, key: CertifiedKey) {
        let not_after = key
            .end_entity_cert()
            .ok()
            .and_then(|der| session_ssh_certs::cert_info(der).ok())
            .map(|i| i.not_after);
        let unix = not_after
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let days_left = not_after
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(0, |d| d.as_secs() / 86_400);
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(key));
        }
        self.metrics.tls_loaded(unix);
        info!(
            cert = %self.cert_path.display(),
            not_after_unix = unix,
            days_left,
            "TLS certificate loaded"
        );
    }

    /// Whether a certificate is loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// The certificate chain in use (tests, diagnostics).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Poll the files every `every` until the task is dropped.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // stat + read of two small files: cheap enough to run on the runtime.
                me.reload();
            }
        })
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Read a PEM chain and key and check that they belong together.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::Read {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(|c| c.ok())
        .collect();
    if chain.is_empty() {
        return Err(Error::NoCert(cert_path.to_owned()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| Error::NoKey(key_path.to_owned()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| Error::Rustls {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// TLS 1.2/1.3 server config with ALPN h2 + http/1.1 and the reloading resolver.
pub fn server_config(resolver: Arc<CertReloader>) -> Result<Arc<ServerConfig>> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_ssh_certs::{Ca, ServerCertSpec};

    #[test]
    fn reload_follows_files_and_refuses_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate().unwrap();
        let first = ca.issue_bundle(&ServerCertSpec::localhost()).unwrap();
        first.write_pem_files(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let r = CertReloader::new(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
            metrics.clone(),
        );
        assert!(!r.is_loaded());
        r.load().unwrap();
        assert!(r.is_loaded());
        assert!(!r.reload(), "nothing changed");
        let der1 = r.current().unwrap().cert[0].clone();

        // Only the certificate replaced: mismatched pair, the old one stays.
        let second = ca.issue_bundle(&ServerCertSpec::localhost()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &second.cert_pem).unwrap();
        assert!(!r.reload());
        assert_eq!(r.current().unwrap().cert[0], der1);
        assert!(
            metrics
                .render()
                .unwrap()
                .contains("session_ssh_tls_reload_errors_total 1\n")
        );

        // Then the key: the pair is consistent and is taken.
        std::fs::write(dir.path().join("tls.key"), &second.key_pem).unwrap();
        assert!(r.reload());
        assert_ne!(r.current().unwrap().cert[0], der1);
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider();
        let err = load_certified_key(&dir.path().join("no.crt"), &dir.path().join("no.key"), &p)
            .unwrap_err();
        assert!(err.to_string().contains("no.crt"), "{err}");
        std::fs::write(dir.path().join("a.crt"), "junk").unwrap();
        std::fs::write(dir.path().join("a.key"), "junk").unwrap();
        let err = load_certified_key(&dir.path().join("a.crt"), &dir.path().join("a.key"), &p)
            .unwrap_err();
        assert!(matches!(err, Error::NoCert(_)), "{err}");
    }
}
