//! The simulation's world as the shard core sees it (`ShardIo`): in-memory
//! sockets instead of file descriptors, and walks stepped by the
//! simulator instead of timers. The core runs unchanged on it; only the
//! drivers of `crate::io` are left out, which is what makes the run
//! deterministic and free of system calls.
//!
//! A pipe holds at most `SEND_BUFFER_BYTES` the client has not read, so a
//! reader that stalls blocks the shard's writes (and then fills its
//! outbox), as a socket's send buffer would.
//!
//! Must never: take more than a pipe's room, or hand a closed side's bytes
//! on.

use crate::conn::conns::{ConnRef, Session};
use crate::proto::auth_url::Verdict;
use crate::shard::dispatch::Walk;
use crate::shard::io::{AuthCall, ShardIo, WriteOutcome};
use crate::shard::Shard;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::rc::Rc;

/// Bytes a pipe holds for its client: small, so a stalled reader blocks writes.
pub const SEND_BUFFER_BYTES: usize = 4096;

/// One connection's two directions.
#[derive(Default)]
pub struct Pipe {
    /// Written by the shard, not read by the client yet.
    pub to_client: Vec<u8>,
    /// Written by the client, not read by the shard yet.
    pub to_server: Vec<u8>,
    pub client_closed: bool,
    pub server_closed: bool,
}

#[derive(Default)]
pub struct SimIo {
    pipes: RefCell<HashMap<RawFd, Pipe>>,
    next_fd: Cell<RawFd>,
    /// Throttled broadcast walks waiting for their next step.
    pub walks: RefCell<Vec<(Rc<Shard>, Walk)>>,
    /// Writes a full pipe refused (some or all of their bytes).
    pub writes_blocked: Cell<u64>,
}

impl SimIo {
    /// A new connection's pipe: its (fake) descriptor.
    pub fn open(&self) -> RawFd {
        let fd = self.next_fd.get() + 1;
        self.next_fd.set(fd);
        self.pipes.borrow_mut().insert(fd, Pipe::default());
        fd
    }

    /// Runs `each` on the pipe of `fd`, if it is still there.
    pub fn with<R>(&self, fd: RawFd, each: impl FnOnce(&mut Pipe) -> R) -> Option<R> {
        self.pipes.borrow_mut().get_mut(&fd).map(each)
    }

    /// A connection refused at once: its pipe goes.
    pub fn discard(&self, fd: RawFd) {
        self.pipes.borrow_mut().remove(&fd);
    }

    /// Both sides are done with `fd`: its pipe goes.
    pub fn forget_if_done(&self, fd: RawFd) {
        let mut pipes = self.pipes.borrow_mut();
        if pipes.get(&fd).is_some_and(|pipe| pipe.client_closed && pipe.server_closed) {
            pipes.remove(&fd);
        }
    }

    pub fn open_pipes(&self) -> usize {
        self.pipes.borrow().len()
    }
}

impl ShardIo for SimIo {
    fn write(&self, session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
        assert!(session.tls.is_none(), "the simulation has no TLS");
        let mut pipes = self.pipes.borrow_mut();
        let Some(pipe) = pipes.get_mut(&session.fd).filter(|pipe| !pipe.client_closed) else {
            return WriteOutcome::Broken;
        };
        loop {
            let sendable = session.outbox.sendable_bytes(session.held);
            let Some(front) = session.outbox.front(sendable) else { return WriteOutcome::Drained };
            let room = SEND_BUFFER_BYTES.saturating_sub(pipe.to_client.len());
            let (offered, taken) = (front.len(), front.len().min(room));
            pipe.to_client.extend_from_slice(&front[..taken]);
            *written_bytes += taken as u64;
            session.outbox.consume(taken);
            if taken < offered {
                self.writes_blocked.set(self.writes_blocked.get() + 1);
                return WriteOutcome::Blocked;
            }
        }
    }

    fn watch(&self, _fd: RawFd, _conn: ConnRef, _writable: bool) {
        // The simulator writes a blocked connection again once its client
        // has read (`World::read_client`): the event a watch would bring.
    }

    fn close(&self, fd: RawFd) {
        self.with(fd, |pipe| pipe.server_closed = true);
        self.forget_if_done(fd);
    }

    fn run_walk(&self, shard: Rc<Shard>, walk: Walk) {
        self.walks.borrow_mut().push((shard, walk));
    }

    fn call_auth_url(&self, shard: Rc<Shard>, call: AuthCall) {
        // No auth URL is configured in the simulation; were one, it is down.
        shard.on_auth_verdict(call.conn, Verdict::Unavailable("not simulated".into()), call.admission);
    }

    fn random_seed(&self) -> u64 {
        // Reseeded by the simulator from the run's seed (`Shard::reseed`).
        0
    }
}
