//! The commands shards and nodes send each other: one vocabulary for both
//! transports. The mesh (`route::mesh`) carries a `Command` in memory to a
//! shard of this node; the bus carries its encoding (`route::wire`) to a
//! shard of another node, or to every subscriber of a subject. Whichever
//! way it came, a shard applies it with one `Shard::apply`.
//!
//! Where a command goes is `Dest`, which `route::placement` answers; the
//! shares of a ticket that come back (`Confirms`, `Page`, `Failed`) go to
//! the ticket's home, which the `Ack` itself names (its node and shard).
//!
//! Must never: carry anything but owned, immutable data (`Bytes` frames are
//! encoded once and shared by every shard and every subject).

use crate::conn::conns::ConnRef;
use crate::order::sequencer::{HistoryPage, Joined};
use crate::order::tickets::Ack;
use crate::route::bus::BusError;
use crate::route::online::OnlineReport;
use crate::route::wire::{Holder, Report};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;

/// Where a command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One shard: of this node (`node: None`, over the mesh) or of another
    /// (over the bus, on that shard's own subject).
    Shard { node: Option<Arc<str>>, shard: usize },
    /// Every shard of every node subscribed to this bus subject (a room's,
    /// a key's, a mid's, the broadcast's or the reports').
    Subject(String),
}

impl Dest {
    /// Shard `shard` of this node.
    pub fn local(shard: usize) -> Dest {
        Dest::Shard { node: None, shard }
    }
}

#[derive(Debug)]
pub enum Command {
    // ---- to a room's sequencer ----
    /// Give this push the room's next offset, keep it, and send it to every
    /// shard with members (`Room`); the ack returns once it is on its way.
    Sequence { room: Arc<str>, frame: Bytes, ack: Ack },
    /// `conn` (of shard `conn.shard` on node `home`) joins `room` with
    /// positions, and asks to recover from `recover`; answered `Attached`.
    Attach {
        room: Arc<str>,
        conn: ConnRef,
        home: Option<Arc<str>>,
        attach_seq: u32,
        recover: Option<(Box<str>, u32)>,
        replay_bytes_max: u32,
    },
    /// A connection with positions left `room`.
    Detach { room: Arc<str> },
    /// A history API query; answered `Page`.
    History { room: Arc<str>, since: u32, limit: u32, ack: Ack },

    // ---- to the shards that hold connections ----
    /// Deliver to every local member of `room`. `offset` is the push's
    /// place in the room's order; `new_epoch` is set when this push starts
    /// an epoch: members with positions get an op-20 frame first. `epoch`
    /// is the push's epoch where it is needed: always on the bus (the
    /// receiver follows the room's stream by it), on the mesh only with
    /// `new_epoch` (the mesh loses nothing, and an `Arc` cloned on one core
    /// and dropped on another costs a cache line per push).
    Room { room: Arc<str>, epoch: Option<Arc<str>>, offset: u32, new_epoch: bool, frame: Bytes, ack: Ack },
    /// Deliver to every local connection accepting `op`, this shard taking
    /// its share of `speed` connections a second (0 = at once).
    All { op: i32, frame: Bytes, speed: u32, ack: Ack },
    /// Look these keys up in this shard's directory and deliver.
    Keys { keys: Vec<String>, op: i32, frame: Bytes, ack: Ack },
    /// Look these mids up in this shard's directory and deliver.
    Mids { mids: Vec<i64>, op: i32, frame: Bytes, ack: Ack },
    /// Deliver to these local connections if they accept `op`.
    Conns { conns: Vec<ConnRef>, op: i32, frame: Bytes, ack: Ack },

    // ---- answers, to a ticket's home ----
    /// Shares of tickets come back: (ticket id, weight). Consecutive
    /// confirmations to one peer share one message (`Outgoing::confirm`).
    Confirms(Vec<(u64, u64)>),
    /// The answer to a `History` query, with the weight of its share.
    Page { id: u64, weight: u64, page: Box<HistoryPage> },
    /// Where the connection that sent `Attach` joins the room's order.
    Attached(Box<Attached>),
    /// Ticket `id` failed where its push went (the bus could not take it).
    Failed { id: u64, error: BusError },

    // ---- the directory ----
    /// `key` (and `mid`, unless `None`) now belongs to `conn`; `ack` is a
    /// share of the registration's ticket.
    Register { key: Option<String>, mid: Option<i64>, conn: ConnRef, ack: Ack },
    /// `conn` is gone.
    Unregister { key: Option<String>, mid: Option<i64>, conn: ConnRef },
    /// A newer connection took a key: `conns`, holders of it on this shard,
    /// close. Over the bus, `by` names the claimer and the receiving shard
    /// picks `conns`: its holders older than `by` (`Holder`'s order).
    Claim { conns: Vec<ConnRef>, by: Option<Holder> },
    /// A connection from `ip` opened (+1) or closed (-1).
    Ip { ip: IpAddr, delta: i32 },

    // ---- counts ----
    /// One shard's counts, to the other shards of its node.
    Counts(Box<OnlineReport>),
    /// One node's liveness, address and counts (a part of them), to every node.
    Report(Box<Report>),
}

/// The sequencer's answer to `Attach`.
#[derive(Debug)]
pub struct Attached {
    pub room: Arc<str>,
    pub conn: ConnRef,
    pub attach_seq: u32,
    pub joined: Joined,
}

impl Command {
    /// Memory the command holds (its own size and what it owns on the heap;
    /// a frame shared with other commands is counted in each: an upper bound).
    pub fn bytes(&self) -> usize {
        let heap = match self {
            Command::Sequence { room, frame, .. } => room.len() + frame.len(),
            Command::Room { room, frame, .. } => room.len() + frame.len(),
            Command::All { frame, .. } => frame.len(),
            Command::Keys { keys, frame, .. } => keys.iter().map(|k| k.len() + 24).sum::<usize>() + frame.len(),
            Command::Mids { mids, frame, .. } => mids.len() * 8 + frame.len(),
            Command::Conns { conns, frame, .. } => conns.len() * std::mem::size_of::<ConnRef>() + frame.len(),
            Command::Confirms(confirms) => confirms.len() * 16,
            Command::Page { page, .. } => page.messages.iter().map(|(_, f)| f.len() + 8).sum(),
            Command::Attached(attached) => attached.joined.replay.iter().map(|(_, f)| f.len() + 8).sum(),
            Command::Register { key, .. } | Command::Unregister { key, .. } => key.as_ref().map_or(0, |k| k.len()),
            Command::Claim { conns, .. } => conns.len() * std::mem::size_of::<ConnRef>(),
            _ => 0,
        };
        std::mem::size_of::<Command>() + heap
    }

    /// The share of a ticket this command carries, if any: what fails when
    /// the command cannot be sent.
    pub fn ack(&self) -> Option<&Ack> {
        match self {
            Command::Sequence { ack, .. }
            | Command::History { ack, .. }
            | Command::Room { ack, .. }
            | Command::All { ack, .. }
            | Command::Keys { ack, .. }
            | Command::Mids { ack, .. }
            | Command::Conns { ack, .. }
            | Command::Register { ack, .. } => Some(ack),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Commands wait in the mesh's queues by the thousand and are moved
    /// whole: a variant that grows them is a choice, not an accident.
    #[test]
    fn a_command_stays_within_its_size() {
        assert!(std::mem::size_of::<super::Command>() <= 120, "{}", std::mem::size_of::<super::Command>());
        assert!(std::mem::size_of::<crate::order::tickets::Ack>() <= 48);
    }
}
