//! Messages between shards, and the per-peer queues that batch them.
//!
//! Owns: the only path by which data crosses cores. A shard appends
//! messages to a peer's queue during its turn; one sender task per peer
//! hands the whole queue over as one batch through glommio's bounded
//! channel mesh. Receiving tasks apply batches without awaiting another
//! send, so two shards can never wait on each other.
//!
//! Must never: carry anything but owned, immutable data (`Bytes` frames are
//! encoded once and shared by every shard).

use crate::conn::conns::ConnRef;
use crate::order::sequencer::{HistoryPage, Joined};
use crate::order::tickets::Ack;
use crate::route::online::OnlineReport;
use crate::signal::Signal;
use bytes::Bytes;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
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
    pub msgs: Vec<ShardMsg>,
    bytes: usize,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub enum ShardMsg {
    /// To the room's sequencer: give this push the room's next offset, keep
    /// it, and forward it to every shard as `Room`.
    Sequence {
        room: Arc<str>,
        frame: Bytes,
        ack: Ack,
    },
    /// From the room's sequencer: deliver to every local member of `room`.
    /// `new_epoch` is set when this push starts a new epoch (offset 1 after
    /// 2^32 pushes): members with positions get a new op-20 frame first.
    Room {
        room: Arc<str>,
        offset: u32,
        frame: Bytes,
        new_epoch: Option<Arc<str>>,
        ack: Ack,
    },
    /// Deliver to every local connection accepting `op`, walking about
    /// `conns_per_s` connections a second (0 = at once).
    All {
        op: i32,
        frame: Bytes,
        conns_per_s: u32,
        ack: Ack,
    },
    /// Look these keys up in this shard's directory and deliver.
    Keys {
        keys: Vec<String>,
        op: i32,
        frame: Bytes,
        ack: Ack,
    },
    /// Look these mids up in this shard's directory and deliver.
    Mids {
        mids: Vec<i64>,
        op: i32,
        frame: Bytes,
        ack: Ack,
    },
    /// Deliver to these local connections if they accept `op`.
    Conns {
        conns: Vec<ConnRef>,
        op: i32,
        frame: Bytes,
        ack: Ack,
    },
    /// Shares of tickets come back: (ticket id, weight). Consecutive
    /// confirmations to one peer share one message (`Outgoing::confirm`).
    Confirms(Vec<(u64, u64)>),
    /// The answer to a `History` query, with the whole weight of its ticket.
    Page {
        id: u64,
        weight: u64,
        page: Box<HistoryPage>,
    },
    /// To the room's sequencer: `conn` joins `room` with positions (and
    /// asks to recover from `recover`).
    Attach {
        room: Arc<str>,
        conn: ConnRef,
        attach_seq: u32,
        recover: Option<(Box<str>, u32)>,
    },
    /// From the room's sequencer: where `conn` joins the room's order.
    Attached(Box<Attached>),
    /// To the room's sequencer: a connection with positions left `room`.
    Detach {
        room: Arc<str>,
    },
    /// To the room's sequencer: a history API query.
    History {
        room: Arc<str>,
        since: u32,
        limit: u32,
        ack: Ack,
    },
    /// Directory: `key` (and `mid`, unless 0) now belongs to `conn`. The
    /// receiver returns `ack`, a share of the registration's ticket.
    Register {
        key: Option<String>,
        mid: Option<i64>,
        conn: ConnRef,
        ack: Ack,
    },
    /// Directory: `conn` is gone.
    Unregister {
        key: Option<String>,
        mid: Option<i64>,
        conn: ConnRef,
    },
    /// Close `conn`: a newer connection took its key.
    Kick {
        conn: ConnRef,
    },
    /// Directory: a connection from `ip` opened (+1) or closed (-1).
    Ip {
        ip: IpAddr,
        delta: i32,
    },
    Online(Box<OnlineReport>),
    /// The ticket `id` of this shard failed elsewhere (cluster: the bus
    /// could not take its push).
    Failed {
        id: u64,
        why: &'static str,
    },
}

/// The sequencer's answer to `Attach`.
#[derive(Debug)]
pub struct Attached {
    pub room: Arc<str>,
    pub conn: ConnRef,
    pub attach_seq: u32,
    pub joined: Joined,
}

impl ShardMsg {
    /// Memory the message holds (its own size and what it owns on the heap;
    /// a frame shared with other messages is counted in each: an upper bound).
    pub fn bytes(&self) -> usize {
        let heap = match self {
            ShardMsg::Sequence { room, frame, .. } => room.len() + frame.len(),
            ShardMsg::Room { room, frame, .. } => room.len() + frame.len(),
            ShardMsg::All { frame, .. } => frame.len(),
            ShardMsg::Keys { keys, frame, .. } => keys.iter().map(|k| k.len() + 24).sum::<usize>() + frame.len(),
            ShardMsg::Mids { mids, frame, .. } => mids.len() * 8 + frame.len(),
            ShardMsg::Conns { conns, frame, .. } => conns.len() * std::mem::size_of::<ConnRef>() + frame.len(),
            ShardMsg::Confirms(confirms) => confirms.len() * 16,
            ShardMsg::Page { page, .. } => page.messages.iter().map(|(_, f)| f.len() + 8).sum(),
            ShardMsg::Attached(attached) => attached.joined.replay.iter().map(|(_, f)| f.len() + 8).sum(),
            ShardMsg::Register { key, .. } | ShardMsg::Unregister { key, .. } => key.as_ref().map_or(0, |k| k.len()),
            _ => 0,
        };
        std::mem::size_of::<ShardMsg>() + heap
    }
}

/// Outgoing queues to every peer plus the bounds that make publishers wait.
pub struct Outgoing {
    queues: Vec<RefCell<Vec<ShardMsg>>>,
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
    pub fn send(&self, peer: usize, msg: ShardMsg) {
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
            if let Some(ShardMsg::Confirms(confirms)) = queue.last_mut() {
                confirms.push((id, weight));
                return;
            }
        }
        self.send(peer, ShardMsg::Confirms(vec![(id, weight)]));
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
        let bytes: usize = msgs.iter().map(ShardMsg::bytes).sum();
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
pub fn spawn_receivers(mut receivers: Receivers<Batch>, apply: Rc<dyn Fn(ShardMsg)>) {
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

    fn push(bytes: usize) -> ShardMsg {
        let ack = Ack { shard: 0, id: 1, weight: 1, started_us: 0 };
        ShardMsg::All { op: 1000, frame: Bytes::from(vec![0u8; bytes]), conns_per_s: 0, ack }
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
