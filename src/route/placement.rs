//! Placement: which node and shard own a room, key, mid or IP, for a
//! single node and a cluster alike, and which way a push leaves.
//!
//! Owns: the one hash that places names on shards (`owner_of`), and
//! `Placement`, the one answer every sender asks: a room's sequencer (on a
//! single node the room's shard; in a cluster the live node rendezvous
//! hashing picks, `route::nodes`, then the room's shard there), a key's,
//! mid's or IP's directory shard, and the route (`Route`: the mesh, the
//! bus, or a cluster whose bus is down).
//!
//! Must never: change what it reads: it answers from the shard count and,
//! clustered, the bus's view of the live nodes.

use crate::route::bus::Bus;
use std::hash::{Hash, Hasher};

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
        let node = (node != bus.node_id).then(|| node.to_string());
        SequencerAt { node, shard: owner_of(room, shards) }
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
