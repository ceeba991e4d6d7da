//! Applying a command on this shard: the one `apply`, whichever transport
//! brought it (the mesh, or the bus once `shard::bus_side` has decoded it
//! and checked its place in the room's stream).
//!
//! Must never: await (a command is applied in one go, so no shard waits on
//! another here), or look at how the command came: what differs between
//! the transports is in `route::placement` (where things go) and in the
//! `Ack`s (where shares go home).

use crate::conn::close::CloseReason;
use crate::conn::conns::ConnRef;
use crate::order::sequencer::{Joined, Recovery, Refusal};
use crate::order::tickets::Ack;
use crate::route::bus::BusError;
use crate::route::command::{Attached, Command, Dest};
use crate::route::placement::Members;
use crate::shard::sequencing::Numbered;
use crate::shard::Shard;
use std::sync::Arc;

impl Shard {
    /// Applies one command from another shard, another node, or this shard.
    pub fn apply(&self, command: Command) {
        match command {
            Command::Sequence { room, frame, ack } => self.sequence_room(room, frame, ack),
            Command::Attach { room, conn, home, attach_seq, recover, replay_bytes_max } => {
                let asked = recover.as_ref().map(|(epoch, offset)| (&**epoch, *offset));
                let joined = self.join_point(&room, asked, replay_bytes_max as usize);
                let home = Dest::Shard { node: home, shard: conn.shard as usize };
                let (epoch, offset) = (joined.epoch.clone(), joined.offset);
                let attached = Attached { room: room.clone(), conn, attach_seq, joined };
                if let Err(BusError::TooLarge) = self.send_to(home.clone(), Command::Attached(Box::new(attached))) {
                    // The replay does not fit the bus: the recovery is
                    // refused as too large, and the client joins without it.
                    let joined =
                        Joined { epoch, offset, recovery: Recovery::Refused(Refusal::TooLarge), replay: Vec::new() };
                    let attached = Attached { room, conn, attach_seq, joined };
                    let _ = self.send_to(home, Command::Attached(Box::new(attached)));
                }
            }
            Command::Detach { room } => self.sequencer.borrow_mut().detach(&room),
            Command::History { room, since, limit, ack } => {
                let page = self.page(&room, since, limit);
                self.confirm_with(ack, Some(Box::new(page)));
            }
            Command::Room { room, epoch, offset, new_epoch, frame, ack } => {
                if let (true, Some(epoch)) = (new_epoch, &epoch) {
                    self.announce_epoch(&room, epoch, offset.saturating_sub(1));
                }
                if self.deliver_room(&room, offset, frame) {
                    self.note_delivered(ack.started_us);
                }
                self.confirm(ack);
            }
            Command::All { op, frame, speed, ack } => {
                let conns_per_s = self.broadcast_share(speed);
                if conns_per_s == 0 {
                    self.note_delivered(ack.started_us);
                }
                self.deliver_all(op, frame, conns_per_s);
                self.confirm(ack);
            }
            Command::Keys { keys, op, frame, ack } => {
                let conns: Vec<ConnRef> = {
                    let state = self.state.borrow();
                    keys.iter().filter_map(|key| state.directory.key(key)).collect()
                };
                self.forward_to_conns(conns, op, frame, ack);
            }
            Command::Mids { mids, op, frame, ack } => {
                let conns: Vec<ConnRef> = {
                    let state = self.state.borrow();
                    mids.iter().flat_map(|mid| state.directory.mid(*mid).iter().copied()).collect()
                };
                self.forward_to_conns(conns, op, frame, ack);
            }
            Command::Conns { conns, op, frame, ack } => {
                self.note_delivered(ack.started_us);
                self.deliver_conns(&conns, op, frame);
                self.confirm(ack);
            }
            Command::Confirms(confirms) => {
                {
                    let mut tickets = self.tickets.borrow_mut();
                    for (id, weight) in confirms {
                        tickets.credit(id, weight, None);
                    }
                }
                self.release_registered();
            }
            Command::Page { id, weight, page } => self.tickets.borrow_mut().credit(id, weight, Some(page)),
            Command::Attached(attached) => self.on_attached(*attached),
            Command::Failed { id, error } => self.on_failed(id, error),
            Command::Register { key, mid, conn, ack } => {
                let replaced = {
                    let mut state = self.state.borrow_mut();
                    if let Some(mid) = mid {
                        state.directory.add_mid(mid, conn);
                    }
                    key.and_then(|key| state.directory.register_key(&key, conn))
                };
                if let Some(old) = replaced {
                    self.send(old.shard as usize, Command::Claim { conns: vec![old], by: None });
                }
                self.confirm(ack);
            }
            Command::Unregister { key, mid, conn } => {
                let mut state = self.state.borrow_mut();
                if let Some(key) = key {
                    state.directory.unregister_key(&key, conn);
                }
                if let Some(mid) = mid {
                    state.directory.remove_mid(mid, conn);
                }
            }
            Command::Claim { conns, .. } => {
                for conn in conns {
                    self.close(conn, CloseReason::Replaced);
                }
            }
            Command::Ip { ip, delta } => {
                let mut state = self.state.borrow_mut();
                if delta > 0 {
                    state.directory.ip_add(ip);
                } else {
                    state.directory.ip_remove(ip);
                }
            }
            Command::Counts(report) => {
                if let Some(slot) = self.peer_stats.borrow_mut().get_mut(report.shard) {
                    *slot = report.stats.clone();
                }
                self.state.borrow_mut().online.apply(&report);
            }
            Command::Report(report) => self.on_report(&report),
        }
    }

    /// The room's sequencer: the next offset, kept in the history, then to
    /// every shard with members (`Placement::members`), each returning its
    /// share of `ack` once applied.
    fn sequence_room(&self, room: Arc<str>, frame: bytes::Bytes, ack: Ack) {
        let Numbered { offset, epoch, new_epoch } = self.number(&room, &frame);
        let push =
            |epoch, ack| Command::Room { room: room.clone(), epoch, offset, new_epoch, frame: frame.clone(), ack };
        match self.placement().members(&room) {
            Members::Shards(shards) => {
                for (shard, ack) in (0..shards).zip(ack.split(shards)) {
                    self.send(shard, push(new_epoch.then(|| epoch.clone()), ack));
                }
            }
            // Published once, with its epoch; the share comes back once the
            // bus server has it.
            Members::Subject(subject) => {
                match self.send_to(Dest::Subject(subject), push(Some(epoch), Ack::none(ack.started_us))) {
                    Ok(()) => self.settle_after_bus(ack),
                    Err(error) => self.fail_share(ack, error),
                }
            }
        }
    }

    /// This shard's share of a broadcast of `speed` connections a second:
    /// clustered, in proportion to its connections, so every shard of every
    /// node ends together; on one node, an even share of the shards.
    pub(crate) fn broadcast_share(&self, speed: u32) -> u32 {
        if speed == 0 {
            return 0;
        }
        if !self.placement().clustered() {
            return speed.div_ceil(self.shards as u32).max(1);
        }
        let mine = self.state.borrow().conns.len() as u64;
        let total = self.cluster_totals().0.max(1);
        ((speed as u64 * mine / total) as u32).max(1)
    }
}
