//! The table of connections not yet logged in (`--max-startups`), shared by init-sshd and
//! the gateway. When the table is full a new connection evicts the oldest one instead of
//! being refused: refusing would let a bounded flood of silent or slow connections (all
//! from one router address, behind an SNI route, so per-source limits cannot help) lock
//! every real user out until the flood reaches the login grace time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::tcp::Cut;

/// Connections not yet logged in, oldest first, at most `max`.
pub struct Startups {
    max: usize,
    table: Mutex<VecDeque<Entry>>,
}

struct Entry {
    id: u64,
    since: Instant,
    cut: Cut,
}

/// A connection's place in [`Startups`], given back when dropped (at login, at the grace
/// time, or when the connection ends).
pub struct Startup {
    id: u64,
    table: Arc<Startups>,
}

/// A connection cut to make room: its id and how long it had been waiting to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub id: u64,
    pub age: Duration,
}

impl Startups {
    /// A table of at most `max` places (at least one).
    pub fn new(max: usize) -> Arc<Startups> {
        Arc::new(Startups {
            max: max.max(1),
            table: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for connection `id`, whose stream `cut` ends if it is evicted; also the
    /// older connections that were cut to make room.
    pub fn admit(self: &Arc<Self>, id: u64, cut: Cut) -> (Startup, Vec<Evicted>) {
        let mut table = self.lock();
        let now = Instant::now();
        let mut evicted = Vec::new();
        while table.len() >= self.max {
            let Some(oldest) = table.pop_front() else {
                break;
            };
            oldest.cut.cut();
            evicted.push(Evicted {
                id: oldest.id,
                age: now.saturating_duration_since(oldest.since),
            });
        }
        table.push_back(Entry {
            id,
            since: now,
            cut,
        });
        let place = Startup {
            id,
            table: self.clone(),
        };
        (place, evicted)
    }

    /// Connections in the table now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is waiting to log in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(i) = table.iter().position(|e| e.id == self.id) {
            table.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Cuttable;
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
            let ids: Vec<u64> = evicted.iter().map(|e| e.id).collect();
            assert_eq!(
                ids,
                if id == 3 { vec![1] } else { vec![] },
                "connection {id}"
            );
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
        assert!(evicted.is_empty());
        // The evicted place's drop removes nothing of the others.
        places.remove(0);
        assert_eq!(startups.len(), 2);
    }

    #[tokio::test]
    async fn the_evicted_age_is_how_long_it_waited() {
        let startups = Startups::new(1);
        let (near, _far) = tokio::io::duplex(64);
        let (_s1, cut) = Cuttable::new(near);
        let _first = startups.admit(1, cut);
        std::thread::sleep(Duration::from_millis(50));
        let (near, _far2) = tokio::io::duplex(64);
        let (_s2, cut) = Cuttable::new(near);
        let (_second, evicted) = startups.admit(2, cut);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].id, 1);
        assert!(evicted[0].age >= Duration::from_millis(50), "{evicted:?}");
    }
}
