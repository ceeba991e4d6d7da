//! goim TCP clients ("members"): one thread owns a set of connections on its
//! own epoll set. It opens them with a bounded window of connects in flight,
//! authenticates (op 7 → op 8), heartbeats (op 2 → op 3) on a fixed interval,
//! and checks every pushed frame: per publisher the sequence numbers must be
//! contiguous and increasing; latency = now − the send timestamp in the body.
//!
//! Push body layout (written by `publishers`): bytes 0..8 sequence (u64 BE,
//! per publisher and target), 8..12 publisher id (u32 BE), 12..20 send time
//! (CLOCK_MONOTONIC ns, u64 BE).

use crate::sys::{self, Io};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

pub const OP_HEARTBEAT: i32 = 2;
pub const OP_HEARTBEAT_REPLY: i32 = 3;
pub const OP_AUTH: i32 = 7;
pub const OP_AUTH_REPLY: i32 = 8;
pub const OP_RAW: i32 = 9;

/// Largest frame we accept from the server before calling it a protocol error.
const FRAME_MAX: usize = 16 << 20;
const READ_BUF: usize = 64 * 1024;

#[derive(Clone)]
pub struct PoolConfig {
    pub tcp: SocketAddrV4,
    /// More servers (cluster nodes): member mid m connects to entry
    /// (m - 1) % (1 + len) of [tcp, tcp_more...].
    pub tcp_more: Vec<SocketAddrV4>,
    /// Connects + auths in flight per thread.
    pub window: usize,
    /// 0 = never heartbeat.
    pub heartbeat_ns: u64,
    /// First heartbeat right after the auth reply (else one interval later).
    pub heartbeat_now: bool,
    /// Publisher ids run 0..publishers (sequence tracking per publisher).
    pub publishers: usize,
    pub push_op: i32,
    /// JSON list, e.g. "[1000]".
    pub accepts: String,
    /// SO_RCVBUF for member sockets, 0 = kernel default (autotuned).
    pub rcvbuf: usize,
    /// Poll without sleeping: a receiver that never sleeps is never woken,
    /// which takes the wake-up cost off the server's sends on loopback.
    pub busy_poll: bool,
    /// goim over WebSocket: upgrade first, frames in masked binary messages.
    pub websocket: bool,
    /// WebSocket only: offer permessage-deflate; compressed messages are inflated.
    pub deflate: bool,
}

pub struct MemberSpec {
    pub mid: u64,
    /// Room id (`live://ID`); 0 = no room.
    pub room: u32,
    pub key: String,
    pub src: Option<Ipv4Addr>,
}

/// Counters the main thread watches while the threads run.
#[derive(Default)]
pub struct Shared {
    pub authed: AtomicU64,
    pub failed: AtomicU64,
    pub delivered: AtomicU64,
    /// Connections the server closed after auth.
    pub closed: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn settled(&self) -> u64 {
        self.authed.load(Relaxed) + self.failed.load(Relaxed)
    }
}

pub struct MemberResult {
    /// Index into the spec list the thread was given.
    pub index: usize,
    pub authed: bool,
    /// Closed by the server (or errored) after auth.
    pub lost: bool,
    pub received: u64,
    /// Frames whose sequence was below the next expected one (late or duplicate).
    pub out_of_order: u64,
    /// Jumps forward in the sequence (each one = at least one missing frame at that time).
    pub gaps: u64,
}

pub struct ThreadResult {
    pub members: Vec<MemberResult>,
    pub latency: Histogram<u64>,
    pub first_connect_ns: u64,
    pub last_auth_ns: u64,
    pub first_recv_ns: u64,
    pub last_recv_ns: u64,
    pub min_latency_ns: u64,
    pub max_latency_ns: u64,
    pub hb_sent: u64,
    pub hb_replies: u64,
    pub foreign_frames: u64,
    /// Bytes read from member sockets after their auth replies.
    pub wire_bytes: u64,
    /// WebSocket messages that came compressed (RSV1).
    pub compressed_messages: u64,
    pub errors: Vec<String>,
}

const NEW: u8 = 0;
const CONNECTING: u8 = 1;
const AUTHING: u8 = 2;
const READY: u8 = 3;
const DEAD: u8 = 4;

struct Member {
    fd: i32,
    state: u8,
    lost: bool,
    carry: Vec<u8>,
    /// WebSocket only: the 101 response was seen; bytes of an incomplete message.
    ws_open: bool,
    ws_raw: Vec<u8>,
    next: Box<[u64]>,
    received: u64,
    out_of_order: u64,
    gaps: u64,
}

struct Stats {
    wire_bytes: u64,
    compressed_messages: u64,
    /// permessage-deflate: one inflater per thread, reset per message.
    inflater: Option<flate2::Decompress>,
    inflated: Vec<u8>,
    latency: Histogram<u64>,
    delivered: u64,
    first_recv_ns: u64,
    last_recv_ns: u64,
    min_latency_ns: u64,
    max_latency_ns: u64,
    hb_replies: u64,
    foreign_frames: u64,
    push_op: i32,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Starts one member thread over `specs`.
pub fn spawn(specs: Vec<MemberSpec>, cfg: PoolConfig, shared: Arc<Shared>) -> JoinHandle<ThreadResult> {
    std::thread::Builder::new()
        .name("members".into())
        .spawn(move || run(specs, cfg, shared))
        .expect("spawn member thread")
}

pub fn frame(op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&((16 + body.len()) as i32).to_be_bytes());
    f.extend_from_slice(&16i16.to_be_bytes());
    f.extend_from_slice(&1i16.to_be_bytes());
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn auth_frame(spec: &MemberSpec, accepts: &str) -> Vec<u8> {
    let room = if spec.room == 0 { String::new() } else { format!("live://{}", spec.room) };
    let body = format!(
        "{{\"mid\":{},\"key\":\"{}\",\"room_id\":\"{}\",\"platform\":\"web\",\"accepts\":{}}}",
        spec.mid, spec.key, room, accepts
    );
    frame(OP_AUTH, 1, body.as_bytes())
}

fn run(specs: Vec<MemberSpec>, cfg: PoolConfig, shared: Arc<Shared>) -> ThreadResult {
    let ep = sys::Epoll::new().expect("epoll");
    let n = specs.len();
    let mut members: Vec<Member> = (0..n)
        .map(|_| Member {
            fd: -1,
            state: NEW,
            lost: false,
            carry: Vec::new(),
            ws_open: false,
            ws_raw: Vec::new(),
            next: vec![0u64; cfg.publishers.max(1)].into_boxed_slice(),
            received: 0,
            out_of_order: 0,
            gaps: 0,
        })
        .collect();
    let mut st = Stats {
        wire_bytes: 0,
        compressed_messages: 0,
        inflater: None,
        inflated: Vec::new(),
        latency: new_histogram(),
        delivered: 0,
        first_recv_ns: 0,
        last_recv_ns: 0,
        min_latency_ns: u64::MAX,
        max_latency_ns: 0,
        hb_replies: 0,
        foreign_frames: 0,
        push_op: cfg.push_op,
    };
    let mut errors: Vec<String> = Vec::new();
    fn note(errors: &mut Vec<String>, e: String) {
        if errors.len() < 5 {
            errors.push(e);
        }
    }
    let heartbeat = if cfg.websocket { ws_message(&frame(OP_HEARTBEAT, 2, &[])) } else { frame(OP_HEARTBEAT, 2, &[]) };
    let mut buf = vec![0u8; READ_BUF];
    let mut events = sys::empty_events(1024);
    let mut hbq: VecDeque<(u64, u32)> = VecDeque::new();
    let (mut started, mut outstanding) = (0usize, 0usize);
    let (mut first_connect_ns, mut last_auth_ns, mut hb_sent) = (0u64, 0u64, 0u64);

    // Marks a member dead; keeps the window and the shared counters right.
    macro_rules! kill {
        ($i:expr, $why:expr) => {{
            let m = &mut members[$i];
            match m.state {
                CONNECTING | AUTHING => {
                    outstanding -= 1;
                    shared.failed.fetch_add(1, Relaxed);
                }
                READY => {
                    m.lost = true;
                    shared.closed.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            if m.fd >= 0 {
                sys::close_rst(m.fd);
                m.fd = -1;
            }
            m.state = DEAD;
            note(&mut errors, format!("member {}: {}", $i, $why));
        }};
    }

    while !shared.stop.load(Relaxed) {
        while outstanding < cfg.window && started < n {
            let i = started;
            started += 1;
            if first_connect_ns == 0 {
                first_connect_ns = sys::now_ns();
            }
            let servers = 1 + cfg.tcp_more.len() as u64;
            let addr = match (specs[i].mid.saturating_sub(1) % servers) as usize {
                0 => cfg.tcp,
                k => cfg.tcp_more[k - 1],
            };
            match sys::connect_nb(addr, specs[i].src, cfg.rcvbuf) {
                Ok(fd) => {
                    members[i].fd = fd;
                    members[i].state = CONNECTING;
                    outstanding += 1;
                    ep.add(fd, sys::OUT, i as u64).expect("epoll add");
                }
                Err(e) => {
                    members[i].state = DEAD;
                    shared.failed.fetch_add(1, Relaxed);
                    note(&mut errors, format!("connect: {e}"));
                }
            }
        }
        let mut timeout = 20i32;
        if let Some(&(due, _)) = hbq.front() {
            let now = sys::now_ns();
            let ms = (due.saturating_sub(now) / 1_000_000) as i32 + 1;
            timeout = timeout.min(ms);
        }
        if cfg.busy_poll {
            timeout = 0;
        }
        let k = ep.wait(&mut events, timeout);
        for &ev in events.iter().take(k) {
            let i = ev.u64 as usize;
            match members[i].state {
                CONNECTING => {
                    let fd = members[i].fd;
                    let err = sys::so_error(fd);
                    if err != 0 || ev.events & sys::ERR != 0 {
                        kill!(i, format!("connect: {}", sys::strerror(err)));
                        continue;
                    }
                    let auth = if cfg.websocket {
                        let mut bytes = if cfg.deflate { UPGRADE_DEFLATE.to_vec() } else { UPGRADE.to_vec() };
                        bytes.extend(ws_message(&auth_frame(&specs[i], &cfg.accepts)));
                        bytes
                    } else {
                        auth_frame(&specs[i], &cfg.accepts)
                    };
                    match sys::write(fd, &auth) {
                        Io::Done(w) if w == auth.len() => {
                            members[i].state = AUTHING;
                            ep.modify(fd, sys::IN, i as u64).expect("epoll mod");
                        }
                        _ => kill!(i, "auth write failed"),
                    }
                }
                AUTHING | READY => {
                    // One read per event (level-triggered): more data comes back
                    // as another event, which keeps the loop fair.
                    let fd = members[i].fd;
                    let mut rounds = 0;
                    loop {
                        match sys::read(fd, &mut buf) {
                            Io::Done(r) => {
                                let now = sys::now_ns();
                                let m = &mut members[i];
                                if m.state == READY {
                                    st.wire_bytes += r as u64;
                                }
                                let parsed = if cfg.websocket {
                                    on_ws_data(&mut st, m, &buf[..r], now)
                                } else {
                                    on_data(&mut st, m, &buf[..r], now)
                                };
                                match parsed {
                                    Ok(auth_replies) => {
                                        if auth_replies > 0 && m.state == AUTHING {
                                            m.state = READY;
                                            outstanding -= 1;
                                            last_auth_ns = now;
                                            shared.authed.fetch_add(1, Relaxed);
                                            if cfg.heartbeat_ns > 0 {
                                                // Entries are queued at now + interval so the
                                                // queue stays ordered by due time.
                                                if cfg.heartbeat_now {
                                                    match sys::write(fd, &heartbeat) {
                                                        Io::Done(w) if w == heartbeat.len() => hb_sent += 1,
                                                        _ => note(
                                                            &mut errors,
                                                            format!("member {i}: heartbeat write failed"),
                                                        ),
                                                    }
                                                }
                                                hbq.push_back((now + cfg.heartbeat_ns, i as u32));
                                            }
                                        }
                                    }
                                    Err(why) => {
                                        kill!(i, why);
                                        break;
                                    }
                                }
                                rounds += 1;
                                if r < buf.len() || rounds >= 4 {
                                    break;
                                }
                            }
                            Io::WouldBlock => break,
                            Io::Eof => {
                                kill!(i, "closed by server");
                                break;
                            }
                            Io::Err(e) => {
                                kill!(i, sys::strerror(e));
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !hbq.is_empty() {
            let now = sys::now_ns();
            while let Some(&(due, i)) = hbq.front() {
                if due > now {
                    break;
                }
                hbq.pop_front();
                let i = i as usize;
                if members[i].state != READY {
                    continue;
                }
                match sys::write(members[i].fd, &heartbeat) {
                    Io::Done(w) if w == heartbeat.len() => hb_sent += 1,
                    _ => note(&mut errors, format!("member {i}: heartbeat write failed")),
                }
                hbq.push_back((due + cfg.heartbeat_ns, i as u32));
            }
        }
        if st.delivered > 0 {
            shared.delivered.fetch_add(st.delivered, Relaxed);
            st.delivered = 0;
        }
    }

    let results = members
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if m.fd >= 0 {
                sys::close_rst(m.fd);
            }
            MemberResult {
                index,
                authed: m.state == READY || m.lost,
                lost: m.lost,
                received: m.received,
                out_of_order: m.out_of_order,
                gaps: m.gaps,
            }
        })
        .collect();
    ThreadResult {
        members: results,
        latency: st.latency,
        first_connect_ns,
        last_auth_ns,
        first_recv_ns: st.first_recv_ns,
        last_recv_ns: st.last_recv_ns,
        min_latency_ns: st.min_latency_ns,
        max_latency_ns: st.max_latency_ns,
        hb_sent,
        hb_replies: st.hb_replies,
        foreign_frames: st.foreign_frames,
        wire_bytes: st.wire_bytes,
        compressed_messages: st.compressed_messages,
        errors,
    }
}

/// Feeds bytes read from a member's socket; returns how many auth replies
/// were seen.
#[inline]
fn on_data(st: &mut Stats, m: &mut Member, data: &[u8], now: u64) -> Result<u32, String> {
    if m.carry.is_empty() {
        let (used, auths) = walk(st, m, data, now)?;
        if used < data.len() {
            m.carry.extend_from_slice(&data[used..]);
        }
        Ok(auths)
    } else {
        let mut carry = std::mem::take(&mut m.carry);
        carry.extend_from_slice(data);
        let (used, auths) = walk(st, m, &carry, now)?;
        carry.drain(..used);
        m.carry = carry;
        Ok(auths)
    }
}

/// Walks complete frames; returns (bytes consumed, auth replies seen).
#[inline]
fn walk(st: &mut Stats, m: &mut Member, data: &[u8], now: u64) -> Result<(usize, u32), String> {
    let mut pos = 0;
    let mut auths = 0;
    while data.len() - pos >= 16 {
        let h = &data[pos..pos + 16];
        let plen = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let hlen = u16::from_be_bytes([h[4], h[5]]) as usize;
        if plen < 16 || hlen != 16 || plen > FRAME_MAX {
            return Err(format!("bad frame header: packet_len {plen} header_len {hlen}"));
        }
        if data.len() - pos < plen {
            break;
        }
        let op = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let body = &data[pos + 16..pos + plen];
        if op == st.push_op {
            on_push(st, m, body, now);
        } else {
            match op {
                OP_AUTH_REPLY => auths += 1,
                OP_HEARTBEAT_REPLY => st.hb_replies += 1,
                OP_RAW => {
                    let (used, a) = walk(st, m, body, now)?;
                    auths += a;
                    if used != body.len() {
                        return Err("op 9 body with a partial inner frame".into());
                    }
                }
                _ => st.foreign_frames += 1,
            }
        }
        pos += plen;
    }
    Ok((pos, auths))
}

#[inline]
fn on_push(st: &mut Stats, m: &mut Member, body: &[u8], now: u64) {
    if body.len() < 20 {
        st.foreign_frames += 1;
        return;
    }
    let seq = u64::from_be_bytes(body[0..8].try_into().unwrap());
    let publisher = u32::from_be_bytes(body[8..12].try_into().unwrap()) as usize;
    let sent = u64::from_be_bytes(body[12..20].try_into().unwrap());
    let Some(next) = m.next.get_mut(publisher) else {
        st.foreign_frames += 1;
        return;
    };
    if seq == *next {
        *next += 1;
    } else if seq > *next {
        m.gaps += 1;
        *next = seq + 1;
    } else {
        m.out_of_order += 1;
    }
    m.received += 1;
    st.delivered += 1;
    let lat = now.saturating_sub(sent);
    st.latency.saturating_record(lat.max(1));
    if lat > st.max_latency_ns {
        st.max_latency_ns = lat;
    }
    if lat < st.min_latency_ns {
        st.min_latency_ns = lat;
    }
    if st.first_recv_ns == 0 {
        st.first_recv_ns = now;
    }
    st.last_recv_ns = now;
}

mod ws;
use ws::{on_ws_data, ws_message, UPGRADE, UPGRADE_DEFLATE};

#[cfg(test)]
mod tests;
