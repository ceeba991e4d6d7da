//! The drivers that carry a shard core's effects out (`shard::io::ShardIo`
//! and the queues it drains): every system call on a client socket, and
//! every task a shard's connections need besides the core's own.
//!
//! - `poller`: the epoll set of client sockets: accept, read, writability.
//! - `writer`: the one place that writes to a client socket, plain or TLS.
//! - `flusher`: the task that runs the core's flusher pass once per pass of
//!   the executor, then reaps.
//! - `tasks`: the waits of throttled broadcast walks, and the auth URL's
//!   calls over TCP.
//!
//! `Epoll` is the `ShardIo` of a running server (the simulation test gives
//! the same core its own, in-memory one: `sim::pipes`). Must never: decide anything the core
//! decides (limits, the slow-consumer policy, what a frame means): a driver
//! only does what the core asked and hands back what happened.

pub mod flusher;
pub mod poller;
pub mod tasks;
pub mod writer;

use crate::conn::conns::{ConnRef, Session};
use crate::shard::dispatch::Walk;
use crate::shard::io::{AuthCall, ShardIo, WriteOutcome};
use crate::shard::Shard;
use std::cell::Cell;
use std::os::unix::io::RawFd;
use std::rc::Rc;

/// Client sockets in a per-shard epoll set, written with `sendmsg`.
pub struct Epoll {
    /// The epoll set (`poller::create`); -1 until it exists.
    pub epoll_fd: Cell<RawFd>,
}

impl Epoll {
    pub fn new() -> Rc<Epoll> {
        Rc::new(Epoll { epoll_fd: Cell::new(-1) })
    }
}

impl ShardIo for Epoll {
    fn write(&self, session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
        writer::write_out(session, written_bytes)
    }

    fn watch(&self, fd: RawFd, conn: ConnRef, writable: bool) {
        poller::watch(self.epoll_fd.get(), fd, conn, writable, libc::EPOLL_CTL_MOD);
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: the core hands over a socket it owned and no longer uses.
        unsafe { libc::close(fd) };
    }

    fn run_walk(&self, shard: Rc<Shard>, walk: Walk) {
        tasks::run_walk(shard, walk);
    }

    fn call_auth_url(&self, shard: Rc<Shard>, call: AuthCall) {
        tasks::call_auth_url(shard, call);
    }

    fn random_seed(&self) -> u64 {
        random_seed()
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = file.read_exact(&mut bytes);
    }
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    u64::from_le_bytes(bytes) ^ time
}
