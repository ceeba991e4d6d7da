//! The flusher: once per pass of the executor it fans pending room pushes
//! out (`fanout`: one shared chunk per room, handed to every member), then
//! writes every dirty connection (`writer`: one `sendmsg` of up to 64
//! chunks), and finally reaps the connections closed during the pass.
//!
//! Owns: the coalescing of writes. Every frame that became due for a
//! connection during one pass leaves in one syscall. Must never: block
//! (sockets are written with MSG_DONTWAIT; what the kernel refuses stays in
//! the outbox and the poller writes it on EPOLLOUT), or free a session in
//! the middle of a pass (closing is deferred to `reap`).

use crate::shard::writer::write_session;
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

impl Shard {
    /// One pass: room batches into outboxes, then every dirty outbox out.
    pub fn flush_pass(&self) {
        let mut watches = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            self.fan_out_rooms(state);
            let dirty = std::mem::take(&mut state.dirty);
            let mut writes = 0u64;
            let mut written_by = [0u64; crate::metrics::TRANSPORTS.len()];
            for conn in dirty {
                let Some(session) = state.conns.get_mut(conn) else {
                    continue;
                };
                session.dirty = false;
                if session.held || session.write_blocked || session.close_reason.is_some() {
                    // Held: re-queued when the directory confirms. Blocked:
                    // the poller writes on EPOLLOUT.
                    continue;
                }
                writes += 1;
                watches.extend(write_session(state, conn, &mut written_by).map(|watch| (conn, watch)));
            }
            let mut stats = self.stats.borrow_mut();
            stats.writes += writes;
            for (total, written) in stats.bytes_written.iter_mut().zip(written_by) {
                *total += written;
            }
        }
        for (conn, (fd, writable)) in watches {
            crate::shard::poller::watch(self, fd, conn, writable, libc::EPOLL_CTL_MOD);
        }
    }
}
