//! One flusher pass of the shard core, and the writes outside it: once per
//! pass of the executor pending room pushes fan out (`fanout`: one shared
//! chunk per room, handed to every member), then every dirty connection is
//! written (through `ShardIo::write`: one `sendmsg` of up to 64 chunks
//! today). `write_session` is the one place that settles what a write left:
//! drained (stop watching writability), blocked (watch it: the poller
//! writes the rest when the kernel has room) or broken (closed as
//! `io_error`). The flusher's pass, the poller's writability and TLS
//! records, and the WebSocket handshake answers and close frames all go
//! through it, so a 101 or a close frame the kernel refuses waits for
//! writability like any push, never in rustls for something else to write.
//!
//! Owns: the coalescing of writes. Every frame that became due for a
//! connection during one pass leaves in one write. Must never: block (what
//! the kernel refuses stays in the outbox), write a held session's bytes
//! past its open prefix (`Outbox::push_open`: the 101 goes out before the
//! auth reply, which waits for the directory), or free a session in the
//! middle of a pass (closing is deferred to `reap`; a broken one is marked
//! closed).

use super::{Shard, State};
use crate::conn::close::CloseReason;
use crate::conn::conns::ConnRef;
use crate::shard::io::{ShardIo, WriteOutcome};
use std::os::unix::io::RawFd;

/// A change the watch set needs after a write: (socket, watch writability).
pub type Watch = (RawFd, bool);

/// Writes what `conn` may send now and settles the outcome; returns the
/// watch change it needs (applied by the caller once no borrow is held).
/// Bytes written are added to `written_by` per transport.
pub fn write_session(io: &dyn ShardIo, state: &mut State, conn: ConnRef, written_by: &mut [u64]) -> Option<Watch> {
    let session = state.conns.get_mut(conn)?;
    if session.close_reason.is_some() {
        return None;
    }
    let transport = crate::shard::queue::transport_of(session);
    let mut written = 0;
    let outcome = io.write(session, &mut written);
    written_by[transport] += written;
    match outcome {
        WriteOutcome::Drained if session.write_blocked => {
            session.write_blocked = false;
            Some((session.fd, false))
        }
        WriteOutcome::Drained => None,
        WriteOutcome::Blocked if !session.write_blocked => {
            session.write_blocked = true;
            Some((session.fd, true))
        }
        WriteOutcome::Blocked => None,
        WriteOutcome::Broken => {
            state.close(conn, CloseReason::IoError);
            None
        }
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
                    // the poller writes when the socket is writable.
                    continue;
                }
                writes += 1;
                watches.extend(write_session(&*self.io, state, conn, &mut written_by).map(|watch| (conn, watch)));
            }
            let mut stats = self.stats.borrow_mut();
            stats.writes += writes;
            for (total, written) in stats.bytes_written.iter_mut().zip(written_by) {
                *total += written;
            }
        }
        for (conn, (fd, writable)) in watches {
            self.io.watch(fd, conn, writable);
        }
    }

    /// Writes `conn` now (writability, TLS records, a WebSocket handshake
    /// answer or close frame), outside the flusher's pass.
    pub fn write_now(&self, conn: ConnRef) {
        let mut written_by = [0u64; crate::metrics::TRANSPORTS.len()];
        let watch = write_session(&*self.io, &mut self.state.borrow_mut(), conn, &mut written_by);
        let mut stats = self.stats.borrow_mut();
        for (total, written) in stats.bytes_written.iter_mut().zip(written_by) {
            *total += written;
        }
        drop(stats);
        if let Some((fd, writable)) = watch {
            self.io.watch(fd, conn, writable);
        }
    }

    /// Queues `bytes` (a handshake answer or a close frame) so they may
    /// leave even before the auth reply is released, and writes them now.
    /// Behind bytes still held they queue as any chunk and leave after them.
    pub fn write_control(&self, conn: ConnRef, bytes: Vec<u8>) {
        {
            let mut state = self.state.borrow_mut();
            let Some(session) = state.conns.get_mut(conn) else { return };
            session.outbox.push_open(std::rc::Rc::new(bytes.into()));
        }
        self.write_now(conn);
    }
}
