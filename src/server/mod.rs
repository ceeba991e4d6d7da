//! Process start-up and the long-running tasks that carry a shard's
//! effects out: one pinned glommio executor per shard, the listeners, the
//! mesh, the HTTP server, the NATS link (`link`), signals and drain
//! (`runtime`).
//!
//! Must never: hold state of its own that a shard reads: each shard's state
//! lives in its `Shard`; the process-wide flags are in `lifecycle`.

pub mod check;
pub mod link;
pub mod runtime;
