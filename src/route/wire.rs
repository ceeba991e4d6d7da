//! The encoding of `route::command::Command` on the bus: a tag byte, then
//! fixed-width big-endian integers and length-prefixed byte strings. What a
//! subject already says (the room of a numbered push, the connections of a
//! key or mid) is left out, and given back by the receiver (`On`).
//!
//! Owns: the bus encoding of every command, both ways. Must never: trust a
//! length it reads (every read is checked against what is left; a bad
//! payload decodes to `None`, never to a panic or an allocation past the
//! payload's own size), or take a message its subject does not carry.

use crate::conn::conns::ConnRef;
use crate::order::sequencer::{HistoryPage, Joined, Recovery, Refusal};
use crate::order::tickets::Ack;
use crate::route::bus::BusError;
use crate::route::command::{Attached, Command};
use bytes::Bytes;
use std::sync::Arc;

/// Who holds a key: ordered by (`at_ms`, node, shard, slot), the greater wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub at_ms: u64,
    pub node: Arc<str>,
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// A node's liveness, address and counts (one part of them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub node: String,
    /// Counts every report; parts of one report share it.
    pub seq: u64,
    pub part: u32,
    pub parts: u32,
    pub hostname: String,
    pub addr: String,
    pub domain: String,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    pub weight: u32,
    pub shards: u16,
    pub conn_count: u64,
    pub ip_count: u64,
    pub rooms: Vec<(String, u32)>,
}

/// What the subject a message came on means on the receiving shard.
pub enum On {
    /// A room's subject: its numbered pushes.
    Room(Arc<str>),
    /// A key's or mid's subject: the connections holding it here.
    Conns(Vec<ConnRef>),
    /// Any other subject (this shard's own, the broadcast's, the reports').
    Other,
}

const SEQUENCE: u8 = b'S';
const ATTACH: u8 = b'A';
const DETACH: u8 = b'D';
const HISTORY: u8 = b'H';
const CONFIRMS: u8 = b'd';
const ATTACHED: u8 = b'a';
const PAGE: u8 = b'p';
const FAILED: u8 = b'f';
const ROOM: u8 = b'r';
const DIRECT: u8 = b'k';
const CLAIM: u8 = b'c';
const ALL: u8 = b'b';
const REPORT: u8 = b'R';

/// Appends the bus encoding of `command`, sent by node `me`, to `out`.
/// `false` (nothing written) for the commands that stay inside a node
/// (the directory's and the shards' counts).
pub fn encode(command: &Command, me: &str, out: &mut Vec<u8>) -> bool {
    let mut w = Writer(out);
    match command {
        Command::Sequence { room, frame, ack } => {
            w.u8(SEQUENCE);
            w.ack(ack, me);
            w.str(room);
            w.bytes(frame);
        }
        Command::Attach { room, conn, home, attach_seq, recover, replay_bytes_max } => {
            w.u8(ATTACH);
            w.str(home.as_deref().unwrap_or(me));
            w.u32(conn.shard as u32);
            w.u32(conn.slot);
            w.u32(conn.generation);
            w.u32(*attach_seq);
            w.str(room);
            w.u32(*replay_bytes_max);
            match recover {
                Some((epoch, offset)) => {
                    w.u8(1);
                    w.str(epoch);
                    w.u32(*offset);
                }
                None => w.u8(0),
            }
        }
        Command::Detach { room } => {
            w.u8(DETACH);
            w.str(room);
        }
        Command::History { room, since, limit, ack } => {
            w.u8(HISTORY);
            w.ack(ack, me);
            w.str(room);
            w.u32(*since);
            w.u32(*limit);
        }
        Command::Confirms(confirms) => {
            w.u8(CONFIRMS);
            w.u32(confirms.len() as u32);
            for (id, weight) in confirms {
                w.u64(*id);
                w.u64(*weight);
            }
        }
        Command::Attached(attached) => {
            let Attached { room, conn, attach_seq, joined } = &**attached;
            w.u8(ATTACHED);
            w.u32(conn.slot);
            w.u32(conn.generation);
            w.u32(*attach_seq);
            w.str(room);
            w.str(&joined.epoch);
            w.u32(joined.offset);
            w.u8(recovery_code(joined.recovery));
            w.frames(&joined.replay);
        }
        Command::Page { id, weight, page } => {
            w.u8(PAGE);
            w.u64(*id);
            w.u64(*weight);
            w.str(&page.epoch);
            w.u32(page.offset);
            w.u8(page.complete as u8);
            w.frames(&page.messages);
        }
        Command::Failed { id, error } => {
            w.u8(FAILED);
            w.u64(*id);
            w.u8(error_code(*error));
        }
        Command::Room { epoch, offset, frame, ack, .. } => {
            w.u8(ROOM);
            w.str(epoch.as_deref().unwrap_or(""));
            w.u32(*offset);
            w.u64(crate::latency::to_unix_us(ack.started_us));
            w.bytes(frame);
        }
        Command::Keys { op, frame, ack, .. }
        | Command::Mids { op, frame, ack, .. }
        | Command::Conns { op, frame, ack, .. } => {
            w.u8(DIRECT);
            w.u32(*op as u32);
            w.u64(crate::latency::to_unix_us(ack.started_us));
            w.bytes(frame);
        }
        Command::Claim { by: Some(holder), .. } => {
            w.u8(CLAIM);
            w.u64(holder.at_ms);
            w.str(&holder.node);
            w.u32(holder.shard as u32);
            w.u32(holder.slot);
            w.u32(holder.generation);
        }
        Command::All { op, frame, speed, ack } => {
            w.u8(ALL);
            w.u32(*op as u32);
            w.u32(*speed);
            w.u64(crate::latency::to_unix_us(ack.started_us));
            w.bytes(frame);
        }
        Command::Report(r) => {
            w.u8(REPORT);
            w.str(&r.node);
            w.u64(r.seq);
            w.u32(r.part);
            w.u32(r.parts);
            w.str(&r.hostname);
            w.str(&r.addr);
            w.str(&r.domain);
            for port in [r.tcp_port, r.ws_port, r.wss_port] {
                w.u32(port as u32);
            }
            w.u32(r.weight);
            w.u32(r.shards as u32);
            w.u64(r.conn_count);
            w.u64(r.ip_count);
            w.u32(r.rooms.len() as u32);
            for (room, count) in &r.rooms {
                w.str(room);
                w.u32(*count);
            }
        }
        Command::Claim { by: None, .. }
        | Command::Register { .. }
        | Command::Unregister { .. }
        | Command::Ip { .. }
        | Command::Counts(_) => return false,
    }
    true
}

/// Decodes one payload that came on a subject meaning `on` to `shard`
/// (the one an `Attached` is for);
/// `None` for anything malformed, with bytes left over, or not carried by
/// that subject (a numbered push off a room's subject, say).
pub fn decode(payload: &[u8], on: On, shard: usize) -> Option<Command> {
    let mut r = Reader(payload);
    let command = match (r.u8()?, on) {
        (SEQUENCE, On::Other) => {
            Command::Sequence { ack: r.ack()?, room: Arc::from(r.str()?), frame: Bytes::copy_from_slice(r.bytes()?) }
        }
        (ATTACH, On::Other) => {
            let home = r.str()?;
            let conn = ConnRef { shard: u16::try_from(r.u32()?).ok()?, slot: r.u32()?, generation: r.u32()? };
            let attach_seq = r.u32()?;
            let room = Arc::from(r.str()?);
            let replay_bytes_max = r.u32()?;
            let recover = match r.u8()? {
                0 => None,
                1 => Some((Box::from(r.str()?), r.u32()?)),
                _ => return None,
            };
            let home = Some(Arc::from(home));
            Command::Attach { room, conn, home, attach_seq, recover, replay_bytes_max }
        }
        (DETACH, On::Other) => Command::Detach { room: Arc::from(r.str()?) },
        (HISTORY, On::Other) => {
            Command::History { ack: r.ack()?, room: Arc::from(r.str()?), since: r.u32()?, limit: r.u32()? }
        }
        (CONFIRMS, On::Other) => {
            let n = r.u32()? as usize;
            if n > r.0.len() / 16 {
                return None;
            }
            Command::Confirms((0..n).map(|_| Some((r.u64()?, r.u64()?))).collect::<Option<_>>()?)
        }
        (ATTACHED, On::Other) => {
            let conn = ConnRef { shard: u16::try_from(shard).ok()?, slot: r.u32()?, generation: r.u32()? };
            let attach_seq = r.u32()?;
            let room = Arc::from(r.str()?);
            let joined = Joined {
                epoch: Arc::from(r.str()?),
                offset: r.u32()?,
                recovery: recovery_of(r.u8()?)?,
                replay: r.frames()?,
            };
            Command::Attached(Box::new(Attached { room, conn, attach_seq, joined }))
        }
        (PAGE, On::Other) => {
            let (id, weight) = (r.u64()?, r.u64()?);
            let page = HistoryPage {
                epoch: Arc::from(r.str()?),
                offset: r.u32()?,
                complete: r.flag()?,
                messages: r.frames()?,
            };
            Command::Page { id, weight, page: Box::new(page) }
        }
        (FAILED, On::Other) => Command::Failed { id: r.u64()?, error: error_of(r.u8()?)? },
        (ROOM, On::Room(room)) => {
            let (epoch, offset) = (Some(Arc::from(r.str()?)), r.u32()?);
            let ack = Ack::none(crate::latency::from_unix_us(r.u64()?));
            Command::Room { room, epoch, offset, new_epoch: false, frame: Bytes::copy_from_slice(r.bytes()?), ack }
        }
        (DIRECT, On::Conns(conns)) => {
            let op = r.u32()? as i32;
            let ack = Ack::none(crate::latency::from_unix_us(r.u64()?));
            Command::Conns { conns, op, frame: Bytes::copy_from_slice(r.bytes()?), ack }
        }
        (CLAIM, On::Conns(_)) => {
            let holder = Holder {
                at_ms: r.u64()?,
                node: Arc::from(r.str()?),
                shard: u16::try_from(r.u32()?).ok()?,
                slot: r.u32()?,
                generation: r.u32()?,
            };
            Command::Claim { conns: Vec::new(), by: Some(holder) }
        }
        (ALL, On::Other) => {
            let (op, speed) = (r.u32()? as i32, r.u32()?);
            let ack = Ack::none(crate::latency::from_unix_us(r.u64()?));
            Command::All { op, frame: Bytes::copy_from_slice(r.bytes()?), speed, ack }
        }
        (REPORT, On::Other) => {
            let mut report = Report {
                node: r.string()?,
                seq: r.u64()?,
                part: r.u32()?,
                parts: r.u32()?,
                hostname: r.string()?,
                addr: r.string()?,
                domain: r.string()?,
                tcp_port: u16::try_from(r.u32()?).ok()?,
                ws_port: u16::try_from(r.u32()?).ok()?,
                wss_port: u16::try_from(r.u32()?).ok()?,
                weight: r.u32()?,
                shards: u16::try_from(r.u32()?).ok()?,
                conn_count: r.u64()?,
                ip_count: r.u64()?,
                rooms: Vec::new(),
            };
            let rooms = r.u32()? as usize;
            // Each entry takes at least 8 bytes: a count past what is left is a lie.
            if rooms > r.0.len() / 8 {
                return None;
            }
            report.rooms.reserve(rooms);
            for _ in 0..rooms {
                report.rooms.push((r.string()?, r.u32()?));
            }
            Command::Report(Box::new(report))
        }
        _ => return None,
    };
    r.0.is_empty().then_some(command)
}

fn error_code(error: BusError) -> u8 {
    match error {
        BusError::Down => 0,
        BusError::Full => 1,
        BusError::TooLarge => 2,
    }
}

fn error_of(code: u8) -> Option<BusError> {
    [BusError::Down, BusError::Full, BusError::TooLarge].get(code as usize).copied()
}

fn recovery_code(recovery: Recovery) -> u8 {
    match recovery {
        Recovery::NotAsked => 0,
        Recovery::Recovered => 1,
        Recovery::Refused(refusal) => 2 + refusal.index() as u8,
    }
}

fn recovery_of(code: u8) -> Option<Recovery> {
    match code {
        0 => Some(Recovery::NotAsked),
        1 => Some(Recovery::Recovered),
        n => Refusal::ALL.get(n as usize - 2).map(|r| Recovery::Refused(*r)),
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// A share of a ticket: its home node (`me` for this one), shard, id,
    /// weight, and its start in Unix microseconds.
    fn ack(&mut self, ack: &Ack, me: &str) {
        self.str(ack.node.as_deref().unwrap_or(me));
        self.u32(ack.shard as u32);
        self.u64(ack.id);
        self.u64(ack.weight);
        self.u64(crate::latency::to_unix_us(ack.started_us));
    }
    fn frames(&mut self, frames: &[(u32, Bytes)]) {
        self.u32(frames.len() as u32);
        for (offset, frame) in frames {
            self.u32(*offset);
            self.bytes(frame);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(b);
        Some(u64::from_be_bytes(bytes))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_string)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn ack(&mut self) -> Option<Ack> {
        let node = Some(Arc::from(self.str()?));
        let shard = u16::try_from(self.u32()?).ok()?;
        let (id, weight) = (self.u64()?, self.u64()?);
        let started_us = crate::latency::from_unix_us(self.u64()?);
        Some(Ack { node, shard, id, weight, started_us })
    }
    fn frames(&mut self) -> Option<Vec<(u32, Bytes)>> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 8 {
            return None;
        }
        (0..n).map(|_| Some((self.u32()?, Bytes::copy_from_slice(self.bytes()?)))).collect()
    }
}

#[cfg(test)]
mod tests;
