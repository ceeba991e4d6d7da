//! Joining a room at one point of its order (docs/positions.md sections 3 to 5).
//!
//! A connection with positions does not join its room's member list on
//! its own shard at once: it asks the room's sequencer (`Attach`), which
//! answers with the room's epoch and last offset N (and, for a recovery,
//! the pushes the client missed). The answer travels on the same FIFO
//! channel as the room's pushes, so when it arrives every push up to N has
//! already been applied here and none after it: the connection gets its
//! op-20 frame, the replay, and joins the member list right then, and the
//! live pushes from N+1 on meet it with no gap and no duplicate.
//!
//! Owns: both ends of that exchange, the op-20 frame, and the sequencer's
//! side of the history API. Must never: let a room push reach a connection
//! with positions before its op-20 frame, or answer a recovery in part.

use super::{session, Shard, State};
use crate::conn::conns::{ConnRef, Phase};
use crate::order::sequencer::{Recovery, Refusal, Sequencer};
use crate::proto::goim::{frame, op};
use crate::proto::http::response::push_string;
use crate::route::command::{Attached, Command};
use crate::shard::fanout::with_offsets;
use crate::shard::websocket::Payload;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::Arc;

/// Outbound bytes kept free beside a replay for the replies around it (auth
/// reply, op-20 frame, a heartbeat reply): a replay larger than the
/// connection's outbound bound minus this is refused as too large.
const REPLAY_HEADROOM_BYTES: usize = 1024;
/// WebSocket headers around the op-20 message and the replay's op-9 message.
const WS_FRAMING_BYTES: usize = 64;

impl Shard {
    /// Asks `room`'s sequencer where `conn` joins (member side). Callers
    /// must not hold a borrow of `state`.
    pub fn request_attach(&self, conn: ConnRef, room: &str, attach_seq: u32, recover: Option<(Box<str>, u32)>) {
        let replay_bytes_max =
            self.config.limits.outbound_bytes_per_connection_max.saturating_sub(REPLAY_HEADROOM_BYTES);
        let replay_bytes_max = replay_bytes_max.min(u32::MAX as usize) as u32;
        let attach = |recover| Command::Attach {
            room: Arc::from(room),
            conn,
            home: None,
            attach_seq,
            recover,
            replay_bytes_max,
        };
        // Clustered, subscribe to the room first, so every push numbered
        // after the sequencer answers reaches this shard.
        self.subscribe_for_join(room);
        if self.send_to(self.placement().joins(room), attach(recover.clone())).is_err() {
            // The bus cannot take it: this node's shard for the room answers.
            self.unsubscribe_for_join(room);
            self.send(self.placement().shard_of(room), attach(recover));
        }
    }

    /// The member side: the connection joins its room here and now.
    pub(crate) fn on_attached(&self, attached: Attached) {
        let Attached { room, conn, attach_seq, joined } = attached;
        let (current, register) = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            // Pushes applied before this answer are for the members that
            // were there before it.
            self.fan_out_rooms(state);
            let (current, register) = match state.conns.get_mut(conn) {
                Some(session) if session.close_reason.is_none() => {
                    let register = session.phase == Phase::Attaching;
                    if register {
                        session.phase = Phase::Registering;
                    }
                    (session.attach_seq == attach_seq && session.room.is_none(), register)
                }
                _ => (false, false),
            };
            if current {
                self.join_at(state, conn, &room, &joined);
            }
            (current, register)
        };
        if !current {
            // Gone, or it moved on: the sequencer counted it, so uncount it.
            self.send_detach(room);
        }
        if register {
            session::register(self, conn);
        }
    }

    /// Queues the op-20 frame and the replay, then adds `conn` to the room.
    /// A replay that would not fit the connection's outbound bound next to
    /// what it holds already is refused whole here (the sequencer only
    /// checked it against the bound): never "recovered" with pushes dropped.
    fn join_at(&self, state: &mut State, conn: ConnRef, room: &str, joined: &crate::order::sequencer::Joined) {
        let missed = joined.replay.len() as u32;
        // A recovery's frame, when the replay fits beside what is queued.
        let mut recovered_frame = None;
        let recovery = match joined.recovery {
            Recovery::Recovered => {
                let frame = position_frame(room, &joined.epoch, joined.offset, true, missed);
                let replay_bytes: usize = joined.replay.iter().map(|(_, frame)| frame.len()).sum();
                let queued_bytes = state.conns.get(conn).map_or(0, |session| session.outbox.memory_bytes());
                // Two more chunks: the op-20 frame and the replay.
                let overhead = 2 * crate::delivery::outbox::CHUNK_OVERHEAD_BYTES;
                let needed = queued_bytes + frame.len() + replay_bytes + WS_FRAMING_BYTES + overhead;
                if needed > self.config.limits.outbound_bytes_per_connection_max {
                    Recovery::Refused(Refusal::TooLarge)
                } else {
                    recovered_frame = Some(frame);
                    Recovery::Recovered
                }
            }
            other => other,
        };
        {
            let mut stats = self.stats.borrow_mut();
            match recovery {
                Recovery::NotAsked => {}
                Recovery::Recovered => stats.recoveries_served += 1,
                Recovery::Refused(refusal) => stats.recoveries_refused[refusal.index()] += 1,
            }
        }
        match recovered_frame {
            None => {
                self.enqueue_reply(state, conn, position_frame(room, &joined.epoch, joined.offset, false, 0));
            }
            Some(frame) => {
                self.enqueue_reply(state, conn, frame);
                if missed > 0 {
                    let replay = Payload::new(Rc::new(with_offsets(&joined.replay)), missed as u64);
                    if self.enqueue_payload(state, conn, &replay) {
                        self.stats.borrow_mut().frames_queued += missed as u64;
                    }
                }
            }
        }
        session::join(state, conn, room);
        if let Some(session) = state.conns.get_mut(conn) {
            session.attached = true;
        }
    }

    /// The room started a new epoch: every local member with positions gets
    /// an op-20 frame for it (`offset`: the pushes that follow start after
    /// it; 0 for a fresh epoch) after the pushes of the old one.
    pub(crate) fn announce_epoch(&self, room: &str, epoch: &str, offset: u32) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        self.fan_out_rooms(state);
        let frame = position_frame(room, epoch, offset, false, 0);
        for slot in state.rooms.member_slots(room) {
            let Some((conn, session)) = state.conns.by_slot_mut(slot) else { continue };
            if session.positions {
                self.enqueue_reply(state, conn, frame.clone());
            }
        }
    }

    /// Copies the sequencer's gauges into this shard's counters.
    pub(crate) fn note_history(&self, sequencer: &Sequencer) {
        let mut stats = self.stats.borrow_mut();
        stats.history_bytes = sequencer.bytes() as u64;
        stats.history_pushes = sequencer.kept() as u64;
    }

    /// The ticker's once-a-second housekeeping of the history.
    pub fn expire_history(&self) {
        let now_ms = self.now_ms();
        let mut sequencer = self.sequencer.borrow_mut();
        sequencer.expire(now_ms);
        self.note_history(&sequencer);
    }
}

/// The op-20 frame: version 1, sequence 0, JSON body.
pub fn position_frame(room: &str, epoch: &str, offset: u32, recovered: bool, missed: u32) -> bytes::Bytes {
    let mut body = String::with_capacity(96 + room.len());
    body.push_str("{\"room\":");
    push_string(&mut body, room);
    body.push_str(",\"epoch\":");
    push_string(&mut body, epoch);
    let _ = write!(body, ",\"offset\":{offset},\"recovered\":{recovered},\"missed\":{missed}}}");
    frame::encode(op::PUSH_VERSION, op::POSITION, 0, body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_frame_is_op_20_with_the_json_of_positions_md() {
        let bytes = position_frame("live://1\"x", "Ab1", 7, true, 3);
        let (f, used) = frame::decode(&bytes, 4096).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!((f.ver, f.op, f.seq), (1, 20, 0));
        assert_eq!(
            std::str::from_utf8(f.body).unwrap(),
            r#"{"room":"live://1\"x","epoch":"Ab1","offset":7,"recovered":true,"missed":3}"#
        );
    }
}
