//! Every shard's view of the online counts of the whole process: per room,
//! per shard; connections per shard; distinct IPs per directory partition.
//!
//! Owns: the counts this shard serves to heartbeats and to the online API.
//! Its own column changes at once; other shards' columns arrive every
//! `online_sync_ms`, so a count is at most that stale. Must never: be
//! written by anything but this shard's own joins/leaves and sync reports.

use crate::metrics::Stats;
use std::collections::{HashMap, HashSet};

/// What one shard tells the others every `online_sync_ms`.
#[derive(Debug, Clone, Default)]
pub struct OnlineReport {
    pub shard: usize,
    pub conn_count: u64,
    pub ip_count: u64,
    /// Rooms whose local count changed since the last report, with the new count.
    pub rooms: Vec<(String, u32)>,
    /// The reporting shard's counters, for /metrics.
    pub stats: Stats,
}

pub struct Online {
    me: usize,
    /// room key → members on each shard.
    rooms: HashMap<Box<str>, Box<[u32]>>,
    conn_counts: Vec<u64>,
    ip_counts: Vec<u64>,
    changed: HashSet<Box<str>>,
    /// Clustered only: rooms whose local count went from 0 or to 0 here
    /// (true = first member), for the bus's room subscriptions.
    pub interest: Vec<(Box<str>, bool)>,
    track_interest: bool,
}

impl Online {
    pub fn new(me: usize, shards: usize) -> Online {
        Online {
            me,
            rooms: HashMap::new(),
            conn_counts: vec![0; shards],
            ip_counts: vec![0; shards],
            changed: HashSet::new(),
            interest: Vec::new(),
            track_interest: false,
        }
    }

    /// Records room subscriptions' changes in `interest` (clustered nodes).
    pub fn track_interest(&mut self) {
        self.track_interest = true;
    }

    fn set(&mut self, room: &str, shard: usize, count: u32) {
        if let Some(counts) = self.rooms.get_mut(room) {
            counts[shard] = count;
            if counts.iter().all(|c| *c == 0) {
                self.rooms.remove(room);
            }
        } else if count > 0 {
            let mut counts = vec![0; self.conn_counts.len()].into_boxed_slice();
            counts[shard] = count;
            self.rooms.insert(room.into(), counts);
        }
    }

    /// Records this shard's new member count of `room`.
    pub fn local_room(&mut self, room: &str, count: u32) {
        if self.track_interest {
            let before = self.rooms.get(room).map_or(0, |c| c[self.me]);
            if (before == 0) != (count == 0) {
                self.interest.push((room.into(), count > 0));
            }
        }
        self.set(room, self.me, count);
        if !self.changed.contains(room) {
            self.changed.insert(room.into());
        }
    }

    /// Builds this shard's report (and forgets what it reported).
    pub fn report(&mut self, conn_count: u64, ip_count: u64, stats: Stats) -> OnlineReport {
        self.conn_counts[self.me] = conn_count;
        self.ip_counts[self.me] = ip_count;
        let me = self.me;
        let rooms = self
            .changed
            .drain()
            .map(|room| {
                let count = self.rooms.get(&room).map_or(0, |c| c[me]);
                (room.into_string(), count)
            })
            .collect();
        OnlineReport { shard: me, conn_count, ip_count, rooms, stats }
    }

    /// Applies another shard's report.
    pub fn apply(&mut self, report: &OnlineReport) {
        if report.shard >= self.conn_counts.len() || report.shard == self.me {
            return;
        }
        self.conn_counts[report.shard] = report.conn_count;
        self.ip_counts[report.shard] = report.ip_count;
        for (room, count) in &report.rooms {
            self.set(room, report.shard, *count);
        }
    }

    /// Every room with members on this node, with their count.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rooms.iter().map(|(room, counts)| (&**room, counts.iter().map(|n| *n as u64).sum()))
    }

    /// Rooms with at least one member anywhere.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Members of `room` over all shards.
    pub fn room(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |c| c.iter().map(|n| *n as u64).sum())
    }

    /// Rooms whose key starts with `type://`, biggest first, at most `limit`:
    /// (id part, count).
    pub fn top(&self, room_type: &str, limit: usize) -> Vec<(String, u64)> {
        let prefix = format!("{room_type}://");
        let mut rooms: Vec<(String, u64)> = self
            .rooms
            .iter()
            .filter_map(|(room, counts)| {
                let id = room.strip_prefix(prefix.as_str())?;
                Some((id.to_string(), counts.iter().map(|n| *n as u64).sum()))
            })
            .collect();
        rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rooms.truncate(limit);
        rooms
    }

    /// (connections, distinct client IPs) over all shards. This shard's
    /// own figures are passed in live; the others are from their reports.
    pub fn totals(&self, my_conn_count: u64, my_ip_count: u64) -> (u64, u64) {
        let mut conns = my_conn_count;
        let mut ips = my_ip_count;
        for shard in (0..self.conn_counts.len()).filter(|s| *s != self.me) {
            conns += self.conn_counts[shard];
            ips += self.ip_counts[shard];
        }
        (conns, ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_over_shards_and_reports_carry_changes() {
        let mut a = Online::new(0, 2);
        let mut b = Online::new(1, 2);
        a.local_room("live://1", 3);
        b.local_room("live://1", 2);
        b.local_room("live://2", 5);
        a.apply(&b.report(7, 1, Stats::default()));
        assert_eq!(a.room("live://1"), 5);
        assert_eq!(a.top("live", 10), vec![("1".to_string(), 5), ("2".to_string(), 5)]);
        assert_eq!(a.top("live", 1).len(), 1);
        assert_eq!(a.totals(3, 1), (10, 2));
        // A report only carries what changed since the previous one.
        assert!(b.report(7, 1, Stats::default()).rooms.is_empty());
        b.local_room("live://2", 0);
        a.apply(&b.report(2, 1, Stats::default()));
        assert_eq!(a.room("live://2"), 0);
        assert!(a.top("live", 10).iter().all(|(id, _)| id != "2"));
    }
}
