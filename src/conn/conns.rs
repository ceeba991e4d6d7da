//! The connection table of one shard: a slab of sessions addressed by
//! `ConnRef` (shard, slot, generation), so a stale reference from another
//! shard or a finished broadcast walk never reaches a reused slot.
//!
//! Owns: every session's registration state (key, mid, room, accepts,
//! outbox, close reason). Must never: hold a socket buffer for an idle
//! connection, or be touched by another shard (it lives in a `RefCell`
//! inside the shard, `!Send`).

use crate::conn::close::CloseReason;
use crate::delivery::outbox::Outbox;
use crate::proto::ws::extension::Deflate;
use crate::proto::ws::frame::Decoder;
use std::net::IpAddr;
use std::os::unix::io::RawFd;
use std::rc::Rc;

/// Per-connection WebSocket state (boxed in the session: 8 bytes on TCP).
pub struct WsState {
    /// The 101 response has gone out.
    pub open: bool,
    pub decoder: Decoder,
    /// permessage-deflate, when the upgrade negotiated it.
    pub deflate: Option<Deflate>,
}

impl WsState {
    /// A connection on the WebSocket port, before its upgrade request.
    pub fn upgrading(message_bytes_max: usize) -> WsState {
        WsState { open: false, decoder: Decoder::new(message_bytes_max), deflate: None }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; waiting for the auth frame (op 7).
    Handshake,
    /// The auth frame arrived and `[auth] url` is being asked. Frames after
    /// it wait unread (at most one frame's worth), as goim's comet reads
    /// nothing more before its Connect call returns; the handshake deadline
    /// still runs.
    Checking,
    /// Authenticated with positions: waiting for the room's sequencer to
    /// say where the connection joins the room's order. The directory is
    /// told only after that, so no push reaches the connection before its
    /// position frame. The auth reply is queued but held.
    Attaching,
    /// Registered locally; waiting for the directory to confirm the key.
    /// The auth reply is queued but held.
    Registering,
    /// Authenticated: pushes and replies flow.
    Established,
}

/// A connection anywhere in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// Bytes of a frame that has not fully arrived. Boxed in the session so
/// the common case (no partial frame) costs 8 bytes, not a 24-byte `Vec`.
pub struct Partial(pub Vec<u8>);

/// One authenticated (or authenticating) client connection.
pub struct Session {
    pub fd: RawFd,
    pub phase: Phase,
    pub key: Box<str>,
    pub mid: i64,
    pub ip: IpAddr,
    /// Room key (`type://id`) and the session's index in that room's member list.
    pub room: Option<Rc<str>>,
    pub room_index: u32,
    /// Sorted, deduplicated operations this session accepts for key/mid/all pushes.
    pub accepts: Vec<i32>,
    pub outbox: Outbox,
    /// In the shard's dirty list already (avoids duplicates).
    pub dirty: bool,
    /// The kernel refused bytes; the poller writes on EPOLLOUT until drained.
    pub write_blocked: bool,
    /// Set until the directory confirmed the key: nothing is written before
    /// the auth reply, and the auth reply waits for the registration.
    pub held: bool,
    pub close_reason: Option<CloseReason>,
    /// The client asked for positions (or recovery): room pushes carry
    /// their offset in the sequence field, and joins go through the
    /// room's sequencer.
    pub positions: bool,
    /// In its room at a point of the room's order that the sequencer
    /// counts as attached (a `Detach` is owed when it leaves).
    pub attached: bool,
    /// Bumped at every room change of a connection with positions, so a
    /// late answer for a room it already left is recognised.
    pub attach_seq: u32,
    /// Handshake or idle deadline in wheel ticks (see `wheel`).
    pub deadline_tick: u32,
    /// Upstream frames in the current second: (second, count), for
    /// `limits.upstream_frames_per_s_max` (see `rate`).
    pub upstream_window: (u32, u32),
    /// The tail of a frame that has not fully arrived; `None` almost always,
    /// so an idle connection holds no read buffer.
    pub partial: Option<Box<Partial>>,
    /// WebSocket state for connections on the WebSocket port; `None` on TCP.
    pub ws: Option<Box<WsState>>,
    /// TLS state for connections on the WSS port.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// The rooms a verified token lets this connection into (`[auth]` on).
    pub grant: Option<Box<crate::proto::jwt::Grant>>,
}

impl Session {
    /// A connection that has just been accepted.
    pub fn accepted(fd: RawFd, ip: IpAddr, deadline_tick: u32) -> Session {
        Session {
            fd,
            phase: Phase::Handshake,
            key: Box::from(""),
            mid: 0,
            ip,
            room: None,
            room_index: 0,
            accepts: Vec::new(),
            outbox: Outbox::default(),
            dirty: false,
            write_blocked: false,
            held: true,
            close_reason: None,
            positions: false,
            attached: false,
            attach_seq: 0,
            deadline_tick,
            upstream_window: (0, 0),
            partial: None,
            ws: None,
            tls: None,
            grant: None,
        }
    }
}

struct Slot {
    generation: u32,
    session: Option<Session>,
}

/// A slab of sessions with generation-checked references.
pub struct Conns {
    shard: u16,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Conns {
    pub fn new(shard: u16) -> Conns {
        Conns { shard, slots: Vec::new(), free: Vec::new(), live: 0 }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Slots ever allocated (an upper bound for walks by slot index).
    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn insert(&mut self, session: Session) -> ConnRef {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot { generation: 0, session: None });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        assert!(entry.session.is_none(), "free slot {slot} still holds a session");
        entry.session = Some(session);
        self.live += 1;
        ConnRef { shard: self.shard, slot, generation: entry.generation }
    }

    pub fn remove(&mut self, conn: ConnRef) -> Option<Session> {
        let entry = self.slots.get_mut(conn.slot as usize)?;
        if entry.generation != conn.generation {
            return None;
        }
        let session = entry.session.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(conn.slot);
        self.live -= 1;
        Some(session)
    }

    pub fn get(&self, conn: ConnRef) -> Option<&Session> {
        let entry = self.slots.get(conn.slot as usize)?;
        if entry.generation != conn.generation || conn.shard != self.shard {
            return None;
        }
        entry.session.as_ref()
    }

    pub fn get_mut(&mut self, conn: ConnRef) -> Option<&mut Session> {
        let entry = self.slots.get_mut(conn.slot as usize)?;
        if entry.generation != conn.generation || conn.shard != self.shard {
            return None;
        }
        entry.session.as_mut()
    }

    /// The session in `slot`, whatever its generation (for walks).
    pub fn by_slot_mut(&mut self, slot: u32) -> Option<(ConnRef, &mut Session)> {
        let entry = self.slots.get_mut(slot as usize)?;
        let conn = ConnRef { shard: self.shard, slot, generation: entry.generation };
        entry.session.as_mut().map(|session| (conn, session))
    }

    pub fn refs(&self) -> Vec<ConnRef> {
        (0..self.slots.len() as u32)
            .filter_map(|slot| {
                let entry = &self.slots[slot as usize];
                entry.session.as_ref().map(|_| ConnRef { shard: self.shard, slot, generation: entry.generation })
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) fn test_session() -> Session {
    Session::accepted(-1, IpAddr::from([127, 0, 0, 1]), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_refuses_the_old_reference() {
        let mut conns = Conns::new(0);
        let first = conns.insert(test_session());
        assert!(conns.remove(first).is_some());
        let second = conns.insert(test_session());
        assert_eq!(first.slot, second.slot);
        assert!(conns.get(first).is_none());
        assert!(conns.get(second).is_some());
        assert!(conns.remove(first).is_none());
        assert_eq!(conns.len(), 1);
    }
}
