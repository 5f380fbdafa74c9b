//! `session-ssh-gateway`: one SSH entrance for every session (`ssh alice@ssh.hub.org`).
//!
//! - `route`: which session a login name means, per platform preset (pure);
//! - `index`: injected session pods by login name, kept from pod watches;
//! - `upstream`: the leg to a session (host key pinned, passport login, channels it opens);
//! - `hub`: hub-token logins (JupyterHub preset, optional): who owns a token;
//! - `server`: the user's leg (a russh `Handler` that asks the session for every decision);
//! - `pump`: one channel relayed both ways with end-to-end flow control;
//! - `metrics`: Prometheus counters and the health endpoints;
//! - `listen`, `limits`, `tls`: accepting clients within caps, plain SSH or SSH inside TLS
//!   on one port; `cli`: the flags.

pub mod cli;
pub mod hub;
pub mod index;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod pump;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use russh::{MethodKind, MethodSet};
use tokio::sync::Semaphore;

use crate::cli::Cli;
use crate::index::Index;
use crate::limits::Failures;
use crate::listen::Listener;
use crate::server::Shared;
use crate::upstream::Minter;

/// Errors that stop the gateway at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Key {
        file: String,
        source: russh::keys::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("TLS certificate: {0}")]
    Tls(#[from] crate::tls::Error),
    #[error(transparent)]
    Hub(#[from] crate::hub::Error),
    #[error("--hub-api-url: hub-token logins need --preset jupyterhub")]
    HubPreset,
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn load_key(path: &std::path::Path) -> Result<russh::keys::PrivateKey> {
    russh::keys::load_secret_key(path, None).map_err(|source| Error::Key {
        file: path.display().to_string(),
        source,
    })
}

/// The server side's russh configuration.
/// The host certificate to present, if `--host-cert` names a usable one (read at start).
fn host_certificate(
    cli: &Cli,
    host_key: &russh::keys::PrivateKey,
) -> Vec<russh::keys::Certificate> {
    let Some(path) = &cli.host_cert else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The manifests mount an optional Secret: no file is the usual "no host CA".
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "no host certificate; serving the plain host key");
            return Vec::new();
        }
    };
    let checked = session_ssh_contract::keys::host_certificate(&text, host_key.public_key(), now);
    match checked {
        Ok(cert) => {
            tracing::info!(path = %path.display(), principals = ?cert.valid_principals(), valid_before = cert.valid_before(), "host certificate loaded");
            vec![cert]
        }
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "host certificate ignored; serving the plain host key");
            Vec::new()
        }
    }
}

fn server_config(cli: &Cli, host_key: russh::keys::PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::KeyboardInteractive);
    if cli.hub_api_url.is_some() {
        methods.push(MethodKind::Password);
    }
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-session-ssh-gateway")),
        methods,
        // Every refusal takes this long, whatever refused it (no user-name oracle).
        auth_rejection_time: Duration::from_millis(cli.rejection_ms),
        auth_rejection_time_initial: Some(Duration::ZERO),
        certificates: host_certificate(cli, &host_key),
        keys: vec![host_key],
        window_size: 2 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        preferred: session_ssh_contract::algorithms::preferred(),
        max_auth_attempts: 10,
        keepalive_interval: Some(Duration::from_secs(cli.keepalive_secs.max(1))),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    }
}

/// The session side's russh configuration.
fn client_config(cli: &Cli) -> russh::client::Config {
    russh::client::Config {
        window_size: 2 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        preferred: session_ssh_contract::algorithms::preferred_client(),
        keepalive_interval: Some(Duration::from_secs(cli.keepalive_secs.max(1))),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    }
}

/// Load the keys, start watching pods, serve until stopped.
pub async fn run(cli: Cli) -> Result<()> {
    let host_key = load_key(&cli.host_key)?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
        _ => None,
    };
    let ca = load_key(&cli.user_ca)?;
    let hub = match &cli.hub_api_url {
        Some(_) if cli.preset != crate::route::Preset::Jupyterhub => return Err(Error::HubPreset),
        Some(url) => Some(crate::hub::HubApi::new(
            url,
            Duration::from_secs(cli.upstream_timeout_secs.max(1)),
        )?),
        None => None,
    };
    let client = kube::Client::try_default().await?;
    let index = Index::new(cli.preset);
    tokio::spawn(index.clone().run(client, cli.namespaces.clone()));
    if let Some(addr) = cli.metrics_listen.0 {
        let index = index.clone();
        tokio::spawn(crate::metrics::serve(addr, move || index.len()));
    }
    let shared = Arc::new(Shared {
        index,
        minter: Minter {
            ca,
            config: Arc::new(client_config(&cli)),
            timeout: Duration::from_secs(cli.upstream_timeout_secs.max(1)),
        },
        hint: cli
            .hint
            .clone()
            .unwrap_or_else(|| cli.preset.hint().to_owned()),
        failures: Failures::new(cli.max_failures_per_minute),
        hub,
    });
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cli.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(cli.listen);
    tracing::info!(listen = %local, preset = ?cli.preset, namespaces = ?cli.namespaces, tls = cli.tls_cert.is_some(), hub_token_login = cli.hub_api_url.is_some(), "gateway serving");
    let l = Arc::new(Listener {
        shared,
        config: Arc::new(server_config(&cli, host_key)),
        grace: Duration::from_secs(cli.login_grace_secs.max(1)),
        connections: Arc::new(Semaphore::new(cli.max_connections.max(1))),
        startups: session_ssh_contract::startups::Startups::new(cli.max_startups),
        tls,
    });
    l.run(listener).await;
    Ok(())
}
