//! `init-sshd serve`: load the host key, listen, and run one russh session
//! per accepted connection, within the connection limit and login grace time.

pub mod activity;
pub mod audit;
pub mod channel;
pub mod connctx;
pub mod handler;
pub mod keysync;
pub mod memory;
pub mod metrics;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use session_ssh_contract::argv::flag;
use session_ssh_contract::grace;
use session_ssh_contract::names::file;
use session_ssh_contract::startups::Startups;
use session_ssh_contract::tcp::{Cuttable, QuickAck};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::serve::handler::authkeys::KeyStore;
use crate::serve::handler::config::Limits;
use crate::serve::handler::hostcert::ConfigStore;
use crate::serve::handler::policy::ConnInfo;
use crate::serve::handler::{Conn, Shared};
use crate::user::User;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("host key {path}: {source}")]
    HostKey {
        path: PathBuf,
        source: russh::keys::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options of `init-sshd serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOpts {
    /// Directory written by `install`: authorized_keys, ssh_host_ed25519_key.
    #[arg(long = flag::DIR, env = "INIT_SSHD_DIR")]
    pub dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long = flag::LISTEN, env = "INIT_SSHD_LISTEN", default_value = "0.0.0.0:2222")]
    pub listen: SocketAddr,
    /// Concurrent connections; more are closed at once.
    #[arg(long, env = "INIT_SSHD_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a connection may take to authenticate.
    #[arg(long, env = "INIT_SSHD_LOGIN_GRACE_SECS", default_value_t = 60)]
    pub login_grace_secs: u64,
    /// Connections not yet authenticated (OpenSSH MaxStartups); a new one beyond it evicts
    /// the oldest, so silent or slow peers cannot lock the user out.
    #[arg(long, env = "INIT_SSHD_MAX_STARTUPS", default_value_t = 10)]
    pub max_startups: usize,
    /// Seconds a connection may take to send its SSH version line (at most the login grace
    /// time): silent peers go long before the grace time.
    #[arg(long, env = "INIT_SSHD_VERSION_TIMEOUT_SECS", default_value_t = 10)]
    pub version_timeout_secs: u64,
    /// Signed authentication attempts per connection.
    #[arg(long, env = "INIT_SSHD_MAX_AUTH_TRIES", default_value_t = 6)]
    pub max_auth_tries: usize,
    /// Close connections with no traffic for this many seconds (0: never). Keepalive
    /// replies count as traffic, so setting this turns keepalives off: an idle
    /// or dead client is then dropped after this time.
    #[arg(long, env = "INIT_SSHD_IDLE_TIMEOUT_SECS", default_value_t = 0)]
    pub idle_timeout_secs: u64,
    /// Keepalive interval in seconds.
    #[arg(long, env = "INIT_SSHD_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,
    /// Unanswered keepalives that drop the connection (at the next interval; 0: never).
    #[arg(long, env = "INIT_SSHD_KEEPALIVE_COUNT", default_value_t = 4)]
    pub keepalive_count: usize,
    /// Host certificate (OpenSSH `-cert.pub`) presented to clients that trust a host CA;
    /// re-read when it changes, ignored unless it certifies the host key. Default
    /// DIR/host-cert/ssh_host_ed25519_key-cert.pub (where the webhook mounts it).
    #[arg(long = flag::HOST_CERT, env = "INIT_SSHD_HOST_CERT")]
    pub host_cert: Option<PathBuf>,
    /// SSH inside TLS (issue 6): --tls-listen, --tls-handshake-secs.
    #[command(flatten)]
    pub tls: crate::serve::tls::TlsOpts,
    /// Seconds between re-reads of the key sources (the Secret, the annotation, the repo
    /// files, ~/.ssh/authorized_keys); a removed key is refused after at most this (0: never).
    #[arg(long, env = "INIT_SSHD_KEYS_REFRESH_SECS", default_value_t = 20)]
    pub keys_refresh_secs: u64,
    /// Shells kept after a dropped connection: --detached-keep-secs, -max, -buffer-bytes.
    #[command(flatten)]
    pub detach: crate::serve::channel::detach::DetachOpts,
    /// Logins through the SSH gateway: --gateway-ca, --gateway-principal.
    #[command(flatten)]
    pub gateway: crate::serve::handler::passport::GatewayOpts,
    /// Login audit lines in the container log too: --audit-log.
    #[command(flatten)]
    pub audit: crate::serve::audit::AuditOpts,
    /// SSH activity reported to JupyterHub: --activity-interval-secs, --activity-counts.
    #[command(flatten)]
    pub activity: crate::serve::activity::ActivityOpts,
    /// Prometheus metrics and /healthz: --metrics-listen.
    #[command(flatten)]
    pub metrics: crate::serve::metrics::MetricsOpts,
}

impl ServeOpts {
    fn limits(&self) -> Limits {
        Limits {
            max_auth_attempts: self.max_auth_tries.max(1),
            idle_timeout: (self.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.idle_timeout_secs)),
            keepalive_interval: (self.idle_timeout_secs == 0)
                .then(|| Duration::from_secs(self.keepalive_secs.max(1))),
            keepalive_max: self.keepalive_count,
            ..Limits::default()
        }
    }
}

/// Run the server until the process is stopped.
pub async fn run(opts: ServeOpts) -> Result<()> {
    let server = Arc::new(Server::load(&opts)?);
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(opts.listen);
    keysync::spawn(
        &opts.dir,
        &server.shared.user.home,
        Duration::from_secs(opts.keys_refresh_secs),
    );
    tracing::info!(listen = %local, host_key = %server.host_fp, max_connections = opts.max_connections, "serving");
    activity::spawn(&opts.activity);
    metrics::spawn(&opts.metrics);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    {
        // The TLS listener runs next to this one; its failures are only logged.
        let server = server.clone();
        let handoff = move |stream, peer, info, permit| {
            let conn = server.accepted(peer, info, permit);
            tracing::info!(conn = conn.id, %peer, tls = true, "connection");
            server.clone().run_connection(stream, conn)
        };
        tokio::spawn(crate::serve::tls::serve_logged(
            opts.tls.clone(),
            opts.dir.clone(),
            slots.clone(),
            handoff,
        ));
    }
    loop {
        let (sock, peer, permit) = accept(&listener, &slots, false).await;
        let info = sock.local_addr().ok().map(|local| ConnInfo { peer, local });
        let conn = server.accepted(peer, info, permit);
        tracing::info!(conn = conn.id, %peer, "connection");
        // No Nagle, no delayed ACK (run_stream sets neither): see contract::tcp.
        tokio::spawn(server.clone().run_connection(QuickAck::new(sock), conn));
    }
}

/// The next connection that gets a place under --max-connections (plain or TLS listener):
/// accept errors (EMFILE and friends) back off instead of spinning; a connection over the
/// limit is closed at once.
pub(crate) async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    tls: bool,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, tls, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => return (sock, peer, permit),
            Err(_) => tracing::warn!(%peer, tls, "connection limit reached; closed"),
        }
    }
}

/// What every connection of one server shares.
pub(crate) struct Server {
    /// The SSH settings, with the host certificate when there is one.
    config: ConfigStore,
    shared: Arc<Shared>,
    gate: LoginGate,
    ids: AtomicU64,
    host_fp: russh::keys::ssh_key::Fingerprint,
}

/// One accepted connection, before SSH starts on it.
pub(crate) struct Accepted {
    id: u64,
    peer: SocketAddr,
    info: Option<ConnInfo>,
    /// Its place under --max-connections, held until it ends.
    _slot: OwnedSemaphorePermit,
    /// Counted as open until it ends.
    _open: metrics::OpenConnection,
}

/// Bounds on the time before authentication: the grace time, the shorter time to the
/// client's version line, and the connections that may be in it at once.
struct LoginGate {
    grace: Duration,
    version: Duration,
    startups: Arc<Startups>,
}

impl Server {
    /// The host key, the SSH settings and the shared session state from `DIR`.
    fn load(opts: &ServeOpts) -> Result<Server> {
        let key_path = opts.dir.join(file::HOST_KEY);
        let host_key =
            russh::keys::load_secret_key(&key_path, None).map_err(|source| Error::HostKey {
                path: key_path.clone(),
                source,
            })?;
        let host_fp = host_key
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256);
        let cert_path = opts
            .host_cert
            .clone()
            .unwrap_or_else(|| opts.dir.join(file::HOST_CERT_DIR).join(file::HOST_CERT));
        tracing::debug!(host_cert = %cert_path.display(), "host certificate file (used when present)");
        Ok(Server {
            config: ConfigStore::new(host_key, opts.limits(), cert_path),
            shared: Arc::new(Shared {
                keys: KeyStore::new(opts.dir.join(file::AUTHORIZED_KEYS)),
                user: User::current(),
                runtime_dir: crate::serve::channel::agent::runtime_dir(&opts.dir),
                shells: Arc::new(crate::serve::channel::detach::Registry::new(
                    opts.detach.settings(),
                )),
                gateway: opts.gateway.trust(),
                audit: opts.audit.open(),
                max_auth_tries: opts.limits().max_auth_attempts,
            }),
            gate: LoginGate {
                grace: Duration::from_secs(opts.login_grace_secs.max(1)),
                version: Duration::from_secs(opts.version_timeout_secs.max(1)),
                startups: Startups::new(opts.max_startups),
            },
            ids: AtomicU64::new(0),
            host_fp,
        })
    }

    fn accepted(
        &self,
        peer: SocketAddr,
        info: Option<ConnInfo>,
        slot: OwnedSemaphorePermit,
    ) -> Accepted {
        Accepted {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            info,
            _slot: slot,
            _open: metrics::get().connection(),
        }
    }

    /// The SSH part of one connection, for any byte stream (plain TCP, or TLS).
    async fn run_connection<S>(self: Arc<Self>, sock: S, conn: Accepted)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (id, peer) = (conn.id, conn.peer);
        let grace = self.gate.grace;
        // russh keeps the socket in a task of its own: a peer stalled inside the key
        // exchange would outlive the grace time unless the stream can be cut (at the grace
        // time, or when a newer connection evicts this one from a full startup table).
        let (sock, cut) = Cuttable::new(sock);
        let (startup, evicted) = self.gate.startups.admit(id, cut.clone());
        for old in evicted {
            metrics::get().startup_evicted();
            tracing::warn!(
                conn = id,
                evicted = old.id,
                evicted_age_ms = old.age.as_millis() as u64,
                "max-startups reached: cut the oldest connection not logged in"
            );
        }
        let (authed_tx, authed) = watch::channel(false);
        let handler = Conn::new(self.shared.clone(), id, conn.info, authed_tx);
        // russh waits for the client's version line without a bound: a silent TCP peer
        // would hold a startup place until the grace time.
        let deadline = tokio::time::Instant::now() + grace;
        let version = self.gate.version.min(grace);
        let ssh = russh::server::run_stream(self.config.current(), sock, handler);
        let session = match tokio::time::timeout(version, ssh).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(conn = id, %peer, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(conn = id, %peer, secs = version.as_secs(), "no SSH version line in time");
                metrics::get().auth_failure(metrics::Reason::GraceTime);
                return;
            }
        };
        let ended = grace::run(session, authed, deadline, cut, startup).await;
        if ended.grace_exceeded {
            tracing::info!(conn = id, %peer, grace_secs = grace.as_secs(), "login grace time exceeded");
            metrics::get().auth_failure(metrics::Reason::GraceTime);
        }
        let result = ended.result;
        match result {
            Ok(()) => tracing::info!(conn = id, %peer, "connection closed"),
            Err(e) => tracing::info!(conn = id, %peer, error = %e, "connection ended"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: ServeOpts,
    }

    fn parse(args: &[&str]) -> ServeOpts {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
            .opts
    }

    #[test]
    fn defaults() {
        let o = parse(&["--dir", "/d"]);
        assert_eq!(o.listen, "0.0.0.0:2222".parse().unwrap());
        let l = o.limits();
        assert_eq!(l.keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(l.idle_timeout, None);
        assert_eq!(l.max_auth_attempts, 6);
        assert_eq!(l.keepalive_max, 4);
        assert_eq!(o.version_timeout_secs, 10);
        assert_eq!(o.host_cert, None);
    }

    #[test]
    fn keepalive_count_is_the_russh_maximum() {
        let l = parse(&["--dir", "/d", "--keepalive-count", "2"]).limits();
        assert_eq!(l.keepalive_max, 2);
    }

    #[test]
    fn idle_timeout_replaces_keepalive() {
        let l = parse(&["--dir", "/d", "--idle-timeout-secs", "600"]).limits();
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(l.keepalive_interval, None);
    }
}
