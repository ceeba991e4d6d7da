//! Handshake and idle deadlines on a timer wheel of `TICK_MS` ticks.
//!
//! Owns: which connections to look at in each tick. A heartbeat only moves
//! the session's `deadline_tick`; when its old bucket comes up the
//! connection is re-filed under the new deadline, so a heartbeat costs O(1)
//! and a tick touches only connections whose old deadline is due. Must
//! never: decide alone that a connection expired (the session decides).

use crate::conn::conns::ConnRef;

/// Resolution of every connection deadline.
pub const TICK_MS: u64 = 100;

pub struct Wheel {
    buckets: Vec<Vec<ConnRef>>,
    /// The last tick whose bucket was processed.
    now_tick: u32,
}

impl Wheel {
    /// A wheel for deadlines at most `horizon_ticks` seconds ahead.
    pub fn new(horizon_ticks: u32) -> Wheel {
        Wheel { buckets: (0..horizon_ticks as usize + 2).map(|_| Vec::new()).collect(), now_tick: 0 }
    }

    /// Files `conn` under `deadline_tick` (clamped into the wheel's horizon).
    pub fn insert(&mut self, conn: ConnRef, deadline_tick: u32) {
        let horizon = self.buckets.len() as u32 - 1;
        let at = deadline_tick.clamp(self.now_tick + 1, self.now_tick + horizon);
        let index = at as usize % self.buckets.len();
        self.buckets[index].push(conn);
    }

    /// Advances to `now_tick`, handing every connection filed under a passed
    /// tick to `due` (which re-files or expires it).
    pub fn advance(&mut self, now_tick: u32, mut due: impl FnMut(ConnRef, u32)) {
        while self.now_tick < now_tick {
            self.now_tick += 1;
            let index = self.now_tick as usize % self.buckets.len();
            for conn in std::mem::take(&mut self.buckets[index]) {
                due(conn, self.now_tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_come_due_in_their_second() {
        let conn = ConnRef { shard: 0, slot: 1, generation: 0 };
        let mut wheel = Wheel::new(10);
        wheel.insert(conn, 3);
        let mut seen = Vec::new();
        wheel.advance(2, |c, s| seen.push((c, s)));
        assert!(seen.is_empty());
        wheel.advance(5, |c, s| seen.push((c, s)));
        assert_eq!(seen, vec![(conn, 3)]);
        // A deadline past the horizon is clamped, never lost.
        wheel.insert(conn, 1000);
        let mut count = 0;
        wheel.advance(5 + 20, |_, _| count += 1);
        assert_eq!(count, 1);
    }
}
