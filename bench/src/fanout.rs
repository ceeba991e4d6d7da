//! The push engine behind `fanout`, `api` and `broadcast`: members on
//! receiver threads, HTTP publishers on their own thread, and the main thread
//! measuring the server (/proc) and the generator (getrusage) over the same
//! window: from the first request to the moment every member has received
//! everything (or the wait ran out).

use crate::members::{self, MemberSpec, PoolConfig, Shared};
use crate::publishers::{self, Endpoint, PubConfig, PubShared};
use crate::report::Report;
use crate::sys;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct Plan {
    pub scenario: String,
    pub tcp: std::net::SocketAddrV4,
    pub members: usize,
    pub rooms: usize,
    /// Key for member i ("" = the server makes one up).
    pub key_of: fn(usize) -> String,
    pub pubs: PubConfig,
    pub recv_threads: usize,
    pub heartbeat_s: u64,
    pub window: usize,
    pub rcvbuf: usize,
    /// Receivers poll without sleeping (epoll_wait with timeout 0).
    pub busy_poll: bool,
    /// Members speak goim over WebSocket.
    pub websocket: bool,
    /// WebSocket members offer permessage-deflate.
    pub deflate: bool,
    /// After sending stops: how long to wait for members to get everything.
    pub wait_ns: u64,
    pub settle_ms: u64,
    pub server_pid: Option<u32>,
    /// Members are spread over `tcp` and these (cluster nodes).
    pub tcp_more: Vec<std::net::SocketAddrV4>,
    /// Their processes (and nats-server): CPU added to the server's.
    pub extra_pids: Vec<u32>,
    pub connect_timeout_s: u64,
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> usize {
    // SAFETY: zeroed cpu_set_t is valid; plain syscall.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as usize
        } else {
            1
        }
    }
}

pub fn server_cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(sys::proc_cpu_s)
}

/// CPU seconds of the server and of every extra process (cluster nodes,
/// nats-server) together.
fn all_servers_cpu(plan: &Plan) -> Option<f64> {
    let extra: f64 = plan.extra_pids.iter().filter_map(|pid| sys::proc_cpu_s(*pid)).sum();
    server_cpu(plan.server_pid).map(|cpu| cpu + extra)
}

pub fn run(plan: Plan) -> Result<Report, String> {
    let (soft, _) = sys::raise_nofile();
    let need = plan.members as u64 + plan.pubs.conns as u64 + 32;
    if need > soft {
        return Err(format!(
            "{} members + {} publishers need about {need} open files; the limit is {soft}",
            plan.members, plan.pubs.conns
        ));
    }
    let threads = plan.recv_threads.clamp(1, plan.members.max(1));
    let pool = PoolConfig {
        tcp: plan.tcp,
        tcp_more: plan.tcp_more.clone(),
        window: (plan.window / threads).max(1),
        heartbeat_ns: plan.heartbeat_s * 1_000_000_000,
        heartbeat_now: false,
        publishers: plan.pubs.conns,
        push_op: plan.pubs.op,
        accepts: format!("[{}]", plan.pubs.op),
        rcvbuf: plan.rcvbuf,
        busy_poll: plan.busy_poll,
        websocket: plan.websocket,
        deflate: plan.deflate,
    };
    let shared = Arc::new(Shared::default());
    // Member i goes to thread i % threads, in room (i % rooms) + 1.
    let mut per_thread: Vec<Vec<MemberSpec>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..plan.members {
        per_thread[i % threads].push(MemberSpec {
            mid: i as u64 + 1,
            room: (i % plan.rooms.max(1)) as u32 + 1,
            key: (plan.key_of)(i),
            src: Some(sys::source_ip(i)),
        });
    }
    let t_connect = sys::now_ns();
    let server_cpu_c0 = all_servers_cpu(&plan);
    let handles: Vec<_> =
        per_thread.into_iter().map(|specs| members::spawn(specs, pool.clone(), shared.clone())).collect();
    let deadline = t_connect + plan.connect_timeout_s * 1_000_000_000;
    while shared.settled() < plan.members as u64 && sys::now_ns() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let connect_ns = sys::now_ns() - t_connect;
    let server_cpu_c1 = all_servers_cpu(&plan);
    let authed = shared.authed.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    eprintln!(
        "[{}] {authed} members authenticated ({failed} failed) in {:.2} s",
        plan.scenario,
        connect_ns as f64 / 1e9
    );

    let pub_shared = Arc::new(PubShared::default());
    let pub_handle = publishers::spawn(plan.pubs.clone(), pub_shared.clone());
    while pub_shared.connected.load(Relaxed) < plan.pubs.conns && !pub_handle.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(plan.settle_ms));

    let gen0 = sys::rusage_s(false);
    let srv0 = all_servers_cpu(&plan);
    let pid_s = plan.server_pid.map(|p| p.to_string());
    let srv_sched0 = pid_s.as_deref().map(sys::task_schedstats);
    let gen_sched0 = sys::task_schedstats("self");
    let t0 = sys::now_ns();
    pub_shared.go.store(true, Relaxed);
    let pubs = match pub_handle.join().map_err(|_| "publisher thread panicked".to_string())? {
        Ok(p) => p,
        Err(e) => {
            shared.stop.store(true, Relaxed);
            for h in handles {
                let _ = h.join();
            }
            return Err(format!("publishers: {e}"));
        }
    };
    // What each target (room, or the single key / mid / all) was sent.
    let targets = pubs.sent.first().map_or(0, |s| s.len());
    let mut per_target = vec![0u64; targets];
    for s in &pubs.sent {
        for (t, n) in s.iter().enumerate() {
            per_target[t] += n;
        }
    }
    let expected_of = |i: usize| -> u64 {
        match plan.pubs.endpoint {
            Endpoint::Room => per_target[i % plan.rooms.max(1)],
            Endpoint::Keys(_) | Endpoint::Mids(_) => {
                if i == 0 {
                    per_target[0]
                } else {
                    0
                }
            }
            Endpoint::All(_) => per_target[0],
        }
    };
    // Failed connects count as missing too (and are reported on their own).
    let expected_total: u64 = (0..plan.members).map(expected_of).sum::<u64>();
    let wait_deadline = pubs.send_end_ns.max(sys::now_ns()) + plan.wait_ns;
    let mut complete = false;
    loop {
        if shared.delivered.load(Relaxed) >= expected_total {
            complete = true;
            break;
        }
        if sys::now_ns() >= wait_deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let t1 = sys::now_ns();
    let srv1 = all_servers_cpu(&plan);
    let gen1 = sys::rusage_s(false);
    let srv_wait = srv_sched0.map(|b| sys::wait_delta_s(&b, &sys::task_schedstats(pid_s.as_deref().unwrap())));
    let gen_wait = sys::wait_delta_s(&gen_sched0, &sys::task_schedstats("self")) + pubs.wait_ns as f64 / 1e9;
    shared.stop.store(true, Relaxed);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("member thread")).collect();

    // Aggregate.
    let mut latency = members::new_histogram();
    let (mut delivered, mut missing, mut ooo, mut gaps, mut incomplete, mut lost, mut foreign, mut excess) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut first_recv, mut last_recv, mut min_lat, mut max_lat) = (u64::MAX, 0u64, u64::MAX, 0u64);
    let (mut first_connect, mut last_auth, mut authed_members) = (u64::MAX, 0u64, 0u64);
    let mut errors: Vec<String> = pubs.errors.clone();
    let (mut wire_bytes, mut compressed_messages) = (0u64, 0u64);
    for (t, r) in results.iter().enumerate() {
        latency.add(&r.latency).ok();
        if r.first_recv_ns != 0 {
            first_recv = first_recv.min(r.first_recv_ns);
        }
        last_recv = last_recv.max(r.last_recv_ns);
        min_lat = min_lat.min(r.min_latency_ns);
        max_lat = max_lat.max(r.max_latency_ns);
        foreign += r.foreign_frames;
        wire_bytes += r.wire_bytes;
        compressed_messages += r.compressed_messages;
        if r.first_connect_ns != 0 {
            first_connect = first_connect.min(r.first_connect_ns);
        }
        last_auth = last_auth.max(r.last_auth_ns);
        for e in &r.errors {
            if errors.len() < 8 {
                errors.push(e.clone());
            }
        }
        for m in &r.members {
            let i = t + m.index * threads;
            let exp = expected_of(i);
            delivered += m.received;
            ooo += m.out_of_order;
            gaps += m.gaps;
            if m.lost {
                lost += 1;
            }
            if m.authed {
                authed_members += 1;
            }
            if m.received < exp {
                missing += exp - m.received;
                incomplete += 1;
            } else {
                excess += m.received - exp;
            }
        }
    }
    let connect_s = if last_auth > first_connect && first_connect != u64::MAX {
        (last_auth - first_connect) as f64 / 1e9
    } else {
        connect_ns as f64 / 1e9
    };
    let send_s = (pubs.send_end_ns.saturating_sub(pubs.start_ns)) as f64 / 1e9;
    let window_end = if last_recv > 0 { last_recv.max(pubs.done_ns) } else { pubs.done_ns };
    let window_s = (window_end.saturating_sub(pubs.start_ns)) as f64 / 1e9;
    let cpu_window_s = (t1 - t0) as f64 / 1e9;
    let srv_cpu = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let gen_cpu = gen1 - gen0;
    let cpus = allowed_cpus();
    // The generator's threads: receivers + publishers (main mostly sleeps).
    let gen_cap = (threads + 1).min(cpus) as f64;

    let mut r = Report::default();
    r.str("scenario", plan.scenario.clone())
        .str("endpoint", plan.pubs.endpoint.name())
        .int("members", plan.members)
        .int("rooms", plan.rooms)
        .int("members_per_room", plan.members / plan.rooms.max(1))
        .int("publishers", plan.pubs.conns)
        .int("pipeline", plan.pubs.pipeline)
        .bool("batch", plan.pubs.batch)
        .num("rate_target", plan.pubs.rate)
        .num("duration_s", plan.pubs.duration_ns as f64 / 1e9)
        .int("body_bytes", plan.pubs.body_bytes)
        .int("recv_threads", threads)
        .int("authed", authed)
        .int("connect_failed", failed)
        .num("connect_s", connect_s)
        .num("connects_per_s", authed_members as f64 / connect_s.max(1e-9))
        .opt_num("server_cpu_connect_s", server_cpu_c0.zip(server_cpu_c1).map(|(a, b)| b - a))
        .int("requests", pubs.requests)
        .int("requests_ok", pubs.ok)
        .int("request_errors", pubs.code_errors)
        .int("requests_unanswered", pubs.unanswered)
        .int("rate_behind", pubs.behind)
        .num("send_s", send_s)
        .num("requests_per_s", pubs.ok as f64 / send_s.max(1e-9))
        .int("expected", expected_total)
        .int("delivered", delivered)
        .int("missing", missing)
        .int("out_of_order", ooo)
        .int("gaps", gaps)
        .int("excess", excess)
        .int("members_incomplete", incomplete)
        .int("members_closed", lost)
        .int("foreign_frames", foreign)
        .int("wire_bytes", wire_bytes)
        .num("wire_bytes_per_delivery", wire_bytes as f64 / delivered.max(1) as f64)
        .int("compressed_messages", compressed_messages)
        .bool("complete", complete)
        .num("window_s", window_s)
        .num("drain_ms", last_recv.saturating_sub(pubs.send_end_ns) as f64 / 1e6)
        .num("delivered_per_s", delivered as f64 / window_s.max(1e-9))
        .num("cpu_window_s", cpu_window_s)
        .opt_num("server_cpu_s", srv_cpu)
        .opt_num("server_cpu_pct", srv_cpu.map(|c| 100.0 * c / cpu_window_s))
        .opt_num("server_runq_wait_s", srv_wait)
        .opt_num("deliveries_per_server_cpu_s", srv_cpu.map(|c| delivered as f64 / c))
        .opt_num("requests_per_server_cpu_s", srv_cpu.map(|c| pubs.ok as f64 / c))
        .num("gen_cpu_s", gen_cpu)
        .num("gen_cpu_pct", 100.0 * gen_cpu / cpu_window_s)
        .int("gen_cpus_allowed", cpus)
        .num("gen_runq_wait_s", gen_wait)
        .bool("gen_limited", (gen_cpu + gen_wait) / cpu_window_s >= 0.9 * gen_cap)
        .latency_us("lat", &latency)
        .opt_num("first_recv_ms", (min_lat != u64::MAX).then(|| min_lat as f64 / 1e6))
        .opt_num("last_recv_ms", (max_lat > 0).then(|| max_lat as f64 / 1e6))
        .latency_us("http_rtt", &pubs.rtt)
        .str("errors", errors.join(" | "));
    Ok(r)
}
