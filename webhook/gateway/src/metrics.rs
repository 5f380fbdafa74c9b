//! Prometheus metrics and health endpoints (`--metrics-listen`): connections, logins by
//! outcome, bytes relayed, upstream connect latency, the index size. A tiny HTTP/1.1
//! responder: GET /metrics, /healthz, /readyz (ready once the pod index has listed).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        metric(
            "session_ssh_gateway_connections_open",
            "gauge",
            "Client connections open now.",
            &[(String::new(), self.connections_open.load(Relaxed))],
        );
        metric(
            "session_ssh_gateway_connections_total",
            "counter",
            "Client connections accepted.",
            &[(String::new(), self.connections_total.load(Relaxed))],
        );
        metric(
            "session_ssh_gateway_logins_total",
            "counter",
            "Login attempts that ended, by outcome.",
            &[
                (
                    "{outcome=\"accepted\"}".into(),
                    self.logins_accepted.load(Relaxed),
                ),
                (
                    "{outcome=\"refused\"}".into(),
                    self.logins_refused.load(Relaxed),
                ),
            ],
        );
        metric(
            "session_ssh_gateway_ambiguous_names_total",
            "counter",
            "Logins refused because a name matched several sessions (an admin error).",
            &[(String::new(), self.ambiguous_names.load(Relaxed))],
        );
        metric(
            "session_ssh_gateway_startups_evicted_total",
            "counter",
            "Connections not yet logged in, cut to make room for a new one (max-startups).",
            &[(String::new(), self.startups_evicted.load(Relaxed))],
        );
        metric(
            "session_ssh_gateway_bytes_total",
            "counter",
            "Channel data relayed, by direction.",
            &[
                (
                    "{direction=\"to_session\"}".into(),
                    self.bytes_to_session.load(Relaxed),
                ),
                (
                    "{direction=\"to_user\"}".into(),
                    self.bytes_to_user.load(Relaxed),
                ),
            ],
        );
        metric(
            "session_ssh_gateway_index_pods",
            "gauge",
            "Session pods in the index.",
            &[(String::new(), index_pods as u64)],
        );
        self.render_upstream(&mut o);
        o
    }

    /// The upstream connect histogram.
    fn render_upstream(&self, o: &mut String) {
        let name = "session_ssh_gateway_upstream_connect_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} TCP connect and key exchange to a session.\n# TYPE {name} histogram"
        );
        for (b, c) in BUCKETS.iter().zip(&self.upstream_buckets) {
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let count = self.upstream_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.upstream_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
    }
}

/// Serve /metrics, /healthz and /readyz on `addr` until the process ends.
pub async fn serve<F>(addr: SocketAddr, index_pods: F)
where
    F: Fn() -> usize + Clone + Send + Sync + 'static,
{
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics listener failed; no /metrics");
            return;
        }
    };
    tracing::info!(metrics_listen = %addr, "metrics and health endpoints");
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let index_pods = index_pods.clone();
        tokio::spawn(async move {
            // A request line may arrive in pieces: read up to the end of the head (bounded).
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let read_head = async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
                || n == 0
            {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", get().render(index_pods())),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if get().synced.load(Relaxed) => ("200 OK", "ok\n".to_owned()),
                "/readyz" => (
                    "503 Service Unavailable",
                    "pod index not listed yet\n".to_owned(),
                ),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
