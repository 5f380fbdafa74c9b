//! DIR/authorized_keys, re-read whenever the file changes.
//!
//! Checked on every authentication attempt by (mtime, size, inode), which is
//! one stat call; the parse only happens after a change. A file that cannot
//! be read keeps the last good set (and logs), so a half-written update never
//! locks everybody out, and a missing file means no key is accepted.

use std::path::PathBuf;
use std::sync::Arc;

use super::watched::Watched;
use session_ssh_contract::keys::AuthorizedKeys;

/// Cached, change-checked authorized keys.
pub struct KeyStore {
    file: Watched<AuthorizedKeys>,
}

fn no_keys() -> AuthorizedKeys {
    AuthorizedKeys::parse("", "none").0
}

impl KeyStore {
    pub fn new(path: PathBuf) -> KeyStore {
        let store = KeyStore {
            file: Watched::new(path, no_keys()),
        };
        store.current();
        store
    }

    /// The keys as the file is now.
    pub fn current(&self) -> Arc<AuthorizedKeys> {
        let path = self.file.path().display();
        self.file.get(|exists| {
            if !exists {
                tracing::warn!(%path, "authorized_keys not readable; no key accepted");
                return Some(no_keys());
            }
            match AuthorizedKeys::load(self.file.path()) {
                Ok(keys) => {
                    tracing::info!(%path, "authorized_keys (re)loaded");
                    Some(keys)
                }
                Err(e) => {
                    tracing::warn!(%path, error = %e, "authorized_keys reload failed; keeping previous keys");
                    None
                }
            }
        })
    }
}
