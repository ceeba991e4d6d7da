//! Placement: which node and shard own a room, key, mid or IP, for a
//! single node and a cluster alike, and where each command goes (`Dest`).
//!
//! Owns: the one hash that places names on shards (`owner_of`), and
//! `Placement`, the one answer every sender asks: a room's sequencer (on a
//! single node the room's shard; in a cluster the live node rendezvous
//! hashing picks, `route::nodes`, then the room's shard there), the shards
//! a room's pushes, a key's, a mid's or a broadcast reach, a key's, mid's
//! or IP's directory shard, and whether the bus is up (`Route`). Callers
//! send what it answers and never look at the topology themselves.
//!
//! Must never: change what it reads: it answers from the shard count and,
//! clustered, the bus's view of the live nodes.

use crate::route::bus::{Bus, BusError};
use crate::route::command::Dest;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// How a push leaves this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Single node: the mesh.
    Local,
    /// Through the bus.
    Bus,
    /// Clustered, but the bus is down.
    Down,
}

/// Where a room's order is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencerAt {
    /// The node, `None` for this one.
    pub node: Option<String>,
    /// The shard on that node.
    pub shard: usize,
}

/// Where the parts of one push go: each destination with its share of the
/// targets. `unreachable` is set when some targets may live on nodes the
/// bus cannot reach now (clustered, bus down): the sends reach this node
/// only, and the push is answered with that error.
pub struct Plan<T> {
    pub sends: Vec<(Dest, T)>,
    pub unreachable: Option<BusError>,
}

/// Where a room's numbered pushes go (the hot path: no list is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Shards 0..n of this node, over the mesh.
    Shards(usize),
    /// The room's subject on the bus.
    Subject(String),
}

/// The placement of names as seen from one shard.
pub struct Placement<'a> {
    shards: usize,
    bus: Option<&'a Bus>,
}

impl<'a> Placement<'a> {
    /// `shards` on this node; `bus` when clustered.
    pub fn new(shards: usize, bus: Option<&'a Bus>) -> Placement<'a> {
        Placement { shards, bus }
    }

    pub fn clustered(&self) -> bool {
        self.bus.is_some()
    }

    pub fn route(&self) -> Route {
        match self.bus {
            None => Route::Local,
            Some(bus) if bus.connected() => Route::Bus,
            Some(_) => Route::Down,
        }
    }

    /// The shard of this node that owns `name` (its directory entry, or
    /// the room's order on a single node).
    pub fn shard_of<T: Hash + ?Sized>(&self, name: &T) -> usize {
        owner_of(name, self.shards)
    }

    /// The sequencer of `room`: this node's room shard on a single node;
    /// clustered, the node the live nodes' hashing picks and the room's
    /// shard among that node's shards.
    pub fn sequencer(&self, room: &str) -> SequencerAt {
        let Some(bus) = self.bus else { return SequencerAt { node: None, shard: self.shard_of(room) } };
        let nodes = bus.nodes.borrow();
        let (node, shards) = nodes.sequencer_of(room, self.shards);
        let node = (node != &*bus.node_id).then(|| node.to_string());
        SequencerAt { node, shard: owner_of(room, shards) }
    }

    /// Where a room's pushes and history queries go: its sequencer, or an
    /// error when the cluster's bus is down (nothing can number them then:
    /// a sequencer of this node would number pushes the others never see).
    pub fn room_requests(&self, room: &str) -> Result<Dest, BusError> {
        if self.route() == Route::Down {
            return Err(BusError::Down);
        }
        let SequencerAt { node, shard } = self.sequencer(room);
        Ok(Dest::Shard { node: node.map(Arc::from), shard })
    }

    /// Where a join with positions (and its detach) goes. Clustered it goes
    /// over the bus even to a sequencer of this node, so that its answer
    /// comes back on the bus behind the room's pushes (`route::bus`: one
    /// ordered stream per shard).
    pub fn joins(&self, room: &str) -> Dest {
        let SequencerAt { node, shard } = self.sequencer(room);
        match self.bus {
            None => Dest::local(shard),
            Some(bus) => Dest::Shard { node: Some(node.map_or_else(|| bus.node_id.clone(), Arc::from)), shard },
        }
    }

    /// Where a room's numbered pushes go from its sequencer: every shard of
    /// this node, or clustered, the room's subject.
    pub fn members(&self, room: &str) -> Members {
        match self.bus {
            None => Members::Shards(self.shards),
            Some(bus) => Members::Subject(bus.subjects.room(room)),
        }
    }

    /// Where pushes to these keys go: the directory shards of the keys, or
    /// clustered, each key's subject.
    pub fn keys(&self, keys: Vec<String>) -> Plan<Vec<String>> {
        self.targets(keys, |subjects, key| subjects.key(key))
    }

    /// Where pushes to these mids go, as `keys`.
    pub fn mids(&self, mids: Vec<i64>) -> Plan<Vec<i64>> {
        self.targets(mids, |subjects, mid| subjects.mid(*mid))
    }

    /// Where a broadcast goes: every shard of this node, or clustered, the
    /// broadcast subject.
    pub fn everyone(&self) -> Plan<()> {
        match self.route() {
            Route::Bus => Plan {
                sends: self.bus.map(|bus| (Dest::Subject(bus.subjects.all()), ())).into_iter().collect(),
                unreachable: None,
            },
            route => Plan {
                sends: (0..self.shards).map(|shard| (Dest::local(shard), ())).collect(),
                unreachable: (route == Route::Down).then_some(BusError::Down),
            },
        }
    }

    fn targets<T: Hash>(
        &self,
        targets: Vec<T>,
        subject: impl Fn(&crate::route::subject::Subjects, &T) -> String,
    ) -> Plan<Vec<T>> {
        if let (Route::Bus, Some(bus)) = (self.route(), self.bus) {
            let sends = targets.into_iter().map(|t| (Dest::Subject(subject(&bus.subjects, &t)), vec![t])).collect();
            return Plan { sends, unreachable: None };
        }
        let unreachable = (self.route() == Route::Down).then_some(BusError::Down);
        if targets.len() == 1 {
            // The common push, to one key or mid: no grouping to do.
            let shard = self.shard_of(&targets[0]);
            return Plan { sends: vec![(Dest::local(shard), targets)], unreachable };
        }
        let mut by_owner: Vec<Vec<T>> = (0..self.shards).map(|_| Vec::new()).collect();
        for target in targets {
            by_owner[self.shard_of(&target)].push(target);
        }
        let sends = by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(shard, group)| (Dest::local(shard), group))
            .collect();
        Plan { sends, unreachable }
    }

    /// The pipelining class of a room push: rooms of one sequencer share
    /// its FIFO path (the API starts their pushes together).
    pub fn room_class(&self, room: &str) -> usize {
        let Some(bus) = self.bus else { return self.shard_of(room) };
        let at = self.sequencer(room);
        owner_of(&(at.node.as_deref().unwrap_or(&bus.node_id), at.shard), usize::MAX)
    }
}

/// The shard that owns `value` (a room, key, mid or IP) among `shards`.
/// FNV-1a: stable across processes and shards, cheap for short keys.
pub fn owner_of<T: Hash + ?Sized>(value: &T, shards: usize) -> usize {
    let mut hasher = Fnv1a(0xcbf2_9ce4_8422_2325);
    value.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= *byte as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn ownership_is_stable_and_in_range() {
        for shards in 1..8 {
            let owner = owner_of("some-key", shards);
            assert!(owner < shards);
            assert_eq!(owner, owner_of("some-key", shards));
        }
    }
}
