//! The sequencer: the one place where a room's order is decided.
//!
//! Every room has one sequencer shard, chosen by hash of the room key (as
//! the directory does for keys). It gives each push the room's next offset,
//! keeps the room's recent pushes (its history), and answers joins with
//! positions: "you are at offset N of epoch E" plus, for a recovery, the
//! pushes the client missed. The shard then forwards the push to every
//! shard over the FIFO mesh, so every member sees the room's pushes in
//! offset order, and a join answered here meets the live pushes with no
//! gap and no duplicate (docs/positions.md sections 1 to 4).
//!
//! Owns: streams (epoch, last offset, history, attached positions members)
//! of the rooms this shard sequences. Sans-IO: the shard's dispatch calls
//! it and does the sending. Must never: reuse or skip an offset within an
//! epoch, keep history past its bounds (pushes per room, age, bytes), or
//! answer a recovery with anything but the whole missed range or a refusal.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Real memory of one kept push beside its frame: the `Kept` entry and its
/// share of the deque and of the frame's `Bytes` header.
pub const KEPT_OVERHEAD_BYTES: usize = 64;
/// Real memory of one entry of the eviction order.
pub const ORDER_ENTRY_BYTES: usize = 32;
/// Stale eviction-order entries tolerated before a compaction, whatever
/// the number kept.
const STALE_ENTRIES_MIN: usize = 1024;

/// The history bounds of one shard (config `[history]`, bytes divided by shards).
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Pushes kept per room; 0 keeps none (offsets and positions still work).
    pub pushes_per_room_max: usize,
    /// A push older than this is dropped.
    pub age_max_ms: u64,
    /// Bytes of kept pushes (frames plus overheads) on this shard; past it
    /// the oldest pushes, of any room, are dropped first.
    pub bytes_max: usize,
}

/// Why a recovery was refused (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's epoch is not the room's current one (a restart, or the
    /// room's state was dropped).
    Epoch,
    /// The client claims an offset the room has not reached.
    Offset,
    /// The history no longer holds every push after the client's offset.
    Gone,
    /// The missed pushes would not fit the connection's outbound bound.
    TooLarge,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Refusal::Epoch, Refusal::Offset, Refusal::Gone, Refusal::TooLarge];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Refusal::Epoch => "epoch_mismatch",
            Refusal::Offset => "offset_ahead",
            Refusal::Gone => "history_gone",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// The outcome of a recovery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The client asked for positions only.
    NotAsked,
    Recovered,
    Refused(Refusal),
}

/// The answer to a join with positions.
#[derive(Debug)]
pub struct Joined {
    pub epoch: Arc<str>,
    /// The room's last offset: the joining connection gets the pushes after it.
    pub offset: u32,
    pub recovery: Recovery,
    /// The missed pushes (offset, frame), in order, when recovered.
    pub replay: Vec<(u32, Bytes)>,
}

/// One page of the history API.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: Arc<str>,
    pub offset: u32,
    pub complete: bool,
    pub messages: Vec<(u32, Bytes)>,
}

struct Kept {
    offset: u32,
    frame: Bytes,
}

struct Stream {
    /// The room key, shared by the map and every entry of the eviction
    /// order (one allocation per room, not one per push).
    room: Arc<str>,
    epoch: Arc<str>,
    offset: u32,
    history: VecDeque<Kept>,
    /// Connections with positions attached to this room, on every shard.
    attached: u32,
}

/// Every stream this shard sequences, and the eviction order of their history.
pub struct Sequencer {
    bounds: HistoryBounds,
    streams: HashMap<Arc<str>, Stream>,
    /// (room, offset, kept at ms) of every kept push, oldest first; entries
    /// of pushes already dropped by the per-room bound are skipped lazily.
    order: VecDeque<(Arc<str>, u32, u64)>,
    /// Kept frames plus overheads plus order entries.
    bytes: usize,
    kept: usize,
    /// Entries of `order` whose push the per-room bound already dropped.
    stale: usize,
}

impl Sequencer {
    pub fn new(bounds: HistoryBounds) -> Sequencer {
        Sequencer { bounds, streams: HashMap::new(), order: VecDeque::new(), bytes: 0, kept: 0, stale: 0 }
    }

    /// Bytes of history held (frames and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pushes kept.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// Rooms with state here.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn stream(&mut self, room: &Arc<str>, new_epoch: impl FnOnce() -> Arc<str>) -> &mut Stream {
        stream_of(&mut self.streams, room, new_epoch)
    }

    /// Gives `frame` the room's next offset and keeps it. Returns the
    /// offset, and the room's new epoch when this push started one.
    pub fn sequence(
        &mut self,
        room: &Arc<str>,
        frame: &Bytes,
        now_ms: u64,
        new_epoch: impl FnMut() -> Arc<str>,
    ) -> (u32, Option<Arc<str>>) {
        let (offset, epoch, started) = self.number(room, frame, now_ms, new_epoch);
        (offset, started.then_some(epoch))
    }

    /// As `sequence`: the push's offset, its epoch, and whether it started
    /// that epoch.
    pub fn number(
        &mut self,
        room: &Arc<str>,
        frame: &Bytes,
        now_ms: u64,
        mut new_epoch: impl FnMut() -> Arc<str>,
    ) -> (u32, Arc<str>, bool) {
        let per_room = self.bounds.pushes_per_room_max;
        let mut started = None;
        if self.streams.get(room).is_some_and(|stream| stream.offset == u32::MAX) {
            // Offsets are 32-bit: after 2^32 pushes the room starts a new
            // epoch rather than reuse an offset (members with positions are
            // told by a new op-20 frame).
            self.restart(room, new_epoch());
            started = self.streams.get(room).map(|stream| stream.epoch.clone());
        }
        let stream = stream_of(&mut self.streams, room, &mut new_epoch);
        stream.offset += 1;
        let offset = stream.offset;
        let epoch = stream.epoch.clone();
        let started = started.is_some();
        if per_room == 0 {
            return (offset, epoch, started);
        }
        let mut freed = 0;
        let mut dropped = 0;
        if stream.history.len() >= per_room {
            if let Some(old) = stream.history.pop_front() {
                freed += old.frame.len() + KEPT_OVERHEAD_BYTES;
                dropped += 1;
            }
        }
        stream.history.push_back(Kept { offset, frame: frame.clone() });
        self.bytes = self.bytes - freed + frame.len() + KEPT_OVERHEAD_BYTES + ORDER_ENTRY_BYTES;
        self.kept = self.kept + 1 - dropped;
        self.stale += dropped;
        let key = stream.room.clone();
        self.order.push_back((key, offset, now_ms));
        if self.stale > self.kept.max(STALE_ENTRIES_MIN) {
            self.compact();
        }
        self.evict(now_ms);
        (offset, epoch, started)
    }

    /// Starts `room` over in `epoch` at offset 0, its history dropped.
    fn restart(&mut self, room: &Arc<str>, epoch: Arc<str>) {
        let Some(stream) = self.streams.get_mut(room) else { return };
        self.kept -= stream.history.len();
        self.bytes -= stream.history.iter().map(|kept| kept.frame.len() + KEPT_OVERHEAD_BYTES).sum::<usize>();
        stream.history = VecDeque::new();
        stream.epoch = epoch;
        stream.offset = 0;
        // Its entries in the eviction order are stale now (the room has no
        // history), and so are any others': drop them all.
        self.compact();
    }

    /// Drops the entries of `order` whose push is gone, so a busy room at
    /// its per-room bound does not fill the byte bound with them. Amortized:
    /// it runs once stale entries outnumber live ones, and consecutive
    /// entries of one room share one lookup.
    fn compact(&mut self) {
        let streams = &self.streams;
        // The offset of each room's oldest kept push; u64::MAX when none.
        let mut last: Option<(Arc<str>, u64)> = None;
        let before = self.order.len();
        self.order.retain(|(room, offset, _)| {
            let front = match &last {
                Some((last_room, front)) if Arc::ptr_eq(last_room, room) => *front,
                _ => {
                    let front =
                        streams.get(room).and_then(|s| s.history.front()).map_or(u64::MAX, |kept| kept.offset as u64);
                    last = Some((room.clone(), front));
                    front
                }
            };
            *offset as u64 >= front
        });
        self.bytes -= (before - self.order.len()) * ORDER_ENTRY_BYTES;
        self.stale = 0;
    }

    /// Drops the oldest pushes while past the byte bound or the age bound.
    fn evict(&mut self, now_ms: u64) {
        while let Some((room, offset, at_ms)) = self.order.front() {
            let too_old = at_ms.saturating_add(self.bounds.age_max_ms) <= now_ms;
            if !too_old && self.bytes <= self.bounds.bytes_max {
                break;
            }
            let (room, offset) = (room.clone(), *offset);
            self.order.pop_front();
            self.bytes -= ORDER_ENTRY_BYTES;
            let live = self.streams.get_mut(&room).filter(|s| s.history.front().is_some_and(|k| k.offset == offset));
            match live.and_then(|stream| stream.history.pop_front()) {
                Some(kept) => {
                    self.bytes -= kept.frame.len() + KEPT_OVERHEAD_BYTES;
                    self.kept -= 1;
                }
                None => self.stale = self.stale.saturating_sub(1),
            }
        }
        if self.order.is_empty() && self.order.capacity() > 1024 {
            self.order = VecDeque::new();
        }
    }

    /// Applies the age bound and forgets rooms with no history and no
    /// attached connection (their next push starts a new epoch). Called
    /// about once a second.
    pub fn expire(&mut self, now_ms: u64) {
        self.evict(now_ms);
        let streams_before = self.streams.len();
        self.streams.retain(|_, stream| !stream.history.is_empty() || stream.attached > 0);
        if self.streams.len() < streams_before / 2 {
            self.streams.shrink_to_fit();
        }
    }

    /// A connection joins `room` with positions (and asks to recover from
    /// `recover`, if given). `replay_bytes_max` bounds what a recovery may
    /// send. The connection counts as attached until `detach`.
    pub fn attach(
        &mut self,
        room: &Arc<str>,
        recover: Option<(&str, u32)>,
        replay_bytes_max: usize,
        new_epoch: impl FnOnce() -> Arc<str>,
    ) -> Joined {
        let stream = self.stream(room, new_epoch);
        stream.attached += 1;
        let mut joined = Joined {
            epoch: stream.epoch.clone(),
            offset: stream.offset,
            recovery: Recovery::NotAsked,
            replay: Vec::new(),
        };
        let Some((epoch, from)) = recover else { return joined };
        joined.recovery = match recovery(stream, epoch, from, replay_bytes_max) {
            Ok(replay) => {
                joined.replay = replay;
                Recovery::Recovered
            }
            Err(refusal) => Recovery::Refused(refusal),
        };
        joined
    }

    /// The current epoch of `room` and its last offset, if it has a stream here.
    pub fn position_of(&self, room: &str) -> Option<(Arc<str>, u32)> {
        self.streams.get(room).map(|stream| (stream.epoch.clone(), stream.offset))
    }

    /// The current epoch of `room`, if it has a stream here.
    pub fn epoch_of(&self, room: &str) -> Option<Arc<str>> {
        self.streams.get(room).map(|stream| stream.epoch.clone())
    }

    /// Drops every room for which `keep` is false, history and all (the
    /// cluster moved its sequencer); returns how many were dropped.
    pub fn retain_rooms(&mut self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let before = self.streams.len();
        let mut freed_bytes = 0;
        let mut freed_kept = 0;
        self.streams.retain(|room, stream| {
            let keeping = keep(room);
            if !keeping {
                freed_kept += stream.history.len();
                freed_bytes += stream.history.iter().map(|kept| kept.frame.len() + KEPT_OVERHEAD_BYTES).sum::<usize>();
            }
            keeping
        });
        let dropped = before - self.streams.len();
        if dropped > 0 {
            self.kept -= freed_kept;
            self.bytes -= freed_bytes;
            self.compact();
        }
        dropped
    }

    /// A connection with positions left `room`.
    pub fn detach(&mut self, room: &str) {
        if let Some(stream) = self.streams.get_mut(room) {
            stream.attached = stream.attached.saturating_sub(1);
        }
    }

    /// The kept pushes after `since`, at most `limit` (history API).
    pub fn page(
        &mut self,
        room: &Arc<str>,
        since: u32,
        limit: usize,
        new_epoch: impl FnOnce() -> Arc<str>,
    ) -> HistoryPage {
        let stream = self.stream(room, new_epoch);
        let oldest = stream.history.front().map_or(stream.offset as u64 + 1, |kept| kept.offset as u64);
        let complete = since >= stream.offset || since as u64 + 1 >= oldest;
        let messages = stream
            .history
            .iter()
            .filter(|kept| kept.offset > since)
            .take(limit)
            .map(|kept| (kept.offset, kept.frame.clone()))
            .collect();
        HistoryPage { epoch: stream.epoch.clone(), offset: stream.offset, complete, messages }
    }
}

fn stream_of<'a>(
    streams: &'a mut HashMap<Arc<str>, Stream>,
    room: &Arc<str>,
    new_epoch: impl FnOnce() -> Arc<str>,
) -> &'a mut Stream {
    streams.entry(room.clone()).or_insert_with(|| Stream {
        room: room.clone(),
        epoch: new_epoch(),
        offset: 0,
        history: VecDeque::new(),
        attached: 0,
    })
}

/// The whole missed range after `from`, or why not.
fn recovery(stream: &Stream, epoch: &str, from: u32, replay_bytes_max: usize) -> Result<Vec<(u32, Bytes)>, Refusal> {
    if epoch != &*stream.epoch {
        return Err(Refusal::Epoch);
    }
    if from > stream.offset {
        return Err(Refusal::Offset);
    }
    if from == stream.offset {
        return Ok(Vec::new());
    }
    let Some(oldest) = stream.history.front().map(|kept| kept.offset) else { return Err(Refusal::Gone) };
    if oldest > from + 1 {
        return Err(Refusal::Gone);
    }
    let missed = stream.history.iter().filter(|kept| kept.offset > from);
    let bytes: usize = missed.clone().map(|kept| kept.frame.len()).sum();
    if bytes > replay_bytes_max {
        return Err(Refusal::TooLarge);
    }
    let replay: Vec<(u32, Bytes)> = missed.map(|kept| (kept.offset, kept.frame.clone())).collect();
    debug_assert_eq!(replay.len() as u32, stream.offset - from, "history must be contiguous");
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(per_room: usize, age_ms: u64, bytes: usize) -> HistoryBounds {
        HistoryBounds { pushes_per_room_max: per_room, age_max_ms: age_ms, bytes_max: bytes }
    }

    fn epoch(name: &str) -> impl FnMut() -> Arc<str> + '_ {
        move || Arc::from(name)
    }

    fn frame(n: u32) -> Bytes {
        Bytes::from(format!("frame-{n}"))
    }

    #[test]
    fn offsets_count_from_one_and_history_keeps_the_last_n() {
        let mut seq = Sequencer::new(bounds(3, 300_000, 1 << 20));
        let room: Arc<str> = Arc::from("live://1");
        for n in 1..=5 {
            assert_eq!(seq.sequence(&room, &frame(n), 0, epoch("E")).0, n);
        }
        assert_eq!(seq.kept(), 3);
        let page = seq.page(&room, 0, 10, epoch("X"));
        assert_eq!(&*page.epoch, "E");
        assert_eq!(page.offset, 5);
        assert!(!page.complete, "offset 1 is gone");
        assert_eq!(page.messages.iter().map(|m| m.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        let page = seq.page(&room, 2, 2, epoch("X"));
        assert!(page.complete);
        assert_eq!(page.messages.iter().map(|m| m.0).collect::<Vec<_>>(), vec![3, 4]);
        assert!(seq.page(&room, 5, 10, epoch("X")).complete);
    }

    #[test]
    fn recovery_is_whole_or_refused() {
        let mut seq = Sequencer::new(bounds(3, 300_000, 1 << 20));
        let room: Arc<str> = Arc::from("live://1");
        for n in 1..=5 {
            seq.sequence(&room, &frame(n), 0, epoch("E"));
        }
        let ok = seq.attach(&room, Some(("E", 2)), 1 << 20, epoch("X"));
        assert_eq!(ok.recovery, Recovery::Recovered);
        assert_eq!(ok.offset, 5);
        assert_eq!(ok.replay.iter().map(|m| m.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        let none_missed = seq.attach(&room, Some(("E", 5)), 1 << 20, epoch("X"));
        assert_eq!((none_missed.recovery, none_missed.replay.len()), (Recovery::Recovered, 0));
        let gone = seq.attach(&room, Some(("E", 1)), 1 << 20, epoch("X"));
        assert_eq!(gone.recovery, Recovery::Refused(Refusal::Gone));
        assert!(gone.replay.is_empty());
        let wrong = seq.attach(&room, Some(("F", 4)), 1 << 20, epoch("X"));
        assert_eq!(wrong.recovery, Recovery::Refused(Refusal::Epoch));
        let ahead = seq.attach(&room, Some(("E", 9)), 1 << 20, epoch("X"));
        assert_eq!(ahead.recovery, Recovery::Refused(Refusal::Offset));
        let big = seq.attach(&room, Some(("E", 2)), 10, epoch("X"));
        assert_eq!(big.recovery, Recovery::Refused(Refusal::TooLarge));
    }

    #[test]
    fn bytes_and_age_bounds_drop_the_oldest_first_and_streams_are_swept() {
        let per_push = 7 + KEPT_OVERHEAD_BYTES + ORDER_ENTRY_BYTES;
        let mut seq = Sequencer::new(bounds(100, 1000, 3 * per_push));
        let a: Arc<str> = Arc::from("live://a");
        let b: Arc<str> = Arc::from("live://b");
        seq.sequence(&a, &frame(1), 0, epoch("A"));
        seq.sequence(&b, &frame(1), 10, epoch("B"));
        seq.sequence(&a, &frame(2), 20, epoch("A"));
        assert_eq!((seq.kept(), seq.bytes()), (3, 3 * per_push));
        seq.sequence(&b, &frame(2), 30, epoch("B"));
        assert_eq!(seq.kept(), 3, "the byte bound dropped one");
        assert!(!seq.page(&a, 0, 10, epoch("X")).complete, "a's offset 1 went first");
        assert!(seq.page(&b, 0, 10, epoch("X")).complete);
        seq.expire(1015);
        assert_eq!(seq.kept(), 2, "b's first push is past the age bound");
        seq.expire(5000);
        assert_eq!((seq.kept(), seq.bytes(), seq.streams()), (0, 0, 0));
        // A room whose state was dropped starts a new epoch.
        seq.sequence(&a, &frame(3), 5000, epoch("A2"));
        assert_eq!(&*seq.page(&a, 0, 10, epoch("X")).epoch, "A2");
    }

    #[test]
    fn a_room_at_its_per_room_bound_does_not_fill_the_byte_bound() {
        let mut seq = Sequencer::new(bounds(3, 300_000, 1 << 30));
        let room: Arc<str> = Arc::from("live://hot");
        for n in 1..=100_000 {
            seq.sequence(&room, &frame(n), 0, epoch("E"));
        }
        assert_eq!(seq.kept(), 3);
        let live = 3 * (frame(1).len() + 1 + KEPT_OVERHEAD_BYTES + ORDER_ENTRY_BYTES);
        assert!(seq.bytes() <= live + (STALE_ENTRIES_MIN + 1) * ORDER_ENTRY_BYTES, "{} bytes", seq.bytes());
        let page = seq.page(&room, 0, 10, epoch("X"));
        assert_eq!(page.messages.iter().map(|m| m.0).collect::<Vec<_>>(), vec![99_998, 99_999, 100_000]);
    }

    #[test]
    fn offset_2_pow_32_starts_a_new_epoch_with_no_history() {
        let mut seq = Sequencer::new(bounds(3, 300_000, 1 << 20));
        let room: Arc<str> = Arc::from("live://old");
        let other: Arc<str> = Arc::from("live://other");
        seq.sequence(&room, &frame(1), 0, epoch("E"));
        seq.sequence(&other, &frame(1), 0, epoch("O"));
        seq.streams.get_mut(&room).expect("stream").offset = u32::MAX - 1;
        assert_eq!(seq.sequence(&room, &frame(2), 0, epoch("X")), (u32::MAX, None));
        let page = seq.page(&room, u32::MAX, 10, epoch("X"));
        assert!(page.complete && page.messages.is_empty());
        assert_eq!(seq.sequence(&room, &frame(3), 0, epoch("E2")), (1, Some(Arc::from("E2"))));
        let page = seq.page(&room, 0, 10, epoch("X"));
        assert_eq!((&*page.epoch, page.offset, page.messages.len()), ("E2", 1, 1));
        assert_eq!(seq.kept(), 2, "the other room keeps its push");
        let live = 2 * (7 + KEPT_OVERHEAD_BYTES + ORDER_ENTRY_BYTES);
        assert_eq!(seq.bytes(), live, "no bookkeeping of the old epoch is left");
    }

    #[test]
    fn attached_rooms_keep_their_epoch_without_history() {
        let mut seq = Sequencer::new(bounds(0, 1000, 1 << 20));
        let room: Arc<str> = Arc::from("live://1");
        let joined = seq.attach(&room, None, 0, epoch("E"));
        assert_eq!((joined.offset, joined.recovery), (0, Recovery::NotAsked));
        assert_eq!(seq.sequence(&room, &frame(1), 0, epoch("X")).0, 1);
        assert_eq!(seq.kept(), 0, "history off");
        seq.expire(10_000);
        assert_eq!(seq.sequence(&room, &frame(2), 0, epoch("X")).0, 2, "same epoch while attached");
        seq.detach("live://1");
        seq.expire(10_000);
        assert_eq!(seq.streams(), 0);
    }
}
