//! One shard's end of the bus: what it has subscribed, what it has queued
//! to write, and who waits for the server to have read it.
//!
//! Each shard holds its own connection to NATS (`server::link`). One socket per
//! shard means one ordered stream in and one out: the server appends every
//! message for this shard to one outbound buffer in the order it processed
//! them, whatever their subject, so a push published after another push's
//! reply arrives after it (docs/positions.md section 1 across nodes), and no
//! message crosses cores inside a node.
//!
//! Owns: subscriptions (subject → sid → what it means here, refcounted),
//! the outbound byte buffer (bounded by `cluster.bus_outbound_bytes_max`:
//! past it a publish fails and its push is answered -500), and the waiters
//! of each PING (a PONG proves the server processed every byte before it).
//! Must never: block, or let a waiter outlive the connection it waits on
//! (a lost connection fails them all).

use crate::conn::conns::ConnRef;
use crate::order::tickets::Ack;
use crate::proto::nats;
use crate::route::command::Command;
use crate::route::nodes::Nodes;
use crate::route::subject::Subjects;
use crate::route::wire;
use crate::signal::Signal;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// What a subscription is for on this shard.
#[derive(Debug)]
pub enum Interest {
    /// Members of the room (or a connection joining it) are here.
    Room(Arc<str>),
    /// Connections holding the key, with the Unix ms they claimed it at.
    Key(OneOrMore<(ConnRef, u64)>),
    Mid(OneOrMore<ConnRef>),
    All,
    Reports,
    /// Commands to this shard (`shard.<node>.<shard>`).
    Shard,
}

/// Holders of a key or mid: almost always one, kept inline (a connection's
/// two subscriptions are most of what clustering costs it in memory).
#[derive(Debug, Clone)]
pub enum OneOrMore<T> {
    One(T),
    More(Vec<T>),
}

impl<T: Clone + PartialEq> OneOrMore<T> {
    fn push(&mut self, item: T) {
        match self {
            OneOrMore::One(first) => *self = OneOrMore::More(vec![first.clone(), item]),
            OneOrMore::More(items) => items.push(item),
        }
    }

    /// Removes the first item `matches`; whether there was one. The last
    /// item is never removed here (the subscription goes with it).
    fn remove_first(&mut self, matches: impl Fn(&T) -> bool) -> bool {
        match self {
            OneOrMore::One(item) => matches(item),
            OneOrMore::More(items) => match items.iter().position(matches) {
                Some(index) => {
                    items.swap_remove(index);
                    if items.len() == 1 {
                        *self = OneOrMore::One(items[0].clone());
                    }
                    true
                }
                None => false,
            },
        }
    }

    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMore::One(item) => vec![item.clone()],
            OneOrMore::More(items) => items.clone(),
        }
    }
}

struct Sub {
    sid: u64,
    refs: u32,
    interest: Interest,
}

/// Where a room's stream is, as seen here: (epoch, last offset).
pub type StreamPoint = (Arc<str>, u32);

/// Why something could not be handed to the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusError {
    Down,
    Full,
    TooLarge,
}

impl BusError {
    pub fn reason(self) -> &'static str {
        match self {
            BusError::Down => "the cluster bus is down",
            BusError::Full => "the cluster bus outbound buffer is full",
            BusError::TooLarge => "the message is larger than the bus's max_payload",
        }
    }
}

pub struct Bus {
    pub node_id: Arc<str>,
    pub subjects: Subjects,
    pub urls: Vec<String>,
    pub report_ms: u64,
    out_bytes_max: usize,
    /// Bytes queued for the socket, written by the link's writer.
    out: RefCell<Vec<u8>>,
    /// Wakes the writer.
    pub wake: Signal,
    connected: Cell<bool>,
    payload_max: Cell<usize>,
    /// By subject: a message is dispatched by the subject it came on.
    subs: RefCell<HashMap<Box<str>, Sub>>,
    next_sid: Cell<u64>,
    /// Shares of tickets returned by the next PING's PONG (not yet written):
    /// an API request's publishes, a registration's subscriptions, or a
    /// room push this shard numbered for another shard of this node.
    unflushed: RefCell<Vec<Ack>>,
    /// The shares behind each PING in flight, oldest first, with when it left.
    pings: RefCell<VecDeque<(u64, Vec<Ack>)>>,
    pub nodes: RefCell<Nodes>,
    /// The last (epoch, offset) seen per room subscribed here: a new epoch
    /// is announced, a gap or a duplicate is caught (`shard::bus_side`, `follow`).
    pub room_streams: RefCell<HashMap<Arc<str>, StreamPoint>>,
    /// Reports published by this shard (shard 0 only).
    pub report_seq: Cell<u64>,
    scratch: RefCell<Vec<u8>>,
    messages_out: Cell<u64>,
}

/// NATS's default max_payload, until the server's INFO says otherwise.
const DEFAULT_PAYLOAD_BYTES_MAX: usize = 1 << 20;

impl Bus {
    pub fn new(config: &crate::config::ClusterSection, node_id: &str, shard: usize) -> Bus {
        let subjects = Subjects::new(&config.subject_prefix);
        let bus = Bus {
            node_id: Arc::from(node_id),
            urls: config.nats_urls.clone(),
            report_ms: config.report_ms,
            out_bytes_max: config.bus_outbound_bytes_max,
            out: RefCell::new(Vec::new()),
            wake: Signal::default(),
            connected: Cell::new(false),
            payload_max: Cell::new(DEFAULT_PAYLOAD_BYTES_MAX),
            subs: RefCell::new(HashMap::new()),
            next_sid: Cell::new(1),
            unflushed: RefCell::new(Vec::new()),
            pings: RefCell::new(VecDeque::new()),
            nodes: RefCell::new(Nodes::new(node_id, config.node_timeout_ms)),
            room_streams: RefCell::new(HashMap::new()),
            report_seq: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
            messages_out: Cell::new(0),
            subjects,
        };
        let fixed = [
            (bus.subjects.all(), Interest::All),
            (bus.subjects.report(), Interest::Reports),
            (bus.subjects.shard(node_id, shard), Interest::Shard),
        ];
        for (subject, interest) in fixed {
            bus.want(&subject, interest);
        }
        bus
    }

    pub fn connected(&self) -> bool {
        self.connected.get()
    }

    pub fn payload_max(&self) -> usize {
        self.payload_max.get()
    }

    /// Adds a reference to `subject` (subscribing on the first). For keys
    /// and mids, `interest` carries the connection to add.
    pub fn want(&self, subject: &str, interest: Interest) {
        let mut subs = self.subs.borrow_mut();
        if let Some(sub) = subs.get_mut(subject) {
            sub.refs += 1;
            match (&mut sub.interest, interest) {
                (Interest::Key(holders), Interest::Key(OneOrMore::One(more))) => holders.push(more),
                (Interest::Mid(holders), Interest::Mid(OneOrMore::One(more))) => holders.push(more),
                _ => {}
            }
            return;
        }
        let sid = self.next_sid.get();
        self.next_sid.set(sid + 1);
        subs.insert(subject.into(), Sub { sid, refs: 1, interest });
        if self.connected.get() {
            nats::subscribe(&mut self.out.borrow_mut(), subject, sid);
            self.wake.raise();
        }
    }

    /// Drops a reference to `subject` (and `conn` from a key or mid),
    /// unsubscribing on the last.
    pub fn unwant(&self, subject: &str, conn: Option<ConnRef>) {
        let mut subs = self.subs.borrow_mut();
        let Some(sub) = subs.get_mut(subject) else { return };
        if let Some(conn) = conn {
            // A connection that never registered here holds no reference.
            let held = match &mut sub.interest {
                Interest::Key(holders) => holders.remove_first(|(c, _)| *c == conn),
                Interest::Mid(holders) => holders.remove_first(|c| *c == conn),
                _ => false,
            };
            if !held {
                return;
            }
        }
        sub.refs -= 1;
        if sub.refs > 0 {
            return;
        }
        let sid = sub.sid;
        if let Some(Sub { interest: Interest::Room(room), .. }) = subs.remove(subject) {
            self.room_streams.borrow_mut().remove(&room);
        }
        if subs.capacity() > 64 && subs.len() < subs.capacity() / 4 {
            subs.shrink_to_fit();
        }
        if self.connected.get() {
            nats::unsubscribe(&mut self.out.borrow_mut(), sid);
            self.wake.raise();
        }
    }

    /// Calls `each` with what `subject` means here (`None`: not subscribed).
    /// A message for a subscription that has since been dropped (and
    /// perhaps taken again under a new sid) is not for the current one: it
    /// was published before the server processed the UNSUB, and taking it
    /// would make the pushes published while unsubscribed look lost.
    pub fn with_interest<R>(&self, subject: &[u8], sid: u64, each: impl FnOnce(&Interest) -> R) -> Option<R> {
        let subject = std::str::from_utf8(subject).ok()?;
        self.subs.borrow().get(subject).filter(|sub| sub.sid == sid).map(|sub| each(&sub.interest))
    }

    /// Queues the encoding of `command` on `subject`. Fails when the bus is
    /// down, the buffer is at its bound, or the payload is past the
    /// server's max_payload (a command with no bus encoding is a bug of the
    /// caller's, refused as too large for the bus).
    pub fn publish(&self, subject: &str, command: &Command) -> Result<(), BusError> {
        if !self.connected.get() {
            return Err(BusError::Down);
        }
        let mut payload = self.scratch.borrow_mut();
        payload.clear();
        if !wire::encode(command, &self.node_id, &mut payload) {
            debug_assert!(false, "{command:?} does not travel on the bus");
            return Err(BusError::TooLarge);
        }
        if payload.len() > self.payload_max.get() {
            return Err(BusError::TooLarge);
        }
        let mut out = self.out.borrow_mut();
        if out.len() + payload.len() + subject.len() + 64 > self.out_bytes_max {
            return Err(BusError::Full);
        }
        nats::publish(&mut out, subject, None, &payload);
        self.messages_out.set(self.messages_out.get() + 1);
        if payload.capacity() > 1 << 20 {
            *payload = Vec::new();
        }
        self.wake.raise();
        Ok(())
    }

    /// `waiter` is told (by a PONG) once the server has processed every
    /// byte queued so far. Fails at once when the bus is down.
    pub fn flush(&self, waiter: Ack) -> Result<(), BusError> {
        if !self.connected.get() {
            return Err(BusError::Down);
        }
        self.unflushed.borrow_mut().push(waiter);
        self.wake.raise();
        Ok(())
    }

    /// Queues raw protocol bytes (PONG, keep-alive PING).
    pub fn queue_raw(&self, bytes: &[u8]) {
        self.out.borrow_mut().extend_from_slice(bytes);
        self.wake.raise();
    }

    /// The bytes to write now: the buffer, and a PING for the waiters of
    /// this write if there are any (or if `keepalive`).
    pub fn take_output(&self, now_ms: u64, keepalive: bool, into: &mut Vec<u8>) {
        into.clear();
        std::mem::swap(into, &mut *self.out.borrow_mut());
        let waiters = std::mem::take(&mut *self.unflushed.borrow_mut());
        if !waiters.is_empty() || keepalive {
            into.extend_from_slice(nats::PING);
            self.pings.borrow_mut().push_back((now_ms, waiters));
        }
    }

    /// A PONG arrived: the waiters of the oldest PING.
    pub fn on_pong(&self) -> Vec<Ack> {
        self.pings.borrow_mut().pop_front().map(|(_, w)| w).unwrap_or_default()
    }

    /// When the oldest PING in flight left, if any.
    pub fn oldest_ping_ms(&self) -> Option<u64> {
        self.pings.borrow().front().map(|(at, _)| *at)
    }

    /// The handshake of a new connection: CONNECT, every subscription, and
    /// a PING (its PONG has no waiter).
    pub fn on_connect(&self, name: &str, payload_max: Option<usize>, now_ms: u64, into: &mut Vec<u8>) {
        nats::connect(into, name);
        let subs = self.subs.borrow();
        let mut sids: Vec<(u64, &str)> = subs.iter().map(|(subject, sub)| (sub.sid, &**subject)).collect();
        sids.sort_unstable();
        for (sid, subject) in sids {
            nats::subscribe(into, subject, sid);
        }
        if let Some(max) = payload_max {
            self.payload_max.set(max);
        }
        into.extend_from_slice(nats::PING);
        self.pings.borrow_mut().push_back((now_ms, Vec::new()));
    }

    pub fn set_payload_max(&self, max: usize) {
        self.payload_max.set(max);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.set(connected);
    }

    /// The connection is gone: unwritten bytes are dropped and every
    /// waiter is returned (to be failed); subscriptions stay, to be sent
    /// again on the next connection.
    pub fn on_disconnect(&self) -> Vec<Ack> {
        self.connected.set(false);
        self.out.borrow_mut().clear();
        let mut waiters = std::mem::take(&mut *self.unflushed.borrow_mut());
        for (_, more) in self.pings.borrow_mut().drain(..) {
            waiters.extend(more);
        }
        waiters
    }

    /// Messages published since start.
    pub fn messages_out(&self) -> u64 {
        self.messages_out.get()
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.borrow().len()
    }
}
