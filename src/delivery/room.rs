//! Rooms of one shard: the local members of each room key (`type://id`) and
//! the pushes waiting for the next flush.
//!
//! Owns: membership lists (slot numbers, 4 bytes a member) and pending room
//! frames. Must never: keep an empty room (it is removed on the last leave),
//! or queue a push for a room with no local member.

use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
pub struct Room {
    /// Slots of the members on this shard; order is irrelevant (swap-remove).
    pub members: Vec<u32>,
    /// Encoded frames (with their room offsets) pushed since the last
    /// fan-out, in offset order.
    pub pending: Vec<(u32, Bytes)>,
    /// Bytes of the frames in `pending`: the size of the chunk the fan-out
    /// will hand every member (`Rooms::push` keeps it under a bound).
    pending_frame_bytes: usize,
}

/// What `Rooms::push` did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The room has no member on this shard: nothing queued.
    NoMember,
    /// The room's batch would pass the bound it was given: fan the batch
    /// out first, then push the frame (handed back) again.
    BatchFull(Bytes),
}

/// Bytes of room pushes a shard holds for one fan-out at most: past it the
/// fan-out runs at once (`Shard::deliver_room`), so one executor pass that
/// applies a flood of pushes (a mesh batch, a burst from the bus) hands
/// them to the outboxes in slices instead of holding them all.
pub const PENDING_BYTES_PER_PASS_MAX: usize = 4 << 20;

/// What a pending entry costs beyond its frame: the (offset, Bytes) slot
/// and the shared buffer's header.
const PENDING_ENTRY_OVERHEAD_BYTES: usize = 64;

#[derive(Default)]
pub struct Rooms {
    map: HashMap<Rc<str>, Room>,
    /// Rooms with pending frames, each listed once.
    dirty: Vec<Rc<str>>,
    /// Bytes held in every room's `pending` (see `PENDING_BYTES_PER_PASS_MAX`).
    pending_bytes: usize,
}

impl Rooms {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn members(&self, room: &str) -> usize {
        self.map.get(room).map_or(0, |r| r.members.len())
    }

    /// The slots of `room`'s local members (a copy: the caller queues to them).
    pub fn member_slots(&self, room: &str) -> Vec<u32> {
        self.map.get(room).map_or_else(Vec::new, |r| r.members.clone())
    }

    /// Adds `slot` to `room`; returns the shared room key and the member index.
    pub fn join(&mut self, room: &str, slot: u32) -> (Rc<str>, u32) {
        let key = match self.map.get_key_value(room) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Rc<str> = Rc::from(room);
                self.map.insert(key.clone(), Room::default());
                key
            }
        };
        let entry = self.map.get_mut(room).expect("room inserted above");
        entry.members.push(slot);
        (key, (entry.members.len() - 1) as u32)
    }

    /// Removes the member at `index`; returns the slot moved into `index`
    /// (its session must update its `room_index`), if any.
    pub fn leave(&mut self, room: &str, index: u32, slot: u32) -> Option<u32> {
        let entry = self.map.get_mut(room)?;
        let index = index as usize;
        assert_eq!(entry.members.get(index), Some(&slot), "room member index out of sync");
        entry.members.swap_remove(index);
        let moved = entry.members.get(index).copied();
        if entry.members.is_empty() {
            self.map.remove(room);
        }
        moved
    }

    /// Queues a frame for every local member of `room`, unless the room's
    /// batch would then hold more than `batch_bytes_max` bytes of frames
    /// (a frame alone is always taken: one push may be larger).
    pub fn push(&mut self, room: &str, offset: u32, frame: Bytes, batch_bytes_max: usize) -> Pushed {
        let Some((key, entry)) = self.map.get_key_value(room) else {
            return Pushed::NoMember;
        };
        if !entry.pending.is_empty() && entry.pending_frame_bytes + frame.len() > batch_bytes_max {
            return Pushed::BatchFull(frame);
        }
        let key = key.clone();
        let entry = self.map.get_mut(&key).expect("present above");
        if entry.pending.is_empty() {
            self.dirty.push(key);
        }
        self.pending_bytes += frame.len() + PENDING_ENTRY_OVERHEAD_BYTES;
        entry.pending_frame_bytes += frame.len();
        entry.pending.push((offset, frame));
        Pushed::Queued
    }

    /// Bytes of pushes waiting for the fan-out, on all rooms.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// True when some room has pushes waiting for the fan-out.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Takes the rooms with pending frames: (room, frames, member slots).
    /// Rooms with nothing pending are skipped: a room emptied and joined
    /// again within one pass is still listed in `dirty` (once or twice) with
    /// its old pushes gone, and an empty batch must never reach an outbox.
    pub fn take_pending(&mut self, mut each: impl FnMut(Vec<(u32, Bytes)>, &[u32])) {
        self.pending_bytes = 0;
        for key in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.map.get_mut(&key) {
                if entry.pending.is_empty() {
                    continue;
                }
                let frames = std::mem::take(&mut entry.pending);
                entry.pending_frame_bytes = 0;
                each(frames, &entry.members);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = usize::MAX;

    #[test]
    fn join_leave_keeps_indices_in_sync_and_drops_empty_rooms() {
        let mut rooms = Rooms::default();
        let (_, a) = rooms.join("live://1", 10);
        let (_, b) = rooms.join("live://1", 11);
        let (_, c) = rooms.join("live://1", 12);
        assert_eq!((a, b, c), (0, 1, 2));
        // Removing the first moves the last member into index 0.
        assert_eq!(rooms.leave("live://1", 0, 10), Some(12));
        assert_eq!(rooms.members("live://1"), 2);
        assert_eq!(rooms.leave("live://1", 1, 11), None);
        assert_eq!(rooms.leave("live://1", 0, 12), None);
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_room_emptied_and_joined_again_in_one_pass_yields_no_empty_batch() {
        let mut rooms = Rooms::default();
        rooms.join("live://1", 1);
        assert_eq!(rooms.push("live://1", 1, Bytes::from_static(b"a"), MAX), Pushed::Queued);
        assert_eq!(rooms.leave("live://1", 0, 1), None);
        rooms.join("live://1", 2);
        let mut seen = Vec::new();
        rooms.take_pending(|frames, members| seen.push((frames.len(), members.to_vec())));
        assert!(seen.is_empty(), "the old push went with the old room: {seen:?}");
        // Joined again and pushed to again: listed twice in `dirty`, delivered once.
        assert_eq!(rooms.push("live://1", 2, Bytes::from_static(b"b"), MAX), Pushed::Queued);
        rooms.take_pending(|frames, members| seen.push((frames.len(), members.to_vec())));
        assert_eq!(seen, vec![(1, vec![2])]);
    }

    #[test]
    fn pushes_to_a_room_without_members_are_not_queued() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.push("live://1", 1, Bytes::from_static(b"x"), MAX), Pushed::NoMember);
        rooms.join("live://1", 1);
        assert_eq!(rooms.push("live://1", 1, Bytes::from_static(b"a"), MAX), Pushed::Queued);
        assert_eq!(rooms.push("live://1", 2, Bytes::from_static(b"b"), MAX), Pushed::Queued);
        let mut seen = Vec::new();
        rooms.take_pending(|frames, members| seen.push((frames.len(), members.to_vec())));
        assert_eq!(seen, vec![(2, vec![1])]);
        rooms.take_pending(|_, _| panic!("nothing pending"));
        assert_eq!(rooms.push("live://1", 3, Bytes::from_static(b"abc"), MAX), Pushed::Queued);
        assert_eq!(rooms.pending_bytes(), 3 + PENDING_ENTRY_OVERHEAD_BYTES, "counted as held");
        rooms.take_pending(|_, _| {});
        assert_eq!(rooms.pending_bytes(), 0, "given back when taken");
    }

    #[test]
    fn a_batch_stops_at_its_bound_but_a_lone_frame_is_always_taken() {
        let mut rooms = Rooms::default();
        rooms.join("live://1", 1);
        assert_eq!(rooms.push("live://1", 1, Bytes::from_static(b"0123456789"), 4), Pushed::Queued, "alone");
        let full = rooms.push("live://1", 2, Bytes::from_static(b"a"), 4);
        assert_eq!(full, Pushed::BatchFull(Bytes::from_static(b"a")), "handed back");
        rooms.take_pending(|frames, _| assert_eq!(frames.len(), 1));
        assert_eq!(rooms.push("live://1", 2, Bytes::from_static(b"ab"), 4), Pushed::Queued);
        assert_eq!(rooms.push("live://1", 3, Bytes::from_static(b"cd"), 4), Pushed::Queued, "4 bytes fit 4");
        assert!(matches!(rooms.push("live://1", 4, Bytes::from_static(b"e"), 4), Pushed::BatchFull(_)));
    }
}
