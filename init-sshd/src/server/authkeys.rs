//! DIR/authorized_keys, re-read whenever the file changes.
//!
//! Checked on every authentication attempt by (mtime, size, inode), which is
//! one stat call; the parse only happens after a change. A file that cannot
//! be read keeps the last good set (and logs), so a half-written update never
//! locks everybody out, and a missing file means no key is accepted.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::keys::AuthorizedKeys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

/// Cached, change-checked authorized keys.
pub struct KeyStore {
    path: PathBuf,
    cache: Mutex<(Option<Stamp>, Arc<AuthorizedKeys>)>,
}

impl KeyStore {
    pub fn new(path: PathBuf) -> KeyStore {
        let empty = AuthorizedKeys::parse("", "none").0;
        let store = KeyStore {
            path,
            cache: Mutex::new((None, Arc::new(empty))),
        };
        store.current();
        store
    }

    /// The keys as the file is now.
    pub fn current(&self) -> Arc<AuthorizedKeys> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some(Stamp {
                mtime: m.modified().ok(),
                len: m.len(),
                ino: m.ino(),
            }),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "authorized_keys not readable; no key accepted");
                None
            }
        };
        let mut guard = match self.cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if stamp.is_none() {
            guard.0 = None;
            guard.1 = Arc::new(AuthorizedKeys::parse("", "none").0);
            return guard.1.clone();
        }
        if guard.0 != stamp {
            match AuthorizedKeys::load(&self.path) {
                Ok(keys) => {
                    tracing::info!(path = %self.path.display(), "authorized_keys (re)loaded");
                    guard.0 = stamp;
                    guard.1 = Arc::new(keys);
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "authorized_keys reload failed; keeping previous keys");
                }
            }
        }
        guard.1.clone()
    }
}
