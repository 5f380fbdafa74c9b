//! Prometheus metrics and health endpoints (`--metrics-listen`): connections, logins by
//! outcome, bytes relayed, upstream connect latency, the index size; served by the
//! contract's responder: GET /metrics, /healthz, /readyz (ready once the pod index has listed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use session_ssh_contract::metrics::{self, Kind, Response, Text};

/// Upper bounds (seconds) of the upstream connect histogram.
const BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Every counter of the process.
#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub logins_accepted: AtomicU64,
    pub logins_refused: AtomicU64,
    pub ambiguous_names: AtomicU64,
    /// Connections not yet logged in that were cut to make room (`--max-startups`).
    pub startups_evicted: AtomicU64,
    pub bytes_to_session: AtomicU64,
    pub bytes_to_user: AtomicU64,
    upstream_buckets: [AtomicU64; BUCKETS.len()],
    upstream_count: AtomicU64,
    upstream_micros: AtomicU64,
    /// The pod index has listed once.
    pub synced: AtomicBool,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    /// One upstream connect (TCP + key exchange) took `d`.
    pub fn upstream_connect(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in BUCKETS.iter().zip(&self.upstream_buckets) {
            if s <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.upstream_count.fetch_add(1, Relaxed);
        self.upstream_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self, index_pods: usize) -> String {
        let mut t = Text::new();
        let load = |a: &AtomicU64| a.load(Relaxed);
        t.single(
            "session_ssh_gateway_connections_open",
            Kind::Gauge,
            "Client connections open now.",
            load(&self.connections_open),
        );
        t.single(
            "session_ssh_gateway_connections_total",
            Kind::Counter,
            "Client connections accepted.",
            load(&self.connections_total),
        );
        t.family(
            "session_ssh_gateway_logins_total",
            Kind::Counter,
            "Login attempts that ended, by outcome.",
            &[
                (&[("outcome", "accepted")], load(&self.logins_accepted)),
                (&[("outcome", "refused")], load(&self.logins_refused)),
            ],
        );
        t.single(
            "session_ssh_gateway_ambiguous_names_total",
            Kind::Counter,
            "Logins refused because a name matched several sessions (an admin error).",
            load(&self.ambiguous_names),
        );
        t.single(
            "session_ssh_gateway_startups_evicted_total",
            Kind::Counter,
            "Connections not yet logged in, cut to make room for a new one (max-startups).",
            load(&self.startups_evicted),
        );
        t.family(
            "session_ssh_gateway_bytes_total",
            Kind::Counter,
            "Channel data relayed, by direction.",
            &[
                (&[("direction", "to_session")], load(&self.bytes_to_session)),
                (&[("direction", "to_user")], load(&self.bytes_to_user)),
            ],
        );
        t.single(
            "session_ssh_gateway_index_pods",
            Kind::Gauge,
            "Session pods in the index.",
            index_pods as u64,
        );
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.upstream_buckets)
            .map(|(b, c)| (*b, load(c)))
            .collect();
        t.histogram(
            "session_ssh_gateway_upstream_connect_seconds",
            "TCP connect and key exchange to a session.",
            &buckets,
            load(&self.upstream_count),
            load(&self.upstream_micros) as f64 / 1e6,
        );
        t.finish()
    }
}

/// Serve /metrics, /healthz and /readyz on `addr` until the process ends.
pub async fn serve<F>(addr: SocketAddr, index_pods: F)
where
    F: Fn() -> usize + Clone + Send + Sync + 'static,
{
    metrics::serve(addr, move |path: &str| match path {
        "/metrics" => Response::ok(get().render(index_pods())),
        "/healthz" => Response::ok("ok\n"),
        "/readyz" if get().synced.load(Relaxed) => Response::ok("ok\n"),
        "/readyz" => Response::unavailable("pod index not listed yet\n"),
        _ => Response::not_found(),
    })
    .await;
}
