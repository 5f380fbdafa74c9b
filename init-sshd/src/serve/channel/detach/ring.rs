//! A detachable shell's output: a bounded ring of its most recent bytes, drained by the
//! attached client (if any). While a client is attached the ring also applies back-pressure:
//! the terminal is read only as far as the client can take, so nothing is lost on a slow link;
//! while detached, the oldest bytes are dropped and only the last `cap` bytes are kept.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// The ring and its two wake-ups (one reader, one writer: `notify_one` keeps a permit, so a
/// wake-up between the check and the wait is not lost).
pub struct Ring {
    inner: Mutex<Inner>,
    data: Notify,
    space: Notify,
}

struct Inner {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes ever pushed: positions are counted from the shell's first byte.
    total: u64,
    /// Position of the attached client's next byte; None while detached.
    reader: Option<u64>,
    /// The terminal reached its end: no more bytes will come.
    ended: bool,
}

impl Inner {
    fn start(&self) -> u64 {
        self.total - self.buf.len() as u64
    }
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            inner: Mutex::new(Inner {
                buf: VecDeque::new(),
                cap: cap.max(1),
                total: 0,
                reader: None,
                ended: false,
            }),
            data: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the ring consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many bytes may be pushed now, waiting while an attached client is a whole
    /// ring behind.
    pub async fn room(&self) -> usize {
        loop {
            {
                let g = self.lock();
                let lag = g.reader.map_or(0, |r| g.total.saturating_sub(r));
                let room = usize::try_from(g.cap as u64 - lag.min(g.cap as u64)).unwrap_or(0);
                if room > 0 {
                    return room;
                }
            }
            self.space.notified().await;
        }
    }

    /// Append output, dropping the oldest bytes beyond the capacity.
    pub fn push(&self, bytes: &[u8]) {
        {
            let mut g = self.lock();
            let keep = bytes
                .get(bytes.len().saturating_sub(g.cap)..)
                .unwrap_or(bytes);
            let excess = (g.buf.len() + keep.len()).saturating_sub(g.cap);
            g.buf.drain(..excess);
            // Grow geometrically but never past the cap: VecDeque's own doubling would
            // leave a full ring holding up to twice the bytes it keeps.
            let want = g.buf.len() + keep.len();
            if want > g.buf.capacity() {
                let grown = (g.buf.capacity() * 2).clamp(want, g.cap);
                let extra = grown - g.buf.len();
                g.buf.reserve_exact(extra);
            }
            g.buf.extend(keep);
            g.total += bytes.len() as u64;
        }
        self.data.notify_one();
    }

    /// No more output will come.
    pub fn end(&self) {
        self.lock().ended = true;
        self.data.notify_one();
    }

    /// A client attaches: it is given everything still in the ring first. Returns how
    /// many bytes that replay is.
    pub fn attach(&self) -> usize {
        let n = {
            let mut g = self.lock();
            g.reader = Some(g.start());
            g.buf.len()
        };
        self.space.notify_one();
        n
    }

    /// The client went away: the ring keeps filling, dropping its oldest bytes.
    pub fn detach(&self) {
        self.lock().reader = None;
        self.space.notify_one();
        // Wakes a reader still waiting, so it sees it is detached.
        self.data.notify_one();
    }

    /// The attached client's next chunk (at most `max` bytes); None once detached, or when
    /// the output ended and everything was taken.
    pub async fn next(&self, max: usize) -> Option<Bytes> {
        loop {
            {
                let mut g = self.lock();
                let r = g.reader?;
                let from = r.max(g.start());
                if from < g.total {
                    let skip = usize::try_from(from - g.start()).unwrap_or(0);
                    let chunk: Vec<u8> =
                        g.buf.iter().skip(skip).take(max.max(1)).copied().collect();
                    g.reader = Some(from + chunk.len() as u64);
                    drop(g);
                    self.space.notify_one();
                    return Some(Bytes::from(chunk));
                }
                if g.ended {
                    return None;
                }
            }
            self.data.notified().await;
        }
    }

    /// Bytes held now (for the list and the logs).
    pub fn held(&self) -> usize {
        self.lock().buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detached_keeps_only_the_last_cap_bytes_and_replays_them() {
        let r = Ring::new(8);
        r.push(b"0123456789abc");
        assert_eq!(r.held(), 8);
        assert_eq!(r.room().await, 8, "detached: never waits");
        assert_eq!(r.attach(), 8);
        r.end();
        assert_eq!(r.next(100).await.as_deref(), Some(&b"56789abc"[..]));
        assert_eq!(r.next(100).await, None);
    }

    #[tokio::test]
    async fn attached_reader_holds_the_writer_back_instead_of_losing_bytes() {
        let r = Ring::new(4);
        r.attach();
        r.push(b"abcd");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), r.room()).await;
        assert!(
            waited.is_err(),
            "a full ring with an attached reader has no room"
        );
        assert_eq!(r.next(3).await.as_deref(), Some(&b"abc"[..]));
        assert_eq!(r.room().await, 3);
        r.push(b"efg");
        assert_eq!(r.next(10).await.as_deref(), Some(&b"defg"[..]));
    }

    #[tokio::test]
    async fn detach_wakes_a_waiting_reader() {
        let r = std::sync::Arc::new(Ring::new(4));
        r.attach();
        let r2 = r.clone();
        let t = tokio::spawn(async move { r2.next(4).await });
        tokio::task::yield_now().await;
        r.detach();
        assert_eq!(t.await.ok().flatten(), None);
    }
}
