//! The one task that reports activity: wakes once per interval, sends a report only when
//! channel data moved since the last one it got through, and backs off while the hub
//! fails (a hub restart, a revoked token), logging the failures without flooding the log.

use std::time::{Duration, Instant};

use super::hub::Target;
use super::{Counts, Marks};

/// Longest wait between attempts while reports fail (unless the interval is longer).
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// At most one failure line per this, after the first.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(600);

/// Wait before the next attempt: the interval, doubled per failure in a row, capped at
/// [`BACKOFF_CAP`] (or the interval, if that is longer).
pub fn next_wait(interval: Duration, failures: u32) -> Duration {
    let cap = BACKOFF_CAP.max(interval);
    interval
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap)
}

/// Whether to log a failure: the first of a run, then one per [`FAILURE_LOG_EVERY`].
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Option<Instant>,
}

impl FailureLog {
    pub fn should_log(&mut self, failures: u32, now: Instant) -> bool {
        let due = failures == 1
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Report activity of `marks` under `rule` to `target`, forever.
pub async fn run(target: Target, marks: &'static Marks, rule: Counts, interval: Duration) {
    // The activity the hub has (Unix seconds): a report is due only past it.
    let mut reported = 0u64;
    let mut failures = 0u32;
    let mut log = FailureLog::default();
    loop {
        tokio::time::sleep(next_wait(interval, failures)).await;
        let last = marks.last(rule);
        if last <= reported {
            continue;
        }
        match target.post(last).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "activity report sent again after failures");
                } else {
                    tracing::debug!(at = %super::hub::iso8601(last), "activity reported");
                }
                reported = last;
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if log.should_log(failures, Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        failures,
                        retry_secs = next_wait(interval, failures).as_secs(),
                        "activity report to JupyterHub failed"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let i = Duration::from_secs(60);
        let waits: Vec<u64> = (0..8).map(|f| next_wait(i, f).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600, 600, 600]);
        assert_eq!(next_wait(i, u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn backoff_of_a_long_interval_is_the_interval() {
        let i = Duration::from_secs(3600);
        assert_eq!(next_wait(i, 0), i);
        assert_eq!(next_wait(i, 5), i);
    }

    #[test]
    fn failures_are_logged_first_then_every_ten_minutes() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert!(log.should_log(1, t0));
        assert!(!log.should_log(2, t0 + Duration::from_secs(60)));
        assert!(!log.should_log(3, t0 + Duration::from_secs(599)));
        assert!(log.should_log(4, t0 + Duration::from_secs(600)));
        assert!(!log.should_log(5, t0 + Duration::from_secs(700)));
        // A new run of failures (after a success) logs its first one at once.
        assert!(log.should_log(1, t0 + Duration::from_secs(701)));
    }
}
