//! The live nodes of the cluster, as this shard has heard them report.
//!
//! Owns: every other node's last report (address, weight, shard count,
//! connection, IP and room counts) and when it arrived; which node
//! sequences a room (rendezvous hashing over the live nodes, this one
//! included); goim's weighted node order. Must never: keep a node that has
//! been silent for `node_timeout_ms`, or count this node's own report
//! (its counts come from the shards, live).

use crate::route::wire::Report;
use std::collections::HashMap;

/// A node as its last report described it.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub addr: String,
    pub domain: String,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    pub weight: u32,
    pub shards: usize,
    pub conn_count: u64,
    pub ip_count: u64,
    /// Unix time of the last report, in nanoseconds (goim's latest_timestamp).
    pub latest_unix_ns: u128,
    rooms: HashMap<Box<str>, u32>,
}

struct Entry {
    node: Node,
    seen_ms: u64,
    /// Parts of the report being received: (seq, parts seen, rooms so far).
    partial: Option<(u64, u32, HashMap<Box<str>, u32>)>,
}

pub struct Nodes {
    me: String,
    node_timeout_ms: u64,
    others: HashMap<String, Entry>,
}

/// What applying a report or an expiry changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// A node joined or left: rooms may have a new sequencer.
    Membership,
}

impl Nodes {
    pub fn new(me: &str, node_timeout_ms: u64) -> Nodes {
        Nodes { me: me.to_string(), node_timeout_ms, others: HashMap::new() }
    }

    /// Applies one part of a node's report heard at `now_ms`.
    pub fn apply(&mut self, report: &Report, now_ms: u64, unix_ns: u128) -> Change {
        if report.node == self.me || report.parts == 0 || report.part >= report.parts {
            return Change::None;
        }
        let mut change = Change::None;
        let entry = self.others.entry(report.node.to_string()).or_insert_with(|| {
            change = Change::Membership;
            Entry { node: Node { id: report.node.to_string(), ..Node::default() }, seen_ms: now_ms, partial: None }
        });
        entry.seen_ms = now_ms;
        let node = &mut entry.node;
        node.hostname = report.hostname.to_string();
        node.addr = report.addr.to_string();
        node.domain = report.domain.to_string();
        (node.tcp_port, node.ws_port, node.wss_port) = (report.tcp_port, report.ws_port, report.wss_port);
        node.weight = report.weight;
        node.shards = (report.shards as usize).max(1);
        node.conn_count = report.conn_count;
        node.ip_count = report.ip_count;
        node.latest_unix_ns = unix_ns;
        // Rooms arrive in parts; the new set replaces the old one when whole.
        let partial = match entry.partial.take() {
            Some((seq, seen, rooms)) if seq == report.seq => (seq, seen, rooms),
            _ => (report.seq, 0, HashMap::new()),
        };
        let (seq, seen, mut rooms) = partial;
        rooms.extend(report.rooms.iter().map(|(room, count)| (Box::from(room.as_str()), *count)));
        if seen + 1 >= report.parts {
            node.rooms = rooms;
        } else {
            entry.partial = Some((seq, seen + 1, rooms));
        }
        change
    }

    /// Drops nodes silent for `node_timeout_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Change {
        let before = self.others.len();
        let timeout_ms = self.node_timeout_ms;
        self.others.retain(|_, entry| now_ms.saturating_sub(entry.seen_ms) < timeout_ms);
        if self.others.len() == before {
            Change::None
        } else {
            Change::Membership
        }
    }

    /// Every other live node.
    pub fn others(&self) -> impl Iterator<Item = &Node> {
        self.others.values().map(|entry| &entry.node)
    }

    pub fn live_count(&self) -> usize {
        self.others.len() + 1
    }

    /// The node (id, shard count) that sequences `room`: rendezvous hashing
    /// over the live nodes, so a node joining or leaving moves only the
    /// rooms it wins or held.
    pub fn sequencer_of<'a>(&'a self, room: &str, my_shards: usize) -> (&'a str, usize) {
        let mut best = (score(&self.me, room), self.me.as_str(), my_shards);
        for entry in self.others.values() {
            let node = &entry.node;
            let candidate = (score(&node.id, room), node.id.as_str(), node.shards);
            if (candidate.0, candidate.1) > (best.0, best.1) {
                best = candidate;
            }
        }
        (best.1, best.2)
    }

    pub fn is_me(&self, node: &str) -> bool {
        node == self.me
    }

    /// Members of `room` on the other nodes.
    pub fn room(&self, room: &str) -> u64 {
        self.others().map(|node| node.rooms.get(room).copied().unwrap_or(0) as u64).sum()
    }

    /// (connections, IPs) on the other nodes.
    pub fn totals(&self) -> (u64, u64) {
        self.others().fold((0, 0), |(c, i), node| (c + node.conn_count, i + node.ip_count))
    }

    /// Every room of the other nodes with its count there, summed.
    pub fn rooms(&self) -> HashMap<&str, u64> {
        let mut rooms: HashMap<&str, u64> = HashMap::new();
        for node in self.others() {
            for (room, count) in &node.rooms {
                *rooms.entry(room).or_default() += *count as u64;
            }
        }
        rooms
    }
}

/// Rendezvous score of `node` for `room`: FNV-1a over both, then a
/// finalizer so that close node ids give unrelated scores.
fn score(node: &str, room: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0xff]).chain(room.bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// goim's balancer (logic/balancer.go): each node's weight corrected by how
/// far its share of connections is from its share of weight; best first.
/// `nodes` are (address, weight, connections).
pub fn weighted<'a>(nodes: &[(&'a str, u32, u64)], limit: usize) -> Vec<&'a str> {
    let total_weight: f64 = nodes.iter().map(|n| n.1 as f64).sum();
    let total_conns: f64 = nodes.iter().map(|n| n.2 as f64).sum();
    let mut scored: Vec<(i64, &str)> = nodes
        .iter()
        .map(|(addr, weight, conns)| {
            let fixed = *weight as f64;
            if total_conns <= 0.0 || total_weight <= 0.0 {
                return (fixed as i64, *addr);
            }
            let diff = fixed / total_weight - *conns as f64 / total_conns * 0.5;
            let multiple = diff * total_conns;
            let floor = multiple.floor();
            let mut current = if floor - multiple >= -0.5 { fixed + floor } else { fixed + multiple.ceil() } as i64;
            if diff < 0.0 {
                current = current.max(1);
            }
            (current, *addr)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(limit).map(|(_, addr)| addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, seq: u64, part: u32, parts: u32, rooms: Vec<(&str, u32)>) -> Report {
        let rooms = rooms.into_iter().map(|(room, count)| (room.to_string(), count)).collect();
        let node = node.to_string();
        Report { node, seq, part, parts, shards: 2, conn_count: 10, ip_count: 1, rooms, ..Report::default() }
    }

    #[test]
    fn reports_count_join_and_expire() {
        let mut nodes = Nodes::new("a", 5000);
        assert_eq!(nodes.apply(&report("a", 1, 0, 1, vec![("r", 9)]), 0, 0), Change::None, "own report ignored");
        assert_eq!(nodes.apply(&report("b", 1, 0, 1, vec![("r", 2)]), 0, 0), Change::Membership);
        assert_eq!(nodes.apply(&report("b", 2, 0, 2, vec![("r", 3)]), 100, 0), Change::None);
        assert_eq!(nodes.room("r"), 2, "a report in parts applies when whole");
        nodes.apply(&report("b", 2, 1, 2, vec![("s", 1)]), 200, 0);
        assert_eq!((nodes.room("r"), nodes.room("s")), (3, 1));
        assert_eq!(nodes.totals(), (10, 1));
        assert_eq!(nodes.expire(5100), Change::None);
        assert_eq!(nodes.expire(5200), Change::Membership);
        assert_eq!((nodes.room("r"), nodes.live_count()), (0, 1));
    }

    #[test]
    fn rendezvous_moves_only_the_rooms_of_the_node_that_left() {
        let mut three = Nodes::new("a", 5000);
        three.apply(&report("b", 1, 0, 1, vec![]), 0, 0);
        three.apply(&report("c", 1, 0, 1, vec![]), 0, 0);
        let mut two = Nodes::new("a", 5000);
        two.apply(&report("b", 1, 0, 1, vec![]), 0, 0);
        let rooms: Vec<String> = (0..300).map(|i| format!("live://{i}")).collect();
        let mut owners = HashMap::new();
        for room in &rooms {
            let with_c = three.sequencer_of(room, 2).0;
            *owners.entry(with_c).or_insert(0) += 1;
            if with_c != "c" {
                assert_eq!(two.sequencer_of(room, 2).0, with_c, "{room} moved without cause");
            }
        }
        assert!(owners.values().all(|n| *n > 60), "spread: {owners:?}");
    }

    #[test]
    fn weighted_prefers_the_emptier_node_of_equal_weight() {
        let nodes = [("10.0.0.1", 10, 900), ("10.0.0.2", 10, 100), ("10.0.0.3", 10, 500)];
        assert_eq!(weighted(&nodes, 5), vec!["10.0.0.2", "10.0.0.3", "10.0.0.1"]);
        assert_eq!(weighted(&nodes, 1), vec!["10.0.0.2"]);
        assert_eq!(weighted(&[("x", 10, 0)], 5), vec!["x"]);
    }
}
