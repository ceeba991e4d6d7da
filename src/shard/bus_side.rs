//! The shard's side of the cluster: what it publishes for the API and its
//! connections, and how it applies what the bus brings.
//!
//! Owns: the cluster path of every push kind, of joins with positions and
//! of history queries; the sequencer's bus replies; key claims (a newer
//! connection with a key closes older ones on any node); reports and the
//! node table's consequences (rooms whose sequencer moved are dropped, so
//! they start a new epoch where they went). Must never: answer an API
//! request before its push is in the server's order (sequencer reply or
//! PONG), or drop a push without failing its ticket.

use crate::conn::close::CloseReason;
use crate::conn::conns::ConnRef;
use crate::order::sequencer::{Joined, Recovery, Refusal};
use crate::order::tickets::Ack;
use crate::route::bus::{BusError, Interest, OneOrMore};
use crate::route::mesh::{Attached, ShardMsg};
use crate::route::placement::SequencerAt;
use crate::route::wire::{AttachToken, BusMsg, Holder};
use crate::shard::Shard;
use bytes::Bytes;
use std::sync::Arc;

/// What a subscription's message is for, copied out of the bus's table.
enum Target {
    Room(Arc<str>),
    Key(Vec<(ConnRef, u64)>),
    Conns(Vec<ConnRef>),
    Other,
}

impl Shard {
    /// Fails ticket `id` with `error`, counted as a push the bus did not take.
    /// (A registration's ticket is only released: its connection goes on.)
    pub fn bus_refused(&self, id: u64, error: BusError) {
        let registration = self.tickets.borrow_mut().fail(id, error.reason());
        if registration {
            self.release_registered();
            return;
        }
        self.stats.borrow_mut().bus_pushes_failed += 1;
        crate::log_warn!("shard {}: push answered -500: {}", self.id, error.reason());
    }

    /// Fails the ticket `ack` is a share of, on whichever shard holds it.
    pub fn fail_share(&self, ack: Ack, error: BusError) {
        if ack.shard as usize == self.id {
            self.bus_refused(ack.id, error);
        } else {
            self.stats.borrow_mut().bus_pushes_failed += 1;
            self.send(ack.shard as usize, ShardMsg::Failed { id: ack.id, why: error.reason() });
        }
    }

    // ---- the API side ----

    /// A room push: to its sequencer over the mesh when that is on this node
    /// (no bus round trip to ask), else over the bus.
    pub fn bus_push_room(&self, room: &str, frame: &Bytes, ack: Ack) {
        let Some(bus) = &self.bus else { return };
        let SequencerAt { node, shard } = self.placement().sequencer(room);
        let Some(node) = node else {
            let msg = ShardMsg::Sequence { room: Arc::from(room), frame: frame.clone(), ack };
            return self.send(shard, msg);
        };
        let started_unix_us = crate::latency::to_unix_us(ack.started_us);
        let msg = BusMsg::Sequence { ticket: ack.id, started_unix_us, room, frame };
        match bus.publish(&bus.subjects.sequencer(&node, shard), Some(&bus.inbox), &msg) {
            Ok(()) => self.tickets.borrow_mut().expect_remote(ack.id),
            Err(e) => self.bus_refused(ack.id, e),
        }
    }

    /// Key and mid pushes: one message per target on its subject, then a
    /// PING; the reply waits for the PONG.
    pub fn bus_push_direct(&self, subjects: impl Iterator<Item = String>, op: i32, frame: &Bytes, ack: Ack) {
        let Some(bus) = &self.bus else { return };
        let msg = BusMsg::Direct { op, started_unix_us: crate::latency::to_unix_us(ack.started_us), frame };
        for subject in subjects {
            if let Err(e) = bus.publish(&subject, None, &msg) {
                return self.bus_refused(ack.id, e);
            }
        }
        if let Err(e) = bus.flush(ack) {
            self.bus_refused(ack.id, e);
        }
    }

    pub fn bus_push_all(&self, op: i32, speed: u32, frame: &Bytes, ack: Ack) {
        let Some(bus) = &self.bus else { return };
        let result = bus
            .publish(
                &bus.subjects.all(),
                None,
                &BusMsg::All { op, speed, started_unix_us: crate::latency::to_unix_us(ack.started_us), frame },
            )
            .and_then(|()| bus.flush(ack));
        if let Err(e) = result {
            self.bus_refused(ack.id, e);
        }
    }

    pub fn bus_query_history(&self, room: &str, since: u32, limit: u32, ack: Ack) {
        let Some(bus) = &self.bus else { return };
        let SequencerAt { node, shard } = self.placement().sequencer(room);
        let Some(node) = node else {
            return self.send(shard, ShardMsg::History { room: Arc::from(room), since, limit, ack });
        };
        let msg = BusMsg::History { ticket: ack.id, room, since, limit };
        match bus.publish(&bus.subjects.sequencer(&node, shard), Some(&bus.inbox), &msg) {
            Ok(()) => self.tickets.borrow_mut().expect_remote(ack.id),
            Err(e) => {
                self.tickets.borrow_mut().fail(ack.id, e.reason());
            }
        }
    }

    /// Joins with positions: subscribe to the room first (so every push
    /// numbered after the sequencer answers reaches this shard), then ask.
    /// Returns false when the bus cannot take it (the caller joins locally).
    pub fn bus_request_attach(
        &self,
        conn: ConnRef,
        room: &str,
        attach_seq: u32,
        recover: Option<(&str, u32)>,
        replay_bytes_max: usize,
    ) -> bool {
        let Some(bus) = &self.bus else { return false };
        let SequencerAt { node, shard } = self.placement().sequencer(room);
        let node = node.as_deref().unwrap_or(&bus.node_id);
        let subject = bus.subjects.room(room);
        bus.want(&subject, Interest::Room(Arc::from(room)));
        let token = AttachToken { slot: conn.slot, generation: conn.generation, attach_seq };
        let replay_bytes_max = replay_bytes_max.min(u32::MAX as usize) as u32;
        let msg = BusMsg::Attach { token, room, recover, replay_bytes_max };
        if bus.publish(&bus.subjects.sequencer(node, shard), Some(&bus.inbox), &msg).is_ok() {
            return true;
        }
        bus.unwant(&subject, None);
        false
    }

    /// A connection with positions left `room`: its sequencer uncounts it.
    pub fn bus_detach(&self, room: &str) -> bool {
        let Some(bus) = &self.bus else { return false };
        let SequencerAt { node, shard } = self.placement().sequencer(room);
        let node = node.as_deref().unwrap_or(&bus.node_id);
        bus.publish(&bus.subjects.sequencer(node, shard), None, &BusMsg::Detach { room }).is_ok()
    }

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
        let holder =
            Holder { at_ms, node: &bus.node_id, shard: self.id as u16, slot: conn.slot, generation: conn.generation };
        let _ = bus.publish(&key_subject, None, &BusMsg::Claim { holder });
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

    pub fn on_bus_message(&self, subject: &[u8], sid: u64, reply: Option<&[u8]>, payload: &[u8]) {
        let Some(bus) = &self.bus else { return };
        let Some(target) = bus.with_interest(subject, sid, |interest| match interest {
            Interest::Room(room) => Target::Room(room.clone()),
            Interest::Key(holders) => Target::Key(holders.to_vec()),
            Interest::Mid(conns) => Target::Conns(conns.to_vec()),
            _ => Target::Other,
        }) else {
            return; // Unsubscribed since: nothing here wants it.
        };
        let Some(msg) = crate::route::wire::decode(payload) else {
            self.stats.borrow_mut().bus_bad_messages += 1;
            crate::log_warn!("shard {}: undecodable bus message ({} bytes) ignored", self.id, payload.len());
            return;
        };
        let reply = reply.and_then(|r| std::str::from_utf8(r).ok());
        match msg {
            BusMsg::Sequence { ticket, started_unix_us, room, frame } => {
                self.bus_sequence(ticket, started_unix_us, room, frame, reply)
            }
            BusMsg::Attach { token, room, recover, replay_bytes_max } => {
                self.bus_attach(token, room, recover, replay_bytes_max as usize, reply)
            }
            BusMsg::Detach { room } => self.sequencer.borrow_mut().detach(room),
            BusMsg::History { ticket, room, since, limit } => {
                let room = Arc::from(room);
                let page = self.page(&room, since, limit);
                let messages: Vec<(u32, &[u8])> = page.messages.iter().map(|(o, f)| (*o, &f[..])).collect();
                let msg =
                    BusMsg::Page { ticket, epoch: &page.epoch, offset: page.offset, complete: page.complete, messages };
                if let Some(reply) = reply {
                    let _ = bus.publish(reply, None, &msg);
                }
            }
            BusMsg::Done { ticket } => {
                self.tickets.borrow_mut().complete_remote(ticket, None);
            }
            BusMsg::Page { ticket, epoch, offset, complete, messages } => {
                let messages = messages.into_iter().map(|(o, f)| (o, Bytes::copy_from_slice(f))).collect();
                let page = crate::order::sequencer::HistoryPage { epoch: Arc::from(epoch), offset, complete, messages };
                self.tickets.borrow_mut().complete_remote(ticket, Some(Box::new(page)));
            }
            BusMsg::Attached { token, room, epoch, offset, recovery, replay } => {
                self.bus_attached(token, room, epoch, offset, recovery, replay)
            }
            BusMsg::Room { epoch, offset, started_unix_us, frame } => {
                if let Target::Room(room) = target {
                    if !self.follow(&room, epoch, offset) {
                        return;
                    }
                    if self.deliver_room(&room, offset, Bytes::copy_from_slice(frame)) {
                        self.note_delivered(crate::latency::from_unix_us(started_unix_us));
                    }
                }
            }
            BusMsg::Direct { op, started_unix_us, frame } => {
                let conns: Vec<ConnRef> = match target {
                    Target::Key(holders) => holders.into_iter().map(|(conn, _)| conn).collect(),
                    Target::Conns(conns) => conns,
                    _ => return,
                };
                self.note_delivered(crate::latency::from_unix_us(started_unix_us));
                self.deliver_conns(&conns, op, Bytes::copy_from_slice(frame));
            }
            BusMsg::Claim { holder } => {
                if let Target::Key(holders) = target {
                    self.on_claim(subject, &holders, holder);
                }
            }
            BusMsg::All { op, speed, started_unix_us, frame } => {
                let conns_per_s = self.broadcast_share(speed);
                if conns_per_s == 0 {
                    self.note_delivered(crate::latency::from_unix_us(started_unix_us));
                }
                self.deliver_all(op, Bytes::copy_from_slice(frame), conns_per_s);
            }
            BusMsg::Report(report) => self.on_report(&report),
        }
    }

    /// A room push from an API shard of this node (over the mesh): number
    /// it and publish it on the room's subject; the ack goes back once the
    /// server's PONG shows it processed the publish, so the reply is the
    /// ordering point as with any cluster push.
    pub fn bus_sequence_local(&self, room: Arc<str>, frame: Bytes, ack: Ack) {
        let Some(bus) = &self.bus else { return };
        let started_unix_us = crate::latency::to_unix_us(ack.started_us);
        let result = self.number_and_publish(&room, &frame, started_unix_us).and_then(|()| bus.flush(ack));
        if let Err(e) = result {
            self.fail_share(ack, e);
        }
    }

    /// The sequencer's side of a cluster room push from another node:
    /// number it, keep it, publish it on the room's subject, and only then
    /// reply (same socket, so every subscriber has it queued before the
    /// publisher hears back).
    fn bus_sequence(&self, ticket: u64, started_unix_us: u64, room: &str, frame: &[u8], reply: Option<&str>) {
        let Some(bus) = &self.bus else { return };
        let room: Arc<str> = Arc::from(room);
        match (self.number_and_publish(&room, &Bytes::copy_from_slice(frame), started_unix_us), reply) {
            (Ok(()), Some(reply)) => {
                let _ = bus.publish(reply, None, &BusMsg::Done { ticket });
            }
            (Err(e), _) => {
                // The publisher's reply times out (-500). The offset is used:
                // members see a gap (counted; those with positions recover).
                crate::log_warn!("shard {}: a numbered push of {room} was not published: {}", self.id, e.reason());
            }
            _ => {}
        }
    }

    /// Gives `frame` the room's next offset, keeps it, and publishes it once
    /// on the room's subject.
    fn number_and_publish(&self, room: &Arc<str>, frame: &Bytes, started_unix_us: u64) -> Result<(), BusError> {
        let Some(bus) = &self.bus else { return Err(BusError::Down) };
        let offset = self.number(room, frame).offset;
        let epoch = self.sequencer.borrow().epoch_of(room).unwrap_or_else(|| Arc::from(""));
        let msg = BusMsg::Room { epoch: &epoch, offset, started_unix_us, frame };
        bus.publish(&bus.subjects.room(room), None, &msg)
    }

    fn bus_attach(
        &self,
        token: AttachToken,
        room: &str,
        recover: Option<(&str, u32)>,
        replay_bytes_max: usize,
        reply: Option<&str>,
    ) {
        let (Some(bus), Some(reply)) = (&self.bus, reply) else { return };
        let room: Arc<str> = Arc::from(room);
        let joined = self.join_point(&room, recover, replay_bytes_max);
        let replay: Vec<(u32, &[u8])> = joined.replay.iter().map(|(o, f)| (*o, &f[..])).collect();
        let msg = |recovery, replay| BusMsg::Attached {
            token,
            room: &room,
            epoch: &joined.epoch,
            offset: joined.offset,
            recovery,
            replay,
        };
        if let Err(BusError::TooLarge) = bus.publish(reply, None, &msg(joined.recovery, replay)) {
            let _ = bus.publish(reply, None, &msg(Recovery::Refused(Refusal::TooLarge), Vec::new()));
        }
    }

    /// The member side of a cluster join: as `on_attached`, then the
    /// subscription taken for the join is handed to the membership.
    #[allow(clippy::too_many_arguments)]
    fn bus_attached(
        &self,
        token: AttachToken,
        room: &str,
        epoch: &str,
        offset: u32,
        recovery: Recovery,
        replay: Vec<(u32, &[u8])>,
    ) {
        let Some(bus) = &self.bus else { return };
        let room: Arc<str> = Arc::from(room);
        self.follow_from(&room, epoch, offset);
        let conn = ConnRef { shard: self.id as u16, slot: token.slot, generation: token.generation };
        let joined = Joined {
            epoch: Arc::from(epoch),
            offset,
            recovery,
            replay: replay.into_iter().map(|(o, f)| (o, Bytes::copy_from_slice(f))).collect(),
        };
        self.on_attached(Attached { room: room.clone(), conn, attach_seq: token.attach_seq, joined });
        self.sync_interest();
        bus.unwant(&bus.subjects.room(&room), None);
    }

    /// Follows `room`'s stream on this shard with the push numbered
    /// `offset` of `epoch`; returns whether to deliver it.
    ///
    /// - The next offset: deliver.
    /// - A new epoch (the sequencer moved or restarted): members with
    ///   positions get an op-20 frame for it first.
    /// - An offset already seen: a duplicate, dropped and counted.
    /// - A gap (pushes lost on the bus, e.g. while this shard's connection
    ///   was down): counted; members with positions are closed (`bus_gap`)
    ///   rather than shown a gap, and recover when they reconnect; the
    ///   others get the push.
    fn follow(&self, room: &Arc<str>, epoch: &str, offset: u32) -> bool {
        let Some(bus) = &self.bus else { return true };
        let last = bus.room_streams.borrow().get(room).map(|(e, last)| (&**e == epoch, *last));
        match last {
            Some((true, last)) if offset == last.wrapping_add(1) => {}
            Some((true, last)) if offset <= last => {
                self.stats.borrow_mut().bus_room_pushes_duplicate += 1;
                return false;
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
            Some((false, _)) => self.announce_epoch(room, epoch, offset.saturating_sub(1)),
            None => {}
        }
        bus.room_streams.borrow_mut().insert(room.clone(), (Arc::from(epoch), offset));
        true
    }

    /// A join answered "epoch E, offset N": the stream here continues from
    /// there (members that joined under another epoch are told first).
    fn follow_from(&self, room: &Arc<str>, epoch: &str, offset: u32) {
        let Some(bus) = &self.bus else { return };
        let known = bus.room_streams.borrow().get(room).map(|(e, _)| &**e == epoch);
        if known == Some(false) {
            self.announce_epoch(room, epoch, offset);
        }
        bus.room_streams.borrow_mut().insert(room.clone(), (Arc::from(epoch), offset));
    }

    /// Closes the local holders of a key older than the claim's; a holder
    /// newer than the claim says so on the key's subject.
    fn on_claim(&self, subject: &[u8], holders: &[(ConnRef, u64)], claim: Holder<'_>) {
        let Some(bus) = &self.bus else { return };
        for (conn, at_ms) in holders {
            let mine = Holder {
                at_ms: *at_ms,
                node: &bus.node_id,
                shard: self.id as u16,
                slot: conn.slot,
                generation: conn.generation,
            };
            if mine < claim {
                self.close(*conn, CloseReason::Replaced);
            } else if mine > claim {
                // The claimer subscribed before it published, but may have
                // missed this holder's own claim (it came first, or its
                // clock is behind): say it again, so the claimer closes.
                if let Ok(subject) = std::str::from_utf8(subject) {
                    let _ = bus.publish(subject, None, &BusMsg::Claim { holder: mine });
                }
            }
        }
    }

    /// This shard's share of a cluster-wide broadcast speed: in proportion
    /// to its connections, so every shard of every node ends together.
    fn broadcast_share(&self, speed: u32) -> u32 {
        if speed == 0 {
            return 0;
        }
        let mine = self.state.borrow().conns.len() as u64;
        let total = self.cluster_totals().0.max(1);
        ((speed as u64 * mine / total) as u32).max(1)
    }
}
