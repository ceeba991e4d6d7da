//! A deterministic simulation of the ordering contract (docs/positions.md
//! sections 1 to 4), in the style of TigerBeetle's VOPR: one seed drives 2
//! to 4 real `Shard`s in one thread, with no executor. The simulator is the
//! scheduler: it hands the mesh batches between shards in an order of its
//! choosing (each channel FIFO, as glommio's channel mesh is, channels
//! delayed against each other), runs a shard's flusher pass when it likes,
//! and lets clients and publishers act in between.
//!
//! The shards run on `pipes::SimIo` instead of `crate::io`'s drivers: the
//! shard core does no I/O of its own (tests/layering.rs), so the same core
//! that serves sockets in production runs here on in-memory pipes with
//! small send buffers (a reader that stalls fills its pipe, then its
//! outbox). A client writes goim frames, the shard's session reads them as
//! the poller would hand them over, and the client parses what the shard's
//! flusher wrote. Publishers call the
//! same `push_*` methods the HTTP API calls, with its tickets and its
//! pipelining classes (`api::endpoints::Request::class`).
//!
//! `oracle` checks every promise on every frame a client receives, and at
//! the end, once everything has drained, that nothing acknowledged was lost.
//! A failure names its seed; `SIM_SEED=n` replays that one seed.
//!
//! Must never: sleep, read a clock for a decision, or depend on anything but
//! the seed for what it does (the shards' own randomness is reseeded too).

mod client;
mod cluster;
mod nats;
mod oracle;
mod pipes;
mod publisher;
mod tests;

use crate::config::Config;
use crate::route::mesh::Batch;
use crate::shard::Shard;
use crate::test_rng::XorShift;
use client::Client;
use nats::NatsSim;
use oracle::Oracle;
use pipes::SimIo;
use publisher::Publisher;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

/// Rooms, keys and mids a seed draws from: few, so that they collide.
const ROOMS: &[&str] = &["live://1", "live://2", "live://3"];
const KEYS: &[&str] = &["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"];
const MIDS: &[i64] = &[11, 12, 13];
/// The op every simulated push uses and every client accepts.
pub const OP: i32 = 1000;
/// Clients alive at once, at most.
const CLIENTS_MAX: usize = 10;

/// The config of every simulated node: small bounds, so stalls, history
/// eviction and refused recoveries happen within a few hundred steps.
const CONFIG: &str = "[limits]\noutbound_bytes_per_connection_max = 8192\n\
[history]\npushes_per_room_max = 4\n";

/// What one run exercised, summed over seeds so the test can show the
/// simulation is not vacuous (pushes that arrived, recoveries served,
/// writes that blocked on a full socket, clients the server closed).
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub pushes: u64,
    pub pushes_received: u64,
    pub positions_joins: u64,
    pub recoveries_served: u64,
    pub recoveries_refused: u64,
    pub writes_blocked: u64,
    pub closed_by_server: u64,
    pub keys_replaced: u64,
    pub slow_consumers: u64,
    /// Runs over the simulated bus, and the messages their shards read off it.
    pub clustered_runs: u64,
    pub bus_messages: u64,
    pub history_pages: u64,
    /// Room pushes the shards counted as lost on the bus, and positions
    /// members they closed for it (`bus_gap`): the simulated bus loses
    /// nothing, so both must stay 0.
    pub bus_gaps_counted: u64,
    pub bus_gap_closes: u64,
}

impl Coverage {
    pub fn add(&mut self, other: Coverage) {
        self.pushes += other.pushes;
        self.pushes_received += other.pushes_received;
        self.positions_joins += other.positions_joins;
        self.recoveries_served += other.recoveries_served;
        self.recoveries_refused += other.recoveries_refused;
        self.writes_blocked += other.writes_blocked;
        self.closed_by_server += other.closed_by_server;
        self.keys_replaced += other.keys_replaced;
        self.slow_consumers += other.slow_consumers;
        self.clustered_runs += other.clustered_runs;
        self.bus_messages += other.bus_messages;
        self.history_pages += other.history_pages;
        self.bus_gaps_counted += other.bus_gaps_counted;
        self.bus_gap_closes += other.bus_gap_closes;
    }
}

/// One seeded run.
pub struct World {
    seed: u64,
    rng: XorShift,
    pub step: u64,
    /// Every shard of every node.
    shards: Vec<Rc<Shard>>,
    /// The node of each shard, and each node's first shard.
    node_of: Vec<usize>,
    first_of_node: Vec<usize>,
    /// Batches a shard handed to the mesh and its peer (of the same node)
    /// has not applied: `channels[from][to]`, first in first out.
    channels: Vec<Vec<VecDeque<Batch>>>,
    clients: Vec<Client>,
    publishers: Vec<Publisher>,
    oracle: Oracle,
    /// The simulated nats-server of a clustered run.
    nats: Option<NatsSim>,
    /// The shards' world: in-memory sockets, walks stepped here.
    io: Rc<SimIo>,
    /// Positions left behind by clients that went away: (room, epoch,
    /// offset), for later clients to recover from.
    left_at: Vec<(String, String, u32)>,
    /// Times a client read and found its connection's writes blocked.
    writes_blocked: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Half the seeds: one node of 2 to 4 shards, over the mesh. The
        // other half: 2 or 3 nodes of 1 to 3 shards over the simulated bus.
        let clustered = rng.next().is_multiple_of(2);
        let node_shards: Vec<usize> = if clustered {
            (0..2 + rng.next() % 2).map(|_| 1 + (rng.next() % 3) as usize).collect()
        } else {
            vec![2 + (rng.next() % 3) as usize]
        };
        let io = Rc::new(SimIo::default());
        let mut shards = Vec::new();
        let mut node_of = Vec::new();
        let mut first_of_node = Vec::new();
        for (node, count) in node_shards.iter().copied().enumerate() {
            let text = if clustered {
                format!("{CONFIG}[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\"]\nnode_id = \"n{node}\"\n")
            } else {
                CONFIG.to_string()
            };
            let config = Arc::new(Config::parse(&text).expect("the simulation's config is valid"));
            first_of_node.push(shards.len());
            for id in 0..count {
                let mut shard = Shard::new(id, count, config.clone(), CLIENTS_MAX * 4, io.clone());
                shard.reseed(seed ^ (shards.len() as u64) << 8);
                if clustered {
                    shard.bus = Some(crate::route::bus::Bus::new(&config.cluster, &format!("n{node}"), id));
                    shard.state.get_mut().online.track_interest();
                }
                shards.push(Rc::new_cyclic(|this| {
                    shard.this = this.clone();
                    shard
                }));
                node_of.push(node);
            }
        }
        let total = shards.len();
        let channels = (0..total).map(|_| (0..total).map(|_| VecDeque::new()).collect()).collect();
        let publishers = (0..1 + rng.next() % 3)
            .map(|index| {
                Publisher::new(index as usize, rng.next().is_multiple_of(2), (rng.next() % total as u64) as usize)
            })
            .collect();
        let nats = clustered.then(|| NatsSim::new(total));
        World {
            seed,
            rng,
            step: 0,
            shards,
            node_of,
            first_of_node,
            channels,
            nats,
            io,
            clients: Vec::new(),
            publishers,
            oracle: Oracle::default(),
            left_at: Vec::new(),
            writes_blocked: 0,
        }
    }

    /// Every shard's clock reads the step number as milliseconds: time is
    /// the seed's too.
    fn set_clocks(&self) {
        for shard in &self.shards {
            shard.clock_override_ms.set(Some(self.step));
        }
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.rng.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Runs `steps` random steps, then drains everything and checks what
    /// must have arrived. Err: the first broken promise, with its seed.
    pub fn run(&mut self, steps: u64) -> Result<(), String> {
        self.run_steps(steps).map_err(|why| format!("{why} (seed {}, step {})", self.seed, self.step))
    }

    fn run_steps(&mut self, steps: u64) -> Result<(), String> {
        self.join_the_bus()?;
        for _ in 0..steps {
            self.step += 1;
            self.set_clocks();
            self.random_step()?;
            self.settle_tickets();
            self.collect_batches();
        }
        self.drain()?;
        let positions = |room: &str| self.room_position(room);
        self.oracle.final_checks(&self.clients, positions, self.step)
    }

    /// What this run exercised (read from the shards' own counters).
    pub fn coverage(&self) -> Coverage {
        let mut coverage = Coverage {
            pushes: self.oracle.pushes.len() as u64,
            pushes_received: self.clients.iter().map(|c| c.received.len() as u64).sum(),
            positions_joins: self.clients.iter().filter(|c| c.positions && c.authed_at.is_some()).count() as u64,
            closed_by_server: self.clients.iter().filter(|c| c.closed).count() as u64,
            clustered_runs: self.nats.is_some() as u64,
            history_pages: self.oracle.history_pages,
            ..Coverage::default()
        };
        for shard in &self.shards {
            let stats = shard.stats.borrow();
            coverage.recoveries_served += stats.recoveries_served;
            coverage.recoveries_refused += stats.recoveries_refused.iter().sum::<u64>();
            coverage.keys_replaced += stats.closed[crate::conn::close::CloseReason::Replaced.index()];
            coverage.slow_consumers += stats.closed[crate::conn::close::CloseReason::SlowConsumer.index()];
            coverage.bus_messages += stats.bus_messages_in;
            coverage.bus_gaps_counted += stats.bus_room_pushes_missed;
            coverage.bus_gap_closes += stats.closed[crate::conn::close::CloseReason::BusGap.index()];
        }
        coverage.writes_blocked = self.writes_blocked;
        coverage
    }

    fn random_step(&mut self) -> Result<(), String> {
        match self.below(100) {
            0..=27 => self.deliver_batch(),
            28..=37 => self.flush_shard(),
            38..=51 => self.client_reads()?,
            52..=61 => self.server_reads(),
            62..=66 => self.connect(),
            67..=69 => self.change_room(),
            70..=71 => self.leave(),
            72..=75 => self.stall_or_resume(),
            76..=87 if self.nats.is_some() => self.bus_step()?,
            _ => self.publish(),
        }
        Ok(())
    }

    /// Moves what each shard queued for its peers into the channels (the
    /// mesh's sender tasks; how they cut batches does not change order).
    fn collect_batches(&mut self) {
        for (from, shard) in self.shards.iter().enumerate() {
            let first = self.first_of_node[self.node_of[from]];
            for peer in 0..shard.shards {
                if first + peer == from {
                    continue;
                }
                let batch = shard.outgoing.take(peer);
                if !batch.msgs.is_empty() {
                    self.channels[from][first + peer].push_back(batch);
                }
            }
        }
    }

    /// Applies the oldest batch of one channel, as the peer's receiver
    /// task does (a channel's batches in order, channels in any order).
    fn deliver_batch(&mut self) {
        let busy: Vec<(usize, usize)> = (0..self.shards.len())
            .flat_map(|from| (0..self.shards.len()).map(move |to| (from, to)))
            .filter(|(from, to)| !self.channels[*from][*to].is_empty())
            .collect();
        if busy.is_empty() {
            return;
        }
        let (from, to) = busy[self.below(busy.len())];
        let Some(mut batch) = self.channels[from][to].pop_front() else { return };
        for msg in batch.msgs.drain(..) {
            self.shards[to].apply(msg);
        }
        self.collect_batches();
    }

    /// One flusher pass on one shard: fan-out, writes, reaping.
    fn flush_shard(&mut self) {
        let index = self.below(self.shards.len());
        let shard = &self.shards[index];
        shard.flush_pass();
        shard.record_deliveries();
        shard.reap();
    }

    /// A client reads what its socket holds; the shard writes what waited
    /// for room in it (the poller's EPOLLOUT).
    fn client_reads(&mut self) -> Result<(), String> {
        if self.clients.is_empty() {
            return Ok(());
        }
        let index = self.below(self.clients.len());
        self.read_client(index)
    }

    fn read_client(&mut self, index: usize) -> Result<(), String> {
        let step = self.step;
        let client = &mut self.clients[index];
        if client.stalled || client.gone() {
            return Ok(());
        }
        let read = client.read(step, &mut self.oracle).map_err(|e| format!("client {index}: {e}"))?;
        let shard = &self.shards[client.shard];
        let blocked = shard.state.borrow().conns.get(client.conn).is_some_and(|s| s.write_blocked);
        if read > 0 && blocked {
            self.writes_blocked += 1;
            shard.write_now(client.conn);
        }
        Ok(())
    }

    /// A shard reads one client's socket (an epoll event).
    fn server_reads(&mut self) {
        if self.clients.is_empty() {
            return;
        }
        let index = self.below(self.clients.len());
        self.server_read(index);
        self.shards[self.clients[index].shard].reap();
    }

    /// What a readable event brings the shard: the bytes the client wrote
    /// (handed to its session), or the end of its stream.
    fn server_read(&self, index: usize) {
        let client = &self.clients[index];
        let shard = &self.shards[client.shard];
        let open = shard.state.borrow().conns.get(client.conn).is_some_and(|s| s.close_reason.is_none());
        if !open {
            return;
        }
        let taken = self.io.with(client.fd(), |pipe| (std::mem::take(&mut pipe.to_server), pipe.client_closed));
        let (mut bytes, client_closed) = taken.unwrap_or((Vec::new(), true));
        if !bytes.is_empty() {
            crate::shard::session::on_bytes(shard, client.conn, &mut bytes);
        } else if client_closed {
            shard.close(client.conn, crate::conn::close::CloseReason::ClientClosed);
        }
    }

    /// Each throttled broadcast walk takes one step (the wait a timer would
    /// make is the simulator's to choose).
    fn step_walks(&self) -> bool {
        let walks = std::mem::take(&mut *self.io.walks.borrow_mut());
        let stepped = !walks.is_empty();
        for (shard, walk) in walks {
            if shard.walk_step(&walk).is_some() {
                self.io.walks.borrow_mut().push((shard, walk));
            }
        }
        stepped
    }

    /// A new connection on a random shard, with a key, mid and room drawn
    /// from the small pools; some ask for positions, some recover from
    /// where an earlier client left.
    fn connect(&mut self) {
        let live = self.clients.iter().filter(|c| !c.gone()).count();
        if live >= CLIENTS_MAX {
            return;
        }
        let shard_index = self.below(self.shards.len());
        let key = self.pick(KEYS).to_string();
        let mid = if self.below(3) == 0 { 0 } else { *self.pick(MIDS) };
        let mut room = self.pick(ROOMS).to_string();
        let positions = self.below(2) == 0;
        let mut recover = None;
        if positions && !self.left_at.is_empty() && self.below(2) == 0 {
            let at = self.below(self.left_at.len());
            let (left_room, epoch, offset) = self.left_at.swap_remove(at);
            room = left_room;
            recover = Some((epoch, offset));
        }
        let shard = &self.shards[shard_index];
        let fd = self.io.open();
        let transport = crate::shard::intake::Transport::Tcp;
        let Some(conn) = shard.accepted(fd, [127, 0, 0, 1].into(), transport) else {
            return self.io.discard(fd);
        };
        let id = self.clients.len();
        let client = Client::connect(id, self.io.clone(), fd, shard_index, conn, key, mid, room, positions, recover);
        self.clients.push(client);
    }

    /// A client asks to change room (op 12), sometimes to none.
    fn change_room(&mut self) {
        let Some(index) = self.live_client() else { return };
        let room = if self.below(5) == 0 { String::new() } else { self.pick(ROOMS).to_string() };
        self.clients[index].change_room(&room);
    }

    /// A client closes its socket; its last position may be recovered
    /// from by a later client.
    fn leave(&mut self) {
        let Some(index) = self.live_client() else { return };
        if let Some(at) = self.clients[index].leave() {
            self.left_at.push(at);
        }
    }

    fn stall_or_resume(&mut self) {
        let Some(index) = self.live_client() else { return };
        let client = &mut self.clients[index];
        client.stalled = !client.stalled;
    }

    fn live_client(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.clients.len()).filter(|i| !self.clients[*i].gone()).collect();
        (!live.is_empty()).then(|| live[self.below(live.len())])
    }

    /// A publisher plans or starts its next push.
    fn publish(&mut self) {
        let index = self.below(self.publishers.len());
        let kind = match self.below(10) {
            0..=4 => publisher::Kind::Room(self.pick(ROOMS).to_string()),
            5..=6 => {
                // One or two distinct keys (a key named twice is pushed twice, as in goim).
                let first = self.below(KEYS.len());
                let mut keys = vec![KEYS[first].to_string()];
                if self.below(2) == 0 {
                    keys.push(KEYS[(first + 1 + self.below(KEYS.len() - 1)) % KEYS.len()].to_string());
                }
                publisher::Kind::Keys(keys)
            }
            7..=8 => publisher::Kind::Mids(vec![*self.pick(MIDS)]),
            9 if self.below(3) == 0 => publisher::Kind::History(self.pick(ROOMS).to_string()),
            _ => publisher::Kind::All,
        };
        let publisher = &mut self.publishers[index];
        publisher.plan(kind);
        publisher.start_what_it_may(&self.shards, &mut self.oracle, self.step);
    }

    /// Every publisher looks at its tickets; pipelined ones start what the
    /// answers let them.
    fn settle_tickets(&mut self) {
        for publisher in &mut self.publishers {
            publisher.settle(&mut self.oracle, self.step);
            publisher.start_what_it_may(&self.shards, &mut self.oracle, self.step);
        }
    }

    /// Runs everything to a standstill: every planned push started and
    /// answered, every batch applied, every shard flushed and every client
    /// (stalled ones too) read to the end of what it was sent.
    fn drain(&mut self) -> Result<(), String> {
        for client in &mut self.clients {
            client.stalled = false;
        }
        let mut quiet_rounds = 0;
        for _ in 0..10_000 {
            self.step += 1;
            self.set_clocks();
            let mut moved = false;
            for index in 0..self.clients.len() {
                self.server_read(index);
            }
            moved |= self.step_walks();
            for from in 0..self.shards.len() {
                for to in 0..self.shards.len() {
                    while let Some(mut batch) = self.channels[from][to].pop_front() {
                        moved = true;
                        for msg in batch.msgs.drain(..) {
                            self.shards[to].apply(msg);
                        }
                    }
                }
            }
            for shard in &self.shards {
                shard.flush_pass();
                shard.reap();
            }
            for index in 0..self.clients.len() {
                let before = self.clients[index].frames_read;
                self.read_client(index)?;
                moved |= self.clients[index].frames_read != before;
            }
            moved |= self.settle_bus()?;
            self.settle_tickets();
            self.collect_batches();
            moved |= self.publishers.iter().any(|p| p.busy());
            quiet_rounds = if moved { 0 } else { quiet_rounds + 1 };
            if quiet_rounds >= 3 {
                return Ok(());
            }
        }
        Err("the world did not come to rest in 10,000 rounds".into())
    }
}

impl Drop for World {
    /// Closes every connection the shards still hold (their pipes go with
    /// the clients' ends).
    fn drop(&mut self) {
        for shard in &self.shards {
            shard.begin_shutdown();
        }
    }
}
