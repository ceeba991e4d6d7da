//! The in-memory transport of commands (`route::command`) between the
//! shards of one node, and the per-peer queues that batch them.
//!
//! Owns: the only path by which data crosses cores. A shard appends
//! commands to a peer's queue during its turn; one sender task per peer
//! hands the whole queue over as one batch through glommio's bounded
//! channel mesh. Receiving tasks apply batches without awaiting another
//! send, so two shards can never wait on each other.
//!
//! Must never: reorder what one shard sends another (each channel is FIFO:
//! the ordering contract stands on it).

use crate::route::command::Command;
use crate::signal::Signal;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How often a publisher waiting for the mesh to drain looks again.
const DRAIN_POLL_MS: u64 = 1;

/// Batches in flight on one mesh channel before a sender task waits.
pub const MESH_CHANNEL_BATCHES: usize = 64;

/// Messages to one peer, handed over together. Its bytes count against the
/// sender's mesh bound until the receiver has applied them and drops it.
pub struct Batch {
    pub msgs: Vec<Command>,
    bytes: usize,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Outgoing queues to every peer plus the bounds that make publishers wait.
pub struct Outgoing {
    queues: Vec<RefCell<Vec<Command>>>,
    signals: Vec<Signal>,
    pending_messages: Cell<usize>,
    pending_messages_max: usize,
    /// Bytes queued here, not yet handed to a peer's channel.
    queued_bytes: Cell<usize>,
    /// Bytes handed over and not yet applied by their receiver (it drops
    /// the `Batch`, which gives them back from its thread).
    in_flight_bytes: Arc<AtomicUsize>,
    pending_bytes_max: usize,
}

impl Outgoing {
    pub fn new(shards: usize, pending_messages_max: usize, pending_bytes_max: usize) -> Outgoing {
        Outgoing {
            queues: (0..shards).map(|_| RefCell::new(Vec::new())).collect(),
            signals: (0..shards).map(|_| Signal::default()).collect(),
            pending_messages: Cell::new(0),
            pending_messages_max,
            queued_bytes: Cell::new(0),
            in_flight_bytes: Arc::new(AtomicUsize::new(0)),
            pending_bytes_max,
        }
    }

    /// Queues `msg` for `peer`; it leaves with the peer's next batch.
    pub fn send(&self, peer: usize, msg: Command) {
        self.queued_bytes.set(self.queued_bytes.get() + msg.bytes());
        self.queues[peer].borrow_mut().push(msg);
        self.pending_messages.set(self.pending_messages.get() + 1);
        self.signals[peer].raise();
    }

    /// Bytes sent to peers and not applied by them yet.
    pub fn pending_bytes(&self) -> usize {
        self.queued_bytes.get() + self.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// Queues a confirmation for `peer`, in the last message to it when
    /// that one is a `Confirms` already.
    pub fn confirm(&self, peer: usize, id: u64, weight: u64) {
        {
            let mut queue = self.queues[peer].borrow_mut();
            if let Some(Command::Confirms(confirms)) = queue.last_mut() {
                confirms.push((id, weight));
                return;
            }
        }
        self.send(peer, Command::Confirms(vec![(id, weight)]));
    }

    /// True while more than `mesh_pending_messages_max` messages wait to
    /// leave, or more than `mesh_pending_bytes_max` bytes are sent and not
    /// yet applied: HTTP publishers then wait (`wait_drained`) before
    /// reading more requests (what they sent is held by the kernel).
    pub fn congested(&self) -> bool {
        self.pending_messages.get() > self.pending_messages_max || self.pending_bytes() > self.pending_bytes_max
    }

    /// Several publishers may wait at once, so this polls instead of
    /// keeping one waker per waiter; it only runs while congested.
    pub async fn wait_drained(&self) {
        while self.congested() {
            glommio::timer::sleep(std::time::Duration::from_millis(DRAIN_POLL_MS)).await;
        }
    }

    /// Hands the peer's queue over as one batch (the sender task does this;
    /// the simulation test too).
    pub(crate) fn take(&self, peer: usize) -> Batch {
        let msgs = std::mem::take(&mut *self.queues[peer].borrow_mut());
        self.pending_messages.set(self.pending_messages.get() - msgs.len());
        let bytes: usize = msgs.iter().map(Command::bytes).sum();
        self.queued_bytes.set(self.queued_bytes.get().saturating_sub(bytes));
        self.in_flight_bytes.fetch_add(bytes, Ordering::Relaxed);
        Batch { msgs, bytes, in_flight: self.in_flight_bytes.clone() }
    }
}

/// Runs one sender task per peer; returns when the mesh closes.
pub fn spawn_senders(outgoing: Rc<Outgoing>, senders: Rc<Senders<Batch>>) {
    for peer in 0..outgoing.queues.len() {
        if peer == senders.peer_id() {
            continue;
        }
        let outgoing = outgoing.clone();
        let senders = senders.clone();
        glommio::spawn_local(async move {
            loop {
                outgoing.signals[peer].wait().await;
                let batch = outgoing.take(peer);
                if batch.msgs.is_empty() {
                    continue;
                }
                if senders.send_to(peer, batch).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
}

/// Runs one receiving task per peer, handing each message to `apply`.
pub fn spawn_receivers(mut receivers: Receivers<Batch>, apply: Rc<dyn Fn(Command)>) {
    for (_peer, receiver) in receivers.streams() {
        let apply = apply.clone();
        glommio::spawn_local(async move {
            while let Some(mut batch) = receiver.recv().await {
                for msg in batch.msgs.drain(..) {
                    apply(msg);
                }
                // Dropping the batch gives its bytes back to the sender's bound.
                drop(batch);
                // `recv` does not yield while batches are waiting: give the
                // flusher its pass, or outboxes would grow without a write.
                futures_lite::future::yield_now().await;
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::tickets::Ack;
    use bytes::Bytes;

    fn push(bytes: usize) -> Command {
        let ack = Ack { node: None, shard: 0, id: 1, weight: 1, started_us: 0 };
        Command::All { op: 1000, frame: Bytes::from(vec![0u8; bytes]), speed: 0, ack }
    }

    #[test]
    fn the_mesh_bound_counts_bytes_until_the_receiver_has_applied_them() {
        let outgoing = Outgoing::new(2, 65_536, 1 << 20);
        outgoing.send(1, push(600 << 10));
        assert!(!outgoing.congested(), "600 KiB under a 1 MiB bound");
        outgoing.send(1, push(600 << 10));
        assert!(outgoing.congested(), "two pushes of 600 KiB are past it, though only 2 messages");
        let batch = outgoing.take(1);
        assert_eq!(batch.msgs.len(), 2);
        assert!(outgoing.congested(), "handed to the channel, not applied: still counted");
        drop(batch);
        assert!(!outgoing.congested());
        assert_eq!(outgoing.pending_bytes(), 0);
    }
}
