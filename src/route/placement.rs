//! Placement: which shard owns a room, key, mid or IP.
//!
//! Owns: the one hash that places names on shards (`owner_of`). A room's
//! sequencer, a key's, mid's and IP's directory entry all live on the shard
//! this names; in a cluster the node comes first (rendezvous hashing over
//! live nodes, `route::nodes`), then this hash places the room on a shard
//! of that node.
//!
//! Must never: depend on anything mutable: the answer is a pure function
//! of the name and the shard count, the same on every shard and node.

use std::hash::{Hash, Hasher};

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
