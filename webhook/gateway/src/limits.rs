//! Per-source failed-login limit: a client address that fails more than N logins in a
//! minute has its new connections closed at once until the minute is over. And the table
//! of connections not yet logged in (`--max-startups`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use session_ssh_contract::tcp::Cut;

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

/// Connections not yet logged in, oldest first, at most `max`. When the table is full a
/// new connection evicts the oldest one instead of being refused: refusing would let a
/// bounded flood of silent connections (all from one router address, behind an SNI route)
/// lock every real user out until the flood reaches the login grace time.
pub struct Startups {
    max: usize,
    table: Mutex<VecDeque<(u64, Cut)>>,
}

/// A connection's place in [`Startups`], given back when dropped (at login, at the grace
/// time, or when the connection ends).
pub struct Startup {
    id: u64,
    table: Arc<Startups>,
}

impl Startups {
    pub fn new(max: usize) -> Arc<Startups> {
        Arc::new(Startups {
            max: max.max(1),
            table: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, Cut)>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for connection `id`, whose stream `cut` ends if it is evicted; also how many
    /// older connections were cut to make room.
    pub fn admit(self: &Arc<Self>, id: u64, cut: Cut) -> (Startup, usize) {
        let mut table = self.lock();
        let mut evicted = 0;
        while table.len() >= self.max {
            if let Some((_, oldest)) = table.pop_front() {
                oldest.cut();
                evicted += 1;
            }
        }
        table.push_back((id, cut));
        let place = Startup {
            id,
            table: self.clone(),
        };
        (place, evicted)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(i) = table.iter().position(|(id, _)| *id == self.id) {
            table.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_ssh_contract::tcp::Cuttable;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest() {
        let startups = Startups::new(2);
        let (mut streams, mut places) = (Vec::new(), Vec::new());
        for id in 1..=3 {
            // An in-memory stream that never yields data (a silent client).
            let (near, far) = tokio::io::duplex(64);
            let (stream, cut) = Cuttable::new(near);
            let (place, evicted) = startups.admit(id, cut);
            assert_eq!(evicted, usize::from(id == 3), "connection {id}");
            streams.push((stream, far));
            places.push(place);
        }
        assert_eq!(startups.len(), 2);
        // The first one was cut: its read fails at once.
        let mut b = [0u8; 1];
        assert!(streams[0].0.read(&mut b).await.is_err());
        // A place given back (login) makes room without evicting.
        places.remove(2);
        assert_eq!(startups.len(), 1);
        let (near, _far) = tokio::io::duplex(64);
        let (_s, cut) = Cuttable::new(near);
        let (_p, evicted) = startups.admit(4, cut);
        assert_eq!(evicted, 0);
        // The evicted place's drop removes nothing of the others.
        places.remove(0);
        assert_eq!(startups.len(), 2);
    }

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
