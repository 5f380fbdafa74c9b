//! What every channel worker of one SSH connection is given: which connection it is (the
//! `conn` log field), its handle, a receiver that closes when it ends, and a token held while
//! the worker runs. One value instead of four arguments threaded through each worker.

use std::sync::Arc;

use russh::server::Handle;
use tokio::sync::watch;

/// One SSH connection, as its channel workers see it.
#[derive(Clone)]
pub struct ConnCtx {
    /// Connection number (log field `conn`).
    pub id: u64,
    /// The connection's handle: sends on its channels from outside its loop.
    pub handle: Handle,
    /// Closes when the connection ends.
    pub gone: watch::Receiver<()>,
    /// Held while a worker runs (counts the connection's live channels).
    pub live: Arc<()>,
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // russh's Handle has no Debug; the id says which connection.
        f.debug_struct("ConnCtx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
