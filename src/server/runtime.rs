//! Starting and stopping the shards: one glommio `LocalExecutor` per shard,
//! pinned to its own CPU, joined by a bounded channel mesh; per shard a TCP
//! client listener and an HTTP API listener on the same ports
//! (SO_REUSEPORT: the kernel spreads connections over the shards).
//!
//! Owns: process-level concerns (open-file ceiling, signals, the ready
//! line). Must never: share mutable state between shards; the only
//! process-wide value is the shutdown flag, read by each shard's ticker.

use crate::config::Config;
use crate::route::mesh::{self, Batch};
use crate::shard::Shard;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a shard looks at the shutdown flag and the timer wheel.
const TICK_MS: u64 = crate::conn::wheel::TICK_MS;
/// How often a shard applies the history's age bound and forgets rooms
/// with nothing left.
const HISTORY_EVERY: Duration = Duration::from_secs(1);
/// Open files a host needs for the design load of a million connections.
const FILES_FOR_A_MILLION: u64 = 1_000_000 + 10_000;
/// Open files kept back for listeners, the ring, logs and the API.
const FILES_RESERVED: u64 = 64;

thread_local! {
    /// The shard running on this thread, for the panic hook's message.
    static SHARD_ID: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Addresses the server listens on (port 0 in the config is resolved).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// The WebSocket port, unless `ws.bind` is empty.
    pub ws: Option<SocketAddr>,
    /// The WSS port, when `wss.bind` is set.
    pub wss: Option<SocketAddr>,
}

/// Raises the open-file soft limit to the hard limit; returns the ceiling.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Creates one listening socket per shard on the same address.
fn listeners(addr: SocketAddr, shards: usize) -> Result<(SocketAddr, Vec<RawFd>), String> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let this process share the port with another
        // one bound the same way (a second corecast, say) and split the
        // clients between them: refuse to start unless the port is free.
        let probe = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        probe.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        probe.bind(&addr.into()).map_err(|e| format!("{addr} is already in use by another process: {e}"))?;
    }
    let mut fds = Vec::with_capacity(shards);
    let mut bound = addr;
    for _ in 0..shards {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        socket.set_reuse_port(true).map_err(|e| format!("SO_REUSEPORT: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
        socket.bind(&bound.into()).map_err(|e| format!("cannot bind {bound}: {e}"))?;
        socket.listen(4096).map_err(|e| format!("listen {bound}: {e}"))?;
        if bound.port() == 0 {
            bound = socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or("no local address")?;
        }
        fds.push(socket.into_raw_fd());
    }
    Ok((bound, fds))
}

/// Listeners for an optional port ("" = none).
fn optional_listeners(bind: &str, shards: usize) -> Result<(Option<SocketAddr>, Vec<Option<RawFd>>), String> {
    if bind.is_empty() {
        return Ok((None, vec![None; shards]));
    }
    let (addr, fds) = listeners(Config::parse_addr(bind)?, shards)?;
    Ok((Some(addr), fds.into_iter().map(Some).collect()))
}

/// The CPUs this process may run on.
fn cpus() -> Vec<usize> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect()).unwrap_or_default()
}

/// Runs the server until SIGTERM/SIGINT. `on_ready` is called once every
/// shard is serving.
pub fn run(config: Config, on_ready: impl FnOnce(Bound)) -> Result<(), String> {
    let config = Arc::new(config);
    exit_when_a_shard_panics();
    let cpus = cpus();
    let shards = match config.server.shards {
        0 => cpus.len().max(1),
        n => n,
    };
    let ceiling = raise_open_file_limit();
    let conns_max = match config.limits.connections_per_shard_max {
        0 => (ceiling.saturating_sub(FILES_RESERVED + 8 * shards as u64) / shards as u64).max(1) as usize,
        n => n,
    };
    if ceiling < FILES_FOR_A_MILLION {
        // A capacity warning, once: the host is not set up for the design load.
        crate::log_warn!(
            "open-file ceiling {ceiling}: at most {conns_max} client connections on each of {shards} shards \
             (1,000,000 connections need RLIMIT_NOFILE above {FILES_FOR_A_MILLION}; see docs/operations.md)"
        );
    } else {
        crate::log_info!("open-file ceiling {ceiling}; {shards} shards, at most {conns_max} client connections each");
    }
    let (tcp, tcp_fds) = listeners(Config::parse_addr(&config.tcp.bind)?, shards)?;
    let (http, http_fds) = listeners(Config::parse_addr(&config.http.bind)?, shards)?;
    let (ws, ws_fds) = optional_listeners(&config.ws.bind, shards)?;
    let (wss, wss_fds) = optional_listeners(&config.wss.bind, shards)?;
    let tls_config = match wss {
        Some(_) => Some(crate::conn::tls::server_config(&config.wss)?),
        None => None,
    };
    let node_id = match config.cluster.node_id.as_str() {
        "" => crate::route::default_node_id(tcp.port()),
        id => id.to_string(),
    };
    if config.cluster.enabled() {
        crate::log_info!("cluster node {node_id}, bus {:?}", config.cluster.nats_urls);
    }
    block_shutdown_signals()?;
    let mesh = MeshBuilder::<Batch, _>::full(shards, mesh::MESH_CHANNEL_BATCHES);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let mut handles = Vec::with_capacity(shards);
    for index in 0..shards {
        let placement = match cpus.get(index % cpus.len().max(1)) {
            Some(cpu) if shards <= cpus.len() => Placement::Fixed(*cpu),
            _ => Placement::Unbound,
        };
        let setup = ShardSetup {
            config: config.clone(),
            shards,
            conns_max,
            mesh: mesh.clone(),
            client_listeners: crate::io::poller::Listeners {
                tcp: tcp_fds[index],
                ws: ws_fds[index],
                wss: wss_fds[index],
            },
            http_fd: http_fds[index],
            tls_config: tls_config.clone(),
            ready: ready_tx.clone(),
            node_id: node_id.clone(),
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .spawn(move || shard_main(setup))
            .map_err(|e| format!("cannot start shard {index}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        ready_rx.recv().map_err(|_| "a shard failed to start".to_string())?;
    }
    crate::lifecycle::set_serving();
    on_ready(Bound { tcp, http, ws, wss });
    let watcher = std::thread::spawn(wait_for_signal);
    for handle in handles {
        let _ = handle.join();
    }
    drop(watcher);
    Ok(())
}

/// What one shard is started with.
struct ShardSetup {
    config: Arc<Config>,
    shards: usize,
    conns_max: usize,
    mesh: MeshBuilder<Batch, glommio::channels::channel_mesh::Full>,
    client_listeners: crate::io::poller::Listeners,
    http_fd: RawFd,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    ready: std::sync::mpsc::Sender<()>,
    node_id: String,
}

async fn shard_main(setup: ShardSetup) {
    let ShardSetup { config, shards, conns_max, mesh, client_listeners, http_fd, tls_config, ready, node_id } = setup;
    let Ok((senders, receivers)) = mesh.join().await else {
        crate::log_error!("cannot join the shard mesh");
        return;
    };
    let id = senders.peer_id();
    let epoll = crate::io::Epoll::new();
    let mut shard = Shard::new(id, shards, config.clone(), conns_max, epoll.clone());
    shard.tls_config = tls_config;
    if config.cluster.enabled() {
        shard.bus = Some(crate::route::bus::Bus::new(&config.cluster, &node_id, id));
        shard.state.get_mut().online.track_interest();
    }
    let shard = Rc::new_cyclic(|this| {
        shard.this = this.clone();
        shard
    });
    SHARD_ID.with(|c| c.set(Some(id)));
    mesh::spawn_senders(shard.outgoing.clone(), Rc::new(senders));
    let applier = shard.clone();
    mesh::spawn_receivers(receivers, Rc::new(move |msg| applier.apply(msg)));
    glommio::spawn_local(crate::io::flusher::run(shard.clone())).detach();
    glommio::spawn_local(ticker(shard.clone())).detach();
    if shard.bus.is_some() {
        glommio::spawn_local(crate::server::link::run(shard.clone())).detach();
    }
    // SAFETY: the fds were created by `listeners`, are listening, and each
    // is handed to exactly one shard.
    let http_listener = unsafe { TcpListener::from_raw_fd(http_fd) };
    let epoll_fd = match crate::io::poller::create(client_listeners) {
        Ok(fd) => fd,
        Err(e) => {
            crate::log_error!("shard {id}: cannot create the epoll set: {e}");
            return;
        }
    };
    epoll.epoll_fd.set(epoll_fd);
    let poller = glommio::spawn_local(crate::io::poller::run(shard.clone(), epoll_fd, client_listeners)).detach();
    let http_accept = glommio::spawn_local(crate::api::server::accept(shard.clone(), http_listener)).detach();
    let _ = ready.send(());
    #[cfg(debug_assertions)]
    test_fault(id);
    shard.stop.wait().await;
    http_accept.cancel();
    // The poller notices `stopping` within one blocking wait.
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let started = Instant::now();
    while !shard.state.borrow().conns.is_empty() && started.elapsed() < grace {
        shard.reap();
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let _ = poller.await;
    // SAFETY: both fds belong to this shard and nothing uses them any more.
    unsafe {
        libc::close(client_listeners.tcp);
        for fd in [client_listeners.ws, client_listeners.wss].into_iter().flatten() {
            libc::close(fd);
        }
        libc::close(epoll_fd);
    }
    crate::log_info!("shard {id} stopped");
    SHARD_ID.with(|c| c.set(None));
}

/// Exit status of a process one of whose shards panicked.
pub const EXIT_SHARD_PANICKED: i32 = 70;

/// A shard that panics takes its connections, rooms and directory part with
/// it; the others would go on serving a partial server. So a panic on a
/// shard thread logs which shard and why, and ends the process with
/// `EXIT_SHARD_PANICKED` for its supervisor to restart it.
fn exit_when_a_shard_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let shard = SHARD_ID.try_with(|c| c.get()).ok().flatten();
        let Some(shard) = shard else { return };
        let why = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        crate::log_error!(
            "shard {shard} panicked: {why}{at}; exiting with status {EXIT_SHARD_PANICKED} so that a supervisor restarts the server"
        );
        std::process::exit(EXIT_SHARD_PANICKED);
    }));
}

/// Debug builds only: `CORECAST_TEST_PANIC_SHARD=N` makes shard N panic
/// 200 ms after it is ready, so the tests can show what a crashed shard
/// does to the process.
#[cfg(debug_assertions)]
fn test_fault(id: usize) {
    if std::env::var("CORECAST_TEST_PANIC_SHARD").ok().and_then(|v| v.parse::<usize>().ok()) == Some(id) {
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            panic!("test fault: CORECAST_TEST_PANIC_SHARD={id}");
        })
        .detach();
    }
}

/// Graceful drain, on SIGTERM or SIGINT: stop accepting client connections
/// (the poller takes its listeners out), let what is queued for clients
/// flush for up to `shutdown_grace_ms`, tell WebSocket clients 1001
/// ("going away") behind it, then close everything (`begin_shutdown`). The
/// API keeps answering meanwhile: `/readyz` says 503.
async fn drain(shard: Rc<Shard>) {
    let grace = Duration::from_millis(shard.config.server.shutdown_grace_ms);
    let started = Instant::now();
    while shard.unsent_bytes() > 0 && started.elapsed() < grace {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shard.say_going_away();
    shard.flush.raise();
    // The close frames are small: a moment for them to leave, within the grace.
    let farewell = Instant::now();
    while shard.unsent_bytes() > 0 && started.elapsed() < grace && farewell.elapsed() < Duration::from_millis(200) {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    shard.begin_shutdown();
}

/// Shutdown flag, idle deadlines and online reports, on one timer.
async fn ticker(shard: Rc<Shard>) {
    let sync_every = Duration::from_millis(shard.config.server.online_sync_ms);
    let tick = Duration::from_millis(TICK_MS).min(sync_every);
    let mut last_sync = Instant::now();
    let mut last_history = Instant::now();
    let report_every = Duration::from_millis(shard.config.cluster.report_ms);
    let mut last_report = Instant::now();
    loop {
        glommio::timer::sleep(tick).await;
        if shard.stopping.get() {
            return;
        }
        if crate::lifecycle::shutting_down() && !shard.draining.replace(true) {
            glommio::spawn_local(drain(shard.clone())).detach();
        }
        shard.tick_clock();
        expire_idle(&shard);
        if last_history.elapsed() >= HISTORY_EVERY {
            last_history = Instant::now();
            shard.expire_history();
        }
        if last_sync.elapsed() >= sync_every {
            last_sync = Instant::now();
            shard.publish_online();
        }
        let report_due = last_report.elapsed() >= report_every;
        if report_due {
            last_report = Instant::now();
        }
        shard.bus_tick(report_due);
    }
}

/// Closes connections past their handshake or idle deadline.
fn expire_idle(shard: &Shard) {
    use crate::conn::close::CloseReason;
    use crate::conn::conns::Phase;
    let now_tick = shard.now_tick();
    let mut expired = Vec::new();
    {
        let mut state = shard.state.borrow_mut();
        let state = &mut *state;
        let mut refile = Vec::new();
        let conns = &mut state.conns;
        let bytes_max = shard.config.limits.outbound_bytes_per_connection_max;
        state.wheel.advance(now_tick, |conn, tick| {
            let Some(session) = conns.get_mut(conn) else {
                return;
            };
            if session.deadline_tick > tick {
                refile.push((conn, session.deadline_tick));
            } else if session.phase == Phase::Established && crate::shard::queue::is_behind(session, bytes_max) {
                // Its heartbeats stopped counting because it is not reading.
                expired.push((conn, CloseReason::SlowConsumer));
            } else if session.phase == Phase::Established {
                expired.push((conn, CloseReason::IdleTimeout));
            } else {
                expired.push((conn, CloseReason::HandshakeTimeout));
            }
        });
        for (conn, deadline_tick) in refile {
            state.wheel.insert(conn, deadline_tick);
        }
        for (conn, reason) in &expired {
            state.close(*conn, *reason);
        }
    }
    if !expired.is_empty() {
        shard.reap();
    }
}

/// Blocks SIGTERM and SIGINT in every thread (the shards inherit the mask)
/// so that only `wait_for_signal` receives them.
fn block_shutdown_signals() -> Result<(), String> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    // A peer that closes while we write must give EPIPE, not kill the process.
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
    }
    Ok(())
}

fn wait_for_signal() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if let Ok(signal) = set.wait() {
        crate::log_info!("{signal:?}: shutting down");
    }
    crate::lifecycle::set_shutting_down();
}
