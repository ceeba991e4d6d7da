//! Fan-out of room pushes on one shard: a room's pushes applied since the
//! last fan-out become one shared chunk, handed to every local member.
//!
//! Owns: the room batch and its variants. Members without positions get
//! the frames as they were encoded (sequence 0, goim's bytes); members with
//! positions get a copy with each frame's room offset in the sequence
//! field, built once per batch and only when such a member is there.
//!
//! Runs once per flusher pass, and also before anything else is queued to a
//! connection (a key, mid or broadcast push, a join with positions): room
//! pushes applied before it must leave before it, so what was applied
//! first is written first. Must never: queue a room batch to a connection
//! that joined after the batch's pushes were applied.

use super::{Shard, State};
use crate::shard::websocket::Payload;
use bytes::{BufMut, Bytes, BytesMut};
use std::cell::OnceCell;
use std::rc::Rc;

/// A room's pushes of one batch: (offset, encoded frame), in offset order.
type Numbered = Vec<(u32, Bytes)>;

impl Shard {
    /// Hands every room's pending pushes to its members' outboxes.
    pub fn fan_out_rooms(&self, state: &mut State) {
        if !state.rooms.has_pending() {
            return;
        }
        let mut batches: Vec<(Numbered, Vec<u32>)> = Vec::new();
        state.rooms.take_pending(|frames, members| batches.push((frames, members.to_vec())));
        let mut frames_queued = 0;
        for (frames, members) in batches {
            let count = frames.len() as u64;
            let plain = Payload::new(Rc::new(concat(&frames)), count);
            let positioned: OnceCell<Payload> = OnceCell::new();
            for slot in members {
                let Some((conn, session)) = state.conns.by_slot_mut(slot) else { continue };
                let payload = if session.positions {
                    positioned.get_or_init(|| Payload::new(Rc::new(with_offsets(&frames)), count))
                } else {
                    &plain
                };
                if self.enqueue_payload(state, conn, payload) {
                    frames_queued += count;
                }
            }
        }
        self.stats.borrow_mut().frames_queued += frames_queued;
    }
}

/// One room's pushes as one buffer (no copy for a single push).
pub fn concat(frames: &[(u32, Bytes)]) -> Bytes {
    if let [(_, frame)] = frames {
        return frame.clone();
    }
    let total = frames.iter().map(|(_, f)| f.len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for (_, frame) in frames {
        out.extend_from_slice(frame);
    }
    out.freeze()
}

/// The same frames with each one's offset in its sequence field (bytes 12
/// to 15, big-endian).
pub fn with_offsets(frames: &[(u32, Bytes)]) -> Bytes {
    let total = frames.iter().map(|(_, f)| f.len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for (offset, frame) in frames {
        assert!(frame.len() >= crate::proto::goim::frame::HEADER_BYTES, "a pushed frame has a whole header");
        out.extend_from_slice(&frame[..12]);
        out.put_u32(*offset);
        out.extend_from_slice(&frame[16..]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::goim::frame;

    #[test]
    fn offsets_go_into_the_sequence_field_and_nothing_else_changes() {
        let a = frame::encode(1, 1000, 0, b"a");
        let b = frame::encode(1, 1001, 0, b"bc");
        let frames = vec![(41, a.clone()), (42, b.clone())];
        let plain = concat(&frames);
        assert_eq!(&plain[..a.len()], &a[..]);
        let numbered = with_offsets(&frames);
        assert_eq!(numbered.len(), plain.len());
        let (first, used) = frame::decode(&numbered, 4096).unwrap().unwrap();
        assert_eq!((first.op, first.seq, first.body), (1000, 41, &b"a"[..]));
        let (second, _) = frame::decode(&numbered[used..], 4096).unwrap().unwrap();
        assert_eq!((second.op, second.seq, second.body), (1001, 42, &b"bc"[..]));
        assert_eq!(concat(&frames[..1]), a, "a single push is shared as it is");
    }
}
