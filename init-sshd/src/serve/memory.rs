//! Gives the heap back to the kernel when the server goes idle.
//!
//! mimalloc keeps each thread's emptied pages and purges them only when that thread
//! allocates or frees again. A runtime worker that parks after the last connection closed
//! may not do so for hours, so the pages a busy spell left behind stay resident (the soak,
//! `scripts/soak.py`, saw about half a MiB per server). Each worker collects its own heap
//! once when it parks with no connection open; an idle server pays nothing more.

use std::cell::Cell;

use super::metrics;

thread_local! {
    /// The connection count at this thread's last collection: a thread collects again only
    /// after new connections came (and went).
    static COLLECTED_AT: Cell<u64> = const { Cell::new(0) };
}

/// The runtime's park hook: with no connection open and new connections since this
/// thread last collected, hand its free pages back (a forced `mi_collect`).
pub fn release_if_idle() {
    let (open, total) = metrics::get().connections();
    if open != 0 {
        return;
    }
    COLLECTED_AT.with(|at| {
        if at.get() != total {
            at.set(total);
            // SAFETY: takes no pointer; it frees this thread's empty pages and purges
            // them. Without mimalloc as the global allocator (unit tests) its heap is
            // uninitialised and the call returns at once.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    });
}
