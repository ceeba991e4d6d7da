//! `sequential`: what a simple back end does. One publisher, one request at a
//! time, a new TCP connection per request: connect to the push API, write
//! `POST /goim/push/room` with `Connection: close`, read the whole reply,
//! check it (HTTP 200 and `"code":0`), close, repeat until the duration is up.
//!
//! Optionally members in the room (the goim TCP pool of `members`) check that
//! they get every push, in order. Push n + 1 is only sent after push n was
//! answered, so a member that receives n + 1 before n has seen an inversion:
//! the server delivered two pushes in another order than it accepted them.
//!
//! Push body layout as for `publishers`: bytes 0..8 sequence (u64 BE, one per
//! request), 8..12 publisher id (0), 12..20 write time (CLOCK_MONOTONIC ns).

use crate::fanout::{allowed_cpus, server_cpu};
use crate::members::{self, MemberSpec, PoolConfig, Shared};
use crate::publishers::{content_length, find};
use crate::report::Report;
use crate::sys::{self, Io};
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct SeqOpts {
    pub tcp: SocketAddrV4,
    pub http: SocketAddrV4,
    /// Members in the room (0 = none: the replies are all that is checked).
    pub members: usize,
    /// Room id: pushes go to `type=live&room=ROOM`, members join `live://ROOM`.
    pub room: u32,
    pub body_bytes: usize,
    pub duration_ns: u64,
    /// One request (connect, write, full reply) may take at most this long.
    pub timeout_ns: u64,
    pub heartbeat_s: u64,
    pub window: usize,
    /// After the last request: how long to wait for members to get everything.
    pub wait_ns: u64,
    pub settle_ms: u64,
    pub server_pid: Option<u32>,
    pub connect_timeout_s: u64,
}

const OP: i32 = 1000;
/// Consecutive failed requests after which the run gives up.
const GIVE_UP_AFTER: u64 = 1000;

enum Fail {
    /// Connect, write, read or timeout: no full reply.
    Io(String),
    /// A full reply that is not HTTP 200 with `"code":0`.
    Reply(String),
}

/// Closes the request's socket however `once` returns.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

/// Waits until `fd` is ready for `events` (or has an error / hang-up).
fn wait_fd(fd: i32, events: i16, deadline: u64, what: &str) -> Result<(), Fail> {
    loop {
        let now = sys::now_ns();
        if now >= deadline {
            return Err(Fail::Io(format!("{what}: timed out")));
        }
        let ms = ((deadline - now) / 1_000_000) as i32 + 1;
        let mut p = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(Fail::Io(format!("{what}: poll: {e}")));
            }
        }
    }
}

/// `"code":0` not followed by another digit.
fn code_zero(body: &[u8]) -> bool {
    let needle = b"\"code\":0";
    let mut from = 0;
    while let Some(i) = find(&body[from..], needle) {
        let after = body.get(from + i + needle.len());
        if !after.is_some_and(|b| b.is_ascii_digit()) {
            return true;
        }
        from += i + 1;
    }
    false
}

/// Where a complete reply in `data` ends (`eof`: the server has closed, so a
/// reply without Content-Length ends here).
fn reply_end(data: &[u8], eof: bool) -> Option<(usize, usize)> {
    let h = find(data, b"\r\n\r\n")?;
    match content_length(&data[..h]) {
        Some(len) if data.len() >= h + 4 + len => Some((h, h + 4 + len)),
        None if eof => Some((h, data.len())),
        _ => None,
    }
}

/// One request on a new connection; returns when the full reply was read.
#[allow(clippy::too_many_arguments)]
fn once(
    http: SocketAddrV4,
    src: Ipv4Addr,
    req: &mut [u8],
    head_len: usize,
    seq: u64,
    buf: &mut Vec<u8>,
    deadline: u64,
    connect_h: &mut Histogram<u64>,
) -> Result<u64, Fail> {
    let t0 = sys::now_ns();
    let fd = Fd(sys::connect_nb(http, Some(src), 0).map_err(|e| Fail::Io(format!("connect: {e}")))?);
    wait_fd(fd.0, libc::POLLOUT, deadline, "connect")?;
    let e = sys::so_error(fd.0);
    if e != 0 {
        return Err(Fail::Io(format!("connect: {}", sys::strerror(e))));
    }
    let now = sys::now_ns();
    connect_h.saturating_record((now - t0).max(1));
    let body = &mut req[head_len..];
    body[0..8].copy_from_slice(&seq.to_be_bytes());
    body[8..12].copy_from_slice(&0u32.to_be_bytes());
    body[12..20].copy_from_slice(&now.to_be_bytes());
    let mut pos = 0;
    while pos < req.len() {
        match sys::write(fd.0, &req[pos..]) {
            Io::Done(w) => pos += w,
            Io::WouldBlock => wait_fd(fd.0, libc::POLLOUT, deadline, "write")?,
            Io::Eof => return Err(Fail::Io("write: connection closed".into())),
            Io::Err(e) => return Err(Fail::Io(format!("write: {}", sys::strerror(e)))),
        }
    }
    let mut end = 0;
    let (h, total) = loop {
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match sys::read(fd.0, &mut buf[end..]) {
            Io::Done(r) => {
                end += r;
                if let Some(done) = reply_end(&buf[..end], false) {
                    break done;
                }
            }
            Io::WouldBlock => wait_fd(fd.0, libc::POLLIN, deadline, "reply")?,
            Io::Eof => match reply_end(&buf[..end], true) {
                Some(done) => break done,
                None => return Err(Fail::Io(format!("reply: connection closed after {end} bytes"))),
            },
            Io::Err(e) => return Err(Fail::Io(format!("reply: {}", sys::strerror(e)))),
        }
    };
    let done_ns = sys::now_ns();
    let (head, body) = (&buf[..h], &buf[h + 4..total]);
    if head.starts_with(b"HTTP/1.1 200") && code_zero(body) {
        Ok(done_ns)
    } else {
        let status = head.split(|&b| b == b'\r').next().unwrap_or(b"");
        Err(Fail::Reply(format!("{} / {}", String::from_utf8_lossy(status), String::from_utf8_lossy(body))))
    }
}

/// p50 / p90 / p99 / p99.9 / max of a nanosecond histogram, in microseconds.
fn quantiles_us(r: &mut Report, prefix: &str, h: &Histogram<u64>) {
    let us = |ns: u64| (!h.is_empty()).then(|| ns as f64 / 1000.0);
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        r.opt_num(&format!("{prefix}_{name}_us"), us(h.value_at_quantile(q)));
    }
    r.opt_num(&format!("{prefix}_max_us"), us(h.max()));
}

pub fn run(o: &SeqOpts) -> Result<Report, String> {
    let (soft, _) = sys::raise_nofile();
    if o.members as u64 + 64 > soft {
        return Err(format!("{} members need about {} open files; the limit is {soft}", o.members, o.members + 64));
    }
    // Members: one receiving thread, every member in live://ROOM.
    let shared = Arc::new(Shared::default());
    let pool = PoolConfig {
        tcp: o.tcp,
        tcp_more: Vec::new(),
        window: o.window.max(1),
        heartbeat_ns: o.heartbeat_s * 1_000_000_000,
        heartbeat_now: false,
        publishers: 1,
        push_op: OP,
        accepts: format!("[{OP}]"),
        rcvbuf: 0,
        busy_poll: false,
        websocket: false,
        deflate: false,
    };
    let specs: Vec<MemberSpec> = (0..o.members)
        .map(|i| MemberSpec { mid: i as u64 + 1, room: o.room, key: String::new(), src: Some(sys::source_ip(i)) })
        .collect();
    let t_connect = sys::now_ns();
    let handle = (o.members > 0).then(|| members::spawn(specs, pool, shared.clone()));
    let deadline = t_connect + o.connect_timeout_s * 1_000_000_000;
    while shared.settled() < o.members as u64 && sys::now_ns() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let authed = shared.authed.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    if o.members > 0 {
        eprintln!(
            "[sequential] {authed} members authenticated ({failed} failed) in {:.2} s",
            (sys::now_ns() - t_connect) as f64 / 1e9
        );
    }
    std::thread::sleep(Duration::from_millis(o.settle_ms));

    let head = format!(
        "POST /goim/push/room?operation={OP}&type=live&room={} HTTP/1.1\r\nHost: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        o.room, o.http, o.body_bytes
    );
    let head_len = head.len();
    let mut req = head.into_bytes();
    req.resize(head_len + o.body_bytes, 0);
    for (i, b) in req[head_len..].iter_mut().enumerate().skip(20) {
        *b = b'a' + (i % 26) as u8;
    }
    let mut buf = vec![0u8; 4096];
    let (mut reply_h, mut connect_h) = (members::new_histogram(), members::new_histogram());
    let (mut requests, mut ok, mut reply_errors, mut io_errors, mut in_a_row) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut errors: Vec<String> = Vec::new();

    let gen0 = sys::rusage_s(false);
    let main0 = sys::thread_cpu_s();
    let main_wait0 = sys::thread_wait_ns();
    let srv0 = server_cpu(o.server_pid);
    let pid_s = o.server_pid.map(|p| p.to_string());
    let srv_sched0 = pid_s.as_deref().map(sys::task_schedstats);
    let gen_sched0 = sys::task_schedstats("self");
    let start = sys::now_ns();
    while sys::now_ns() - start < o.duration_ns {
        let t = sys::now_ns();
        // A new source address per request: no ephemeral port shortage from
        // the TIME_WAIT connections this leaves behind.
        let src = sys::source_ip(requests as usize);
        let r = once(o.http, src, &mut req, head_len, requests, &mut buf, t + o.timeout_ns, &mut connect_h);
        requests += 1;
        let why = match r {
            Ok(done) => {
                ok += 1;
                in_a_row = 0;
                reply_h.saturating_record((done - t).max(1));
                continue;
            }
            Err(Fail::Io(why)) => {
                io_errors += 1;
                why
            }
            Err(Fail::Reply(why)) => {
                reply_errors += 1;
                why
            }
        };
        if errors.len() < 5 {
            errors.push(format!("request {}: {why}", requests - 1));
        }
        in_a_row += 1;
        if in_a_row >= GIVE_UP_AFTER {
            errors.push(format!("gave up after {GIVE_UP_AFTER} failed requests in a row"));
            break;
        }
    }
    let send_end = sys::now_ns();
    let main_cpu = sys::thread_cpu_s() - main0;
    let main_wait = sys::thread_wait_ns().saturating_sub(main_wait0) as f64 / 1e9;

    // Every member should get every accepted push (failed requests may or may
    // not have been delivered: they count as gaps or excess, not as missing).
    let wait_target = ok * authed;
    let wait_deadline = send_end + o.wait_ns;
    let mut complete = true;
    if handle.is_some() {
        while shared.delivered.load(Relaxed) < wait_target {
            if sys::now_ns() >= wait_deadline {
                complete = false;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let t1 = sys::now_ns();
    let srv1 = server_cpu(o.server_pid);
    let gen1 = sys::rusage_s(false);
    let srv_wait = srv_sched0.map(|b| sys::wait_delta_s(&b, &sys::task_schedstats(pid_s.as_deref().unwrap())));
    let gen_wait = sys::wait_delta_s(&gen_sched0, &sys::task_schedstats("self"));
    shared.stop.store(true, Relaxed);
    let result = handle.map(|h| h.join().map_err(|_| "member thread panicked".to_string())).transpose()?;

    let mut latency = members::new_histogram();
    let (mut delivered, mut missing, mut excess, mut inversions, mut gaps) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut incomplete, mut closed, mut foreign) = (0u64, 0u64, 0u64);
    if let Some(t) = &result {
        latency.add(&t.latency).ok();
        foreign = t.foreign_frames;
        for e in &t.errors {
            if errors.len() < 8 {
                errors.push(e.clone());
            }
        }
        for m in &t.members {
            delivered += m.received;
            inversions += m.out_of_order;
            gaps += m.gaps;
            closed += m.lost as u64;
            if m.received < ok {
                missing += ok - m.received;
                incomplete += 1;
            } else {
                excess += m.received - ok;
            }
        }
    }
    let send_s = (send_end - start) as f64 / 1e9;
    let cpu_window_s = (t1 - start) as f64 / 1e9;
    let srv_cpu = srv0.zip(srv1).map(|(a, b)| b - a);
    let gen_cpu = gen1 - gen0;

    let mut r = Report::default();
    r.str("scenario", "sequential")
        .str("endpoint", "room")
        .int("members", o.members)
        .int("room", o.room)
        .int("publishers", 1)
        .int("pipeline", 1)
        .num("duration_s", o.duration_ns as f64 / 1e9)
        .int("body_bytes", o.body_bytes)
        .int("authed", authed)
        .int("connect_failed", failed)
        .int("requests", requests)
        .int("requests_ok", ok)
        .int("request_errors", reply_errors)
        .int("io_errors", io_errors)
        .int("errors_total", reply_errors + io_errors)
        .num("send_s", send_s)
        .num("requests_per_s", ok as f64 / send_s.max(1e-9));
    quantiles_us(&mut r, "reply", &reply_h);
    r.opt_num("connect_p50_us", (!connect_h.is_empty()).then(|| connect_h.value_at_quantile(0.5) as f64 / 1e3))
        .opt_num("connect_p99_us", (!connect_h.is_empty()).then(|| connect_h.value_at_quantile(0.99) as f64 / 1e3))
        .int("expected", ok * o.members as u64)
        .int("delivered", delivered)
        .int("missing", missing)
        .int("inversions", inversions)
        .int("gaps", gaps)
        .int("excess", excess)
        .int("members_incomplete", incomplete)
        .int("members_closed", closed)
        .int("foreign_frames", foreign)
        .bool("complete", complete && missing == 0)
        .num("cpu_window_s", cpu_window_s)
        .opt_num("server_cpu_s", srv_cpu)
        .opt_num("server_cpu_pct", srv_cpu.map(|c| 100.0 * c / cpu_window_s))
        .opt_num("server_runq_wait_s", srv_wait)
        .opt_num("server_cpu_us_per_request", srv_cpu.filter(|_| ok > 0).map(|c| 1e6 * c / ok as f64))
        .opt_num("requests_per_server_cpu_s", srv_cpu.map(|c| ok as f64 / c))
        .num("gen_cpu_s", gen_cpu)
        .num("gen_cpu_pct", 100.0 * gen_cpu / cpu_window_s)
        .int("gen_cpus_allowed", allowed_cpus())
        .num("gen_runq_wait_s", gen_wait)
        .num("publisher_cpu_pct", 100.0 * main_cpu / send_s.max(1e-9))
        // The publisher is one thread: it caps the rate when it never waits.
        .bool("gen_limited", (main_cpu + main_wait) / send_s.max(1e-9) >= 0.9)
        .latency_us("lat", &latency)
        .str("errors", errors.join(" | "));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_delimited_and_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"code\":0,\"message\":\"\"}";
        assert_eq!(reply_end(&ok[..30], false), None);
        let (h, end) = reply_end(ok, false).unwrap();
        assert_eq!(end, ok.len());
        assert!(code_zero(&ok[h + 4..end]));
        assert!(!code_zero(b"{\"code\":-400,\"message\":\"x\"}"));
        assert!(!code_zero(b"{\"code\":01}"));
        let no_len = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":0}";
        assert_eq!(reply_end(no_len, false), None);
        assert_eq!(reply_end(no_len, true).map(|(_, e)| e), Some(no_len.len()));
    }
}
