//! The payloads corecast nodes exchange on the bus: a tag byte, then
//! fixed-width big-endian integers and length-prefixed byte strings.
//!
//! Owns: the encoding of every bus message, both ways. Must never: trust a
//! length it reads (every read is checked against what is left; a bad
//! payload decodes to `None`, never to a panic or an allocation past the
//! payload's own size).

use crate::order::sequencer::{Recovery, Refusal};

/// One message on the bus, borrowing the payload it was decoded from.
#[derive(Debug, PartialEq, Eq)]
pub enum BusMsg<'a> {
    /// To a sequencer shard: number this push of `room` (reply `Done`).
    /// `started_unix_us`: when its API request was whole (for the delivery
    /// latency; 0 = not stamped), as in `Room`, `Direct` and `All`.
    Sequence { ticket: u64, started_unix_us: u64, room: &'a str, frame: &'a [u8] },
    /// To a sequencer shard: a connection joins `room` with positions
    /// (reply `Attached`, echoing `token`).
    Attach { token: AttachToken, room: &'a str, recover: Option<(&'a str, u32)>, replay_bytes_max: u32 },
    /// To a sequencer shard: a connection with positions left `room`.
    Detach { room: &'a str },
    /// To a sequencer shard: a history query (reply `Page`).
    History { ticket: u64, room: &'a str, since: u32, limit: u32 },
    /// To an API shard: the push of `ticket` has been numbered and published.
    Done { ticket: u64 },
    /// To a member shard: where the connection of `token` joins the room.
    Attached {
        token: AttachToken,
        room: &'a str,
        epoch: &'a str,
        offset: u32,
        recovery: Recovery,
        replay: Vec<(u32, &'a [u8])>,
    },
    /// To an API shard: the history page of `ticket`.
    Page { ticket: u64, epoch: &'a str, offset: u32, complete: bool, messages: Vec<(u32, &'a [u8])> },
    /// On `room.<room>`: a numbered push.
    Room { epoch: &'a str, offset: u32, started_unix_us: u64, frame: &'a [u8] },
    /// On `key.<key>` or `mid.<mid>`: a push for connections accepting `op`.
    Direct { op: i32, started_unix_us: u64, frame: &'a [u8] },
    /// On `key.<key>`: a connection took the key at `at_ms` (Unix time);
    /// older holders close.
    Claim { holder: Holder<'a> },
    /// On `all`: a broadcast, `speed` connections a second over the cluster.
    All { op: i32, speed: u32, started_unix_us: u64, frame: &'a [u8] },
    /// On `report`: a node's liveness, address and counts (one part of them).
    Report(Report<'a>),
}

/// Which connection asked to attach, echoed back by the sequencer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachToken {
    pub slot: u32,
    pub generation: u32,
    pub attach_seq: u32,
}

/// Who holds a key: ordered by (`at_ms`, node, shard, slot), the greater wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder<'a> {
    pub at_ms: u64,
    pub node: &'a str,
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report<'a> {
    pub node: &'a str,
    /// Counts every report; parts of one report share it.
    pub seq: u64,
    pub part: u32,
    pub parts: u32,
    pub hostname: &'a str,
    pub addr: &'a str,
    pub domain: &'a str,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    pub weight: u32,
    pub shards: u16,
    pub conn_count: u64,
    pub ip_count: u64,
    pub rooms: Vec<(&'a str, u32)>,
}

const SEQUENCE: u8 = b'S';
const ATTACH: u8 = b'A';
const DETACH: u8 = b'D';
const HISTORY: u8 = b'H';
const DONE: u8 = b'd';
const ATTACHED: u8 = b'a';
const PAGE: u8 = b'p';
const ROOM: u8 = b'r';
const DIRECT: u8 = b'k';
const CLAIM: u8 = b'c';
const ALL: u8 = b'b';
const REPORT: u8 = b'R';

/// Appends the encoding of `msg` to `out`.
pub fn encode(msg: &BusMsg<'_>, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match msg {
        BusMsg::Sequence { ticket, started_unix_us, room, frame } => {
            w.u8(SEQUENCE);
            w.u64(*ticket);
            w.u64(*started_unix_us);
            w.str(room);
            w.bytes(frame);
        }
        BusMsg::Attach { token, room, recover, replay_bytes_max } => {
            w.u8(ATTACH);
            w.token(token);
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
        BusMsg::Detach { room } => {
            w.u8(DETACH);
            w.str(room);
        }
        BusMsg::History { ticket, room, since, limit } => {
            w.u8(HISTORY);
            w.u64(*ticket);
            w.str(room);
            w.u32(*since);
            w.u32(*limit);
        }
        BusMsg::Done { ticket } => {
            w.u8(DONE);
            w.u64(*ticket);
        }
        BusMsg::Attached { token, room, epoch, offset, recovery, replay } => {
            w.u8(ATTACHED);
            w.token(token);
            w.str(room);
            w.str(epoch);
            w.u32(*offset);
            w.u8(recovery_code(*recovery));
            w.frames(replay);
        }
        BusMsg::Page { ticket, epoch, offset, complete, messages } => {
            w.u8(PAGE);
            w.u64(*ticket);
            w.str(epoch);
            w.u32(*offset);
            w.u8(*complete as u8);
            w.frames(messages);
        }
        BusMsg::Room { epoch, offset, started_unix_us, frame } => {
            w.u8(ROOM);
            w.str(epoch);
            w.u32(*offset);
            w.u64(*started_unix_us);
            w.bytes(frame);
        }
        BusMsg::Direct { op, started_unix_us, frame } => {
            w.u8(DIRECT);
            w.u32(*op as u32);
            w.u64(*started_unix_us);
            w.bytes(frame);
        }
        BusMsg::Claim { holder } => {
            w.u8(CLAIM);
            w.u64(holder.at_ms);
            w.str(holder.node);
            w.u32(holder.shard as u32);
            w.u32(holder.slot);
            w.u32(holder.generation);
        }
        BusMsg::All { op, speed, started_unix_us, frame } => {
            w.u8(ALL);
            w.u32(*op as u32);
            w.u32(*speed);
            w.u64(*started_unix_us);
            w.bytes(frame);
        }
        BusMsg::Report(r) => {
            w.u8(REPORT);
            w.str(r.node);
            w.u64(r.seq);
            w.u32(r.part);
            w.u32(r.parts);
            w.str(r.hostname);
            w.str(r.addr);
            w.str(r.domain);
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
    }
}

/// Decodes one payload; `None` for anything malformed or with bytes left over.
pub fn decode(payload: &[u8]) -> Option<BusMsg<'_>> {
    let mut r = Reader(payload);
    let msg = match r.u8()? {
        SEQUENCE => BusMsg::Sequence { ticket: r.u64()?, started_unix_us: r.u64()?, room: r.str()?, frame: r.bytes()? },
        ATTACH => {
            let token = r.token()?;
            let room = r.str()?;
            let replay_bytes_max = r.u32()?;
            let recover = match r.u8()? {
                0 => None,
                1 => Some((r.str()?, r.u32()?)),
                _ => return None,
            };
            BusMsg::Attach { token, room, recover, replay_bytes_max }
        }
        DETACH => BusMsg::Detach { room: r.str()? },
        HISTORY => BusMsg::History { ticket: r.u64()?, room: r.str()?, since: r.u32()?, limit: r.u32()? },
        DONE => BusMsg::Done { ticket: r.u64()? },
        ATTACHED => BusMsg::Attached {
            token: r.token()?,
            room: r.str()?,
            epoch: r.str()?,
            offset: r.u32()?,
            recovery: recovery_of(r.u8()?)?,
            replay: r.frames()?,
        },
        PAGE => BusMsg::Page {
            ticket: r.u64()?,
            epoch: r.str()?,
            offset: r.u32()?,
            complete: match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
            messages: r.frames()?,
        },
        ROOM => BusMsg::Room { epoch: r.str()?, offset: r.u32()?, started_unix_us: r.u64()?, frame: r.bytes()? },
        DIRECT => BusMsg::Direct { op: r.u32()? as i32, started_unix_us: r.u64()?, frame: r.bytes()? },
        CLAIM => BusMsg::Claim {
            holder: Holder {
                at_ms: r.u64()?,
                node: r.str()?,
                shard: u16::try_from(r.u32()?).ok()?,
                slot: r.u32()?,
                generation: r.u32()?,
            },
        },
        ALL => BusMsg::All { op: r.u32()? as i32, speed: r.u32()?, started_unix_us: r.u64()?, frame: r.bytes()? },
        REPORT => {
            let mut report = Report {
                node: r.str()?,
                seq: r.u64()?,
                part: r.u32()?,
                parts: r.u32()?,
                hostname: r.str()?,
                addr: r.str()?,
                domain: r.str()?,
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
                report.rooms.push((r.str()?, r.u32()?));
            }
            BusMsg::Report(report)
        }
        _ => return None,
    };
    r.0.is_empty().then_some(msg)
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
    fn token(&mut self, t: &AttachToken) {
        self.u32(t.slot);
        self.u32(t.generation);
        self.u32(t.attach_seq);
    }
    fn frames(&mut self, frames: &[(u32, &[u8])]) {
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
    fn token(&mut self) -> Option<AttachToken> {
        Some(AttachToken { slot: self.u32()?, generation: self.u32()?, attach_seq: self.u32()? })
    }
    fn frames(&mut self) -> Option<Vec<(u32, &'a [u8])>> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 8 {
            return None;
        }
        (0..n).map(|_| Some((self.u32()?, self.bytes()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<BusMsg<'static>> {
        let token = AttachToken { slot: 3, generation: 9, attach_seq: 2 };
        vec![
            BusMsg::Sequence { ticket: 7, started_unix_us: 9, room: "live://1", frame: b"frame" },
            BusMsg::Attach { token, room: "live://1", recover: Some(("Ep0ch", 41)), replay_bytes_max: 9000 },
            BusMsg::Attach { token, room: "r", recover: None, replay_bytes_max: 0 },
            BusMsg::Detach { room: "live://1" },
            BusMsg::History { ticket: 1, room: "r", since: 2, limit: 3 },
            BusMsg::Done { ticket: u64::MAX },
            BusMsg::Attached {
                token,
                room: "r",
                epoch: "E",
                offset: 5,
                recovery: Recovery::Refused(Refusal::Gone),
                replay: vec![(4, b"a"), (5, b"bc")],
            },
            BusMsg::Page { ticket: 2, epoch: "E", offset: 9, complete: true, messages: vec![(9, b"x")] },
            BusMsg::Room { epoch: "E", offset: 1, started_unix_us: 2, frame: b"f" },
            BusMsg::Direct { op: -3, started_unix_us: 0, frame: b"" },
            BusMsg::Claim { holder: Holder { at_ms: 5, node: "n:1", shard: 1, slot: 2, generation: 3 } },
            BusMsg::All { op: 1000, speed: 20, started_unix_us: 3, frame: b"z" },
            BusMsg::Report(Report {
                node: "n",
                seq: 3,
                part: 0,
                parts: 1,
                hostname: "h",
                addr: "127.0.0.1",
                domain: "d",
                tcp_port: 1,
                ws_port: 2,
                wss_port: 3,
                weight: 10,
                shards: 2,
                conn_count: 4,
                ip_count: 1,
                rooms: vec![("live://1", 4)],
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_refused() {
        for msg in samples() {
            let mut bytes = Vec::new();
            encode(&msg, &mut bytes);
            assert_eq!(decode(&bytes).as_ref(), Some(&msg));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None, "{msg:?} cut at {cut}");
            }
            bytes.push(0);
            assert_eq!(decode(&bytes), None, "trailing bytes are refused");
        }
    }

    #[test]
    fn a_flag_byte_other_than_0_or_1_is_refused() {
        // Found by fuzz/nats_protocol: a Page whose `complete` byte was 28
        // decoded as true and re-encoded as 1.
        let crash = [112u8, 65, 82, 251, 42, 166, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 238, 28, 0, 0, 0, 0];
        assert_eq!(decode(&crash), None);
        let mut fixed = crash;
        fixed[18] = 1;
        let msg = decode(&fixed).expect("with a valid flag it decodes");
        let mut again = Vec::new();
        encode(&msg, &mut again);
        assert_eq!(again, fixed);
    }

    #[test]
    fn lying_counts_do_not_allocate() {
        let mut bytes = vec![PAGE];
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.push(1);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&bytes), None);
    }
}
