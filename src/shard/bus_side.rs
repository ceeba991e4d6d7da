//! The shard's end of the bus, where it differs from the mesh: the bus is
//! a set of subscriptions, and it may lose or repeat what a lost connection
//! had in flight, so what it brings is checked before it is applied.
//!
//! Owns: this shard's subscriptions (a connection's key and mid, a room's
//! while it has members here or a join is on its way), key claims (a newer
//! connection with a key closes older ones on any node: the bus's side of
//! the directory), following each room's stream (a duplicate is dropped, a
//! gap closes the members with positions, a new epoch is announced), and
//! failing every ticket that waited on a bus connection that was lost.
//! Must never: apply a command itself (`Shard::apply` does, for both
//! transports), or apply a numbered push out of its room's order.

use crate::conn::close::CloseReason;
use crate::conn::conns::ConnRef;
use crate::order::tickets::Ack;
use crate::route::bus::{BusError, Interest, OneOrMore};
use crate::route::command::Command;
use crate::route::wire::{Holder, On};
use crate::shard::Shard;
use std::sync::Arc;

/// What to do with a numbered push off the bus.
enum Follow {
    Drop,
    /// Deliver it; first announce its epoch when it starts one here.
    Deliver {
        starts_epoch: bool,
    },
}

/// What a subscription's message is for, copied out of the bus's table.
enum Target {
    Room(Arc<str>),
    Key(Vec<(ConnRef, u64)>),
    Conns(Vec<ConnRef>),
    Other,
}

impl Shard {
    /// A connection registers: subscribe to its key (claiming it, so older
    /// holders anywhere close) and mid. The auth reply waits for the PONG
    /// behind these subscriptions; returns whether it has to.
    pub fn bus_register(&self, conn: ConnRef, key: &str, mid: i64, ack: Ack) -> bool {
        let Some(bus) = &self.bus else { return false };
        let at_ms = self.unix_ms();
        let key_subject = bus.subjects.key(key);
        bus.want(&key_subject, Interest::Key(OneOrMore::One((conn, at_ms))));
        if mid != 0 {
            bus.want(&bus.subjects.mid(mid), Interest::Mid(OneOrMore::One(conn)));
        }
        self.sync_interest();
        let holder = Holder {
            at_ms,
            node: bus.node_id.clone(),
            shard: self.id as u16,
            slot: conn.slot,
            generation: conn.generation,
        };
        let _ = bus.publish(&key_subject, &Command::Claim { conns: Vec::new(), by: Some(holder) });
        bus.flush(ack).is_ok()
    }

    pub fn bus_unregister(&self, conn: ConnRef, key: &str, mid: i64) {
        let Some(bus) = &self.bus else { return };
        bus.unwant(&bus.subjects.key(key), Some(conn));
        if mid != 0 {
            bus.unwant(&bus.subjects.mid(mid), Some(conn));
        }
        self.sync_interest();
    }

    /// A join with positions is on its way: the room's subscription is
    /// taken before it leaves (handed to the membership when it is answered).
    pub fn subscribe_for_join(&self, room: &str) {
        if let Some(bus) = &self.bus {
            bus.want(&bus.subjects.room(room), Interest::Room(Arc::from(room)));
        }
    }

    /// The join could not be sent: its subscription is given back.
    pub fn unsubscribe_for_join(&self, room: &str) {
        if let Some(bus) = &self.bus {
            bus.unwant(&bus.subjects.room(room), None);
        }
    }

    /// Subscribes to rooms that got their first member here and drops
    /// rooms that lost their last one.
    pub fn sync_interest(&self) {
        let Some(bus) = &self.bus else { return };
        let changes = std::mem::take(&mut self.state.borrow_mut().online.interest);
        for (room, joined) in changes {
            let subject = bus.subjects.room(&room);
            if joined {
                bus.want(&subject, Interest::Room(Arc::from(&*room)));
            } else {
                bus.unwant(&subject, None);
            }
        }
    }

    // ---- what the bus brings ----

    pub fn on_bus_connected(&self) {
        self.stats.borrow_mut().bus_connected = 1;
        if self.id == 0 {
            self.publish_report();
        }
    }

    /// Every waiter of the lost connection is failed (its push may or may
    /// not have been delivered: the reply says -500, never success).
    pub fn on_bus_disconnected(&self) {
        let Some(bus) = &self.bus else { return };
        self.stats.borrow_mut().bus_connected = 0;
        for ack in bus.on_disconnect() {
            self.fail_share(ack, BusError::Down);
        }
        let remote = self.tickets.borrow_mut().take_remote();
        for id in remote {
            self.bus_refused(id, BusError::Down);
        }
    }

    /// A message off the bus: what its subject means here, decoded, its
    /// place in the room's stream checked, then applied as any command.
    pub fn on_bus_message(&self, subject: &[u8], sid: u64, payload: &[u8]) {
        let Some(bus) = &self.bus else { return };
        let Some(target) = bus.with_interest(subject, sid, |interest| match interest {
            Interest::Room(room) => Target::Room(room.clone()),
            Interest::Key(holders) => Target::Key(holders.to_vec()),
            Interest::Mid(conns) => Target::Conns(conns.to_vec()),
            _ => Target::Other,
        }) else {
            return; // Unsubscribed since: nothing here wants it.
        };
        let (on, holders) = match target {
            Target::Room(room) => (On::Room(room), Vec::new()),
            Target::Key(holders) => (On::Conns(holders.iter().map(|(conn, _)| *conn).collect()), holders),
            Target::Conns(conns) => (On::Conns(conns), Vec::new()),
            Target::Other => (On::Other, Vec::new()),
        };
        let Some(mut command) = crate::route::wire::decode(payload, on, self.id) else {
            self.stats.borrow_mut().bus_bad_messages += 1;
            crate::log_warn!("shard {}: undecodable bus message ({} bytes) ignored", self.id, payload.len());
            return;
        };
        let mut joined_room = None;
        match &mut command {
            Command::Room { room, epoch: Some(epoch), offset, new_epoch, .. } => {
                match self.follow(room, epoch, *offset) {
                    Follow::Drop => return,
                    Follow::Deliver { starts_epoch } => *new_epoch = starts_epoch,
                }
            }
            Command::Attached(attached) => {
                self.follow_from(&attached.room, &attached.joined.epoch, attached.joined.offset);
                joined_room = Some(attached.room.clone());
            }
            Command::Claim { conns, by: Some(claim) } => *conns = self.older_holders(subject, &holders, claim),
            // An answer from another node counts only for a ticket that
            // sent it a request, and once.
            Command::Confirms(confirms) => {
                let mut tickets = self.tickets.borrow_mut();
                confirms.retain(|(id, _)| tickets.answered_remotely(*id));
            }
            Command::Page { id, .. } | Command::Failed { id, .. }
                if !self.tickets.borrow_mut().answered_remotely(*id) =>
            {
                self.stats.borrow_mut().bus_bad_messages += 1;
                return;
            }
            _ => {}
        }
        self.apply(command);
        if let Some(room) = joined_room {
            // The subscription taken for the join is handed to the membership.
            self.sync_interest();
            self.unsubscribe_for_join(&room);
        }
    }

    /// Follows `room`'s stream on this shard with the push numbered
    /// `offset` of `epoch`.
    ///
    /// - The next offset: deliver.
    /// - A new epoch (the sequencer moved or restarted): deliver, members
    ///   with positions getting an op-20 frame for it first.
    /// - An offset already seen: a duplicate, dropped and counted.
    /// - A gap (pushes lost on the bus, e.g. while this shard's connection
    ///   was down): counted; members with positions are closed (`bus_gap`)
    ///   rather than shown a gap, and recover when they reconnect; the
    ///   others get the push.
    fn follow(&self, room: &Arc<str>, epoch: &Arc<str>, offset: u32) -> Follow {
        let Some(bus) = &self.bus else { return Follow::Deliver { starts_epoch: false } };
        let mut starts_epoch = false;
        let last = bus.room_streams.borrow().get(room).map(|(e, last)| (e == epoch, *last));
        match last {
            Some((true, last)) if offset == last.wrapping_add(1) => {}
            Some((true, last)) if offset <= last => {
                self.stats.borrow_mut().bus_room_pushes_duplicate += 1;
                return Follow::Drop;
            }
            Some((true, last)) => {
                let missed = offset - last - 1;
                self.stats.borrow_mut().bus_room_pushes_missed += missed as u64;
                crate::log_warn!("shard {}: {missed} pushes of {room} lost on the bus before offset {offset}", self.id);
                let mut state = self.state.borrow_mut();
                for slot in state.rooms.member_slots(room) {
                    let positions = state.conns.by_slot_mut(slot).filter(|(_, session)| session.positions);
                    if let Some((conn, _)) = positions {
                        state.close(conn, CloseReason::BusGap);
                    }
                }
                self.flush.raise();
            }
            Some((false, _)) => starts_epoch = true,
            None => {}
        }
        bus.room_streams.borrow_mut().insert(room.clone(), (epoch.clone(), offset));
        Follow::Deliver { starts_epoch }
    }

    /// A join answered "epoch E, offset N": the stream here continues from
    /// there (members that joined under another epoch are told first).
    fn follow_from(&self, room: &Arc<str>, epoch: &Arc<str>, offset: u32) {
        let Some(bus) = &self.bus else { return };
        let known = bus.room_streams.borrow().get(room).map(|(e, _)| e == epoch);
        if known == Some(false) {
            self.announce_epoch(room, epoch, offset);
        }
        bus.room_streams.borrow_mut().insert(room.clone(), (epoch.clone(), offset));
    }

    /// The local holders of a key older than the claim's (they close when
    /// the claim is applied); a holder newer than the claim says so on the
    /// key's subject.
    fn older_holders(&self, subject: &[u8], holders: &[(ConnRef, u64)], claim: &Holder) -> Vec<ConnRef> {
        let Some(bus) = &self.bus else { return Vec::new() };
        let mut older = Vec::new();
        for (conn, at_ms) in holders {
            let mine = Holder {
                at_ms: *at_ms,
                node: bus.node_id.clone(),
                shard: self.id as u16,
                slot: conn.slot,
                generation: conn.generation,
            };
            if mine < *claim {
                older.push(*conn);
            } else if mine > *claim {
                // The claimer subscribed before it published, but may have
                // missed this holder's own claim (it came first, or its
                // clock is behind): say it again, so the claimer closes.
                if let Ok(subject) = std::str::from_utf8(subject) {
                    let _ = bus.publish(subject, &Command::Claim { conns: Vec::new(), by: Some(mine) });
                }
            }
        }
        older
    }
}
