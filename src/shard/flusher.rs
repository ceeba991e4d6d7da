//! The flusher: once per pass of the executor it fans pending room pushes
//! out (`fanout`: one shared chunk per room, handed to every member), then
//! writes every dirty connection with one `sendmsg` (up to 64 chunks), and
//! finally reaps the connections closed during the pass.
//!
//! Owns: the coalescing of writes. Every frame that became due for a
//! connection during one pass leaves in one syscall. Must never: block
//! (sockets are written with MSG_DONTWAIT; what the kernel refuses stays in
//! the outbox and the poller writes it on EPOLLOUT), or free a session in
//! the middle of a pass (closing is deferred to `reap`).

use super::close::CloseReason;
use super::conns::Session;
use super::outbox::IOVECS_PER_WRITE_MAX;
use super::Shard;
use std::rc::Rc;

/// Runs the flusher of `shard` until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    loop {
        shard.flush.wait().await;
        // Let every task that is ready in this pass (mesh batches, HTTP
        // requests) queue its pushes first: they then share the writes.
        futures_lite::future::yield_now().await;
        shard.flush_pass();
        shard.record_deliveries();
        shard.reap();
    }
}

impl Shard {
    /// One pass: room batches into outboxes, then every dirty outbox out.
    pub fn flush_pass(&self) {
        let mut blocked = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            self.fan_out_rooms(state);
            let dirty = std::mem::take(&mut state.dirty);
            let mut writes = 0u64;
            let mut written_by = [0u64; crate::metrics::TRANSPORTS.len()];
            for conn in dirty {
                let Some(session) = state.conns.get_mut(conn) else {
                    continue;
                };
                session.dirty = false;
                if session.held || session.write_blocked || session.close_reason.is_some() {
                    // Held: re-queued when the directory confirms. Blocked:
                    // the poller writes on EPOLLOUT.
                    continue;
                }
                writes += 1;
                let transport = super::queue::transport_of(session);
                let mut written = 0;
                let outcome = write_out(session, &mut written);
                written_by[transport] += written;
                match outcome {
                    WriteOutcome::Drained => {}
                    WriteOutcome::Blocked => {
                        session.write_blocked = true;
                        blocked.push((session.fd, conn));
                    }
                    WriteOutcome::Broken => state.close(conn, CloseReason::IoError),
                }
            }
            let mut stats = self.stats.borrow_mut();
            stats.writes += writes;
            for (total, written) in stats.bytes_written.iter_mut().zip(written_by) {
                *total += written;
            }
            drop(stats);
        }
        for (fd, conn) in blocked {
            super::poller::watch(self, fd, conn, true, libc::EPOLL_CTL_MOD);
        }
    }
}

/// What a write attempt left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The outbox is empty.
    Drained,
    /// The kernel's send buffer is full; the rest waits for EPOLLOUT.
    Blocked,
    /// The connection is broken.
    Broken,
}

/// Writes as much of the outbox as the kernel takes, one `sendmsg` per 64
/// chunks (through TLS on the WSS port).
pub fn write_out(session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
    if session.tls.is_some() {
        return write_out_tls(session, written_bytes);
    }
    let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; IOVECS_PER_WRITE_MAX];
    loop {
        let count = session.outbox.iovecs(&mut iovecs);
        if count == 0 {
            return WriteOutcome::Drained;
        }
        let asked: usize = iovecs[..count].iter().map(|v| v.iov_len).sum();
        match send_vectored(session.fd, &iovecs[..count]) {
            Ok(written) => {
                *written_bytes += written as u64;
                session.outbox.consume(written);
                if written < asked {
                    return WriteOutcome::Blocked;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return WriteOutcome::Blocked,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return WriteOutcome::Broken,
        }
    }
}

/// The WSS path: plaintext from the outbox into rustls (unless the session
/// is still held: then only handshake records go out), records to the socket.
fn write_out_tls(session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
    let Session { tls, outbox, held, fd, .. } = session;
    let Some(tls) = tls.as_mut() else { return WriteOutcome::Drained };
    loop {
        if !*held {
            while let Some(front) = outbox.front() {
                let taken = crate::tls::encrypt(tls, front);
                if taken == 0 {
                    break;
                }
                *written_bytes += taken as u64;
                outbox.consume(taken);
            }
        }
        match crate::tls::write_records(tls, *fd) {
            crate::tls::Records::Blocked => return WriteOutcome::Blocked,
            crate::tls::Records::Broken => return WriteOutcome::Broken,
            crate::tls::Records::Written if *held || outbox.is_empty() => return WriteOutcome::Drained,
            crate::tls::Records::Written => {}
        }
    }
}

/// `sendmsg` with MSG_DONTWAIT (never block the shard) and MSG_NOSIGNAL (a
/// closed peer is an error, not a SIGPIPE).
fn send_vectored(fd: i32, iovecs: &[libc::iovec]) -> std::io::Result<usize> {
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovecs.len() as _;
    // SAFETY: the iovecs point into chunks owned by the outbox, alive for
    // the duration of the call; fd is the session's open socket.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}
