//! `session-ssh-webhook serve`: the HTTPS admission listener and the plain-HTTP
//! health/metrics listener, with graceful shutdown on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::admission::{self, AppState};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::prepull::PrePull;
use crate::selfcert::{self, SelfTlsArgs};
use crate::tls::{self, CertReloader};

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// Self-managed certificate mode failed to get a certificate.
    #[error(transparent)]
    SelfCert(#[from] selfcert::Error),
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Installing the signal handler failed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// `--init-image-daemonset` is malformed.
    #[error("{0}")]
    PrePull(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// `serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Config file (YAML; the ConfigMap in the cluster).
    #[arg(long, env = "SESSION_SSH_CONFIG")]
    pub config: PathBuf,
    /// Serving certificate (PEM, may include the chain). Reloaded when it changes.
    #[arg(long, env = "SESSION_SSH_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Serving private key (PEM). Reloaded when it changes.
    #[arg(long, env = "SESSION_SSH_TLS_KEY")]
    pub tls_key: PathBuf,
    /// HTTPS address of the admission endpoint (POST /mutate).
    #[arg(long, env = "SESSION_SSH_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "SESSION_SSH_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// How often the certificate files are checked for changes, in seconds.
    #[arg(long, env = "SESSION_SSH_TLS_RELOAD_SECONDS", default_value_t = 5)]
    pub tls_reload_seconds: u64,
    /// On SIGTERM, keep serving (not ready) this long so endpoints drop the pod before
    /// the listener closes.
    #[arg(long, env = "SESSION_SSH_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,
    /// The init image's pre-pull DaemonSet, `NAMESPACE/NAME` (`manifests/prepull`): while
    /// it is not ready on every node, new pods are admitted without SSH (reason
    /// `init-image-not-ready`), so an image that cannot be pulled never holds a pod in Init.
    #[arg(long, env = "SESSION_SSH_INIT_IMAGE_DAEMONSET")]
    pub init_image_daemonset: Option<String>,
    /// How often that DaemonSet is checked, in seconds.
    #[arg(
        long,
        env = "SESSION_SSH_INIT_IMAGE_CHECK_SECONDS",
        default_value_t = 10
    )]
    pub init_image_check_seconds: u64,
    /// Self-managed certificate mode.
    #[command(flatten)]
    pub self_tls: SelfTlsArgs,
}

/// Run until SIGTERM / SIGINT.
pub async fn run(args: ServeArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    // Per-session Services run beside admission; its failures only log and retry.
    let _controller = crate::controller::spawn(config.clone());
    // Admission creates host-key Secrets with it; without a cluster pods just generate keys.
    let client = match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(err) => {
            warn!(error = %err, "no Kubernetes client; host-key Secrets are not created");
            None
        }
    };
    let _cleanup = client
        .clone()
        .and_then(|c| crate::hostkey::cleanup::spawn(std::sync::Arc::new(config.clone()), c));
    let prepull = match &args.init_image_daemonset {
        Some(spec) => Some(Arc::new(
            PrePull::new(spec, &config.init_container.image).map_err(Error::PrePull)?,
        )),
        None => None,
    };
    if let (Some(p), Some(c)) = (&prepull, &client) {
        // The first answer before serving: pods admitted at start-up see the real gate.
        let _ = tokio::time::timeout(Duration::from_secs(5), p.check(c)).await;
        let every = Duration::from_secs(args.init_image_check_seconds.max(1));
        tokio::spawn(p.clone().run(c.clone(), every));
    } else if prepull.is_some() {
        warn!("no Kubernetes client: the init image's gate stays closed, pods start without SSH");
    }
    let mut state = AppState::new(config).with_client(client);
    state.prepull = prepull;
    let reloader = CertReloader::new(&args.tls_cert, &args.tls_key, state.metrics.clone());
    // Self-managed mode writes the files before the first load and keeps them fresh.
    let _keeper = if args.self_tls.self_managed_tls {
        Some(selfcert::start(&args.self_tls, &args.tls_cert, &args.tls_key).await?)
    } else {
        None
    };
    reloader.load()?;
    let _watch = reloader.spawn_watch(Duration::from_secs(args.tls_reload_seconds.max(1)));
    let server = Server::bind(args.listen, args.metrics_listen, state, reloader).await?;
    let delay = Duration::from_secs(args.shutdown_delay_seconds);
    server.run(shutdown_signal()?, delay).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    })
}

/// Both listeners, bound and ready to run.
pub struct Server {
    admission: TcpListener,
    metrics: TcpListener,
    state: AppState,
    acceptor: TlsAcceptor,
    ready: Arc<AtomicBool>,
    reloader: Arc<CertReloader>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("admission", &self.admission)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Bind both listeners (use port 0 in tests, then [`Server::local_addr`]).
    pub async fn bind(
        listen: SocketAddr,
        metrics_listen: SocketAddr,
        state: AppState,
        reloader: Arc<CertReloader>,
    ) -> Result<Server> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let admission = bind(listen).await?;
        let metrics = bind(metrics_listen).await?;
        let acceptor = TlsAcceptor::from(tls::server_config(reloader.clone())?);
        Ok(Server {
            admission,
            metrics,
            state,
            acceptor,
            ready: Arc::new(AtomicBool::new(false)),
            reloader,
        })
    }

    /// The HTTPS admission address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.admission.local_addr().ok()
    }

    /// The health/metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.local_addr().ok()
    }

    /// Serve until `shutdown` resolves; then report not-ready, wait `drain_delay`, stop
    /// accepting, let in-flight requests finish (bounded), and return.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain_delay: Duration) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let health = HealthState {
            ready: self.ready.clone(),
            reloader: self.reloader.clone(),
            metrics: self.state.metrics.clone(),
        };
        let metrics_addr = self
            .metrics
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        let metrics_task = tokio::spawn(serve_metrics(self.metrics, health, stop_rx.clone()));
        let router = admission::router(self.state);
        self.ready.store(true, Ordering::SeqCst);
        let show = |l: &TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        info!(
            listen = %show(&self.admission),
            metrics_listen = %metrics_addr,
            "admission webhook listening (HTTPS, h2 + http/1.1)"
        );

        let mut conns = JoinSet::new();
        let mut stop_accepting = stop_rx.clone();
        let accept = async {
            loop {
                tokio::select! {
                    _ = stop_accepting.changed() => break,
                    accepted = self.admission.accept() => match accepted {
                        Ok((tcp, peer)) => {
                            let _ = tcp.set_nodelay(true);
                            conns.spawn(connection(
                                tcp, peer, self.acceptor.clone(), router.clone(), stop_rx.clone(),
                            ));
                        }
                        // EMFILE and friends: back off instead of spinning.
                        Err(err) => {
                            warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
                while conns.try_join_next().is_some() {}
            }
        };
        let ready = self.ready.clone();
        let initiate = async {
            shutdown.await;
            ready.store(false, Ordering::SeqCst);
            tokio::time::sleep(drain_delay).await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(accept, initiate);
        drop(self.admission);
        // Connections got the stop signal and finish their in-flight requests.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                open = conns.len(),
                "connections still open after 10 s; closing"
            );
            conns.abort_all();
        }
        let _ = metrics_task.await;
        info!("stopped");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_concurrent_streams(256);
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                debug!(%peer, error = %err, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            // HTTP/2 GOAWAY or HTTP/1 close-after-response; in-flight requests finish.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

#[derive(Clone)]
struct HealthState {
    ready: Arc<AtomicBool>,
    reloader: Arc<CertReloader>,
    metrics: Arc<Metrics>,
}

/// The health/metrics router (plain HTTP, on the metrics port).
fn health_router(health: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<HealthState>) -> impl IntoResponse {
    if h.ready.load(Ordering::SeqCst) && h.reloader.is_loaded() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(h): State<HealthState>) -> impl IntoResponse {
    match h.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn serve_metrics(
    listener: TcpListener,
    health: HealthState,
    mut stop: watch::Receiver<bool>,
) {
    let app = health_router(health);
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(err) = res {
        warn!(error = %err, "metrics listener failed");
    }
}
