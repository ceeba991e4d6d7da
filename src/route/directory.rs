//! This shard's part of the process-wide directory: connection keys, mids
//! and client IPs whose hash maps to this shard.
//!
//! Owns: key → connection, mid → connections, IP → connection count for its
//! hash partition. Finding a key or mid costs one hop to its owner shard
//! and one to the connection's shard, whatever the shard count. Must never:
//! be asked about a key, mid or IP that hashes elsewhere.

use crate::conn::conns::ConnRef;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Default)]
pub struct Directory {
    keys: HashMap<Box<str>, ConnRef>,
    mids: HashMap<i64, Vec<ConnRef>>,
    ips: HashMap<IpAddr, u32>,
}

impl Directory {
    /// Records `key` → `conn`; returns the connection it replaces, if any.
    pub fn register_key(&mut self, key: &str, conn: ConnRef) -> Option<ConnRef> {
        match self.keys.get_mut(key) {
            Some(existing) => Some(std::mem::replace(existing, conn)).filter(|old| *old != conn),
            None => {
                self.keys.insert(key.into(), conn);
                None
            }
        }
    }

    /// Forgets `key` only if it still points at `conn` (a newer connection
    /// with the same key keeps its entry).
    pub fn unregister_key(&mut self, key: &str, conn: ConnRef) {
        if self.keys.get(key) == Some(&conn) {
            self.keys.remove(key);
        }
    }

    pub fn key(&self, key: &str) -> Option<ConnRef> {
        self.keys.get(key).copied()
    }

    pub fn add_mid(&mut self, mid: i64, conn: ConnRef) {
        self.mids.entry(mid).or_default().push(conn);
    }

    pub fn remove_mid(&mut self, mid: i64, conn: ConnRef) {
        if let Some(conns) = self.mids.get_mut(&mid) {
            // Order within a mid does not matter: swap-remove, no shifting.
            if let Some(index) = conns.iter().position(|c| *c == conn) {
                conns.swap_remove(index);
            }
            if conns.is_empty() {
                self.mids.remove(&mid);
            }
        }
    }

    pub fn mid(&self, mid: i64) -> &[ConnRef] {
        self.mids.get(&mid).map_or(&[], |v| v.as_slice())
    }

    pub fn ip_add(&mut self, ip: IpAddr) {
        *self.ips.entry(ip).or_default() += 1;
    }

    pub fn ip_remove(&mut self, ip: IpAddr) {
        if let Some(count) = self.ips.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.ips.remove(&ip);
            }
        }
    }

    /// Distinct client IPs in this partition.
    pub fn ip_count(&self) -> usize {
        self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnRef {
        ConnRef { shard: 0, slot, generation: 0 }
    }

    #[test]
    fn a_newer_key_replaces_and_the_old_unregister_is_ignored() {
        let mut dir = Directory::default();
        assert_eq!(dir.register_key("k", conn(1)), None);
        assert_eq!(dir.register_key("k", conn(2)), Some(conn(1)));
        dir.unregister_key("k", conn(1));
        assert_eq!(dir.key("k"), Some(conn(2)));
        dir.unregister_key("k", conn(2));
        assert_eq!(dir.key("k"), None);
    }

    #[test]
    fn mids_hold_several_connections_and_ips_count_distinct() {
        let mut dir = Directory::default();
        dir.add_mid(7, conn(1));
        dir.add_mid(7, conn(2));
        assert_eq!(dir.mid(7), &[conn(1), conn(2)]);
        dir.remove_mid(7, conn(1));
        assert_eq!(dir.mid(7), &[conn(2)]);
        let ip = IpAddr::from([10, 0, 0, 1]);
        dir.ip_add(ip);
        dir.ip_add(ip);
        assert_eq!(dir.ip_count(), 1);
        dir.ip_remove(ip);
        assert_eq!(dir.ip_count(), 1);
        dir.ip_remove(ip);
        assert_eq!(dir.ip_count(), 0);
    }
}
