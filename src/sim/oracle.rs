//! The promises of docs/positions.md sections 1 to 4, checked on every
//! frame a simulated client reads and, once the world is at rest, on what
//! must have arrived:
//!
//! - no client gets a push twice;
//! - sequential publishers: a push answered before another was sent
//!   arrives first at every client that gets both (any kinds, speed 0);
//! - one API connection: pipelined pushes arrive in request order;
//! - one order per room: with positions, a room's pushes carry offsets
//!   N+1, N+2, ... after the op-20 frame's N, and one offset of one epoch is
//!   one push everywhere; without, every member sees the room's pushes in
//!   offset order; a room push reaches only members of its room, a key
//!   or mid push only connections with that key or mid;
//! - recovery: "recovered": true replays exactly what followed the offset
//!   asked for (missed = M - N), then the live pushes, with no gap;
//! - nothing lost: every push is answered, and every client still connected
//!   at the end got each push it was a target of when the push was sent.
//! - one holder per key: of the clients that share a key, at most one is
//!   still connected at the end;
//! - history: a page lists its room's pushes in offset order, each the
//!   push clients saw at that offset, on whichever node it is read.

use super::client::{Client, Membership};
use super::publisher::Kind;
use crate::order::sequencer::HistoryPage;
use crate::proto::goim::frame;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub struct Push {
    pub kind: Kind,
    pub sent_step: u64,
    pub acked_step: Option<u64>,
    /// The pipelined publisher that sent it.
    pub pipeline: Option<usize>,
}

#[derive(Default)]
pub struct Oracle {
    pub pushes: Vec<Push>,
    /// (room, epoch, offset) -> push id, as clients with positions saw it.
    offsets: HashMap<(String, String, u32), u64>,
    /// push id -> its offset, once known.
    offset_of: HashMap<u64, u32>,
    /// History pages read and checked.
    pub history_pages: u64,
    /// The first broken promise a publisher noticed.
    failure: Option<String>,
}

impl Oracle {
    /// Records a push about to be sent; returns its id (its body is `p<id>`).
    pub fn sent(&mut self, kind: Kind, step: u64, pipeline: Option<usize>) -> u64 {
        self.pushes.push(Push { kind, sent_step: step, acked_step: None, pipeline });
        self.pushes.len() as u64 - 1
    }

    pub fn acked(&mut self, id: u64, step: u64) {
        self.pushes[id as usize].acked_step = Some(step);
    }

    pub fn is_acked(&self, id: u64) -> bool {
        self.pushes[id as usize].acked_step.is_some()
    }

    pub fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    /// An op-20 frame arrived at `client`.
    pub fn position(&mut self, client: &mut Client, body: &[u8], step: u64) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("op-20 body is not JSON: {e}"))?;
        let room = value["room"].as_str().ok_or("op 20 without a room")?.to_string();
        let epoch = value["epoch"].as_str().ok_or("op 20 without an epoch")?.to_string();
        let offset = value["offset"].as_u64().ok_or("op 20 without an offset")? as u32;
        let recovered = value["recovered"].as_bool().ok_or("op 20 without recovered")?;
        let missed = value["missed"].as_u64().ok_or("op 20 without missed")? as u32;
        match &client.membership {
            Membership::AwaitingPosition(awaited) if *awaited == room => {}
            Membership::In { room: current, .. } if *current == room => {}
            other => return Err(format!("op 20 for {room} while {other:?}")),
        }
        let next = match (recovered, client.recover.take()) {
            (true, Some((asked_epoch, asked_offset))) => {
                if asked_epoch != epoch || offset.checked_sub(asked_offset) != Some(missed) {
                    return Err(format!(
                        "recovered from {asked_epoch}/{asked_offset} to {epoch}/{offset} with missed {missed}"
                    ));
                }
                client.replay_left = missed;
                asked_offset + 1
            }
            (true, None) => return Err("\"recovered\": true without a recovery asked".into()),
            (false, _) if missed != 0 => return Err(format!("not recovered but missed {missed}")),
            (false, _) => offset + 1,
        };
        client.membership = Membership::In { room, since: step, next: Some((epoch, next)) };
        Ok(())
    }

    /// A push frame (op `super::OP`) arrived at `client`.
    pub fn push(&mut self, client: &mut Client, seq: i32, body: &[u8]) -> Result<(), String> {
        let id: u64 = std::str::from_utf8(body)
            .ok()
            .and_then(|b| b.strip_prefix('p')?.split(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("push body {:?} is not one the simulation sent", String::from_utf8_lossy(body)))?;
        let push = self.pushes.get(id as usize).ok_or_else(|| format!("push {id} was never sent"))?;
        if client.received.contains(&id) {
            return Err(format!("push {id} arrived twice"));
        }
        if let Some(acked) = push.acked_step.filter(|acked| *acked < client.latest_sent_seen) {
            return Err(format!(
                "push {id} (answered at step {acked}) arrived after a push sent at step {}",
                client.latest_sent_seen
            ));
        }
        if let Some(pipeline) = push.pipeline {
            if client.pipeline_seen.len() <= pipeline {
                client.pipeline_seen.resize(pipeline + 1, 0);
            }
            let seen = &mut client.pipeline_seen[pipeline];
            if *seen > id {
                return Err(format!("pipelined push {id} arrived after push {seen} sent after it"));
            }
            *seen = id;
        }
        client.latest_sent_seen = client.latest_sent_seen.max(push.sent_step);
        client.received.push(id);
        let target = match &push.kind {
            Kind::Keys(keys) => keys.contains(&client.key),
            Kind::Mids(mids) => client.mid != 0 && mids.contains(&client.mid),
            Kind::Room(_) | Kind::All | Kind::History(_) => true,
        };
        if !target {
            return Err(format!(
                "push {id} ({:?}) reached a client with key {} and mid {}",
                push.kind, client.key, client.mid
            ));
        }
        let Kind::Room(push_room) = &push.kind else {
            return (seq == 0)
                .then_some(())
                .ok_or_else(|| format!("key, mid or broadcast push {id} with sequence {seq}"));
        };
        let push_room = push_room.clone();
        let Membership::In { room, next, .. } = &mut client.membership else {
            return Err(format!("room push {id} of {push_room} arrived while {:?}", client.membership));
        };
        if *room != push_room {
            return Err(format!("room push {id} of {push_room} arrived in {room}"));
        }
        let Some((epoch, expected)) = next else {
            return (seq == 0).then_some(()).ok_or_else(|| format!("push {id} with sequence {seq} without positions"));
        };
        let offset = seq as u32;
        if offset != *expected {
            return Err(format!("push {id} of {room} carries offset {offset}, {expected} was next"));
        }
        *expected += 1;
        client.replay_left = client.replay_left.saturating_sub(1);
        let known = *self.offsets.entry((room.clone(), epoch.clone(), offset)).or_insert(id);
        if known != id {
            return Err(format!("offset {offset} of {room}/{epoch} is push {known} and push {id}"));
        }
        self.offset_of.insert(id, offset);
        Ok(())
    }

    /// A history page of `room`: its pushes in offset order, each the push
    /// clients saw at that offset (one order per room, on every node).
    pub fn history(&mut self, room: &str, page: &HistoryPage) {
        self.history_pages += 1;
        let mut last = 0;
        for (offset, bytes) in &page.messages {
            let id = frame::decode(bytes, 1 << 20).ok().flatten().and_then(|(f, _)| {
                std::str::from_utf8(f.body).ok()?.strip_prefix('p')?.split(' ').next()?.parse().ok()
            });
            let Some(id) = id else { return self.fail(format!("history of {room} holds a frame no one pushed")) };
            if !matches!(self.pushes.get(id as usize).map(|p| &p.kind), Some(Kind::Room(r)) if r == room) {
                return self.fail(format!("history of {room} holds push {id}, not one of its room"));
            }
            if *offset <= last || *offset > page.offset {
                return self.fail(format!("history of {room}: offset {offset} after {last}, page at {}", page.offset));
            }
            last = *offset;
            let known = *self.offsets.entry((room.to_string(), page.epoch.to_string(), *offset)).or_insert(id);
            if known != id {
                return self.fail(format!("history of {room}: offset {offset} is push {id}, clients saw push {known}"));
            }
            self.offset_of.insert(id, *offset);
        }
    }

    /// At rest: every push answered, every target that stayed got it,
    /// members saw their room in one order, one holder per key.
    pub fn final_checks(
        &self,
        clients: &[Client],
        room_position: impl Fn(&str) -> Option<(Arc<str>, u32)>,
        step: u64,
    ) -> Result<(), String> {
        if let Some(why) = &self.failure {
            return Err(why.clone());
        }
        if let Some(id) = self.pushes.iter().position(|p| p.acked_step.is_none()) {
            return Err(format!("push {id} was never answered (at rest at step {step})"));
        }
        for client in clients.iter().filter(|c| !c.gone()) {
            let got: HashSet<u64> = client.received.iter().copied().collect();
            for (id, push) in self.pushes.iter().enumerate() {
                if self.was_target(client, push) && !got.contains(&(id as u64)) {
                    return Err(format!("client {} never got push {id} ({:?})", client.id, push.kind));
                }
            }
            if let Membership::In { room, next: Some((epoch, next)), .. } = &client.membership {
                let (current_epoch, last) = room_position(room).ok_or("a member's room has no stream")?;
                if *current_epoch == **epoch && *next != last + 1 {
                    return Err(format!(
                        "client {} is at offset {} of {room}, the room at {last}",
                        client.id,
                        next - 1
                    ));
                }
            }
            // Every room's pushes in offset order, where known (offsets only
            // grow within an epoch, so this holds across room changes too).
            let mut last_by_room: HashMap<&str, u32> = HashMap::new();
            for id in &client.received {
                let (Kind::Room(room), Some(offset)) = (&self.pushes[*id as usize].kind, self.offset_of.get(id)) else {
                    continue;
                };
                if let Some(last) = last_by_room.insert(room, *offset).filter(|last| last >= offset) {
                    return Err(format!("client {} got offset {offset} of {room} after offset {last}", client.id));
                }
            }
        }
        let mut holders: HashMap<&str, usize> = HashMap::new();
        for client in clients.iter().filter(|c| !c.gone() && c.authed_at.is_some()) {
            let count = holders.entry(&client.key).or_default();
            *count += 1;
            if *count > 1 {
                return Err(format!("two connected clients hold key {}", client.key));
            }
        }
        Ok(())
    }

    /// Whether `client` had to get `push`: it was a target when the push
    /// was sent and still is (connected, same room since before).
    fn was_target(&self, client: &Client, push: &Push) -> bool {
        let Some(authed_at) = client.authed_at else { return false };
        if authed_at >= push.sent_step {
            return false;
        }
        match &push.kind {
            Kind::Room(room) => matches!(&client.membership,
                Membership::In { room: current, since, .. } if current == room && *since < push.sent_step),
            Kind::Keys(keys) => keys.contains(&client.key),
            Kind::Mids(mids) => client.mid != 0 && mids.contains(&client.mid),
            Kind::All => true,
            Kind::History(_) => false,
        }
    }
}
