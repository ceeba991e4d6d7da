//! The client-socket poller of one shard: one epoll set holding the client
//! listener and every client connection, level-triggered.
//!
//! Why epoll inside a glommio executor: glommio gives every pollable socket
//! its own io_uring `Source` (about 450 bytes) and a task; at a million
//! connections that alone would be several times the whole memory budget
//! of a connection. Here a connection is a slab entry plus a kernel epoll
//! item, and one task serves them all. When nothing is ready, the wait for
//! readiness runs on the shard's blocking thread (pinned to the same CPU),
//! so the executor keeps serving the API, the mesh and the flusher.
//!
//! Owns: accepting (the admission itself is the core's, `Shard::accepted`),
//! reading (through the shard's scratch buffer, handed to the session or,
//! on WSS, to `Shard::on_ciphertext`) and asking the core to write what the
//! flusher could not (on EPOLLOUT). Must never: block the executor, read
//! more than `READS_PER_EVENT_MAX` times from one socket in one pass, or
//! close a connection's socket itself (closing is deferred to `reap`).

use crate::conn::close::CloseReason;
use crate::conn::conns::ConnRef;
use crate::shard::intake::Transport;
use crate::shard::{session, Shard};
use std::net::IpAddr;
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::time::Duration;

/// Events taken from the kernel in one `epoll_wait`.
const EVENTS_MAX: usize = 1024;
/// Connections accepted in one pass before the others get a turn.
const ACCEPTS_PER_PASS_MAX: usize = 256;
/// Reads from one socket in one pass (level-triggered: the rest waits).
const READS_PER_EVENT_MAX: usize = 4;
/// A blocking wait returns after this long so shutdown is noticed.
const WAIT_TIMEOUT_MS: i32 = 200;
/// The epoll tokens of the listeners (connections use slot and generation;
/// a generation never reaches these values before wrapping a u32 slot).
const TCP_LISTENER_TOKEN: u64 = u64::MAX;
const WS_LISTENER_TOKEN: u64 = u64::MAX - 1;
const WSS_LISTENER_TOKEN: u64 = u64::MAX - 2;

/// The client listeners of one shard.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// goim over TCP.
    pub tcp: RawFd,
    /// goim over WebSocket, when configured.
    pub ws: Option<RawFd>,
    /// goim over WebSocket over TLS, when configured.
    pub wss: Option<RawFd>,
}

fn token(conn: ConnRef) -> u64 {
    (conn.generation as u64) << 32 | conn.slot as u64
}

fn conn_of(shard: &Shard, token: u64) -> ConnRef {
    ConnRef { shard: shard.id as u16, slot: token as u32, generation: (token >> 32) as u32 }
}

/// Creates the shard's epoll set with the client listeners in it.
pub fn create(listeners: Listeners) -> std::io::Result<RawFd> {
    // SAFETY: plain syscalls on fds this shard owns.
    unsafe {
        let epoll_fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if epoll_fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let add = |fd: RawFd, token: u64| {
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
            if libc::epoll_ctl(epoll_fd, libc::EPOLL_CTL_ADD, fd, &mut event) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        add(listeners.tcp, TCP_LISTENER_TOKEN)?;
        if let Some(ws) = listeners.ws {
            add(ws, WS_LISTENER_TOKEN)?;
        }
        if let Some(wss) = listeners.wss {
            add(wss, WSS_LISTENER_TOKEN)?;
        }
        Ok(epoll_fd)
    }
}

/// Sets which events wake `conn`: readable, plus writable while blocked.
pub fn watch(epoll_fd: RawFd, fd: RawFd, conn: ConnRef, writable: bool, op: libc::c_int) {
    let mut events = libc::EPOLLIN | libc::EPOLLRDHUP;
    if writable {
        events |= libc::EPOLLOUT;
    }
    let mut event = libc::epoll_event { events: events as u32, u64: token(conn) };
    // SAFETY: both fds are open and owned by this shard.
    unsafe { libc::epoll_ctl(epoll_fd, op, fd, &mut event) };
}

/// Serves the listener and every client socket of `shard` until shutdown.
pub async fn run(shard: Rc<Shard>, epoll_fd: RawFd, listeners: Listeners) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
    let mut listening = true;
    while !shard.stopping.get() {
        if listening && shard.draining.get() {
            stop_listening(epoll_fd, listeners);
            listening = false;
        }
        // SAFETY: `events` has room for EVENTS_MAX entries.
        let ready = unsafe { libc::epoll_wait(epoll_fd, events.as_mut_ptr(), EVENTS_MAX as i32, 0) };
        if ready > 0 {
            handle(&shard, epoll_fd, listeners, &events[..ready as usize]);
            shard.reap();
            futures_lite::future::yield_now().await;
            continue;
        }
        // Nothing ready: wait on the blocking thread, with the buffer moved there and back.
        let buffer = std::mem::take(&mut events);
        let (buffer, ready) = glommio::executor()
            .spawn_blocking(move || {
                let mut buffer = buffer;
                // SAFETY: `buffer` has room for EVENTS_MAX entries.
                let ready =
                    unsafe { libc::epoll_wait(epoll_fd, buffer.as_mut_ptr(), EVENTS_MAX as i32, WAIT_TIMEOUT_MS) };
                (buffer, ready)
            })
            .await;
        events = buffer;
        if ready > 0 && !shard.stopping.get() {
            handle(&shard, epoll_fd, listeners, &events[..ready as usize]);
            shard.reap();
        } else if ready < 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Draining: the listeners leave the epoll set and stop listening (the
/// kernel then refuses new connections to this shard, so clients retry
/// another node at once instead of waiting in a queue nobody accepts).
/// They are closed when the shard stops.
fn stop_listening(epoll_fd: RawFd, listeners: Listeners) {
    for fd in [Some(listeners.tcp), listeners.ws, listeners.wss].into_iter().flatten() {
        // SAFETY: plain syscalls on fds this shard owns; a null event is
        // allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(epoll_fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
            libc::shutdown(fd, libc::SHUT_RD);
        }
    }
}

fn handle(shard: &Shard, epoll_fd: RawFd, listeners: Listeners, events: &[libc::epoll_event]) {
    for event in events {
        let token = event.u64;
        let listener = match token {
            TCP_LISTENER_TOKEN => Some((Some(listeners.tcp), Transport::Tcp)),
            WS_LISTENER_TOKEN => Some((listeners.ws, Transport::WebSocket)),
            WSS_LISTENER_TOKEN => Some((listeners.wss, Transport::SecureWebSocket)),
            _ => None,
        };
        if let Some((fd, transport)) = listener {
            if let Some(fd) = fd {
                accept(shard, epoll_fd, fd, transport);
            }
            continue;
        }
        let conn = conn_of(shard, token);
        let flags = event.events as i32;
        if flags & libc::EPOLLOUT != 0 {
            write_blocked(shard, conn);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) != 0 {
            read(shard, conn);
        }
    }
}

/// Accepts up to `ACCEPTS_PER_PASS_MAX` connections; past `conns_max` a
/// connection is closed at once (counted).
fn accept(shard: &Shard, epoll_fd: RawFd, listener_fd: RawFd, transport: Transport) {
    for _ in 0..ACCEPTS_PER_PASS_MAX {
        // SAFETY: sockaddr_storage is plain data; accept4 fills at most `len` bytes.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let fd = unsafe {
            libc::accept4(
                listener_fd,
                &mut addr as *mut _ as *mut libc::sockaddr,
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                crate::log_warn!("shard {}: accept failed: {error}", shard.id);
            }
            return;
        }
        let ip = peer_ip(&addr).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let Some(conn) = shard.accepted(fd, ip, transport) else {
            // SAFETY: fd was just accepted and is not registered anywhere.
            unsafe { libc::close(fd) };
            continue;
        };
        let nodelay: libc::c_int = 1;
        // SAFETY: setting an int option on a socket we own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &nodelay as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        watch(epoll_fd, fd, conn, false, libc::EPOLL_CTL_ADD);
    }
}

fn peer_ip(addr: &libc::sockaddr_storage) -> Option<IpAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::from(v6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// Reads what is there (up to `READS_PER_EVENT_MAX` times) and hands it on.
pub(crate) fn read(shard: &Shard, conn: ConnRef) {
    let (fd, tls) = match shard.state.borrow().conns.get(conn) {
        Some(session) if session.close_reason.is_none() => (session.fd, session.tls.is_some()),
        _ => return,
    };
    for _ in 0..READS_PER_EVENT_MAX {
        let mut scratch = shard.read_scratch.borrow_mut();
        // SAFETY: reading into the scratch buffer of its own length.
        let received = unsafe { libc::recv(fd, scratch.as_mut_ptr() as *mut libc::c_void, scratch.len(), 0) };
        if received == 0 {
            shard.state.borrow_mut().close(conn, CloseReason::ClientClosed);
            return;
        }
        if received < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                shard.state.borrow_mut().close(conn, CloseReason::ClientClosed);
            }
            return;
        }
        let received = received as usize;
        if tls {
            if !shard.on_ciphertext(conn, &scratch[..received]) {
                return;
            }
        } else {
            session::on_bytes(shard, conn, &mut scratch[..received]);
        }
        let full = received == scratch.len();
        drop(scratch);
        if !full {
            return;
        }
        match shard.state.borrow().conns.get(conn) {
            Some(session) if session.close_reason.is_none() => {}
            _ => return,
        }
    }
}

/// EPOLLOUT on a blocked connection: write what the flusher left.
fn write_blocked(shard: &Shard, conn: ConnRef) {
    let blocked = shard.state.borrow().conns.get(conn).is_some_and(|s| s.write_blocked);
    if blocked {
        shard.write_now(conn);
    }
}
