//! The sequencer's side of a room: numbering a push, telling a joining
//! connection where it joins, reading a history page (`Command::Sequence`,
//! `Attach` and `History`, from the mesh or the bus alike).
//!
//! Must never: let the numbering and the history disagree: a push is kept
//! and counted in the same step it is numbered.

use crate::order::sequencer::{HistoryPage, Joined};
use crate::shard::Shard;
use bytes::Bytes;
use std::sync::Arc;

/// A push the room's sequencer numbered.
pub struct Numbered {
    pub offset: u32,
    pub epoch: Arc<str>,
    /// Whether this push started its epoch (after 2^32 pushes).
    pub new_epoch: bool,
}

impl Shard {
    /// Gives `frame` the room's next offset and keeps it in the history.
    pub(crate) fn number(&self, room: &Arc<str>, frame: &Bytes) -> Numbered {
        let now_ms = self.coarse_ms();
        let numbered = {
            let mut sequencer = self.sequencer.borrow_mut();
            let (offset, epoch, new_epoch) = sequencer.number(room, frame, now_ms, || self.new_epoch());
            self.note_history(&sequencer);
            Numbered { offset, epoch, new_epoch }
        };
        self.stats.borrow_mut().pushes_sequenced += 1;
        numbered
    }

    /// Where a connection with positions joins `room` (and its replay,
    /// when it asked to recover and the history holds what it missed,
    /// within `replay_bytes_max`); the room counts it as attached.
    pub(crate) fn join_point(&self, room: &Arc<str>, recover: Option<(&str, u32)>, replay_bytes_max: usize) -> Joined {
        self.sequencer.borrow_mut().attach(room, recover, replay_bytes_max, || self.new_epoch())
    }

    /// The kept pushes of `room` after `since`, at most `limit`.
    pub(crate) fn page(&self, room: &Arc<str>, since: u32, limit: u32) -> HistoryPage {
        self.sequencer.borrow_mut().page(room, since, limit as usize, || self.new_epoch())
    }
}
