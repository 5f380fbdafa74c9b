//! SSH inside TLS (`serve --tls-listen`, default 0.0.0.0:2443): an HTTPS ingress routes the
//! connection by SNI without terminating it, we end the TLS here and hand the decrypted stream
//! to the same SSH code path as the plain listener. The SSH host key stays the trust anchor.
//!
//! Nothing here may take the plain listener down: every failure is logged and only the TLS
//! side stops (or, for a bad certificate, runs on one made in memory).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use session_ssh_contract::argv::flag;
use session_ssh_contract::tcp::QuickAck;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::serve::handler::policy::ConnInfo;
use crate::tlscert;

/// Default TLS listen address (the pod port named `session-ssh-tls`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:2443";

/// The decrypted stream handed to the SSH code path.
pub type Stream = tokio_rustls::server::TlsStream<QuickAck<TcpStream>>;

/// Errors that stop the TLS listener (never the server).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no usable TLS certificate: {0}")]
    Cert(#[from] tlscert::Error),
    #[error("--tls-listen: {0:?} is neither ADDR:PORT nor \"off\"")]
    Parse(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `--tls-listen` value: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsListen(pub Option<SocketAddr>);

impl FromStr for TlsListen {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "off" | "none" | "" => Ok(TlsListen(None)),
            t => t
                .parse()
                .map(|a| TlsListen(Some(a)))
                .map_err(|_| Error::Parse(s.to_string())),
        }
    }
}

impl fmt::Display for TlsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

/// `serve` flags for the TLS listener.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOpts {
    /// Address and port for SSH wrapped in TLS (routed by SNI through an ingress), or `off`.
    /// Uses DIR/tls.crt and DIR/tls.key (made by install; else one is made in memory).
    #[arg(long = flag::TLS_LISTEN, env = "INIT_SSHD_TLS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub tls_listen: TlsListen,
    /// Seconds a client may take for the TLS handshake.
    #[arg(long, env = "INIT_SSHD_TLS_HANDSHAKE_SECS", default_value_t = 10)]
    pub tls_handshake_secs: u64,
}

/// DIR's certificate, or (missing, unreadable, mismatching) a fresh one that is also written
/// back for the next start when DIR allows it.
fn acceptor(dir: &Path) -> Result<TlsAcceptor> {
    match tlscert::make_private(dir) {
        Ok(p) => tracing::debug!(outcome = ?p, "TLS key is private to this user"),
        Err(e) => tracing::debug!(error = %e, "TLS key not made private"),
    }
    let config = match tlscert::load(dir).and_then(tlscert::server_config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "TLS certificate unusable; making one in memory");
            let names = tlscert::names(tlscert::hostname().as_deref(), &[]);
            let (cert, key) = tlscert::generate(&names)?;
            let material = tlscert::parse(cert.as_bytes(), key.as_bytes(), Path::new("memory"))?;
            if let Err(e) = tlscert::save(dir, &cert, &key, 0o600) {
                tracing::debug!(error = %e, "in-memory TLS certificate not saved");
            }
            tlscert::server_config(material)?
        }
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Run the TLS listener until the process ends. `handoff` is serve's per-connection SSH path;
/// `slots` is the connection limit shared with the plain listener. Returns at once when TLS
/// is off, and with an error when it cannot start (no certificate at all, port taken).
pub async fn serve<F, Fut>(
    opts: TlsOpts,
    dir: PathBuf,
    slots: Arc<Semaphore>,
    handoff: F,
) -> Result<()>
where
    F: Fn(Stream, SocketAddr, Option<ConnInfo>, OwnedSemaphorePermit) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(addr) = opts.tls_listen.0 else {
        tracing::info!("TLS listener off");
        return Ok(());
    };
    let acceptor = acceptor(&dir)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(tls_listen = %local, "serving SSH inside TLS");
    let handshake = Duration::from_secs(opts.tls_handshake_secs.max(1));
    let handoff = Arc::new(handoff);
    loop {
        let (sock, peer, permit) = super::accept(&listener, &slots, true).await;
        let acceptor = acceptor.clone();
        let handoff = handoff.clone();
        tokio::spawn(async move {
            let info = sock.local_addr().ok().map(|local| ConnInfo { peer, local });
            let sock = QuickAck::new(sock);
            let stream = match tokio::time::timeout(handshake, acceptor.accept(sock)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, secs = handshake.as_secs(), "TLS handshake timed out");
                    return;
                }
            };
            let (_, conn) = stream.get_ref();
            tracing::info!(
                %peer,
                sni = conn.server_name().unwrap_or("-"),
                version = ?conn.protocol_version(),
                "TLS connection; SSH follows"
            );
            handoff(stream, peer, info, permit).await;
        });
    }
}

/// [`serve`], with its end logged: a TLS failure never ends the process.
pub async fn serve_logged<F, Fut>(opts: TlsOpts, dir: PathBuf, slots: Arc<Semaphore>, handoff: F)
where
    F: Fn(Stream, SocketAddr, Option<ConnInfo>, OwnedSemaphorePermit) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Err(e) = serve(opts, dir, slots, handoff).await {
        tracing::error!(error = %e, "TLS listener not running; plain SSH is unaffected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        let a: TlsListen = "127.0.0.1:2443".parse().unwrap();
        assert_eq!(a.0, Some("127.0.0.1:2443".parse().unwrap()));
        assert_eq!(a.to_string(), "127.0.0.1:2443");
        assert_eq!("off".parse::<TlsListen>().unwrap(), TlsListen(None));
        assert_eq!(TlsListen(None).to_string(), "off");
        assert!("2443".parse::<TlsListen>().is_err());
        assert!("example.org:443".parse::<TlsListen>().is_err());
    }

    #[test]
    fn a_missing_certificate_is_made_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        acceptor(dir.path()).unwrap();
        assert!(dir.path().join(tlscert::CERT_FILE).is_file());
        tlscert::server_config(tlscert::load(dir.path()).unwrap()).unwrap();
    }
}
