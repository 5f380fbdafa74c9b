//! SSH inside TLS on the same port as plain SSH: the first byte tells them apart (a TLS
//! ClientHello starts with 0x16, an SSH client with `S`), so one Service can publish the
//! gateway on 22 and on 443, and a TLS-passthrough route can carry it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Errors loading the certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: no {what} in it")]
    Missing { file: String, what: &'static str },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long to wait for a client's first byte before speaking SSH first (clients that
/// wait for the server's version line get it after this).
const SNIFF: Duration = Duration::from_millis(1500);

/// What a new connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Ssh,
    Tls,
}

/// Looks at the first byte without taking it.
pub async fn sniff(sock: &TcpStream) -> Wire {
    let mut b = [0u8; 1];
    match tokio::time::timeout(SNIFF, sock.peek(&mut b)).await {
        Ok(Ok(n)) => classify(&b[..n]),
        _ => Wire::Ssh,
    }
}

/// What the first bytes a client sent say it speaks (none yet: SSH, whose clients may
/// wait for the server's version line). Pure, so the fuzz target `demux` drives it too.
pub fn classify(first: &[u8]) -> Wire {
    match first.first() {
        Some(&TLS_HANDSHAKE) => Wire::Tls,
        _ => Wire::Ssh,
    }
}

/// A TLS acceptor from PEM files (a certificate chain and its key).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::Read {
            file: p.display().to_string(),
            source,
        })
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::Missing {
            file: cert.display().to_string(),
            what: "certificate",
        });
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| Error::Missing {
            file: key.display().to_string(),
            what: "private key",
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_decides() {
        assert_eq!(classify(&[]), Wire::Ssh, "a silent client gets SSH first");
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Wire::Ssh);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Wire::Tls);
        assert_eq!(
            classify(&[0x17, 0x03, 0x03]),
            Wire::Ssh,
            "only a handshake starts TLS"
        );
    }
}
