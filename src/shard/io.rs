//! What the shard core asks of the world: the one interface through which
//! its connections are written, watched and closed, and through which its
//! throttled broadcasts and auth URL calls wait and run. `crate::io`
//! carries it out (sendmsg and epoll, glommio's timers and TCP); the core
//! makes no system call and spawns no task of its own (tests/layering.rs
//! fails on a `libc::`, `glommio::` or `unsafe` under src/shard/).
//!
//! The other effects of a shard are queues its drivers drain: commands for
//! other shards (`route::mesh::Outgoing`), bytes and subscriptions for the
//! bus (`route::bus::Bus`), and the HTTP replies its tickets complete.
//!
//! Must never: be called with a borrow of the shard's state held by the
//! caller where the method takes the shard (`watch`, `run_walk`,
//! `call_auth_url` may read it).

use crate::conn::conns::{ConnRef, Session};
use crate::shard::dispatch::Walk;
use crate::shard::session::Admission;
use crate::shard::Shard;
use std::net::SocketAddr;
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::time::Duration;

/// What a write attempt left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Nothing that may leave now is left.
    Drained,
    /// The kernel's send buffer is full; the rest waits for writability.
    Blocked,
    /// The connection is broken.
    Broken,
}

/// A call to the business auth URL, for its driver to make.
pub struct AuthCall {
    pub conn: ConnRef,
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    pub timeout: Duration,
    pub admission: Admission,
}

/// The world as the shard core sees it.
pub trait ShardIo {
    /// Writes as much as the kernel takes of what `session` may send now
    /// (through TLS on WSS); adds the bytes written to `written_bytes`.
    fn write(&self, session: &mut Session, written_bytes: &mut u64) -> WriteOutcome;
    /// Wakes `conn` (socket `fd`) when readable, and when writable too
    /// while `writable` (a write was blocked).
    fn watch(&self, fd: RawFd, conn: ConnRef, writable: bool);
    /// Closes the socket of a connection the shard has let go.
    fn close(&self, fd: RawFd);
    /// Runs a throttled broadcast walk: `Shard::walk_step` until it is done,
    /// waiting between steps as long as it says.
    fn run_walk(&self, shard: Rc<Shard>, walk: Walk);
    /// Makes the call; its verdict goes to `Shard::on_auth_verdict`.
    fn call_auth_url(&self, shard: Rc<Shard>, call: AuthCall);
    /// A seed for the shard's random numbers (epochs, generated keys).
    fn random_seed(&self) -> u64;
}
