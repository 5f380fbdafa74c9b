//! Prometheus metrics as both SSH servers serve them (the gateway and init-sshd): the
//! `--metrics-listen ADDR|off` value, the text exposition format, and a tiny HTTP/1.1
//! responder for `GET /metrics` and the health paths. A few counters do not justify an HTTP
//! stack or a metrics crate in a static binary that must stay small; one copy here keeps
//! the two servers' endpoints alike.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapes served at once; more are closed at once (a scrape is one short request, and the
/// port may be reachable from the whole cluster).
const MAX_CONCURRENT: usize = 16;
/// Time a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// `--metrics-listen`: an address, or `off` (also `none`: the spelling the webhook writes,
/// since YAML 1.1 readers such as kubectl's take a bare `off` for `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;
    fn from_str(v: &str) -> Result<Listen, String> {
        match v.trim() {
            "off" | "none" => Ok(Listen(None)),
            t => t
                .parse()
                .map(|a| Listen(Some(a)))
                .map_err(|e| format!("{v:?} is neither ADDR:PORT nor \"off\": {e}")),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One sample: label pairs (static names and values: bounded cardinality) and a value.
pub type Sample<'a> = (&'a [(&'a str, &'a str)], u64);

/// A page in the Prometheus text format (version 0.0.4), written family by family.
#[derive(Debug, Default)]
pub struct Text(String);

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// `# HELP`, `# TYPE` and the samples of one family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[Sample<'_>]) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            self.sample(name, labels, &v.to_string());
        }
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help, &[(&[], value)]);
    }

    /// A histogram: cumulative `(upper bound, count)` buckets, the count and the sum.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        let bucket = format!("{name}_bucket");
        for (le, c) in buckets {
            self.sample(&bucket, &[("le", &le.to_string())], &c.to_string());
        }
        self.sample(&bucket, &[("le", "+Inf")], &count.to_string());
        self.sample(&format!("{name}_sum"), &[], &sum.to_string());
        self.sample(&format!("{name}_count"), &[], &count.to_string());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.0.push_str(name);
        for (i, (k, v)) in labels.iter().enumerate() {
            self.0.push(if i == 0 { '{' } else { ',' });
            let _ = write!(self.0, "{k}=\"{}\"", escape(v));
        }
        if !labels.is_empty() {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// The page.
    pub fn finish(self) -> String {
        self.0
    }
}

/// A label value as the text format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What one GET answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: &'static str,
    pub body: String,
}

impl Response {
    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Response {
        Response {
            status: "200 OK",
            body: body.into(),
        }
    }

    /// 503 with the reason.
    pub fn unavailable(body: impl Into<String>) -> Response {
        Response {
            status: "503 Service Unavailable",
            body: body.into(),
        }
    }

    /// 404.
    pub fn not_found() -> Response {
        Response {
            status: "404 Not Found",
            body: "not found\n".into(),
        }
    }
}

/// Serve GET requests on `addr` until the process ends, `respond` mapping a path to the
/// answer. A port that cannot be bound is logged and the function returns: metrics must
/// never stop the server they describe.
pub async fn serve<F>(addr: SocketAddr, respond: F)
where
    F: Fn(&str) -> Response + Clone + Send + Sync + 'static,
{
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics listener failed; no /metrics");
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(metrics_listen = %local, "metrics and health endpoints");
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let _slot = slot;
            answer(sock, respond).await;
        });
    }
}

/// One request: read the head (bounded in size and time), answer, close.
async fn answer<F: Fn(&str) -> Response>(mut sock: tokio::net::TcpStream, respond: F) {
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
    if tokio::time::timeout(HEAD_TIMEOUT, read_head).await.is_err() || n == 0 {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut words = head.split_whitespace();
    let r = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => respond(path.split('?').next().unwrap_or(path)),
        _ => Response {
            status: "405 Method Not Allowed",
            body: "GET only\n".into(),
        },
    };
    let resp = format!(
        "HTTP/1.1 {}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        r.status,
        r.body.len(),
        r.body
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen(None)));
        assert_eq!("none".parse::<Listen>(), Ok(Listen(None)));
        let l: Listen = "0.0.0.0:9122".parse().unwrap();
        assert_eq!(l.to_string(), "0.0.0.0:9122");
        assert!("9122".parse::<Listen>().is_err());
        assert!("".parse::<Listen>().is_err());
    }

    #[test]
    fn text_format() {
        let mut t = Text::new();
        t.family(
            "x_total",
            Kind::Counter,
            "Things.",
            &[(&[("a", "1"), ("b", "q\"\\\n")], 3), (&[], 4)],
        );
        t.histogram("h_seconds", "Time.", &[(0.5, 1)], 2, 1.5);
        assert_eq!(
            t.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\nx_total 4\n\
             # HELP h_seconds Time.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
             h_seconds_sum 1.5\nh_seconds_count 2\n"
        );
    }

    #[tokio::test]
    async fn answers_get_and_refuses_the_rest() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        tokio::spawn(serve(addr, |p: &str| match p {
            "/metrics" => Response::ok("m 1\n"),
            _ => Response::not_found(),
        }));
        let get = |req: &'static str| async move {
            for _ in 0..100 {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    s.write_all(req.as_bytes()).await.unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("metrics listener never came up");
        };
        let m = get("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.ends_with("\r\n\r\nm 1\n"), "{m}");
        let nf = get("GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let post = get("POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}
