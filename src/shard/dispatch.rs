//! Starting the pushes that the HTTP API receives, and delivering pushes to
//! this shard's connections.
//!
//! Owns: the routing rules, as placement answers them: room pushes go to
//! the room's sequencer shard, which numbers them and sends them to every
//! shard with members (each delivers to its own members, accepts ignored);
//! key and mid pushes go to the owner of the key or mid in the directory,
//! which forwards to the connection's shard (two hops at most), or
//! clustered, to the key's or mid's subject; broadcasts go to every shard.
//! Every push carries a share of its request's ack, returned where it is
//! applied. Must never: await (a push is applied in one go, so no shard
//! waits on another here).

use crate::conn::close::CloseReason;
use crate::conn::conns::{ConnRef, Phase};
use crate::delivery::room::Pushed;
use crate::order::tickets::Ack;
use crate::route::command::Command;
use crate::shard::websocket::Payload;
use crate::shard::Shard;
use bytes::Bytes;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Broadcast walks are throttled in steps of this length.
const BROADCAST_STEP_MS: u64 = 10;
/// Throttled broadcast walks running at once on one shard. Past it a
/// broadcast goes out unthrottled (and a warning says so): a publisher
/// cannot pile up slow walks, each holding its message, without bound.
const THROTTLED_WALKS_MAX: usize = 16;

/// A throttled broadcast on this shard, stepped by `Shard::walk_step`.
pub struct Walk {
    op: i32,
    payload: Payload,
    /// Slots per step, and the wait between steps.
    step: u32,
    step_ms: u64,
    /// The slot count when the broadcast was applied: the walk ends there.
    end_slot: u32,
    cursor: Rc<WalkCursor>,
    /// The walk started before this one, which this one never passes.
    ahead: Option<Rc<WalkCursor>>,
}

/// How far a throttled broadcast walk has come on this shard.
#[derive(Default)]
pub struct WalkCursor {
    /// The next slot it will deliver to.
    next: Cell<u32>,
    done: Cell<bool>,
}

impl Shard {
    /// Groups `conns` by shard and delivers (locally) or forwards them,
    /// each forward with a share of `ack`; this shard's share returns once
    /// its own connections have theirs.
    pub(crate) fn forward_to_conns(&self, conns: Vec<ConnRef>, op: i32, frame: Bytes, ack: Ack) {
        let mut by_shard: Vec<Vec<ConnRef>> = vec![Vec::new(); self.shards];
        for conn in conns {
            if let Some(list) = by_shard.get_mut(conn.shard as usize) {
                list.push(conn);
            }
        }
        let started_us = ack.started_us;
        let remote =
            by_shard.iter().enumerate().filter(|(shard, conns)| *shard != self.id && !conns.is_empty()).count();
        let mut parts = ack.split(remote + 1);
        let mine = parts.next().expect("split into at least one part");
        for (shard, conns) in by_shard.into_iter().enumerate() {
            if conns.is_empty() {
                continue;
            }
            if shard == self.id {
                self.note_delivered(started_us);
                self.deliver_conns(&conns, op, frame.clone());
            } else {
                let ack = parts.next().expect("one part per remote shard");
                self.outgoing.send(shard, Command::Conns { conns, op, frame: frame.clone(), ack });
            }
        }
        self.confirm(mine);
    }

    pub(crate) fn deliver_conns(&self, conns: &[ConnRef], op: i32, frame: Bytes) {
        let payload = Payload::new(Rc::new(frame), 1);
        let mut state = self.state.borrow_mut();
        // Room pushes applied before this one leave before it.
        self.fan_out_rooms(&mut state);
        let mut delivered = 0;
        for conn in conns {
            let Some(session) = state.conns.get(*conn) else { continue };
            if session.accepts.binary_search(&op).is_err() {
                self.stats.borrow_mut().undelivered[crate::metrics::UNDELIVERED_NOT_ACCEPTED] += 1;
                continue;
            }
            if self.enqueue_payload(&mut state, *conn, &payload) {
                delivered += 1;
            }
        }
        self.stats.borrow_mut().frames_queued += delivered;
    }

    /// Queues a room push for the next fan-out (batched with the room's
    /// other pushes of the same pass into one write per member). The batch
    /// is one chunk in every member's outbox, so it is kept within half the
    /// outbound bound (`room_batch_bytes_max`): past it, and past
    /// `room::PENDING_BYTES_PER_PASS_MAX` held on the shard, the flush runs
    /// now (fan-out and writes: in order, ahead of what follows), so a
    /// member that keeps up takes a burst in chunks its bound holds.
    pub(crate) fn deliver_room(&self, room: &str, offset: u32, frame: Bytes) -> bool {
        let batch_bytes_max = self.room_batch_bytes_max();
        let pushed = self.state.borrow_mut().rooms.push(room, offset, frame, batch_bytes_max);
        let pushed = match pushed {
            Pushed::BatchFull(frame) => {
                self.flush_pass();
                self.state.borrow_mut().rooms.push(room, offset, frame, batch_bytes_max)
            }
            pushed => pushed,
        };
        if pushed != Pushed::Queued {
            return false;
        }
        if self.state.borrow().rooms.pending_bytes() > crate::delivery::room::PENDING_BYTES_PER_PASS_MAX {
            self.flush_pass();
        }
        self.flush.raise();
        true
    }

    /// Bytes of frames one room batch may hold: half the outbound bound, so
    /// a batch fits an outbox beside what the kernel has not taken yet.
    pub(crate) fn room_batch_bytes_max(&self) -> usize {
        self.config.limits.outbound_bytes_per_connection_max / 2
    }

    pub(crate) fn deliver_all(&self, op: i32, frame: Bytes, conns_per_s: u32) {
        let payload = Payload::new(Rc::new(frame), 1);
        let walks = &self.throttled_walks;
        if conns_per_s > 0 && walks.get() >= THROTTLED_WALKS_MAX {
            crate::log_warn!(
                "shard {}: {THROTTLED_WALKS_MAX} throttled broadcasts running; this one goes out at once",
                self.id
            );
        }
        // What a broadcast is ordered against (docs/positions.md section 1): a
        // speed-0 one is applied at once, like any push, so it is ordered
        // against every push, and it may overtake a throttled walk still
        // running (waiting behind the walk would hold every later room or key
        // push behind it too). Throttled walks keep their order among
        // themselves, except past THROTTLED_WALKS_MAX, where one goes out at once.
        if conns_per_s == 0 || walks.get() >= THROTTLED_WALKS_MAX {
            let slots = self.state.borrow().conns.slot_count();
            self.deliver_all_slots(op, &payload, 0, slots);
            return;
        }
        walks.set(walks.get() + 1);
        // A throttled walk: about `conns_per_s` slots a second, in steps.
        // It never passes the walk started before it (throttled broadcasts
        // reach each connection in the order they were applied).
        let step = ((conns_per_s as u64 * BROADCAST_STEP_MS / 1000).max(1)) as u32;
        let step_ms = (step as u64 * 1000 / conns_per_s as u64).max(1);
        let cursor = Rc::new(WalkCursor::default());
        let ahead = self.last_walk.replace(Some(cursor.clone()));
        // The walk covers the connections there when it was applied: a fixed
        // end, so a walk that is done never moves again and the one behind it
        // cannot pass the one ahead of both.
        let end_slot = self.state.borrow().conns.slot_count();
        let walk = Walk { op, payload, step, step_ms, end_slot, cursor, ahead };
        self.io.run_walk(self.rc(), walk);
    }

    /// One step of a throttled walk: the next slots it may reach, at most
    /// `step` of them and never past the walk ahead of it. Returns how long
    /// to wait before the next step, or `None` when the walk is done.
    pub fn walk_step(&self, walk: &Walk) -> Option<Duration> {
        let Walk { op, payload, step, step_ms, end_slot, cursor, ahead } = walk;
        let next = cursor.next.get();
        if next >= *end_slot || self.stopping.get() {
            cursor.done.set(true);
            self.throttled_walks.set(self.throttled_walks.get() - 1);
            return None;
        }
        let limit = match ahead {
            Some(ahead) if !ahead.done.get() => ahead.next.get().min(*end_slot),
            _ => *end_slot,
        };
        let end = next.saturating_add(*step).min(limit);
        if end > next {
            self.deliver_all_slots(*op, payload, next, end);
            cursor.next.set(end);
        }
        Some(Duration::from_millis(*step_ms))
    }

    fn deliver_all_slots(&self, op: i32, payload: &Payload, from: u32, to: u32) {
        let mut state = self.state.borrow_mut();
        self.fan_out_rooms(&mut state);
        let mut delivered = 0;
        for slot in from..to {
            let Some((conn, session)) = state.conns.by_slot_mut(slot) else { continue };
            // A connection still waiting for its position frame gets nothing before it.
            let ready = session.phase != Phase::Attaching;
            if ready && session.accepts.binary_search(&op).is_ok() && self.enqueue_payload(&mut state, conn, payload) {
                delivered += 1;
            }
        }
        self.stats.borrow_mut().frames_queued += delivered;
    }

    /// Closes every connection and stops accepting.
    pub fn begin_shutdown(&self) {
        if self.stopping.replace(true) {
            return;
        }
        self.stop.raise();
        {
            let mut state = self.state.borrow_mut();
            for conn in state.conns.refs() {
                state.close(conn, CloseReason::Shutdown);
            }
        }
        self.reap();
    }

    // ---- pushes started by the HTTP API on this shard ----
    //
    // Each takes the ack of the request's ticket: the reply leaves when
    // every shard the push had to reach has applied it. Where a push goes
    // is placement's answer; these only send it.

    /// POST /goim/push/keys: to each key's directory shard (which forwards
    /// to the connection's shard), or clustered, each key's subject.
    pub fn push_keys(&self, keys: Vec<String>, op: i32, body: &[u8], ack: Ack) {
        let frame = Self::push_frame(op, body);
        let plan = self.placement().keys(keys);
        self.send_planned(plan, ack, |keys, ack| Command::Keys { keys, op, frame: frame.clone(), ack });
    }

    /// POST /goim/push/mids: as keys.
    pub fn push_mids(&self, mids: Vec<i64>, op: i32, body: &[u8], ack: Ack) {
        let frame = Self::push_frame(op, body);
        let plan = self.placement().mids(mids);
        self.send_planned(plan, ack, |mids, ack| Command::Mids { mids, op, frame: frame.clone(), ack });
    }

    /// POST /goim/push/room: to the room's sequencer, which orders it and
    /// sends it to every shard with members (a member may have joined a
    /// moment ago). The frame is encoded once and shared by every shard.
    pub fn push_room(&self, room: &str, op: i32, body: &[u8], ack: Ack) {
        let frame = Self::push_frame(op, body);
        match self.placement().room_requests(room) {
            // No sequencer to number it: not delivered anywhere, -500.
            Err(error) => self.bus_refused(ack.id, error),
            Ok(sequencer) => self.send_request(sequencer, Command::Sequence { room: Arc::from(room), frame, ack }),
        }
    }

    /// POST /goim/push/all: `speed` connections a second over every shard
    /// it reaches (each takes its share, `broadcast_share`).
    pub fn push_all(&self, op: i32, body: &[u8], speed: u32, ack: Ack) {
        let frame = Self::push_frame(op, body);
        let plan = self.placement().everyone();
        self.send_planned(plan, ack, |(), ack| Command::All { op, frame: frame.clone(), speed, ack });
    }

    /// GET /goim/room/history: asks the room's sequencer.
    pub fn query_history(&self, room: &str, since: u32, limit: u32, ack: Ack) {
        match self.placement().room_requests(room) {
            Ok(sequencer) => {
                // A read the bus cannot take is answered -500, not counted
                // as a push that failed.
                let id = ack.id;
                if let Err(error) =
                    self.send_to(sequencer, Command::History { room: Arc::from(room), since, limit, ack })
                {
                    self.tickets.borrow_mut().fail(id, error.reason());
                }
            }
            Err(error) => {
                self.tickets.borrow_mut().fail(ack.id, error.reason());
            }
        }
    }
}
