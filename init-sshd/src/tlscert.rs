//! The self-signed TLS certificate that wraps SSH on the TLS port (DIR/tls.crt, DIR/tls.key).
//!
//! Clients never verify it (`openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet`): an SNI router only reads
//! the ClientHello, and the SSH host key stays the trust anchor. So the certificate only has to
//! exist, match its key and name the session; ECDSA P-256 keeps the handshake cheap.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::hostkey;

/// Certificate file in DIR (PEM).
pub const CERT_FILE: &str = "tls.crt";
/// Private key file in DIR (PKCS#8 PEM).
pub const KEY_FILE: &str = "tls.key";
/// Longest DNS name a certificate may carry.
const MAX_NAME: usize = 253;

/// Errors of this module (install logs them; serve falls back to an in-memory certificate).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no certificate in the file")]
    NoCert(PathBuf),
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("making the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Write(#[from] hostkey::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `install` flags for the certificate.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsNameArgs {
    /// Extra name for the TLS certificate (the session's ingress hostname); repeatable.
    /// The pod's hostname and `localhost` are always included.
    #[arg(long = "tls-name", env = "INIT_SSHD_TLS_NAME", value_delimiter = ',')]
    pub tls_names: Vec<String>,
}

/// A certificate chain and its key, as rustls takes them.
#[derive(Debug)]
pub struct Material {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Whether [`install`] kept the files or made new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Kept,
    Generated,
}

/// What [`make_private`] did to DIR/tls.key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    AlreadyPrivate,
    Chmodded,
    /// Another UID's file (install ran as the image user): copied to our own 0600 file.
    Copied,
}

/// Normalise a requested name; None for what no certificate can carry.
fn clean_name(raw: &str) -> Option<String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*' | b':' | b'_'));
    ok.then_some(name)
}

/// The names the certificate carries: the pod's hostname, `localhost`, then `extra`.
pub fn names(hostname: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let wanted = hostname
        .into_iter()
        .chain(["localhost"])
        .chain(extra.iter().map(String::as_str));
    for raw in wanted {
        match clean_name(raw) {
            Some(n) if !out.contains(&n) => out.push(n),
            Some(_) => {}
            None => tracing::warn!(name = raw, "not a valid certificate name; skipped"),
        }
    }
    out
}

/// This host's name (all containers of a pod share it).
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

/// A new self-signed ECDSA P-256 certificate for `names`: (certificate PEM, key PEM).
pub fn generate(names: &[String]) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let cn = names.first().map_or("init-sshd", String::as_str);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    // rcgen's default validity (1975..4096) is kept on purpose: nobody verifies this
    // certificate, and one that never expires can never break a long-running session.
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Parse PEM text into rustls material (first key, every certificate).
pub fn parse(cert_pem: &[u8], key_pem: &[u8], path: &Path) -> Result<Material> {
    let pem_err = |source| Error::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(Error::NoCert(path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_err)?;
    Ok(Material { certs, key })
}

/// Read DIR/tls.crt and DIR/tls.key.
pub fn load(dir: &Path) -> Result<Material> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert = fs::read(&cert_path).map_err(io_err(&cert_path))?;
    let key = fs::read(&key_path).map_err(io_err(&key_path))?;
    parse(&cert, &key, &dir.join(CERT_FILE))
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3) for `material`.
/// Fails when the key does not belong to the certificate.
pub fn server_config(material: Material) -> Result<rustls::ServerConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(material.certs, material.key)?;
    Ok(config)
}

/// Whether the certificate's subjectAltName holds `name`. A byte search for the DER encoding
/// of a dNSName / iPAddress entry: cheap, and a false "yes" would need those exact bytes
/// inside our own self-signed certificate.
pub fn covers(cert_der: &[u8], name: &str) -> bool {
    let (tag, value) = match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => (0x87u8, ip.octets().to_vec()),
        Ok(IpAddr::V6(ip)) => (0x87u8, ip.octets().to_vec()),
        Err(_) => (0x82u8, name.as_bytes().to_vec()),
    };
    let mut needle = vec![tag];
    match value.len() {
        n @ 0..=127 => needle.push(n as u8),
        n @ 128..=255 => needle.extend([0x81, n as u8]),
        _ => return false,
    }
    needle.extend(value);
    cert_der
        .windows(needle.len())
        .any(|w| w == needle.as_slice())
}

/// The files in `dir` are usable for `names`: they parse, the key matches and every name is in.
fn usable(dir: &Path, names: &[String]) -> Result<bool> {
    let material = load(dir)?;
    let leaf = material.certs.first().map(|c| c.as_ref().to_vec());
    server_config(material)?;
    Ok(leaf.is_some_and(|der| names.iter().all(|n| covers(&der, n))))
}

/// Make sure DIR holds a certificate for `names`: keep usable files, else write new ones.
/// `private` selects a 0600 key over the 0644 hand-off (as for the host key: serve, running
/// as the session user, then makes its own 0600 copy).
pub fn install(dir: &Path, names: &[String], private: bool) -> Result<Origin> {
    match usable(dir, names) {
        Ok(true) => return Ok(Origin::Kept),
        Ok(false) => tracing::info!("TLS certificate lacks a wanted name; replacing it"),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::info!(error = %e, "TLS certificate unusable; replacing it"),
    }
    let (cert, key) = generate(names)?;
    save(dir, &cert, &key, if private { 0o600 } else { 0o644 })?;
    Ok(Origin::Generated)
}

/// Write the PEM pair into `dir`, the key with `key_mode`.
pub fn save(dir: &Path, cert_pem: &str, key_pem: &str, key_mode: u32) -> Result<()> {
    // Key first: a crash in between leaves a mismatching pair, which the next run replaces.
    hostkey::write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), key_mode)?;
    hostkey::write_atomic(&dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// `install` step: never fails the init container, only logs.
pub fn install_logged(dir: &Path, args: &TlsNameArgs, session_uid: Option<u32>) {
    let host = hostname();
    let wanted = names(host.as_deref(), &args.tls_names);
    let private = session_uid.is_some_and(|u| u == nix::unistd::geteuid().as_raw());
    match install(dir, &wanted, private) {
        Ok(origin) => {
            tracing::info!(origin = ?origin, names = ?wanted, private, "TLS certificate installed")
        }
        Err(e) => {
            tracing::error!(error = %e, "TLS certificate not installed; serve makes one in memory")
        }
    }
}

/// Make DIR/tls.key a 0600 file owned by the calling UID (run by serve as the session user).
pub fn make_private(dir: &Path) -> Result<Privacy> {
    let path = dir.join(KEY_FILE);
    let meta = fs::metadata(&path).map_err(io_err(&path))?;
    if meta.uid() == nix::unistd::geteuid().as_raw() {
        if meta.mode() & 0o077 == 0 {
            return Ok(Privacy::AlreadyPrivate);
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(&path))?;
        return Ok(Privacy::Chmodded);
    }
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    hostkey::write_atomic(&path, &bytes, 0o600)?;
    Ok(Privacy::Copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(extra: &[&str]) -> Vec<String> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        names(Some("jupyter-alice"), &extra)
    }

    #[test]
    fn names_are_cleaned_and_deduplicated() {
        let n = names_of(&[
            "A.SSH.example.org.",
            "localhost",
            "bad name",
            "",
            "10.0.0.1",
        ]);
        assert_eq!(
            n,
            [
                "jupyter-alice",
                "localhost",
                "a.ssh.example.org",
                "10.0.0.1"
            ]
        );
        assert_eq!(names(None, &[]), ["localhost"]);
    }

    #[test]
    fn generated_certificate_names_each_host_and_matches_its_key() {
        let n = names_of(&["a.ssh.test", "127.0.0.1"]);
        let (cert, key) = generate(&n).unwrap();
        let m = parse(cert.as_bytes(), key.as_bytes(), Path::new("mem")).unwrap();
        let der = m.certs[0].as_ref().to_vec();
        for name in &n {
            assert!(covers(&der, name), "{name} missing");
        }
        assert!(!covers(&der, "b.ssh.test"));
        assert!(!covers(&der, "a.ssh.tes"), "prefix must not match");
        assert!(!covers(&der, "10.0.0.1"));
        server_config(m).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = generate(&names_of(&[])).unwrap();
        let (_, other_key) = generate(&names_of(&[])).unwrap();
        let m = parse(cert.as_bytes(), other_key.as_bytes(), Path::new("mem")).unwrap();
        assert!(server_config(m).is_err());
    }

    #[test]
    fn install_keeps_usable_files_and_replaces_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let n = names_of(&["a.ssh.test"]);
        assert_eq!(install(d, &n, true).unwrap(), Origin::Generated);
        let mode = fs::metadata(d.join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read(d.join(CERT_FILE)).unwrap();
        assert_eq!(install(d, &n, true).unwrap(), Origin::Kept);
        assert_eq!(fs::read(d.join(CERT_FILE)).unwrap(), first);

        // A new name replaces the certificate.
        let more = names_of(&["a.ssh.test", "b.ssh.test"]);
        assert_eq!(install(d, &more, false).unwrap(), Origin::Generated);
        assert_ne!(fs::read(d.join(CERT_FILE)).unwrap(), first);
        let mode = fs::metadata(d.join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644, "hand-off mode");
        assert_eq!(make_private(d).unwrap(), Privacy::Chmodded);
        assert_eq!(make_private(d).unwrap(), Privacy::AlreadyPrivate);

        // Garbage, or a key that is not the certificate's, is replaced.
        fs::write(d.join(KEY_FILE), "garbage").unwrap();
        assert_eq!(install(d, &more, true).unwrap(), Origin::Generated);
        let (_, other) = generate(&more).unwrap();
        fs::write(d.join(KEY_FILE), other).unwrap();
        assert_eq!(install(d, &more, true).unwrap(), Origin::Generated);
        server_config(load(d).unwrap()).unwrap();
    }
}
