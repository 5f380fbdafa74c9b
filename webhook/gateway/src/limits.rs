//! Per-source failed-login limit: a client address that fails more than N logins in a
//! minute has its new connections closed at once until the minute is over. (The table of
//! connections not yet logged in, `--max-startups`, is `contract::startups`, shared with
//! init-sshd.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most (the oldest windows are dropped first when full).
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

/// Failed logins per client address in the current minute.
pub struct Failures {
    max: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    pub fn new(max_per_minute: u32) -> Failures {
        Failures {
            max: max_per_minute.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Count one failed login from `ip`.
    pub fn record(&self, ip: IpAddr) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let now = Instant::now();
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        if seen.len() >= MAX_TRACKED {
            return;
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Whether `ip` is over the limit now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        seen.get(&ip)
            .is_some_and(|(start, n)| *n >= self.max && start.elapsed() < WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_address() {
        let f = Failures::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..2 {
            f.record(a);
        }
        assert!(!f.blocked(a));
        f.record(a);
        assert!(f.blocked(a));
        assert!(!f.blocked(b));
    }
}
