//! Queueing bytes for a connection: the one place that decides a slow
//! consumer's fate. Every push, reply and control frame for a client goes
//! through `Shard::enqueue`, which picks the bytes for the connection's
//! transport (TCP frames, a WebSocket message, compressed or not) and
//! applies the outbound bound.
//!
//! Owns: the choice of encoding per connection and the policy at
//! `limits.outbound_bytes_per_connection_max` (docs/configuration.md, "What happens at each bound"): "close"
//! closes the connection as a slow consumer, "drop" drops the chunk; either
//! way every frame of it is counted as undelivered (`queue_full`). Must
//! never: write to a socket (`writer` does), or queue past the bound
//! (an empty outbox may go past it with one push, never more: room batches
//! are cut at half the bound, so the bound is max(bound, one push)).

use super::{Shard, State};
use crate::config::SlowConsumerPolicy;
use crate::conn::close::CloseReason;
use crate::conn::conns::{self, ConnRef};
use crate::delivery::outbox::{Chunk, Queued};
use crate::shard::websocket::{self, Payload};
use bytes::Bytes;
use std::rc::Rc;

/// Bytes a push gains on its way to a connection: its goim header (16),
/// and on WebSocket the op-9 frame around it (16) and the message header
/// (at most 10); rounded up.
const PUSH_FRAMING_BYTES_MAX: usize = 64;

/// What `Shard::enqueue` is given.
enum Queueable<'a> {
    Reply(Bytes),
    Payload(&'a Payload),
    Raw(Chunk),
}

impl Shard {
    /// Queues a reply (one goim frame) for `conn`.
    pub fn enqueue_reply(&self, state: &mut State, conn: ConnRef, reply: Bytes) -> bool {
        self.enqueue(state, conn, Queueable::Reply(reply))
    }

    /// Queues a push for `conn`: TCP clients get the frames as they are,
    /// WebSocket clients the op-9 message built once for every member.
    pub fn enqueue_payload(&self, state: &mut State, conn: ConnRef, payload: &Payload) -> bool {
        self.enqueue(state, conn, Queueable::Payload(payload))
    }

    /// Queues bytes that go out as they are (WebSocket control frames).
    pub fn enqueue_raw(&self, state: &mut State, conn: ConnRef, bytes: Chunk) -> bool {
        self.enqueue(state, conn, Queueable::Raw(bytes))
    }

    /// Queues for `conn` and schedules a flush. At the outbound bound the
    /// slow-consumer policy decides: close the connection, or drop the chunk
    /// (all its frames counted as dropped). Returns whether it was queued.
    fn enqueue(&self, state: &mut State, conn: ConnRef, queueable: Queueable<'_>) -> bool {
        let Some(session) = state.conns.get_mut(conn) else {
            return false;
        };
        let is_push = matches!(queueable, Queueable::Payload(_));
        if session.close_reason.is_some() {
            if let Queueable::Payload(payload) = queueable {
                self.stats.borrow_mut().undelivered[crate::metrics::UNDELIVERED_CLOSED] += payload.frames;
            }
            return false;
        }
        let ws = session.ws.is_some();
        let deflate = session.ws.as_ref().and_then(|ws| ws.deflate);
        let (chunk, frames) = match queueable {
            Queueable::Reply(reply) if ws => (Rc::new(websocket::reply_message(&reply)), 1),
            Queueable::Reply(reply) => (Rc::new(reply), 1),
            Queueable::Payload(payload) if ws => (payload.for_ws_to(self, deflate.as_ref()), payload.frames),
            Queueable::Payload(payload) => (payload.tcp.clone(), payload.frames),
            Queueable::Raw(bytes) => (bytes, 0),
        };
        let bytes_max = self.config.limits.outbound_bytes_per_connection_max;
        let lone_chunk_bytes_max = self.config.limits.request_body_bytes_max + PUSH_FRAMING_BYTES_MAX;
        let transport = transport_of(session);
        match session.outbox.push(chunk, bytes_max, lone_chunk_bytes_max) {
            Queued::Ok => {
                if is_push {
                    self.stats.borrow_mut().deliveries[transport] += frames;
                }
                if !session.dirty {
                    session.dirty = true;
                    state.dirty.push(conn);
                    self.flush.raise();
                }
                true
            }
            Queued::Full => {
                if is_push {
                    self.stats.borrow_mut().undelivered[crate::metrics::UNDELIVERED_QUEUE_FULL] += frames;
                }
                match self.config.limits.slow_consumer_policy {
                    SlowConsumerPolicy::Close => {
                        crate::log_info!("shard {}: closing slow consumer {}", self.id, session.key);
                        state.close(conn, CloseReason::SlowConsumer);
                        self.flush.raise();
                    }
                    SlowConsumerPolicy::Drop => self.count_drop(&session.key, frames),
                }
                false
            }
        }
    }

    fn count_drop(&self, key: &str, frames: u64) {
        let mut stats = self.stats.borrow_mut();
        stats.dropped_messages += frames;
        let now = self.now_ms() / 1000 + 1;
        if self.last_drop_log_s.replace(now) != now {
            crate::log_warn!(
                "shard {}: outbound queue full, message dropped for {key} ({} dropped so far)",
                self.id,
                stats.dropped_messages
            );
        }
    }
}

/// Whether `session` is not keeping up: more than half its outbound bound
/// is waiting for it. Its heartbeats then do not extend its deadline, so a
/// client that sends heartbeats but never reads is closed at the idle
/// deadline as a slow consumer even under the "drop" policy (which never
/// closes it at the bound).
pub fn is_behind(session: &conns::Session, bytes_max: usize) -> bool {
    session.outbox.memory_bytes() > bytes_max / 2
}

/// The `metrics::TRANSPORTS` index of a session: tcp, ws or wss.
pub fn transport_of(session: &conns::Session) -> usize {
    match (session.tls.is_some(), session.ws.is_some()) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    }
}
