//! SSH metrics of this session's server in the Prometheus text format (`--metrics-listen`,
//! served by the contract's responder: GET /metrics, /healthz): logins by outcome and
//! method, authentication failures by reason, connections, channels by kind, channel bytes,
//! startups evicted, build info.
//!
//! Every label value is a fixed name from the enums below: no user names, key fingerprints
//! or addresses, so the series stay few and a scrape reveals nobody's identity. The counts
//! are process-wide atomics, bumped where the handler already decides (and logs) the same
//! thing; channel bytes come from the activity hook (`serve::activity`), the one place the
//! channel I/O reports data moving.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use session_ssh_contract::argv::flag;
use session_ssh_contract::metrics::{self, Kind, Listen, Response, Sample, Text};

/// Where serve listens for scrapes unless told otherwise: on, because an admin expects a
/// server's metrics without a flag; all addresses, so the cluster's Prometheus can reach it
/// through the pod IP; 9122, a port no session image is known to use (the webhook checks the
/// pod's ports before adding it).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9122";

/// `serve` flag for the metrics endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsOpts {
    /// Address and port for Prometheus metrics (GET /metrics) and /healthz, or `off`. A port
    /// that cannot be bound is logged; SSH goes on without metrics.
    #[arg(long = flag::METRICS_LISTEN, env = "INIT_SSHD_METRICS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub metrics_listen: Listen,
}

/// Start serving the metrics, unless off. Never fails: see [`metrics::serve`].
pub fn spawn(opts: &MetricsOpts) {
    match opts.metrics_listen.0 {
        Some(addr) => {
            tokio::spawn(metrics::serve(addr, |path: &str| match path {
                "/metrics" => Response::ok(get().render()),
                "/healthz" => Response::ok("ok\n"),
                _ => Response::not_found(),
            }));
        }
        None => tracing::info!("metrics off (--metrics-listen off)"),
    }
}

/// How a login was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A plain key from authorized_keys.
    Publickey,
    /// A user certificate from a cert-authority line.
    Certificate,
    /// A per-connection certificate from the SSH gateway.
    Gateway,
}

impl Method {
    const ALL: [Method; 3] = [Method::Publickey, Method::Certificate, Method::Gateway];

    /// The label value (also the `kind` of the login log line).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Publickey => "publickey",
            Method::Certificate => "certificate",
            Method::Gateway => "gateway",
        }
    }
}

/// Why an authentication attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The key is in no authorized_keys line.
    UnknownKey,
    /// The certificate's CA is in no cert-authority line.
    UnknownCa,
    /// The key's line has `from=` and the client's address is not in it.
    FromMismatch,
    /// `expiry-time` passed, or a certificate outside its validity.
    Expired,
    /// A certificate that does not name this user (`principals=`, the certificate's own).
    Principal,
    /// A key type or signature algorithm that is not accepted (SHA-1, DSA, short RSA).
    Algorithm,
    /// A gateway certificate this session does not accept (wrong principal, hub user...).
    Gateway,
    /// The connection used up `--max-auth-tries`.
    TooManyTries,
    /// No login within `--login-grace-secs` (the version line included).
    GraceTime,
    /// Anything else (the log line says what).
    Other,
}

impl Reason {
    const ALL: [Reason; 10] = [
        Reason::UnknownKey,
        Reason::UnknownCa,
        Reason::FromMismatch,
        Reason::Expired,
        Reason::Principal,
        Reason::Algorithm,
        Reason::Gateway,
        Reason::TooManyTries,
        Reason::GraceTime,
        Reason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownKey => "unknown_key",
            Reason::UnknownCa => "unknown_ca",
            Reason::FromMismatch => "from_mismatch",
            Reason::Expired => "expired",
            Reason::Principal => "principal",
            Reason::Algorithm => "algorithm",
            Reason::Gateway => "gateway",
            Reason::TooManyTries => "too_many_tries",
            Reason::GraceTime => "grace_time",
            Reason::Other => "other",
        }
    }

    /// The bounded reason of a refusal the key checks explain in words (the text is for the
    /// log; tests below hold the wording of `contract::keys` to these names).
    pub fn of(text: &str) -> Reason {
        let has = |s: &str| text.contains(s);
        if has("from=") {
            Reason::FromMismatch
        } else if has("CA not in authorized_keys") {
            Reason::UnknownCa
        } else if has("not in authorized_keys") {
            Reason::UnknownKey
        } else if has("expiry-time passed") || has("not valid now") {
            Reason::Expired
        } else if has("principal") {
            Reason::Principal
        } else if has("algorithm") || has("SHA-1") || has("ssh-dss") || has("RSA key of") {
            Reason::Algorithm
        } else if has("gateway") || has("hub token") {
            Reason::Gateway
        } else {
            Reason::Other
        }
    }
}

/// A channel's kind, once known (a session channel is `session` until its request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Session,
    Shell,
    Exec,
    Sftp,
    Attach,
    DirectTcpip,
    DirectStreamlocal,
    ForwardedTcpip,
    Agent,
}

impl Channel {
    const ALL: [Channel; 9] = [
        Channel::Session,
        Channel::Shell,
        Channel::Exec,
        Channel::Sftp,
        Channel::Attach,
        Channel::DirectTcpip,
        Channel::DirectStreamlocal,
        Channel::ForwardedTcpip,
        Channel::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Session => "session",
            Channel::Shell => "shell",
            Channel::Exec => "exec",
            Channel::Sftp => "sftp",
            Channel::Attach => "attach",
            Channel::DirectTcpip => "direct-tcpip",
            Channel::DirectStreamlocal => "direct-streamlocal",
            Channel::ForwardedTcpip => "forwarded-tcpip",
            Channel::Agent => "agent",
        }
    }
}

const fn zeros<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

/// Every count of the process.
#[derive(Debug)]
pub struct Metrics {
    /// By [`Method`], accepted then refused.
    logins: [[AtomicU64; Method::ALL.len()]; 2],
    failures: [AtomicU64; Reason::ALL.len()],
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    channels_open: [AtomicU64; Channel::ALL.len()],
    channels_total: [AtomicU64; Channel::ALL.len()],
    bytes_from_client: AtomicU64,
    bytes_to_client: AtomicU64,
    startups_evicted: AtomicU64,
}

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Held while a connection is open (its count goes down when dropped).
#[derive(Debug)]
pub struct OpenConnection(&'static Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Held while a channel is open (its kind's count goes down when dropped).
#[derive(Debug)]
pub struct OpenChannel(&'static Metrics, Channel);

impl Drop for OpenChannel {
    fn drop(&mut self) {
        self.0.channels_open[self.1 as usize].fetch_sub(1, Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            logins: [zeros(), zeros()],
            failures: zeros(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            channels_open: zeros(),
            channels_total: zeros(),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            startups_evicted: AtomicU64::new(0),
        }
    }

    /// A login that ended with `accepted` or, at the end of a connection that never logged
    /// in, refused (`method`: its last attempt's).
    pub fn login(&self, accepted: bool, method: Method) {
        self.logins[usize::from(!accepted)][method as usize].fetch_add(1, Relaxed);
    }

    /// One refused authentication attempt.
    pub fn auth_failure(&self, reason: Reason) {
        self.failures[reason as usize].fetch_add(1, Relaxed);
    }

    /// A connection was accepted; it counts as open until the guard is dropped.
    pub fn connection(&'static self) -> OpenConnection {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    /// Connections open now, and accepted since the start.
    pub fn connections(&self) -> (u64, u64) {
        (
            self.connections_open.load(Relaxed),
            self.connections_total.load(Relaxed),
        )
    }

    /// A channel of `kind` opened; it counts as open until the guard is dropped.
    pub fn channel(&'static self, kind: Channel) -> OpenChannel {
        self.channels_total[kind as usize].fetch_add(1, Relaxed);
        self.channels_open[kind as usize].fetch_add(1, Relaxed);
        OpenChannel(self, kind)
    }

    /// Channel data from the client (the activity hook calls it).
    pub fn from_client(&self, n: usize) {
        self.bytes_from_client.fetch_add(n as u64, Relaxed);
    }

    /// Channel data to the client (the activity hook calls it).
    pub fn to_client(&self, n: usize) {
        self.bytes_to_client.fetch_add(n as u64, Relaxed);
    }

    /// A connection not yet logged in was cut to make room for a new one (max-startups).
    pub fn startup_evicted(&self) {
        self.startups_evicted.fetch_add(1, Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut t = Text::new();
        t.family(
            "session_ssh_sshd_build_info",
            Kind::Gauge,
            "The init-sshd build serving this session.",
            &[(&[("version", env!("CARGO_PKG_VERSION"))], 1)],
        );
        self.render_logins(&mut t);
        t.single(
            "session_ssh_sshd_connections_open",
            Kind::Gauge,
            "Connections open now.",
            load(&self.connections_open),
        );
        t.single(
            "session_ssh_sshd_connections_total",
            Kind::Counter,
            "Connections accepted.",
            load(&self.connections_total),
        );
        self.render_channels(&mut t);
        t.family(
            "session_ssh_sshd_bytes_total",
            Kind::Counter,
            "Channel data of shells, commands, SFTP and forwards, by direction.",
            &[
                (
                    &[("direction", "from_client")],
                    load(&self.bytes_from_client),
                ),
                (&[("direction", "to_client")], load(&self.bytes_to_client)),
            ],
        );
        t.single(
            "session_ssh_sshd_startups_evicted_total",
            Kind::Counter,
            "Connections not yet logged in, cut to make room for a new one (max-startups).",
            load(&self.startups_evicted),
        );
        t.finish()
    }

    /// Logins by outcome and method, failures by reason.
    fn render_logins(&self, t: &mut Text) {
        let outcomes = [("outcome", "accepted"), ("outcome", "refused")];
        let labels: Vec<[(&str, &str); 2]> = outcomes
            .iter()
            .flat_map(|o| Method::ALL.map(|m| [*o, ("method", m.as_str())]))
            .collect();
        let logins: Vec<Sample<'_>> = labels
            .iter()
            .zip(self.logins.iter().flatten())
            .map(|(l, c)| (&l[..], load(c)))
            .collect();
        t.family(
            "session_ssh_sshd_logins_total",
            Kind::Counter,
            "Logins by outcome and method; refused: a connection that tried and never logged in.",
            &logins,
        );
        let reasons = Reason::ALL.map(|r| [("reason", r.as_str())]);
        let failures: Vec<Sample<'_>> = reasons
            .iter()
            .zip(&self.failures)
            .map(|(l, c)| (&l[..], load(c)))
            .collect();
        t.family(
            "session_ssh_sshd_auth_failures_total",
            Kind::Counter,
            "Refused authentication attempts (each refused key), and connections that used up their tries or the login grace time.",
            &failures,
        );
    }

    /// Channels open and opened, by kind.
    fn render_channels(&self, t: &mut Text) {
        let kinds = Channel::ALL.map(|k| [("kind", k.as_str())]);
        for (name, kind, help, counts) in [
            (
                "session_ssh_sshd_channels_open",
                Kind::Gauge,
                "Channels open now, by kind.",
                &self.channels_open,
            ),
            (
                "session_ssh_sshd_channels_total",
                Kind::Counter,
                "Channels opened, by kind.",
                &self.channels_total,
            ),
        ] {
            let samples: Vec<Sample<'_>> = kinds
                .iter()
                .zip(counts)
                .map(|(l, c)| (&l[..], load(c)))
                .collect();
            t.family(name, kind, help, &samples);
        }
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_ssh_contract::keys::{AuthorizedKeys, Decision};
    use std::time::SystemTime;

    #[test]
    fn default_port_is_the_webhooks() {
        let port = session_ssh_contract::names::DEFAULT_METRICS_PORT;
        assert_eq!(DEFAULT_LISTEN, format!("0.0.0.0:{port}"));
    }

    fn leak() -> &'static Metrics {
        Box::leak(Box::new(Metrics::new()))
    }

    #[test]
    fn counts_show_with_their_labels() {
        let m = leak();
        m.login(true, Method::Gateway);
        m.login(false, Method::Publickey);
        m.auth_failure(Reason::FromMismatch);
        let c = m.connection();
        let ch = m.channel(Channel::Sftp);
        m.from_client(10);
        m.to_client(32);
        m.startup_evicted();
        let text = m.render();
        for line in [
            "session_ssh_sshd_logins_total{outcome=\"accepted\",method=\"gateway\"} 1",
            "session_ssh_sshd_logins_total{outcome=\"accepted\",method=\"publickey\"} 0",
            "session_ssh_sshd_logins_total{outcome=\"refused\",method=\"publickey\"} 1",
            "session_ssh_sshd_auth_failures_total{reason=\"from_mismatch\"} 1",
            "session_ssh_sshd_connections_open 1",
            "session_ssh_sshd_channels_open{kind=\"sftp\"} 1",
            "session_ssh_sshd_channels_total{kind=\"sftp\"} 1",
            "session_ssh_sshd_bytes_total{direction=\"from_client\"} 10",
            "session_ssh_sshd_bytes_total{direction=\"to_client\"} 32",
            "session_ssh_sshd_startups_evicted_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        drop((c, ch));
        let text = m.render();
        assert!(text.contains("session_ssh_sshd_connections_open 0\n"));
        assert!(text.contains("session_ssh_sshd_channels_open{kind=\"sftp\"} 0\n"));
        assert!(text.contains("session_ssh_sshd_connections_total 1\n"));
    }

    /// The reasons of the real key checks map to their names (a reworded reason fails here,
    /// not silently in a dashboard).
    #[test]
    fn reasons_of_the_key_checks() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let other =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTQ5+LM0D/6F9BgW+XsbRNjUS4Pl2ZbIH0kXsk9Pj6y";
        let parse = |text: &str| AuthorizedKeys::parse(text, "t").0;
        let reason = |keys: &AuthorizedKeys, line: &str, peer: &str| {
            let k = russh::keys::PublicKey::from_openssh(line).unwrap();
            match keys.authorize_key(&k, peer.parse().ok(), SystemTime::now()) {
                Decision::Reject(r) => Reason::of(&r),
                Decision::Accept(_) => panic!("accepted"),
            }
        };
        let plain = parse(&format!("{key}\n"));
        assert_eq!(reason(&plain, other, "10.0.0.1"), Reason::UnknownKey);
        let from = parse(&format!("from=\"192.168.0.0/16\" {key}\n"));
        assert_eq!(reason(&from, key, "10.0.0.1"), Reason::FromMismatch);
        let old = parse(&format!("expiry-time=\"20000101\" {key}\n"));
        assert_eq!(reason(&old, key, "10.0.0.1"), Reason::Expired);
        assert_eq!(
            Reason::of("signature algorithm not allowed"),
            Reason::Algorithm
        );
        assert_eq!(
            Reason::of("certificate CA not in authorized_keys"),
            Reason::UnknownCa
        );
        assert_eq!(Reason::of("whatever"), Reason::Other);
    }
}
