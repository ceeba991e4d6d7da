//! Applying pushes and directory messages on this shard, and starting the
//! pushes that the HTTP API receives.
//!
//! Owns: the routing rules: room pushes go to every shard (each delivers to
//! its own members, accepts ignored); key and mid pushes go to the owner
//! of the key or mid in the directory, which forwards to the connection's
//! shard (two hops at most); broadcasts go to every shard. Must never: await
//! (a message is applied in one go, so no shard waits on another here).

use super::close::CloseReason;
use super::conns::ConnRef;
use super::directory::owner_of;
use super::mesh::ShardMsg;
use super::websocket::Payload;
use super::Shard;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Broadcast walks are throttled in steps of this length.
const BROADCAST_STEP_MS: u64 = 10;
/// Throttled broadcast walks running at once on one shard. Past it a
/// broadcast goes out unthrottled (and a warning says so): a publisher
/// cannot pile up slow walks, each holding its message, without bound.
const THROTTLED_WALKS_MAX: usize = 16;

impl Shard {
    /// Applies one message from another shard (or from this one).
    pub fn apply(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Room { room, frame } => self.deliver_room(&room, frame),
            ShardMsg::All { op, frame, conns_per_s } => self.deliver_all(op, frame, conns_per_s),
            ShardMsg::Keys { keys, op, frame } => {
                let conns: Vec<ConnRef> = {
                    let state = self.state.borrow();
                    keys.iter().filter_map(|key| state.directory.key(key)).collect()
                };
                self.forward_to_conns(conns, op, frame);
            }
            ShardMsg::Mids { mids, op, frame } => {
                let conns: Vec<ConnRef> = {
                    let state = self.state.borrow();
                    mids.iter().flat_map(|mid| state.directory.mid(*mid).iter().copied()).collect()
                };
                self.forward_to_conns(conns, op, frame);
            }
            ShardMsg::Conns { conns, op, frame } => self.deliver_conns(&conns, op, frame),
            ShardMsg::Register { key, mid, conn, ack_id } => {
                let replaced = {
                    let mut state = self.state.borrow_mut();
                    if let Some(mid) = mid {
                        state.directory.add_mid(mid, conn);
                    }
                    key.and_then(|key| state.directory.register_key(&key, conn))
                };
                if let Some(old) = replaced {
                    self.send(old.shard as usize, ShardMsg::Kick { conn: old });
                }
                self.send(conn.shard as usize, ShardMsg::Ack { ack_id });
            }
            ShardMsg::Unregister { key, mid, conn } => {
                let mut state = self.state.borrow_mut();
                if let Some(key) = key {
                    state.directory.unregister_key(&key, conn);
                }
                if let Some(mid) = mid {
                    state.directory.remove_mid(mid, conn);
                }
            }
            ShardMsg::Kick { conn } => self.close(conn, CloseReason::Replaced),
            ShardMsg::Ack { ack_id } => self.complete_ack(ack_id),
            ShardMsg::Ip { ip, delta } => {
                let mut state = self.state.borrow_mut();
                if delta > 0 {
                    state.directory.ip_add(ip);
                } else {
                    state.directory.ip_remove(ip);
                }
            }
            ShardMsg::Online(report) => {
                if let Some(slot) = self.peer_stats.borrow_mut().get_mut(report.shard) {
                    *slot = report.stats.clone();
                }
                self.state.borrow_mut().online.apply(&report);
            }
        }
    }

    /// Groups `conns` by shard and delivers (locally) or forwards them.
    fn forward_to_conns(&self, conns: Vec<ConnRef>, op: i32, frame: Bytes) {
        let mut by_shard: Vec<Vec<ConnRef>> = vec![Vec::new(); self.shards];
        for conn in conns {
            if let Some(list) = by_shard.get_mut(conn.shard as usize) {
                list.push(conn);
            }
        }
        for (shard, conns) in by_shard.into_iter().enumerate() {
            if conns.is_empty() {
                continue;
            }
            if shard == self.id {
                self.deliver_conns(&conns, op, frame.clone());
            } else {
                self.outgoing.send(shard, ShardMsg::Conns { conns, op, frame: frame.clone() });
            }
        }
    }

    fn deliver_conns(&self, conns: &[ConnRef], op: i32, frame: Bytes) {
        let payload = Payload::new(Rc::new(frame), 1);
        let mut state = self.state.borrow_mut();
        let mut delivered = 0;
        for conn in conns {
            let accepts = state.conns.get(*conn).is_some_and(|s| s.accepts.binary_search(&op).is_ok());
            if accepts && self.enqueue_payload(&mut state, *conn, &payload) {
                delivered += 1;
            }
        }
        self.stats.borrow_mut().frames_queued += delivered;
    }

    /// Queues a room push for the next flush (batched with the room's other
    /// pushes of the same pass into one write per member).
    fn deliver_room(&self, room: &str, frame: Bytes) {
        if self.state.borrow_mut().rooms.push(room, frame) {
            self.flush.raise();
        }
    }

    fn deliver_all(&self, op: i32, frame: Bytes, conns_per_s: u32) {
        let payload = Payload::new(Rc::new(frame), 1);
        let walks = &self.throttled_walks;
        if conns_per_s > 0 && walks.get() >= THROTTLED_WALKS_MAX {
            crate::log_warn!(
                "shard {}: {THROTTLED_WALKS_MAX} throttled broadcasts running; this one goes out at once",
                self.id
            );
        }
        if conns_per_s == 0 || walks.get() >= THROTTLED_WALKS_MAX {
            let slots = self.state.borrow().conns.slot_count();
            self.deliver_all_slots(op, &payload, 0, slots);
            return;
        }
        walks.set(walks.get() + 1);
        // A throttled walk: about `conns_per_s` slots a second, in steps.
        let shard = crate::shard::runtime::current();
        let step = ((conns_per_s as u64 * BROADCAST_STEP_MS / 1000).max(1)) as u32;
        let step_ms = (step as u64 * 1000 / conns_per_s as u64).max(1);
        glommio::spawn_local(async move {
            let mut next = 0u32;
            loop {
                let slots = shard.state.borrow().conns.slot_count();
                if next >= slots || shard.stopping.get() {
                    shard.throttled_walks.set(shard.throttled_walks.get() - 1);
                    return;
                }
                let end = next.saturating_add(step).min(slots);
                shard.deliver_all_slots(op, &payload, next, end);
                next = end;
                glommio::timer::sleep(Duration::from_millis(step_ms)).await;
            }
        })
        .detach();
    }

    fn deliver_all_slots(&self, op: i32, payload: &Payload, from: u32, to: u32) {
        let mut state = self.state.borrow_mut();
        let mut delivered = 0;
        for slot in from..to {
            let Some((conn, session)) = state.conns.by_slot_mut(slot) else { continue };
            if session.accepts.binary_search(&op).is_ok() && self.enqueue_payload(&mut state, conn, payload) {
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

    /// POST /goim/push/keys: one hop to each key's directory shard.
    pub fn push_keys(&self, keys: Vec<String>, op: i32, body: &[u8]) {
        let frame = Self::push_frame(op, body);
        let mut by_owner: Vec<Vec<String>> = vec![Vec::new(); self.shards];
        for key in keys {
            by_owner[owner_of(key.as_str(), self.shards)].push(key);
        }
        for (owner, keys) in by_owner.into_iter().enumerate() {
            if !keys.is_empty() {
                self.send(owner, ShardMsg::Keys { keys, op, frame: frame.clone() });
            }
        }
    }

    /// POST /goim/push/mids: one hop to each mid's directory shard.
    pub fn push_mids(&self, mids: Vec<i64>, op: i32, body: &[u8]) {
        let frame = Self::push_frame(op, body);
        let mut by_owner: Vec<Vec<i64>> = vec![Vec::new(); self.shards];
        for mid in mids {
            by_owner[owner_of(&mid, self.shards)].push(mid);
        }
        for (owner, mids) in by_owner.into_iter().enumerate() {
            if !mids.is_empty() {
                self.send(owner, ShardMsg::Mids { mids, op, frame: frame.clone() });
            }
        }
    }

    /// POST /goim/push/room: the frame is encoded once and shared by every
    /// shard (every shard is told: a member may have joined a moment ago).
    pub fn push_room(&self, room: &str, op: i32, body: &[u8]) {
        let frame = Self::push_frame(op, body);
        let room: Arc<str> = Arc::from(room);
        for shard in 0..self.shards {
            self.send(shard, ShardMsg::Room { room: room.clone(), frame: frame.clone() });
        }
    }

    /// POST /goim/push/all: `speed` connections a second over all shards.
    pub fn push_all(&self, op: i32, body: &[u8], speed: u32) {
        let frame = Self::push_frame(op, body);
        let conns_per_s = if speed == 0 { 0 } else { speed.div_ceil(self.shards as u32).max(1) };
        for shard in 0..self.shards {
            self.send(shard, ShardMsg::All { op, frame: frame.clone(), conns_per_s });
        }
    }
}
