//! Rate limits on what strangers may do (all off by default, as in goim):
//! new connections per client IP per second, and upstream goim frames per
//! connection per second.
//!
//! Owns: fixed one-second windows and their counts. The per-IP table holds
//! only the IPs seen in the current second and is emptied when the second
//! changes, so it is bounded by one second of accepts. Must never: allocate
//! per connection, or decide what happens past a limit (the poller refuses
//! the connection, the session closes it as `upstream_rate`).
//!
//! With SO_REUSEPORT the kernel spreads one IP's connections over the
//! shards by a hash of the source port, so each shard admits its share of
//! `connections_per_ip_per_s_max` (rounded up): the limit is approximate by
//! design, never a cross-shard lock.

use std::collections::HashMap;
use std::net::IpAddr;

/// New connections per IP in the current second, on one shard.
#[derive(Default)]
pub struct IpRate {
    second: u64,
    counts: HashMap<IpAddr, u32>,
}

impl IpRate {
    /// Whether one more connection from `ip` fits `per_s_max` in second `now_s`.
    pub fn admit(&mut self, ip: IpAddr, now_s: u64, per_s_max: u32) -> bool {
        if now_s != self.second {
            self.second = now_s;
            self.counts.clear();
            if self.counts.capacity() > 4096 {
                self.counts = HashMap::new();
            }
        }
        let count = self.counts.entry(ip).or_insert(0);
        if *count >= per_s_max {
            return false;
        }
        *count += 1;
        true
    }
}

/// This shard's share of a per-IP limit over `shards` shards.
pub fn per_shard_share(per_s_max: u32, shards: usize) -> u32 {
    per_s_max.div_ceil(shards.max(1) as u32)
}

/// One connection's upstream frames in its current second: `(second, count)`
/// packed in the session as two u32s. Returns whether one more frame fits.
pub fn frame_admitted(window: &mut (u32, u32), now_s: u32, per_s_max: u32) -> bool {
    if window.0 != now_s {
        *window = (now_s, 0);
    }
    window.1 += 1;
    window.1 <= per_s_max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_gets_its_share_each_second_and_the_table_empties() {
        let mut rate = IpRate::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(rate.admit(a, 1, 2) && rate.admit(a, 1, 2));
        assert!(!rate.admit(a, 1, 2), "the third in one second");
        assert!(rate.admit(b, 1, 2), "another IP is not affected");
        assert!(rate.admit(a, 2, 2), "a new second");
        assert_eq!(rate.counts.len(), 1, "only this second's IPs are kept");
        assert_eq!(per_shard_share(10, 3), 4);
        assert_eq!(per_shard_share(1, 4), 1);
    }

    #[test]
    fn frames_are_counted_per_second() {
        let mut window = (0, 0);
        assert!((0..5).all(|_| frame_admitted(&mut window, 7, 5)));
        assert!(!frame_admitted(&mut window, 7, 5));
        assert!(frame_admitted(&mut window, 8, 5));
    }
}
