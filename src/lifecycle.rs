//! The process-wide flags every shard reads: SIGTERM has arrived
//! (`shutting_down`), and every shard serves (`all_shards_serving`, for
//! `/readyz`). Set by `server::runtime`; the only mutable values shared
//! between threads.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once by the signal handler thread; each shard's ticker reads it.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Set once every shard serves (before the ready line is printed).
static SERVING: AtomicBool = AtomicBool::new(false);

/// Whether every shard has started serving (for `/readyz`).
pub fn all_shards_serving() -> bool {
    SERVING.load(Ordering::Relaxed)
}

/// Whether SIGTERM or SIGINT has arrived (the process is draining).
pub fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::Relaxed)
}

/// Marks every shard serving.
pub fn set_serving() {
    SERVING.store(true, Ordering::Relaxed);
}

/// Marks the process draining.
pub fn set_shutting_down() {
    SHUTDOWN.store(true, Ordering::Relaxed);
}
