//! Idle deadlines on a one-second timer wheel.
//!
//! Owns: which connections to look at in each second. A heartbeat only moves
//! the session's `deadline_s`; when its old bucket comes up the connection is
//! re-filed under the new deadline, so a heartbeat costs O(1) and a tick
//! touches only connections whose old deadline is due. Must never: decide
//! alone that a connection expired (the session's own deadline decides).

use super::conns::ConnRef;

pub struct Wheel {
    buckets: Vec<Vec<ConnRef>>,
    /// The last second whose bucket was processed.
    now_s: u32,
}

impl Wheel {
    /// A wheel for deadlines at most `horizon_s` seconds ahead.
    pub fn new(horizon_s: u32) -> Wheel {
        Wheel {
            buckets: (0..horizon_s as usize + 2).map(|_| Vec::new()).collect(),
            now_s: 0,
        }
    }

    pub fn now_s(&self) -> u32 {
        self.now_s
    }

    /// Files `conn` under `deadline_s` (clamped into the wheel's horizon).
    pub fn insert(&mut self, conn: ConnRef, deadline_s: u32) {
        let horizon = self.buckets.len() as u32 - 1;
        let at = deadline_s.clamp(self.now_s + 1, self.now_s + horizon);
        let index = at as usize % self.buckets.len();
        self.buckets[index].push(conn);
    }

    /// Advances to `now_s`, handing every connection filed under a passed
    /// second to `due` (which re-files or expires it).
    pub fn advance(&mut self, now_s: u32, mut due: impl FnMut(ConnRef, u32)) {
        while self.now_s < now_s {
            self.now_s += 1;
            let index = self.now_s as usize % self.buckets.len();
            for conn in std::mem::take(&mut self.buckets[index]) {
                due(conn, self.now_s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_come_due_in_their_second() {
        let conn = ConnRef {
            shard: 0,
            slot: 1,
            generation: 0,
        };
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
