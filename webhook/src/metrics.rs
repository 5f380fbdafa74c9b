//! Prometheus metrics, rendered by hand in the text exposition format.
//!
//! A handful of counters and one histogram do not justify a metrics crate and its
//! registry; every label value here is a `&'static str`, so cardinality is bounded
//! by construction.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Errors of this module (rendering never fails; kept for the crate convention).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The counter map lock was poisoned by a panicking thread.
    #[error("metrics lock poisoned")]
    Poisoned,
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Histogram bucket upper bounds, seconds: admission is sub-millisecond when healthy and
/// the apiserver gives up after `timeoutSeconds` (a few seconds).
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Outcome label values.
pub mod outcome {
    /// The pod got the SSH patch.
    pub const INJECTED: &str = "injected";
    /// The pod was left unchanged on purpose (reason says why).
    pub const SKIPPED: &str = "skipped";
    /// The request could not be handled (bad body, unreadable pod...).
    pub const ERROR: &str = "error";
    /// Not a pod CREATE: allowed unchanged.
    pub const ALLOWED: &str = "allowed";
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    version: &'static str,
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    tls_reloads: AtomicU64,
    tls_reload_errors: AtomicU64,
    tls_not_after: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(env!("CARGO_PKG_VERSION"))
    }
}

impl Metrics {
    /// Empty metrics for a build `version`.
    pub fn new(version: &'static str) -> Self {
        Metrics {
            version,
            requests: Mutex::new(BTreeMap::new()),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            tls_reloads: AtomicU64::new(0),
            tls_reload_errors: AtomicU64::new(0),
            tls_not_after: AtomicI64::new(0),
        }
    }

    /// Count one admission decision and its latency.
    pub fn observe(&self, outcome: &'static str, reason: &'static str, latency: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((outcome, reason)).or_insert(0) += 1;
        }
        let secs = latency.as_secs_f64();
        // Prometheus buckets are cumulative; we store per-bucket counts and sum on render.
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Record a successful load of the serving certificate, with its notAfter (unix seconds).
    pub fn tls_loaded(&self, not_after_unix: i64) {
        self.tls_reloads.fetch_add(1, Ordering::Relaxed);
        self.tls_not_after.store(not_after_unix, Ordering::Relaxed);
    }

    /// Record a failed reload (the previous certificate stays in use).
    pub fn tls_reload_failed(&self) {
        self.tls_reload_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted for (outcome, reason) so far.
    pub fn requests(&self, outcome: &str, reason: &str) -> u64 {
        self.requests
            .lock()
            .ok()
            .and_then(|m| m.get(&(outcome, reason)).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> Result<String> {
        let mut out = String::with_capacity(2048);
        let requests = self.requests.lock().map_err(|_| Error::Poisoned)?.clone();
        // Writing into a String cannot fail; ignore the fmt::Result.
        let _ = write_all(&mut out, self, &requests);
        Ok(out)
    }
}

fn write_all(
    out: &mut String,
    m: &Metrics,
    requests: &BTreeMap<(&'static str, &'static str), u64>,
) -> std::fmt::Result {
    writeln!(
        out,
        "# HELP session_ssh_admission_requests_total Admission requests by outcome and reason."
    )?;
    writeln!(out, "# TYPE session_ssh_admission_requests_total counter")?;
    for ((outcome, reason), n) in requests {
        writeln!(
            out,
            "session_ssh_admission_requests_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
        )?;
    }
    writeln!(
        out,
        "# HELP session_ssh_admission_duration_seconds Time to decide one admission request."
    )?;
    writeln!(
        out,
        "# TYPE session_ssh_admission_duration_seconds histogram"
    )?;
    let mut cumulative = 0u64;
    for (bound, n) in BUCKETS.iter().zip(&m.buckets) {
        cumulative += n.load(Ordering::Relaxed);
        writeln!(
            out,
            "session_ssh_admission_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        )?;
    }
    let count = m.count.load(Ordering::Relaxed);
    writeln!(
        out,
        "session_ssh_admission_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    )?;
    let sum = m.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    writeln!(out, "session_ssh_admission_duration_seconds_sum {sum}")?;
    writeln!(out, "session_ssh_admission_duration_seconds_count {count}")?;
    writeln!(
        out,
        "# HELP session_ssh_tls_reloads_total Serving certificate loads (startup and rotations)."
    )?;
    writeln!(out, "# TYPE session_ssh_tls_reloads_total counter")?;
    writeln!(
        out,
        "session_ssh_tls_reloads_total {}",
        m.tls_reloads.load(Ordering::Relaxed)
    )?;
    writeln!(
        out,
        "# HELP session_ssh_tls_reload_errors_total Reloads refused (unreadable or mismatched cert/key)."
    )?;
    writeln!(out, "# TYPE session_ssh_tls_reload_errors_total counter")?;
    writeln!(
        out,
        "session_ssh_tls_reload_errors_total {}",
        m.tls_reload_errors.load(Ordering::Relaxed)
    )?;
    writeln!(
        out,
        "# HELP session_ssh_tls_cert_not_after_seconds notAfter of the serving certificate in use (unix time)."
    )?;
    writeln!(out, "# TYPE session_ssh_tls_cert_not_after_seconds gauge")?;
    writeln!(
        out,
        "session_ssh_tls_cert_not_after_seconds {}",
        m.tls_not_after.load(Ordering::Relaxed)
    )?;
    writeln!(out, "# HELP session_ssh_build_info Build information.")?;
    writeln!(out, "# TYPE session_ssh_build_info gauge")?;
    writeln!(
        out,
        "session_ssh_build_info{{version=\"{}\"}} 1",
        escape(m.version)
    )?;
    Ok(())
}

/// Label value escaping (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histogram_and_build_info() {
        let m = Metrics::new("1.2.3");
        m.observe(outcome::INJECTED, "injected", Duration::from_micros(300));
        m.observe(outcome::INJECTED, "injected", Duration::from_millis(3));
        m.observe(outcome::SKIPPED, "not-selected", Duration::from_secs(10));
        let text = m.render().unwrap();
        assert!(text.contains(
            "session_ssh_admission_requests_total{outcome=\"injected\",reason=\"injected\"} 2\n"
        ));
        assert!(text.contains(
            "session_ssh_admission_requests_total{outcome=\"skipped\",reason=\"not-selected\"} 1\n"
        ));
        assert!(text.contains("session_ssh_admission_duration_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_count 3\n"));
        assert!(text.contains("session_ssh_admission_duration_seconds_sum 10.0033\n"));
        assert!(text.contains("session_ssh_build_info{version=\"1.2.3\"} 1\n"));
        assert_eq!(m.requests("injected", "injected"), 2);
        // Every sample line is `name{labels} value` or `name value`, parseable as a float.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn label_escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
