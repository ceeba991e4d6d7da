//! A shard: one pinned core's share of the server. It owns its connections,
//! their rooms, its part of the key/mid/IP directory and its view of the
//! online counts, all in plain `RefCell`s: nothing here is shared with
//! another thread, so nothing here takes a lock or an atomic.
//!
//! Every `impl Shard` is in this folder. Data flows one way: `poller`
//! accepts and reads client sockets, `session` authenticates a connection
//! and registers it (`positions`: at one point of its room's order);
//! pushes arrive from the HTTP API or the mesh (`dispatch`; over the bus:
//! `cluster`), room pushes are numbered by their room's sequencer shard
//! (`sequencing`), `fanout` hands them to members, direct pushes go to
//! outboxes (`queue`), tickets (`order::tickets`) tell the API when every
//! shard has applied a push; `flusher` and `writer` write every outbox once
//! per pass and `reap` removes closed connections. A connection is state
//! in a slab, not a task: an idle one costs a few hundred bytes. Must
//! never: hold a `RefCell` borrow across an `.await` (clippy refuses it:
//! `await_holding_refcell_ref`, denied in the crate root).

pub mod apply;
pub mod auth_call;
pub mod bus_side;
pub mod dispatch;
pub mod fanout;
pub mod flush;
pub mod intake;
pub mod io;
pub mod positions;
pub mod queue;
pub mod report;
pub mod send;
pub mod sequencing;
pub mod session;
pub mod websocket;

use crate::config::Config;
use crate::conn::close::CloseReason;
use crate::conn::conns::{self as conns, ConnRef, Conns};
use crate::conn::wheel::{self as wheel, Wheel};
use crate::delivery::room::Rooms;
use crate::metrics::Stats;
use crate::order::sequencer::{HistoryBounds, Sequencer};
use crate::order::tickets::{self as ack, Ack, Tickets, Wait};
use crate::route::command::Command;
use crate::route::directory::Directory;
use crate::route::mesh::Outgoing;
use crate::route::online::Online;
use crate::route::placement::Placement;
use crate::signal::Signal;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

/// Everything mutable a shard owns.
pub struct State {
    pub conns: Conns,
    pub rooms: Rooms,
    pub directory: Directory,
    pub online: Online,
    /// Sessions with bytes to write, each once (`Session::dirty`).
    pub dirty: Vec<ConnRef>,
    /// Sessions marked closed, reaped after the current pass (never while
    /// a room or broadcast walk is iterating them).
    pub closing: Vec<ConnRef>,
    pub wheel: Wheel,
}

impl State {
    /// Marks `conn` closed for `reason` (the first reason wins); it is
    /// reaped at the end of the pass.
    pub fn close(&mut self, conn: ConnRef, reason: CloseReason) {
        let Some(session) = self.conns.get_mut(conn) else {
            return;
        };
        if session.close_reason.is_none() {
            session.close_reason = Some(reason);
            self.closing.push(conn);
        }
    }
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    pub state: RefCell<State>,
    pub outgoing: Rc<Outgoing>,
    /// Wakes the flusher.
    pub flush: Signal,
    /// Raised once at shutdown.
    pub stop: Signal,
    pub stopping: Cell<bool>,
    /// SIGTERM arrived: no new client connections; queued pushes flush for
    /// up to `shutdown_grace_ms`, then `begin_shutdown` (`server::runtime::drain`).
    pub draining: Cell<bool>,
    pub stats: RefCell<Stats>,
    /// Every shard's counters as last reported (this shard's own entry is stale;
    /// use `stats` for it).
    pub peer_stats: RefCell<Vec<Stats>>,
    /// The second of the last "message dropped" warning (one a second at most).
    last_drop_log_s: Cell<u64>,
    /// Read buffer shared by every connection of this shard: a connection
    /// borrows it only inside one poll, never across an await.
    pub read_scratch: RefCell<Vec<u8>>,
    /// Scratch for parsing JSON tokens in place.
    pub json_scratch: RefCell<Vec<u8>>,
    /// Plaintext of one TLS read (WSS), lent like `read_scratch`.
    pub plain_scratch: RefCell<Vec<u8>>,
    /// The WSS certificate, when a WSS port is configured.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Client connections this shard accepts at most.
    pub conns_max: usize,
    /// Carries out what the core asks of the world: writes, watches and
    /// closes of client sockets, walk waits, auth URL calls (`crate::io`).
    pub io: Rc<dyn io::ShardIo>,
    /// Throttled `push/all` walks running on this shard.
    pub throttled_walks: Cell<usize>,
    /// The cursor of the throttled walk started last (the next one follows it).
    pub last_walk: RefCell<Option<Rc<dispatch::WalkCursor>>>,
    started: Instant,
    /// Milliseconds the simulation test says it is (`now_ms` and the Unix
    /// clock of key claims follow it); `None`: the real clocks.
    pub(crate) clock_override_ms: Cell<Option<u64>>,
    coarse_ms: Cell<u64>,
    /// API requests waiting for their pushes to be applied everywhere.
    pub tickets: Rc<RefCell<Tickets>>,
    /// The rooms whose order this shard decides.
    pub sequencer: RefCell<Sequencer>,
    rng: Cell<u64>,
    /// This shard's end of the cluster bus; `None` on a single node.
    pub bus: Option<crate::route::bus::Bus>,
    /// When pushes applied since the last flusher pass were started
    /// (`Ack::started_us`), timed when that pass has written them.
    pub delivery_samples: RefCell<Vec<u64>>,
    /// permessage-deflate's deflater, inflater and scratch (made on first use).
    pub ws_deflate: RefCell<websocket::ShardDeflate>,
    /// New connections per client IP this second (`limits.connections_per_ip_per_s_max`).
    pub ip_rate: RefCell<crate::conn::rate::IpRate>,
    /// WSS connections whose TLS handshake is in progress (`wss.handshakes_per_shard_max`).
    pub tls_handshakes: Cell<usize>,
    /// Verifies auth tokens when `[auth]` asks (`Ok(None)`: goim's trust);
    /// `Err` (the key went away since the config was checked) refuses all.
    pub jwt: Result<Option<crate::proto::jwt::Verifier>, String>,
    /// The business auth URL (`[auth] url`; `None`: off), resolved at start.
    pub auth_url: Result<Option<crate::proto::auth_url::AuthUrl>, String>,
    /// Calls to it open on this shard (`auth_call`).
    pub auth_calls_in_flight: Cell<usize>,
    /// This shard itself, for the tasks its methods spawn (set by
    /// `Rc::new_cyclic` at start; empty only before that).
    pub this: Weak<Shard>,
}

/// Size of the shared read scratch: many small frames per read.
pub const READ_SCRATCH_BYTES: usize = 64 * 1024;

impl Shard {
    pub fn new(id: usize, shards: usize, config: Arc<Config>, conns_max: usize, io: Rc<dyn io::ShardIo>) -> Shard {
        let horizon_ms = config.idle_deadline_ms().max(config.protocol.handshake_timeout_ms);
        let horizon_ticks = (horizon_ms / wheel::TICK_MS + 1) as u32;
        let seed = io.random_seed() ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Shard {
            id,
            shards,
            state: RefCell::new(State {
                conns: Conns::new(id as u16),
                rooms: Rooms::default(),
                directory: Directory::default(),
                online: Online::new(id, shards),
                dirty: Vec::new(),
                closing: Vec::new(),
                wheel: Wheel::new(horizon_ticks),
            }),
            outgoing: Rc::new(Outgoing::new(
                shards,
                config.limits.mesh_pending_messages_max,
                config.limits.mesh_pending_bytes_max,
            )),
            flush: Signal::default(),
            stop: Signal::default(),
            stopping: Cell::new(false),
            draining: Cell::new(false),
            stats: RefCell::new(Stats::default()),
            peer_stats: RefCell::new(vec![Stats::default(); shards]),
            last_drop_log_s: Cell::new(0),
            read_scratch: RefCell::new(vec![0; READ_SCRATCH_BYTES.max(config.limits.frame_body_bytes_max + 16)]),
            json_scratch: RefCell::new(Vec::new()),
            plain_scratch: RefCell::new(Vec::new()),
            tls_config: None,
            conns_max,
            io,
            throttled_walks: Cell::new(0),
            last_walk: RefCell::new(None),
            started: Instant::now(),
            clock_override_ms: Cell::new(None),
            coarse_ms: Cell::new(0),
            tickets: Rc::new(RefCell::new(Tickets::default())),
            sequencer: RefCell::new(Sequencer::new(history_bounds(&config, shards))),
            rng: Cell::new(seed | 1),
            bus: None,
            delivery_samples: RefCell::new(Vec::new()),
            ws_deflate: RefCell::default(),
            ip_rate: RefCell::default(),
            tls_handshakes: Cell::new(0),
            jwt: crate::proto::jwt::Verifier::from_config(&config.auth),
            auth_url: crate::proto::auth_url::AuthUrl::from_config(&config.auth),
            auth_calls_in_flight: Cell::new(0),
            this: Weak::new(),
            config,
        }
    }

    /// This shard as an `Rc`, for a task it spawns. Panics only if called
    /// before the shard is placed in its `Rc` (a bug, not an input).
    pub fn rc(&self) -> Rc<Shard> {
        self.this.upgrade().expect("a shard method ran before the shard was shared")
    }

    /// Seeds the shard's random numbers (epochs, generated keys): the
    /// simulation test replays a seed exactly with it.
    #[cfg(test)]
    pub(crate) fn reseed(&self, seed: u64) {
        self.rng.set(seed | 1);
    }

    /// Where names live and which way pushes leave, as seen from here.
    pub fn placement(&self) -> Placement<'_> {
        Placement::new(self.shards, self.bus.as_ref())
    }

    /// Milliseconds since the shard started.
    pub fn now_ms(&self) -> u64 {
        match self.clock_override_ms.get() {
            Some(ms) => ms,
            None => self.started.elapsed().as_millis() as u64,
        }
    }

    /// Unix time in ms (key claims are ordered by it across nodes).
    pub fn unix_ms(&self) -> u64 {
        match self.clock_override_ms.get() {
            Some(ms) => ms,
            None => {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
            }
        }
    }

    /// The history's clock: `now_ms` as of the ticker's last tick (100 ms
    /// steps), so a push does not pay a clock read.
    pub fn coarse_ms(&self) -> u64 {
        self.coarse_ms.get()
    }

    /// Called by the ticker every tick.
    pub fn tick_clock(&self) {
        self.coarse_ms.set(self.now_ms());
    }

    /// Opens a ticket for an API request: the ack its pushes carry, and the
    /// future that completes when all of it has come back.
    pub fn open_ticket(shard: &Rc<Shard>) -> (Ack, Wait) {
        let id = shard.tickets.borrow_mut().open();
        let started_us = crate::latency::now_us();
        (
            Ack { node: None, shard: shard.id as u16, id, weight: ack::FULL_WEIGHT, started_us },
            Wait { tickets: shard.tickets.clone(), id },
        )
    }

    /// A new epoch: 12 random ASCII letters and digits.
    pub fn new_epoch(&self) -> Arc<str> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut bits = self.next_random();
        let epoch: String = (0..12)
            .map(|_| {
                let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
                bits /= ALPHABET.len() as u64;
                c
            })
            .collect();
        Arc::from(epoch)
    }

    /// Wheel ticks since the shard started (the wheel's clock).
    pub fn now_tick(&self) -> u32 {
        (self.now_ms() / wheel::TICK_MS) as u32
    }

    /// The tick at which something `ms` from now is due (rounded up).
    pub fn tick_after_ms(&self, ms: u64) -> u32 {
        self.now_tick() + ms.div_ceil(wheel::TICK_MS) as u32
    }

    /// A registration's ticket for `conn`: its shares go to the directory
    /// shards (and the bus); `conn` is released when all are back.
    pub fn registration_ack(&self, conn: ConnRef) -> Ack {
        let id = self.tickets.borrow_mut().open_release(conn);
        Ack { node: None, shard: self.id as u16, id, weight: ack::FULL_WEIGHT, started_us: 0 }
    }

    /// Releases the connections whose registration ticket completed.
    /// Callers must not hold a borrow of `state` or the tickets.
    pub fn release_registered(&self) {
        let released = self.tickets.borrow_mut().take_released();
        for conn in released {
            session::release(self, conn);
        }
    }

    /// A random UUID v4 for clients that send an empty key (goim does the same).
    pub fn new_key(&self) -> String {
        let high = self.next_random();
        let low = self.next_random();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }

    /// A push started at `started_us` was queued here: its delivery is timed
    /// at the end of the flusher pass that writes it.
    pub fn note_delivered(&self, started_us: u64) {
        if started_us > 0 {
            self.delivery_samples.borrow_mut().push(started_us);
        }
    }

    /// Records the delivery latency of the pushes this pass wrote: one
    /// observation per push per shard, at the moment every member's bytes
    /// have been handed to its socket (or left queued behind a full one).
    pub fn record_deliveries(&self) {
        let mut samples = self.delivery_samples.borrow_mut();
        if samples.is_empty() {
            return;
        }
        let now_us = crate::latency::now_us();
        let mut stats = self.stats.borrow_mut();
        for started_us in samples.drain(..) {
            stats.delivery_latency.record_us(now_us.saturating_sub(started_us));
        }
        if samples.capacity() > 4096 {
            samples.shrink_to(4096);
        }
    }

    /// A random number in 0..n (0 when n is 0).
    pub fn random_below(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_random() % n
        }
    }

    /// Tells `room`'s sequencer that a connection with positions left it.
    /// Callers must not hold a borrow of `state`.
    pub fn send_detach(&self, room: Arc<str>) {
        let detach = Command::Detach { room: room.clone() };
        if self.send_to(self.placement().joins(&room), detach).is_err() {
            // Where a join goes when the bus cannot take it (`request_attach`).
            self.send(self.placement().shard_of(&*room), Command::Detach { room });
        }
    }

    fn next_random(&self) -> u64 {
        // splitmix64: fast, and seeded per shard from the OS.
        let state = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Closes `conn` for `reason` at the end of the pass.
    pub fn close(&self, conn: ConnRef, reason: CloseReason) {
        self.state.borrow_mut().close(conn, reason);
        self.flush.raise();
    }

    /// Reaps every connection marked closed: out of its room, the
    /// directory and the slab, and its socket closed.
    pub fn reap(&self) {
        let closing = std::mem::take(&mut self.state.borrow_mut().closing);
        for conn in closing {
            session::unregister(self, conn);
        }
    }

    /// Connections of this shard and distinct IPs of its directory partition.
    pub fn local_counts(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.conns.len() as u64, state.directory.ip_count() as u64)
    }

    /// Members of `room` on other nodes (0 on a single node).
    pub fn remote_room_count(&self, room: &str) -> u64 {
        self.bus.as_ref().map_or(0, |bus| bus.nodes.borrow().room(room))
    }

    /// (connections, distinct IPs) of the whole cluster (or this node).
    pub fn cluster_totals(&self) -> (u64, u64) {
        let (conns, ips) = self.local_counts();
        let (conns, ips) = self.state.borrow().online.totals(conns, ips);
        let (more_conns, more_ips) = self.bus.as_ref().map_or((0, 0), |bus| bus.nodes.borrow().totals());
        (conns + more_conns, ips + more_ips)
    }

    /// Builds the online report and sends it to every other shard.
    /// Bytes still to leave this shard for its clients: queued in outboxes,
    /// or in room batches not yet fanned out (0 means drained).
    pub fn unsent_bytes(&self) -> usize {
        let state = self.state.borrow();
        let pending_rooms = if state.rooms.has_pending() { 1 } else { 0 };
        let queued: usize =
            state.conns.refs().iter().filter_map(|c| state.conns.get(*c)).map(|s| s.outbox.queued_bytes()).sum();
        queued + pending_rooms
    }

    /// Tells every WebSocket client the server is going away (close 1001),
    /// behind what is queued for it.
    pub fn say_going_away(&self) {
        let frame = Rc::new(Bytes::from(crate::proto::ws::frame::encode_close(
            crate::proto::ws::frame::CloseCode::GOING_AWAY.0,
            "server shutting down",
        )));
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        for conn in state.conns.refs() {
            if state.conns.get(conn).is_some_and(|s| s.ws.is_some() && s.phase != conns::Phase::Handshake) {
                self.enqueue_raw(state, conn, frame.clone());
            }
        }
    }

    /// Copies this shard's connection count and queued outbox bytes into
    /// its counters (one walk over the slab, at sync or scrape time).
    pub fn note_shard_gauges(&self) {
        let state = self.state.borrow();
        let outbox_bytes: usize =
            state.conns.refs().iter().filter_map(|c| state.conns.get(*c)).map(|s| s.outbox.queued_bytes()).sum();
        let mut stats = self.stats.borrow_mut();
        stats.shard_connections = state.conns.len() as u64;
        stats.shard_outbox_bytes = outbox_bytes as u64;
    }

    pub fn publish_online(&self) {
        self.note_bus_stats();
        self.note_shard_gauges();
        let report = {
            let mut state = self.state.borrow_mut();
            let conns = state.conns.len() as u64;
            let ips = state.directory.ip_count() as u64;
            state.online.report(conns, ips, self.stats.borrow().clone())
        };
        for peer in (0..self.shards).filter(|p| *p != self.id) {
            self.outgoing.send(peer, Command::Counts(Box::new(report.clone())));
        }
    }

    /// Joins `slot` to `room` and records the new local count.
    pub fn join_room(state: &mut State, session_slot: u32, room: &str) -> (Rc<str>, u32) {
        let joined = state.rooms.join(room, session_slot);
        let count = state.rooms.members(room) as u32;
        state.online.local_room(room, count);
        joined
    }

    /// Removes the session from its room, if any. Returns the room when the
    /// session was attached with positions: the caller owes its sequencer a
    /// `Detach` (sent once no borrow of `state` is held).
    #[must_use]
    pub fn leave_room(state: &mut State, conn: ConnRef) -> Option<Arc<str>> {
        let session = state.conns.get_mut(conn)?;
        let room = session.room.take()?;
        let detach = std::mem::replace(&mut session.attached, false).then(|| Arc::from(&*room));
        let index = session.room_index;
        if let Some(moved) = state.rooms.leave(&room, index, conn.slot) {
            if let Some((_, other)) = state.conns.by_slot_mut(moved) {
                other.room_index = index;
            }
        }
        let count = state.rooms.members(&room) as u32;
        state.online.local_room(&room, count);
        detach
    }

    /// Encodes a push frame once.
    pub fn push_frame(op: i32, body: &[u8]) -> Bytes {
        crate::proto::goim::frame::encode(crate::proto::goim::op::PUSH_VERSION, op, 0, body)
    }
}

/// This shard's share of the `[history]` bounds.
fn history_bounds(config: &Config, shards: usize) -> HistoryBounds {
    let history = &config.history;
    HistoryBounds {
        pushes_per_room_max: history.pushes_per_room_max,
        age_max_ms: history.age_max_s.saturating_mul(1000),
        bytes_max: history.bytes_max / shards.max(1),
    }
}
