//! HTTP publishers: keep-alive HTTP/1.1 connections to the push API, all on
//! one thread and one epoll set. Each connection is one publisher id with its
//! own sequence space per target (room), so members can check order per
//! (target, publisher).
//!
//! Modes: saturate (rate 0) keeps `pipeline` requests in flight per connection
//! — a sliding window, or with `batch` writes `pipeline` requests in one write
//! and waits for all their responses before the next batch; fixed rate spreads
//! `rate` pushes a second over the connections from a periodic timerfd.

use crate::members::new_histogram;
use crate::sys::{self, Io};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::os::unix::io::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Endpoint {
    /// push/room to rooms 1..=targets, round robin per publisher.
    Room,
    /// push/keys with this one key.
    Keys(String),
    /// push/mids with this one mid.
    Mids(u64),
    /// push/all with this speed (0 = unthrottled).
    All(u32),
}

impl Endpoint {
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Room => "room",
            Endpoint::Keys(_) => "keys",
            Endpoint::Mids(_) => "mids",
            Endpoint::All(_) => "all",
        }
    }
}

#[derive(Clone)]
pub struct PubConfig {
    pub http: SocketAddrV4,
    pub conns: usize,
    pub pipeline: usize,
    pub batch: bool,
    pub endpoint: Endpoint,
    /// Rooms for Endpoint::Room (ids 1..=targets); 1 otherwise.
    pub targets: usize,
    /// Pushes per second over all connections; 0 = as fast as they are taken.
    pub rate: f64,
    pub duration_ns: u64,
    /// Stop after this many requests in total (0 = no limit).
    pub max_pushes: u64,
    pub body_bytes: usize,
    /// Fill the body after its 20-byte header with chat-like JSON (as live
    /// rooms carry) instead of a repeating alphabet.
    pub body_json: bool,
    pub op: i32,
    /// How long to wait for responses still in flight after sending stops.
    pub drain_ns: u64,
}

#[derive(Default)]
pub struct PubShared {
    pub connected: AtomicUsize,
    pub go: AtomicBool,
    pub abort: AtomicBool,
}

pub struct PubResult {
    /// sent[publisher][target]: requests written (= the sequence numbers used).
    pub sent: Vec<Vec<u64>>,
    pub requests: u64,
    pub ok: u64,
    /// Responses with a non-zero goim code or a non-200 status.
    pub code_errors: u64,
    /// Requests whose response never came (connection closed / timeout).
    pub unanswered: u64,
    pub errors: Vec<String>,
    /// Request → response time.
    pub rtt: Histogram<u64>,
    pub start_ns: u64,
    pub send_end_ns: u64,
    pub done_ns: u64,
    /// Fixed rate: ticks at which every connection already had `pipeline` in flight (push skipped).
    pub behind: u64,
    /// This thread's runqueue wait from go to the end (ns).
    pub wait_ns: u64,
}

struct Conn {
    fd: i32,
    dead: bool,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    in_start: usize,
    inflight: usize,
    sent_at: VecDeque<u64>,
    cursor: usize,
    seq: Vec<u64>,
    want_out: bool,
}

pub fn spawn(cfg: PubConfig, shared: Arc<PubShared>) -> JoinHandle<Result<PubResult, String>> {
    std::thread::Builder::new()
        .name("publishers".into())
        .spawn(move || run(cfg, shared))
        .expect("spawn publisher thread")
}

fn heads(cfg: &PubConfig) -> Vec<Vec<u8>> {
    let tail = format!(" HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", cfg.body_bytes);
    let op = cfg.op;
    match &cfg.endpoint {
        Endpoint::Room => (1..=cfg.targets)
            .map(|r| format!("POST /goim/push/room?operation={op}&type=live&room={r}{tail}").into_bytes())
            .collect(),
        Endpoint::Keys(k) => vec![format!("POST /goim/push/keys?operation={op}&keys={k}{tail}").into_bytes()],
        Endpoint::Mids(m) => vec![format!("POST /goim/push/mids?operation={op}&mids={m}{tail}").into_bytes()],
        Endpoint::All(speed) => {
            vec![format!("POST /goim/push/all?operation={op}&speed={speed}{tail}").into_bytes()]
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn content_length(head: &[u8]) -> Option<usize> {
    for line in head.split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let v = std::str::from_utf8(&line[15..]).ok()?.trim();
            return v.parse().ok();
        }
    }
    None
}

fn run(cfg: PubConfig, shared: Arc<PubShared>) -> Result<PubResult, String> {
    assert!(cfg.body_bytes >= 20, "body must hold seq, publisher id and timestamp");
    let heads = heads(&cfg);
    let targets = heads.len();
    let ep = sys::Epoll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(cfg.conns);
    for p in 0..cfg.conns {
        let s = std::net::TcpStream::connect(cfg.http).map_err(|e| format!("connect {}: {e}", cfg.http))?;
        s.set_nodelay(true).ok();
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let fd = s.into_raw_fd();
        ep.add(fd, sys::IN, p as u64).map_err(|e| e.to_string())?;
        conns.push(Conn {
            fd,
            dead: false,
            out: Vec::with_capacity(cfg.pipeline * (cfg.body_bytes + 160)),
            out_pos: 0,
            inbuf: vec![0u8; 64 * 1024],
            in_start: 0,
            inflight: 0,
            sent_at: VecDeque::with_capacity(cfg.pipeline),
            cursor: p * targets / cfg.conns.max(1),
            seq: vec![0; targets],
            want_out: false,
        });
        shared.connected.fetch_add(1, Relaxed);
    }
    while !shared.go.load(Relaxed) {
        if shared.abort.load(Relaxed) {
            return Err("aborted".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let timer = if cfg.rate > 0.0 {
        let t = sys::Timer::periodic((1e9 / cfg.rate).max(1000.0) as u64).map_err(|e| e.to_string())?;
        ep.add(t.fd, sys::IN, u64::MAX).map_err(|e| e.to_string())?;
        Some(t)
    } else {
        None
    };
    let mut body = vec![0u8; cfg.body_bytes];
    // JSON bodies: each push takes another window of a long run of events,
    // so that pushes differ as a room's do (batches of identical pushes
    // would compress far better than real traffic).
    let json = if cfg.body_json { chat_json(cfg.body_bytes * 64) } else { String::new() };
    if cfg.body_json {
        body[20..].copy_from_slice(&json.as_bytes()[..cfg.body_bytes - 20]);
    } else {
        for (i, b) in body.iter_mut().enumerate().skip(20) {
            *b = b'a' + (i % 26) as u8;
        }
    }
    let mut rtt = new_histogram();
    let mut errors: Vec<String> = Vec::new();
    let (mut requests, mut ok, mut code_errors, mut unanswered, mut behind) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut rr = 0usize;
    let start_ns = sys::now_ns();
    let wait0 = sys::thread_wait_ns();
    let mut send_end_ns = 0u64;
    let mut events = sys::empty_events(256);
    let mut sending = true;

    // Appends one request to conn `p`'s output, stamped with `now`.
    let push = |c: &mut Conn, p: usize, now: u64, body: &mut [u8]| {
        let t = c.cursor % targets;
        c.cursor = c.cursor.wrapping_add(1);
        c.out.extend_from_slice(&heads[t]);
        body[0..8].copy_from_slice(&c.seq[t].to_be_bytes());
        body[8..12].copy_from_slice(&(p as u32).to_be_bytes());
        body[12..20].copy_from_slice(&now.to_be_bytes());
        if !json.is_empty() {
            let span = body.len() - 20;
            let at = (c.seq[t] as usize).wrapping_mul(7919) % (json.len() - span);
            body[20..].copy_from_slice(&json.as_bytes()[at..at + span]);
        }
        c.seq[t] += 1;
        c.out.extend_from_slice(body);
        c.inflight += 1;
        c.sent_at.push_back(now);
    };

    loop {
        let now = sys::now_ns();
        if sending
            && (now - start_ns >= cfg.duration_ns
                || (cfg.max_pushes > 0 && requests >= cfg.max_pushes)
                || shared.abort.load(Relaxed))
        {
            sending = false;
            send_end_ns = now;
        }
        if sending && timer.is_none() {
            for (p, c) in conns.iter_mut().enumerate() {
                if c.dead {
                    continue;
                }
                let room = if cfg.batch {
                    if c.inflight == 0 {
                        cfg.pipeline
                    } else {
                        0
                    }
                } else {
                    cfg.pipeline - c.inflight
                };
                let room = if cfg.max_pushes > 0 { room.min((cfg.max_pushes - requests) as usize) } else { room };
                if room == 0 {
                    continue;
                }
                let now = sys::now_ns();
                for _ in 0..room {
                    push(c, p, now, &mut body);
                }
                requests += room as u64;
                flush(c, &ep, p, &mut errors);
            }
        }
        let inflight: usize = conns.iter().filter(|c| !c.dead).map(|c| c.inflight).sum();
        if !sending {
            if inflight == 0 {
                break;
            }
            if now - send_end_ns > cfg.drain_ns {
                unanswered += inflight as u64;
                errors.push(format!(
                    "{inflight} responses still missing {} ms after the last request",
                    cfg.drain_ns / 1_000_000
                ));
                break;
            }
        }
        let timeout = if sending {
            let left_ms = (cfg.duration_ns.saturating_sub(now - start_ns) / 1_000_000) as i32 + 1;
            left_ms.min(50)
        } else {
            10
        };
        let k = ep.wait(&mut events, timeout);
        for &ev in events.iter().take(k) {
            if ev.u64 == u64::MAX {
                let Some(t) = &timer else { continue };
                let ticks = t.take();
                for _ in 0..ticks {
                    if !sending || (cfg.max_pushes > 0 && requests >= cfg.max_pushes) {
                        break;
                    }
                    let n = conns.len();
                    let mut chosen = None;
                    for j in 0..n {
                        let p = (rr + j) % n;
                        if !conns[p].dead && conns[p].inflight < cfg.pipeline {
                            chosen = Some(p);
                            break;
                        }
                    }
                    match chosen {
                        Some(p) => {
                            rr = p + 1;
                            let now = sys::now_ns();
                            push(&mut conns[p], p, now, &mut body);
                            requests += 1;
                            flush(&mut conns[p], &ep, p, &mut errors);
                        }
                        None => behind += 1,
                    }
                }
                continue;
            }
            let p = ev.u64 as usize;
            let c = &mut conns[p];
            if c.dead {
                continue;
            }
            if ev.events & sys::OUT != 0 {
                flush(c, &ep, p, &mut errors);
            }
            if ev.events & (sys::IN | sys::ERR) != 0 {
                let now = sys::now_ns();
                let closed = read_responses(c, now, &mut rtt, &mut ok, &mut code_errors, &mut errors);
                if closed {
                    unanswered += c.inflight as u64;
                    c.inflight = 0;
                    c.dead = true;
                    sys::close(c.fd);
                }
            }
        }
    }
    let done_ns = sys::now_ns();
    for c in &conns {
        if !c.dead {
            sys::close(c.fd);
        }
    }
    if send_end_ns == 0 {
        send_end_ns = done_ns;
    }
    errors.truncate(5);
    Ok(PubResult {
        sent: conns.iter().map(|c| c.seq.clone()).collect(),
        requests,
        ok,
        code_errors,
        unanswered,
        errors,
        rtt,
        start_ns,
        send_end_ns,
        done_ns,
        behind,
        wait_ns: sys::thread_wait_ns().saturating_sub(wait0),
    })
}

/// Writes what the connection has queued; asks for EPOLLOUT when the kernel
/// did not take it all.
fn flush(c: &mut Conn, ep: &sys::Epoll, p: usize, errors: &mut Vec<String>) {
    while c.out_pos < c.out.len() {
        match sys::write(c.fd, &c.out[c.out_pos..]) {
            Io::Done(w) => c.out_pos += w,
            Io::WouldBlock => break,
            Io::Eof => break,
            Io::Err(e) => {
                if errors.len() < 5 {
                    errors.push(format!("publisher {p}: write: {}", sys::strerror(e)));
                }
                c.out_pos = c.out.len();
            }
        }
    }
    let pending = c.out_pos < c.out.len();
    if !pending {
        c.out.clear();
        c.out_pos = 0;
    }
    if pending != c.want_out {
        c.want_out = pending;
        let ev = if pending { sys::IN | sys::OUT } else { sys::IN };
        let _ = ep.modify(c.fd, ev, p as u64);
    }
}

/// Reads and parses whatever responses arrived; returns true when the
/// connection is gone.
fn read_responses(
    c: &mut Conn,
    now: u64,
    rtt: &mut Histogram<u64>,
    ok: &mut u64,
    code_errors: &mut u64,
    errors: &mut Vec<String>,
) -> bool {
    let mut end = c.in_start;
    // in_start..end is unparsed data kept at the front of inbuf.
    let mut closed = false;
    loop {
        if end == c.inbuf.len() {
            c.inbuf.resize(c.inbuf.len() * 2, 0);
        }
        match sys::read(c.fd, &mut c.inbuf[end..]) {
            Io::Done(r) => {
                end += r;
                if end < c.inbuf.len() {
                    break;
                }
            }
            Io::WouldBlock => break,
            Io::Eof => {
                closed = true;
                if errors.len() < 5 {
                    errors.push("publisher connection closed by server".into());
                }
                break;
            }
            Io::Err(e) => {
                closed = true;
                if errors.len() < 5 {
                    errors.push(format!("publisher read: {}", sys::strerror(e)));
                }
                break;
            }
        }
    }
    let mut pos = 0;
    loop {
        let data = &c.inbuf[pos..end];
        let Some(h) = find(data, b"\r\n\r\n") else { break };
        let head = &data[..h];
        let Some(len) = content_length(head) else {
            if errors.len() < 5 {
                errors.push(format!("response without Content-Length: {}", String::from_utf8_lossy(head)));
            }
            return true;
        };
        if data.len() < h + 4 + len {
            break;
        }
        let body = &data[h + 4..h + 4 + len];
        if head.starts_with(b"HTTP/1.1 200") && body.starts_with(b"{\"code\":0,") {
            *ok += 1;
        } else {
            *code_errors += 1;
            if errors.len() < 5 {
                errors.push(format!(
                    "response: {} / {}",
                    String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(b"")),
                    String::from_utf8_lossy(body)
                ));
            }
        }
        if let Some(t) = c.sent_at.pop_front() {
            rtt.saturating_record(now.saturating_sub(t).max(1));
        }
        c.inflight = c.inflight.saturating_sub(1);
        pos += h + 4 + len;
    }
    // Keep the unparsed tail at the front.
    if pos > 0 {
        c.inbuf.copy_within(pos..end, 0);
        end -= pos;
    }
    c.in_start = end;
    closed
}

/// Chat and gift events as a live room carries them, at least `bytes` long:
/// varied names, texts and numbers, the same keys over and over.
fn chat_json(bytes: usize) -> String {
    const GIFTS: [&str; 6] = ["rose", "rocket", "heart", "crown", "lollipop", "fireworks"];
    const TEXTS: [&str; 6] =
        ["hello everyone!", "that was amazing", "gg", "when is the next stream?", "lol", "first time here"];
    let mut out = String::from("[");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (user, pick, count) = (x % 100_000, (x >> 20) as usize % 6, (x >> 40) % 99 + 1);
        if x & 1 == 0 {
            out.push_str(&format!(
                r#"{{"type":"gift","uid":{user},"name":"viewer{user}","gift":"{}","count":{count}}},"#,
                GIFTS[pick]
            ));
        } else {
            out.push_str(&format!(
                r#"{{"type":"chat","uid":{user},"name":"viewer{user}","text":"{}","level":{count}}},"#,
                TEXTS[pick]
            ));
        }
    }
    out
}
