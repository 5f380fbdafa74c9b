//! Accepting clients: connection caps, the per-source failure limit, the login grace time,
//! then one russh server session per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use session_ssh_contract::grace;
use session_ssh_contract::startups::{Startup, Startups};
use session_ssh_contract::tcp::{Cut, Cuttable, QuickAck};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::server::{Conn, Shared};

/// What the accept loop needs.
pub struct Listener {
    pub shared: Arc<Shared>,
    pub config: Arc<russh::server::Config>,
    pub grace: Duration,
    pub connections: Arc<Semaphore>,
    pub startups: Arc<Startups>,
    /// SSH inside TLS, when a certificate is configured.
    pub tls: Option<TlsAcceptor>,
}

impl Listener {
    /// Accept forever.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        let ids = AtomicU64::new(0);
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.shared.failures.blocked(peer.ip()) {
                tracing::info!(event = "refused", client = %peer, reason = "too many failed logins");
                continue;
            }
            let Ok(slot) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(event = "refused", client = %peer, reason = "connection limit");
                continue;
            };
            let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
            crate::metrics::get()
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            // Cuttable from the start, so that eviction ends this connection at any stage (a
            // connection evicted while sniffed goes at its first read, within the sniff
            // time). Admitted here, in accept order: a spawned task may run after one
            // accepted later, and the oldest must be the first connected.
            let (sock, cut) = Cuttable::new(QuickAck::new(sock));
            let (startup, evicted) = self.startups.admit(id, cut.clone());
            crate::metrics::get()
                .startups_evicted
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            for old in evicted {
                tracing::warn!(conn = id, client = %peer, evicted = old.id, evicted_age_ms = old.age.as_millis() as u64, "max-startups reached: cut the oldest connection not logged in");
            }
            tokio::spawn(self.clone().unwrap(sock, peer, id, (slot, startup, cut)));
        }
    }

    /// Plain SSH, or SSH inside TLS: the first byte decides.
    async fn unwrap(
        self: Arc<Self>,
        sock: Cuttable<QuickAck<TcpStream>>,
        peer: SocketAddr,
        id: u64,
        stages: (OwnedSemaphorePermit, Startup, Cut),
    ) {
        match (crate::tls::sniff(sock.get_ref().get_ref()).await, &self.tls) {
            (crate::tls::Wire::Ssh, _) => self.clone().serve(sock, peer, id, stages).await,
            (crate::tls::Wire::Tls, Some(acceptor)) => {
                let accepted = tokio::time::timeout(self.grace, acceptor.accept(sock)).await;
                match accepted {
                    Ok(Ok(stream)) => self.clone().serve(stream, peer, id, stages).await,
                    Ok(Err(e)) => {
                        tracing::info!(conn = id, client = %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::info!(conn = id, client = %peer, "TLS handshake timed out"),
                }
            }
            (crate::tls::Wire::Tls, None) => {
                tracing::info!(conn = id, client = %peer, "TLS from a client, but no certificate configured; closed");
            }
        }
    }

    async fn serve<S>(
        self: Arc<Self>,
        sock: S,
        peer: SocketAddr,
        id: u64,
        (_slot, startup, cut): (OwnedSemaphorePermit, Startup, Cut),
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let m = crate::metrics::get();
        m.connections_open.fetch_add(1, Ordering::Relaxed);
        let _open = OnDrop(|| {
            m.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
        let (tx, logged_in) = watch::channel(false);
        let handler = Conn::new(self.shared.clone(), id, peer, tx);
        let deadline = tokio::time::Instant::now() + self.grace;
        // The grace time also bounds the version exchange, which russh does not.
        let session = match tokio::time::timeout_at(
            deadline,
            russh::server::run_stream(self.config.clone(), sock, handler),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(conn = id, client = %peer, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(conn = id, client = %peer, "no SSH handshake within the login grace time");
                return;
            }
        };
        let ended = grace::run(session, logged_in, deadline, cut, startup).await;
        if ended.grace_exceeded {
            tracing::info!(conn = id, client = %peer, "login grace time exceeded");
        }
        let result = ended.result;
        match result {
            Ok(()) => tracing::info!(event = "closed", conn = id, client = %peer),
            Err(e) => tracing::info!(event = "closed", conn = id, client = %peer, error = %e),
        }
    }
}

/// Runs a closure when dropped (the open-connections gauge on every way out).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
