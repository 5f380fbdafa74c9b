//! Flags of `session-ssh-gateway`; each is also read from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::route::Preset;

/// `session-ssh-gateway`: one SSH entrance for every session.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Where users connect (the Service maps 22, and 443 for SSH inside TLS, here).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:2222")]
    pub listen: SocketAddr,
    /// The gateway's own host key (OpenSSH private key; a Secret shared by the replicas).
    #[arg(long, env = "GATEWAY_HOST_KEY")]
    pub host_key: PathBuf,
    /// The gateway's host certificate (OpenSSH `-cert.pub`), signed by the platform's host
    /// CA for the gateway's name: clients with the `@cert-authority` line need no line for
    /// the gateway itself. Missing, empty or not for the host key: the plain key (logged).
    #[arg(long, env = "GATEWAY_HOST_CERT")]
    pub host_cert: Option<PathBuf>,
    /// The user CA that signs the per-connection certificates (OpenSSH private key; a
    /// Secret only the gateway reads). Its public half is the webhook's
    /// `gateway.userCaPublicKey`.
    #[arg(long, env = "GATEWAY_USER_CA")]
    pub user_ca: PathBuf,
    /// Certificate (PEM chain) for SSH inside TLS on the same port; without it only plain
    /// SSH is served.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How a login name maps to a session (the webhook's platform preset).
    #[arg(long, env = "GATEWAY_PRESET", value_enum, default_value_t = Preset::Generic)]
    pub preset: Preset,
    /// Namespaces with sessions (repeatable); none: every namespace.
    #[arg(long = "namespace", env = "GATEWAY_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// JupyterHub preset: the hub's REST API (e.g. `http://hub:8081/hub/api`). Set, a user may
    /// log in with a hub API token as the password (keyboard-interactive or password); the
    /// session must allow it too (the webhook's `gateway.hubTokenLogin`). Unset: keys only.
    #[arg(long, env = "GATEWAY_HUB_API_URL")]
    pub hub_api_url: Option<String>,
    /// Shown to every client before it logs in (an SSH banner): the name format and where
    /// to start a stopped server. Default: the preset's.
    #[arg(long, env = "GATEWAY_HINT")]
    pub hint: Option<String>,
    /// Every refused login is answered after this long, whatever refused it, so an
    /// unknown name and a refused key look the same.
    #[arg(long, env = "GATEWAY_REJECTION_MS", default_value_t = 500)]
    pub rejection_ms: u64,
    /// Seconds to connect and log in to a session.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_SECS", default_value_t = 5)]
    pub upstream_timeout_secs: u64,
    /// Seconds a client may take to log in.
    #[arg(long, env = "GATEWAY_LOGIN_GRACE_SECS", default_value_t = 30)]
    pub login_grace_secs: u64,
    /// Connections not yet logged in, across all clients; when full, a new connection
    /// evicts the oldest of them.
    #[arg(long, env = "GATEWAY_MAX_STARTUPS", default_value_t = 256)]
    pub max_startups: usize,
    /// Open connections; more are closed at once.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Failed logins per client address per minute before its connections are closed.
    #[arg(long, env = "GATEWAY_MAX_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub max_failures_per_minute: u32,
    /// Keepalive interval towards clients and sessions, in seconds.
    #[arg(long, env = "GATEWAY_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,
    /// Prometheus /metrics and /healthz, /readyz; `off` disables.
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: Listen,
    /// Log format: one JSON object per line for log collectors, or plain text.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// An address to listen on, or `off` (the same value as init-sshd's `--metrics-listen`).
pub use session_ssh_contract::metrics::Listen;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let base = [
            "session-ssh-gateway",
            "--host-key",
            "/k",
            "--user-ca",
            "/ca",
        ];
        Cli::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn defaults_and_flags_parse() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.metrics_listen,
            Listen(Some("0.0.0.0:9090".parse().unwrap()))
        );
        assert_eq!(c.preset, Preset::Generic);
        let c = parse(&[
            "--metrics-listen",
            "off",
            "--preset",
            "jupyterhub",
            "--namespace",
            "a,b",
        ])
        .unwrap();
        assert_eq!(c.metrics_listen, Listen(None));
        assert_eq!(c.namespaces, ["a", "b"]);
        assert!(parse(&["--metrics-listen", "nope"]).is_err());
        // A certificate needs its key.
        assert!(parse(&["--tls-cert", "/c"]).is_err());
    }
}
