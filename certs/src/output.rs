//! Where TLS material goes: PEM files, a Kubernetes Secret, a caBundle; and expiry checks.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{ca, der};

/// Errors writing or reading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Filesystem error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file we were writing or reading.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A name that cannot be a Kubernetes object name.
    #[error("invalid Kubernetes name {0:?}")]
    Name(String),
    /// The certificate could not be read.
    #[error(transparent)]
    Cert(#[from] ca::Error),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// File names, the same keys a `kubernetes.io/tls` Secret (plus `ca.crt`) uses.
pub const CA_FILE: &str = "ca.crt";
/// Serving certificate file name.
pub const CERT_FILE: &str = "tls.crt";
/// Serving key file name.
pub const KEY_FILE: &str = "tls.key";

/// CA certificate + serving certificate + serving key, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsBundle {
    /// CA certificate (what clients trust).
    pub ca_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBundle")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TlsBundle {
    /// Write `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
    ///
    /// Each file is written to a temporary name and renamed, so a reader polling
    /// the directory never sees a half-written file. The key is renamed before the
    /// certificate: readers key their reload on the certificate.
    pub fn write_pem_files(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        write_atomic(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// A `kubernetes.io/tls` Secret manifest (YAML) with `tls.crt`, `tls.key` and `ca.crt`.
    pub fn secret_manifest(&self, name: &str, namespace: &str) -> Result<String> {
        for n in [name, namespace] {
            if !valid_object_name(n) {
                return Err(Error::Name(n.to_owned()));
            }
        }
        let b64 = |s: &str| STANDARD.encode(s);
        Ok(format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
             labels:\n    app.kubernetes.io/name: session-ssh-webhook\n\
             type: kubernetes.io/tls\ndata:\n  {CA_FILE}: {}\n  {CERT_FILE}: {}\n  {KEY_FILE}: {}\n",
            b64(&self.ca_pem),
            b64(&self.cert_pem),
            b64(&self.key_pem),
        ))
    }

    /// The `caBundle` for the webhook configuration.
    pub fn ca_bundle(&self) -> String {
        ca_bundle(&self.ca_pem)
    }
}

/// `caBundle` is base64 of the PEM text (the API server decodes it to PEM).
pub fn ca_bundle(ca_pem: &str) -> String {
    STANDARD.encode(ca_pem.as_bytes())
}

/// notAfter of the first certificate in a PEM text.
pub fn not_after(cert_pem: &str) -> Result<SystemTime> {
    let der = ca::first_cert_der(cert_pem)?;
    let info = der::cert_info(&der).map_err(ca::Error::from)?;
    Ok(info.not_after)
}

/// True when the first certificate in `cert_pem` expires before `now + window`
/// (or has already expired).
pub fn expires_within(cert_pem: &str, window: Duration, now: SystemTime) -> Result<bool> {
    let end = not_after(cert_pem)?;
    Ok(end <= now.checked_add(window).unwrap_or(now))
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// DNS-1123 subdomain, the rule for Secret and Namespace names.
fn valid_object_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}
