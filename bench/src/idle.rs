//! Scenario 1: N authenticated, heartbeating connections spread over rooms;
//! server RSS growth per connection and accept+auth rate. With `--procs K`
//! the connections are spread over K child processes of this binary (each
//! holding about N/K), so N is not bounded by one process's open-file limit.
//!
//! Parent/child protocol: the child prints `READY authed failed
//! first_connect_ns last_auth_ns` once its connections are settled, holds
//! them until its stdin reaches EOF, then prints `DONE hb_sent hb_replies
//! closed` and exits.

use crate::fanout::server_cpu;
use crate::members::{self, MemberSpec, PoolConfig, Shared};
use crate::report::Report;
use crate::sys;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct IdleOpts {
    pub tcp: SocketAddrV4,
    pub conns: usize,
    pub procs: usize,
    pub rooms: usize,
    pub heartbeat_s: u64,
    pub hold_s: f64,
    pub settle_ms: u64,
    pub window: usize,
    pub server_pid: Option<u32>,
    pub connect_timeout_s: u64,
    /// Speak goim over WebSocket (`--tcp` is then the WebSocket address).
    pub websocket: bool,
    /// WebSocket: offer permessage-deflate.
    pub deflate: bool,
}

struct Settled {
    authed: u64,
    failed: u64,
    first_connect_ns: u64,
    last_auth_ns: u64,
}

struct Done {
    hb_sent: u64,
    hb_replies: u64,
    closed: u64,
    errors: Vec<String>,
}

/// Connections [offset, offset + n) in this process.
struct Pool {
    shared: Arc<Shared>,
    handle: std::thread::JoinHandle<members::ThreadResult>,
    n: usize,
}

impl Pool {
    fn start(opts: &IdleOpts, n: usize, offset: usize, window: usize) -> Pool {
        let (tcp, rooms, heartbeat_s) = (opts.tcp, opts.rooms, opts.heartbeat_s);
        let specs = (0..n)
            .map(|i| {
                let g = offset + i;
                MemberSpec {
                    mid: g as u64 + 1,
                    room: (g % rooms.max(1)) as u32 + 1,
                    key: String::new(),
                    src: Some(sys::source_ip(g)),
                }
            })
            .collect();
        let cfg = PoolConfig {
            tcp,
            tcp_more: Vec::new(),
            window,
            heartbeat_ns: heartbeat_s * 1_000_000_000,
            heartbeat_now: true,
            publishers: 1,
            push_op: 1000,
            accepts: "[1000]".into(),
            rcvbuf: 0,
            busy_poll: false,
            websocket: opts.websocket,
            deflate: opts.deflate,
        };
        let shared = Arc::new(Shared::default());
        let handle = members::spawn(specs, cfg, shared.clone());
        Pool { shared, handle, n }
    }

    /// Waits until every connection authenticated or failed (or the timeout).
    fn settle(&self, timeout_s: u64) -> (u64, u64) {
        let deadline = sys::now_ns() + timeout_s * 1_000_000_000;
        while self.shared.settled() < self.n as u64 && sys::now_ns() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        (self.shared.authed.load(Relaxed), self.shared.failed.load(Relaxed))
    }

    fn stop(self) -> (members::ThreadResult, Done) {
        self.shared.stop.store(true, Relaxed);
        let r = self.handle.join().expect("member thread");
        let done = Done {
            hb_sent: r.hb_sent,
            hb_replies: r.hb_replies,
            closed: self.shared.closed.load(Relaxed),
            errors: r.errors.clone(),
        };
        (r, done)
    }
}

/// `idle --child`: hold connections for a parent `idle --procs K`.
pub fn child(opts: &IdleOpts, offset: usize) -> Result<(), String> {
    sys::raise_nofile();
    let start = sys::now_ns();
    let pool = Pool::start(opts, opts.conns, offset, opts.window);
    let (authed, failed) = pool.settle(opts.connect_timeout_s);
    // Settle is polled every 2 ms: the last auth happened just before this.
    let last_auth = sys::now_ns();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "READY {authed} {failed} {start} {last_auth}");
    let _ = out.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let (_, done) = pool.stop();
    let _ = writeln!(out, "DONE {} {} {} {}", done.hb_sent, done.hb_replies, done.closed, done.errors.join(" | "));
    let _ = out.flush();
    Ok(())
}

pub fn run(opts: &IdleOpts) -> Result<Report, String> {
    let (soft, _) = sys::raise_nofile();
    let procs = opts.procs.max(1);
    let per_proc = opts.conns.div_ceil(procs);
    if per_proc as u64 + 32 > soft {
        return Err(format!(
            "{per_proc} connections per process need more than the open-file limit {soft}; use --procs {}",
            (opts.conns as u64).div_ceil(soft.saturating_sub(64).max(1))
        ));
    }
    let pid = opts.server_pid;
    let rss0 = pid.and_then(sys::proc_rss_kib);
    let srv0 = server_cpu(pid);
    let gen0 = sys::rusage_s(false) + sys::rusage_s(true);
    let t0 = sys::now_ns();

    let settled: Settled;
    let mut local: Option<Pool> = None;
    let mut kids = Vec::new();
    if procs == 1 {
        let pool = Pool::start(opts, opts.conns, 0, opts.window);
        let (authed, failed) = pool.settle(opts.connect_timeout_s);
        settled = Settled { authed, failed, first_connect_ns: t0, last_auth_ns: sys::now_ns() };
        local = Some(pool);
    } else {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut offset = 0;
        for k in 0..procs {
            let n = per_proc.min(opts.conns - offset);
            if n == 0 {
                break;
            }
            let child = Command::new(&exe)
                .args(["idle", "--child", "--tcp", &opts.tcp.to_string()])
                .args(["--conns", &n.to_string(), "--offset", &offset.to_string()])
                .args(["--rooms", &opts.rooms.to_string(), "--heartbeat-s", &opts.heartbeat_s.to_string()])
                .args(["--connect-window", &(opts.window / procs).max(1).to_string()])
                .args(["--connect-timeout-s", &opts.connect_timeout_s.to_string()])
                .args(if opts.websocket { &["--websocket"][..] } else { &[][..] })
                .args(if opts.deflate { &["--deflate"][..] } else { &[][..] })
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn child {k}: {e}"))?;
            offset += n;
            kids.push(child);
        }
        let mut s = Settled { authed: 0, failed: 0, first_connect_ns: u64::MAX, last_auth_ns: 0 };
        let mut readers = Vec::new();
        for kid in kids.iter_mut() {
            let mut reader = BufReader::new(kid.stdout.take().expect("child stdout"));
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            if !line.starts_with("READY") || f.len() < 4 {
                return Err(format!("child said {line:?}"));
            }
            s.authed += f[0];
            s.failed += f[1];
            s.first_connect_ns = s.first_connect_ns.min(f[2]);
            s.last_auth_ns = s.last_auth_ns.max(f[3]);
            readers.push(reader);
        }
        settled = s;
        // Keep the readers for the DONE lines.
        for (kid, r) in kids.iter_mut().zip(readers) {
            kid.stdout = Some(r.into_inner());
        }
    }
    let t_conn = sys::now_ns();
    let srv_conn = server_cpu(pid);
    eprintln!(
        "[idle] {} authenticated ({} failed) in {:.2} s",
        settled.authed,
        settled.failed,
        (t_conn - t0) as f64 / 1e9
    );
    std::thread::sleep(Duration::from_millis(opts.settle_ms));
    let rss1 = pid.and_then(sys::proc_rss_kib);
    let srv_hold0 = server_cpu(pid);
    let t_hold = sys::now_ns();
    std::thread::sleep(Duration::from_secs_f64(opts.hold_s));
    let rss2 = pid.and_then(sys::proc_rss_kib);
    let srv_hold1 = server_cpu(pid);
    let hold_real = (sys::now_ns() - t_hold) as f64 / 1e9;
    let threads = pid.and_then(sys::proc_threads);

    let mut done = Done { hb_sent: 0, hb_replies: 0, closed: 0, errors: Vec::new() };
    let mut settled = settled;
    if let Some(pool) = local.take() {
        let (r, d) = pool.stop();
        settled.first_connect_ns = r.first_connect_ns;
        settled.last_auth_ns = r.last_auth_ns;
        done = d;
    } else {
        for kid in kids.iter_mut() {
            drop(kid.stdin.take());
        }
        for kid in kids.iter_mut() {
            let mut line = String::new();
            if let Some(out) = kid.stdout.take() {
                BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
            }
            let mut parts = line.trim_end().splitn(5, ' ');
            if parts.next() != Some("DONE") {
                return Err(format!("child said {line:?}"));
            }
            let mut num = || parts.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            done.hb_sent += num();
            done.hb_replies += num();
            done.closed += num();
            if let Some(e) = parts.next() {
                if !e.is_empty() {
                    done.errors.push(e.to_string());
                }
            }
        }
        for kid in kids.iter_mut() {
            let _ = kid.wait();
        }
    }
    let gen_cpu = sys::rusage_s(false) + sys::rusage_s(true) - gen0;

    let connect_s = settled.last_auth_ns.saturating_sub(settled.first_connect_ns) as f64 / 1e9;
    let per_conn = |rss: Option<u64>| -> Option<f64> {
        match (rss0, rss) {
            (Some(a), Some(b)) if settled.authed > 0 => Some((b as f64 - a as f64) * 1024.0 / settled.authed as f64),
            _ => None,
        }
    };
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    let mut r = Report::default();
    r.str("scenario", "idle")
        .int("conns", opts.conns)
        .int("procs", procs)
        .int("rooms", opts.rooms)
        .int("heartbeat_s", opts.heartbeat_s)
        .num("hold_s", hold_real)
        .int("authed", settled.authed)
        .int("connect_failed", settled.failed)
        .num("connect_s", connect_s)
        .num("connects_per_s", settled.authed as f64 / connect_s.max(1e-9))
        .opt_num("server_cpu_connect_s", diff(srv0, srv_conn))
        .opt_num("server_cpu_us_per_connect", diff(srv0, srv_conn).map(|c| c * 1e6 / settled.authed.max(1) as f64))
        .opt_num("rss_before_kib", rss0.map(|v| v as f64))
        .opt_num("rss_connected_kib", rss1.map(|v| v as f64))
        .opt_num("rss_held_kib", rss2.map(|v| v as f64))
        .opt_num("rss_per_conn_bytes_connected", per_conn(rss1))
        .opt_num("rss_per_conn_bytes", per_conn(rss2))
        .opt_num("server_cpu_hold_s", diff(srv_hold0, srv_hold1))
        .opt_num("server_threads", threads.map(|t| t as f64))
        .int("heartbeats_sent", done.hb_sent)
        .int("heartbeat_replies", done.hb_replies)
        .int("closed_by_server", done.closed)
        .num("gen_cpu_s", gen_cpu)
        .str("errors", done.errors.join(" | "));
    Ok(r)
}
