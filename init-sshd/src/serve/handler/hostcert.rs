//! The host certificate (issue 6, optional host CA), re-read whenever its file changes.
//!
//! In a pod the file is a downward-API projection of the annotation the webhook's
//! controller writes, so it appears after serve started and is renewed while it runs;
//! the kubelet swaps it atomically. Checked per connection by (mtime, size, inode), one
//! stat call; the russh config is rebuilt only after a change. A missing, empty or bad
//! file, or a certificate for another key, means the plain host key alone: clients that
//! pinned the key never notice, and OpenSSH falls back to it when a certificate fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use russh::keys::{Certificate, PrivateKey};
use russh::server::Config;

use super::config::{self, Limits};
use super::watched::Watched;

/// The russh configuration, with the host certificate as its file is now.
pub struct ConfigStore {
    host_key: PrivateKey,
    limits: Limits,
    file: Watched<Config>,
}

impl ConfigStore {
    pub fn new(host_key: PrivateKey, limits: Limits, path: PathBuf) -> ConfigStore {
        let plain = config::build(host_key.clone(), &limits, Vec::new());
        let store = ConfigStore {
            host_key,
            limits,
            file: Watched::new(path, plain),
        };
        store.current();
        store
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<Config> {
        self.file.get(|_| {
            let certs: Vec<Certificate> = self.load().into_iter().collect();
            Some(config::build(self.host_key.clone(), &self.limits, certs))
        })
    }

    fn load(&self) -> Option<Certificate> {
        let path = self.file.path().display();
        let text = match std::fs::read_to_string(self.file.path()) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(%path, error = %e, "no host certificate");
                return None;
            }
        };
        if text.trim().is_empty() {
            // The downward-API file exists but the controller has not signed yet.
            tracing::debug!(%path, "host certificate file empty");
            return None;
        }
        match check(&text, &self.host_key, unix_now()) {
            Ok(cert) => {
                tracing::info!(%path, key_id = cert.key_id(), principals = ?cert.valid_principals(),
                    valid_before = cert.valid_before(), "host certificate loaded");
                Some(cert)
            }
            Err(reason) => {
                tracing::warn!(%path, %reason, "host certificate ignored; serving the plain host key");
                None
            }
        }
    }
}

/// A certificate usable with `host_key` at `now`, or why not (the contract's check).
pub fn check(text: &str, host_key: &PrivateKey, now: u64) -> Result<Certificate, String> {
    session_ssh_contract::keys::host_certificate(text, host_key.public_key(), now)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::certificate::{Builder, CertType};
    use russh::keys::ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn cert(ca: &PrivateKey, host: &PrivateKey, kind: CertType, before: u64) -> String {
        let mut b =
            Builder::new(vec![7; 16], host.public_key().key_data().clone(), 0, before).unwrap();
        b.cert_type(kind).unwrap();
        b.valid_principal("a.ssh.test").unwrap();
        b.sign(ca).unwrap().to_openssh().unwrap()
    }

    const FAR: u64 = 4_000_000_000;

    /// Replace the file by rename, as the kubelet does (a new inode every time).
    fn replace(path: &std::path::Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn only_a_live_host_certificate_of_our_key_is_used() {
        let (ca, host) = (key(1), key(2));
        assert!(check(&cert(&ca, &host, CertType::Host, FAR), &host, 1000).is_ok());
        let other = check(&cert(&ca, &key(3), CertType::Host, FAR), &host, 1000).unwrap_err();
        assert!(other.contains("another key"), "{other}");
        let user = check(&cert(&ca, &host, CertType::User, FAR), &host, 1000).unwrap_err();
        assert!(user.contains("user certificate"), "{user}");
        let old = check(&cert(&ca, &host, CertType::Host, 500), &host, 1000).unwrap_err();
        assert_eq!(old, "expired");
        assert!(check("ssh-ed25519 AAAA", &host, 1000).is_err());
    }

    #[test]
    fn a_certificate_written_later_is_picked_up_and_a_removed_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(session_ssh_contract::names::file::HOST_CERT_DIR)
            .join(session_ssh_contract::names::file::HOST_CERT);
        let (ca, host) = (key(1), key(2));
        let store = ConfigStore::new(host.clone(), Limits::default(), path.clone());
        assert!(store.current().certificates.is_empty(), "no file yet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        replace(&path, "");
        assert!(store.current().certificates.is_empty(), "empty file");
        replace(&path, &cert(&ca, &host, CertType::Host, FAR));
        let with = store.current();
        assert_eq!(with.certificates.len(), 1);
        assert!(
            Arc::ptr_eq(&with, &store.current()),
            "unchanged file: same config"
        );
        // A certificate for another key replaces it: plain key only, never a wrong cert.
        replace(&path, &cert(&ca, &key(3), CertType::Host, FAR));
        assert!(store.current().certificates.is_empty());
        replace(&path, &cert(&ca, &host, CertType::Host, FAR));
        assert_eq!(store.current().certificates.len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert!(store.current().certificates.is_empty());
        assert_eq!(store.current().keys.len(), 1, "the host key stays");
    }
}
