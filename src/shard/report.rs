//! A node's liveness and counts on the bus: the reports shard 0 publishes
//! every `report_ms`, what every shard does with the others' reports, and
//! what a change of the live nodes does to the rooms this shard sequences.
//!
//! Owns: report publishing (in parts under the server's max_payload) and the
//! consequences of membership changes. Must never: keep sequencing a room
//! that another live node now wins (it would resume an old epoch later).

use crate::route::command::Command;
use crate::route::wire::Report;
use crate::shard::Shard;

/// Report parts are cut at this share of the server's max_payload.
const REPORT_PART_SHARE: usize = 2;

impl Shard {
    pub(super) fn on_report(&self, report: &Report) {
        let Some(bus) = &self.bus else { return };
        let unix_ns = self.unix_ms() as u128 * 1_000_000;
        let change = bus.nodes.borrow_mut().apply(report, self.now_ms(), unix_ns);
        if change == crate::route::nodes::Change::Membership {
            crate::log_info!("shard {}: node {} joined the cluster", self.id, report.node);
            self.on_membership();
            if self.id == 0 {
                // The newcomer hears about this node now, not a report_ms later.
                self.publish_report();
            }
        }
    }

    /// The live nodes changed: rooms this shard sequenced that another node
    /// wins now are dropped (if they come back they start a new epoch, so
    /// no client recovers across pushes it never saw numbered here).
    fn on_membership(&self) {
        let Some(bus) = &self.bus else { return };
        let nodes = bus.nodes.borrow();
        let mut sequencer = self.sequencer.borrow_mut();
        let dropped = sequencer.retain_rooms(|room| nodes.is_me(nodes.sequencer_of(room, self.shards).0));
        if dropped > 0 {
            crate::log_info!("shard {}: {dropped} rooms now sequenced by another node", self.id);
        }
        self.note_history(&sequencer);
    }

    /// Every tick: silent nodes are dropped; shard 0 reports when due.
    pub fn bus_tick(&self, report_due: bool) {
        let Some(bus) = &self.bus else { return };
        let change = bus.nodes.borrow_mut().expire(self.now_ms());
        if change == crate::route::nodes::Change::Membership {
            crate::log_warn!("shard {}: a node went silent and was dropped from the cluster", self.id);
            self.on_membership();
        }
        if report_due && self.id == 0 {
            self.publish_report();
        }
    }

    /// Shard 0 publishes the node's counts, in parts under max_payload.
    pub fn publish_report(&self) {
        let Some(bus) = &self.bus else { return };
        if !bus.connected() {
            return;
        }
        let (conn_count, ip_count) = {
            let (conns, ips) = self.local_counts();
            self.state.borrow().online.totals(conns, ips)
        };
        let rooms: Vec<(String, u32)> = self
            .state
            .borrow()
            .online
            .rooms()
            .map(|(room, count)| (room.to_string(), count.min(u32::MAX as u64) as u32))
            .collect();
        let part_bytes_max = bus.payload_max() / REPORT_PART_SHARE;
        let mut parts: Vec<Vec<(String, u32)>> = vec![Vec::new()];
        let mut part_bytes = 0;
        for (room, count) in rooms {
            let entry_bytes = room.len() + 8;
            if part_bytes + entry_bytes > part_bytes_max && part_bytes > 0 {
                parts.push(Vec::new());
                part_bytes = 0;
            }
            part_bytes += entry_bytes;
            if let Some(part) = parts.last_mut() {
                part.push((room, count));
            }
        }
        let seq = bus.report_seq.get() + 1;
        bus.report_seq.set(seq);
        let node = &self.config.node;
        let count = parts.len() as u32;
        for (index, rooms) in parts.into_iter().enumerate() {
            let report = Report {
                node: bus.node_id.to_string(),
                seq,
                part: index as u32,
                parts: count,
                hostname: node.hostname.clone(),
                addr: node.addr.clone(),
                domain: node.domain.clone(),
                tcp_port: node.tcp_port,
                ws_port: node.ws_port,
                wss_port: node.wss_port,
                weight: node.weight,
                shards: self.shards as u16,
                conn_count,
                ip_count,
                rooms,
            };
            if let Err(e) = bus.publish(&bus.subjects.report(), &Command::Report(Box::new(report))) {
                crate::log_warn!("shard {}: report not published: {}", self.id, e.reason());
                return;
            }
        }
    }

    /// Copies the bus's gauges into this shard's counters (for /metrics).
    pub fn note_bus_stats(&self) {
        let Some(bus) = &self.bus else { return };
        let mut stats = self.stats.borrow_mut();
        stats.bus_messages_out = bus.messages_out();
        stats.cluster_nodes_live = bus.nodes.borrow().live_count() as u64;
        stats.bus_subscriptions = bus.subscription_count() as u64;
    }
}
