//! The server's detached shells: who may take each back, how many are kept, and the
//! hand-off of an attaching client to the shell's own task.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Client;

/// Options of `serve` for shells that survive a dropped connection.
#[derive(Debug, Clone, clap::Args)]
pub struct DetachOpts {
    /// Seconds a terminal login shell whose client vanished is kept for `ssh -t HOST attach`
    /// (0: hung up at once, like OpenSSH).
    #[arg(long, env = "INIT_SSHD_DETACHED_KEEP_SECS", default_value_t = 3600)]
    pub detached_keep_secs: u64,
    /// Detached shells kept at once (all keys together); a shell detaching beyond it is hung up.
    #[arg(long, env = "INIT_SSHD_DETACHED_MAX", default_value_t = 10)]
    pub detached_max: usize,
    /// Recent output kept per shell and replayed on attach, in bytes (4 KiB to 4 MiB).
    #[arg(long, env = "INIT_SSHD_DETACHED_BUFFER_BYTES", default_value_t = 64 * 1024)]
    pub detached_buffer_bytes: usize,
}

/// The limits, as the shells use them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Zero: no shell is kept.
    pub keep: Duration,
    pub max: usize,
    pub buffer: usize,
}

impl DetachOpts {
    pub fn settings(&self) -> Settings {
        Settings {
            keep: Duration::from_secs(self.detached_keep_secs),
            max: self.detached_max,
            buffer: self.detached_buffer_bytes.clamp(4096, 4 << 20),
        }
    }
}

/// A detached shell as its owner sees it in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub number: u32,
    pub tty: String,
    /// Since when it is detached.
    pub idle: Duration,
    /// Until it is hung up.
    pub left: Duration,
}

/// What `attach` gets.
pub enum Claim {
    /// This shell: hand the client over through the sender.
    Shell(u32, oneshot::Sender<Client>),
    /// The key has no detached shell.
    None,
    /// Several and none named: the list to choose from.
    Choose(Vec<Listed>),
    /// The named one is not a detached shell of this key.
    NotFound(u32),
}

/// Why a shell cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} detached shells are kept already")]
    Full(usize),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Parked {
    owner: String,
    tty: String,
    since: Instant,
    until: Instant,
    handoff: oneshot::Sender<Client>,
}

/// Every detached shell of the server.
pub struct Registry {
    settings: Settings,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u32,
    parked: BTreeMap<u32, Parked>,
}

impl Registry {
    pub fn new(settings: Settings) -> Registry {
        Registry {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each critical section is one map operation; a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A number for a new shell (stable across its detaches, shown in lists).
    pub fn number(&self) -> u32 {
        let mut g = self.lock();
        g.next = g.next.wrapping_add(1);
        g.next
    }

    /// Keep a shell that lost its client, until `handoff` is used or it is unparked.
    pub fn park(
        &self,
        number: u32,
        owner: &str,
        tty: &str,
        handoff: oneshot::Sender<Client>,
    ) -> Result<()> {
        let mut g = self.lock();
        if g.parked.len() >= self.settings.max {
            return Err(Error::Full(g.parked.len()));
        }
        let now = Instant::now();
        g.parked.insert(
            number,
            Parked {
                owner: owner.to_owned(),
                tty: tty.to_owned(),
                since: now,
                until: now + self.settings.keep,
                handoff,
            },
        );
        Ok(())
    }

    /// The shell ended or was reattached.
    pub fn unpark(&self, number: u32) {
        self.lock().parked.remove(&number);
    }

    /// The detached shells of one key, oldest first.
    pub fn list(&self, owner: &str) -> Vec<Listed> {
        let now = Instant::now();
        self.lock()
            .parked
            .iter()
            .filter(|(_, p)| p.owner == owner)
            .map(|(&number, p)| Listed {
                number,
                tty: p.tty.clone(),
                idle: now.saturating_duration_since(p.since),
                left: p.until.saturating_duration_since(now),
            })
            .collect()
    }

    /// Take a detached shell for `owner`: the one named, or the only one there is.
    pub fn claim(&self, owner: &str, which: Option<u32>) -> Claim {
        let mut g = self.lock();
        let number = match which {
            Some(n) if g.parked.get(&n).is_some_and(|p| p.owner == owner) => n,
            Some(n) => return Claim::NotFound(n),
            None => {
                let mine: Vec<u32> = g
                    .parked
                    .iter()
                    .filter(|(_, p)| p.owner == owner)
                    .map(|(&n, _)| n)
                    .collect();
                match mine.as_slice() {
                    [] => return Claim::None,
                    [n] => *n,
                    _ => {
                        drop(g);
                        return Claim::Choose(self.list(owner));
                    }
                }
            }
        };
        match g.parked.remove(&number) {
            Some(p) => Claim::Shell(number, p.handoff),
            None => Claim::NotFound(number),
        }
    }

    /// Detached shells of all keys.
    pub fn count(&self) -> usize {
        self.lock().parked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Registry {
        Registry::new(Settings {
            keep: Duration::from_secs(60),
            max,
            buffer: 4096,
        })
    }

    #[test]
    fn only_the_owner_lists_and_claims_a_shell() {
        let r = registry(4);
        let (tx, _rx) = oneshot::channel();
        r.park(7, "SHA256:alice", "/dev/pts/1", tx).unwrap();
        assert!(r.list("SHA256:mallory").is_empty());
        assert!(matches!(r.claim("SHA256:mallory", None), Claim::None));
        assert!(matches!(
            r.claim("SHA256:mallory", Some(7)),
            Claim::NotFound(7)
        ));
        assert_eq!(r.list("SHA256:alice").len(), 1);
        assert!(matches!(r.claim("SHA256:alice", None), Claim::Shell(7, _)));
        assert_eq!(r.count(), 0, "a claimed shell is no longer parked");
        assert!(matches!(
            r.claim("SHA256:alice", Some(7)),
            Claim::NotFound(7)
        ));
    }

    #[test]
    fn several_shells_need_a_number_and_the_cap_holds() {
        let r = registry(2);
        for n in [1, 2] {
            let (tx, _rx) = oneshot::channel();
            r.park(n, "k", "t", tx).unwrap();
        }
        let (tx, _rx) = oneshot::channel();
        assert!(
            r.park(3, "k", "t", tx).is_err(),
            "a third shell exceeds max 2"
        );
        match r.claim("k", None) {
            Claim::Choose(l) => assert_eq!(l.iter().map(|s| s.number).collect::<Vec<_>>(), [1, 2]),
            _ => panic!("two shells: choose"),
        }
        assert!(matches!(r.claim("k", Some(2)), Claim::Shell(2, _)));
    }
}
