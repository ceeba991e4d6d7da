//! The flusher task of one shard: once per pass of the executor it runs the
//! core's flusher pass (`Shard::flush_pass`: fan-out, then one write per
//! dirty connection), times the deliveries it wrote, and reaps the
//! connections closed during the pass.
//!
//! Must never: run the pass before the tasks ready in this pass of the
//! executor have queued their pushes (they then share the writes).

use crate::shard::Shard;
use std::rc::Rc;

/// Runs the flusher of `shard` until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    loop {
        shard.flush.wait().await;
        // Let every task that is ready in this pass (mesh batches, HTTP
        // requests) queue its pushes first: they then share the writes.
        futures_lite::future::yield_now().await;
        shard.flush_pass();
        shard.record_deliveries();
        shard.reap();
    }
}
