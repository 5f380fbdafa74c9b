//! The explicit russh server configuration: limits and algorithm lists.
//!
//! Everything is spelled out instead of relying on russh defaults, because
//! the defaults change between releases and some are wrong for us (no
//! TCP_NODELAY, no keepalive, no AES-GCM, SHA-1 RSA signatures accepted).

use std::borrow::Cow;
use std::time::Duration;

use russh::keys::{Certificate, PrivateKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet};
pub use session_ssh_contract::algorithms::user_key_algorithm_allowed;

/// Tunables of the server, with OpenSSH-like defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Delay before every authentication rejection (hides which keys exist).
    pub auth_rejection_time: Duration,
    /// Signed auth attempts per connection (OpenSSH MaxAuthTries is 6).
    pub max_auth_attempts: usize,
    /// Close a connection with no traffic at all for this long (None: never).
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive after this much silence from the client (None: never).
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is dropped.
    pub keepalive_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_rejection_time: Duration::from_millis(300),
            max_auth_attempts: 6,
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
        }
    }
}

/// Build the russh configuration around the host key and its certificates (presented
/// only to clients that ask for a certificate algorithm).
pub fn build(host_key: PrivateKey, limits: &Limits, certificates: Vec<Certificate>) -> Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-init-sshd")),
        methods,
        auth_rejection_time: limits.auth_rejection_time,
        // The client's first "none" probe is not a guess; answer at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        certificates,
        limits: russh::Limits::default(),
        // 2 MiB window and 32 KiB packets, like OpenSSH.
        window_size: 2 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        channel_buffer_size: 100,
        event_buffer_size: 64,
        preferred: session_ssh_contract::algorithms::preferred(),
        max_auth_attempts: limits.max_auth_attempts,
        inactivity_timeout: limits.idle_timeout,
        keepalive_interval: limits.keepalive_interval,
        keepalive_max: limits.keepalive_max,
        nodelay: true,
    }
}
