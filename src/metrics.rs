//! Counters and their Prometheus text exposition (`GET /metrics`).
//!
//! Owns: the counter set of a shard. Each shard counts in plain integers
//! (only it writes them) and ships a copy to the others with its online
//! report, so any shard can answer a scrape; figures of other shards are at
//! most `online_sync_ms` old. Must never: be incremented per frame inside a
//! loop when a total can be added once.

use crate::shard::close::CloseReason;
use crate::shard::sequencer::Refusal;
use std::fmt::Write;

/// Counters of one shard.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections refused at `connections_per_shard_max`.
    pub refused_full: u64,
    /// Client connections closed, by reason.
    pub closed: [u64; CloseReason::ALL.len()],
    /// Messages dropped at the outbound bound (policy "drop").
    pub dropped_messages: u64,
    /// Pushed frames queued to client connections.
    pub frames_queued: u64,
    /// `sendmsg` calls made by the flusher.
    pub writes: u64,
    /// Room pushes given an offset by this shard's sequencer.
    pub pushes_sequenced: u64,
    /// Recoveries answered with the whole missed range.
    pub recoveries_served: u64,
    /// Recoveries refused, by `Refusal`.
    pub recoveries_refused: [u64; Refusal::ALL.len()],
    /// Gauge: bytes of history held by this shard's sequencer.
    pub history_bytes: u64,
    /// Gauge: pushes kept in this shard's history.
    pub history_pushes: u64,
    /// Gauge: 1 while this shard's bus connection is up (summed: shards connected).
    pub bus_connected: u64,
    pub bus_messages_in: u64,
    pub bus_messages_out: u64,
    pub bus_reconnects: u64,
    /// Pushes answered -500 because the bus could not take them.
    pub bus_pushes_failed: u64,
    /// Bus messages that did not decode (ignored).
    pub bus_bad_messages: u64,
    /// Room pushes the bus lost before this shard (gaps in a room's offsets).
    pub bus_room_pushes_missed: u64,
    /// Room pushes that came twice (dropped).
    pub bus_room_pushes_duplicate: u64,
    /// Gauge: subscriptions this shard holds on the bus.
    pub bus_subscriptions: u64,
    /// Gauge: live nodes this shard knows of, itself included (min over shards).
    pub cluster_nodes_live: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.refused_full += other.refused_full;
        for (total, count) in self.closed.iter_mut().zip(other.closed.iter()) {
            *total += count;
        }
        self.dropped_messages += other.dropped_messages;
        self.frames_queued += other.frames_queued;
        self.writes += other.writes;
        self.pushes_sequenced += other.pushes_sequenced;
        self.recoveries_served += other.recoveries_served;
        for (total, count) in self.recoveries_refused.iter_mut().zip(other.recoveries_refused.iter()) {
            *total += count;
        }
        self.history_bytes += other.history_bytes;
        self.history_pushes += other.history_pushes;
        self.bus_connected += other.bus_connected;
        self.bus_messages_in += other.bus_messages_in;
        self.bus_messages_out += other.bus_messages_out;
        self.bus_reconnects += other.bus_reconnects;
        self.bus_pushes_failed += other.bus_pushes_failed;
        self.bus_bad_messages += other.bus_bad_messages;
        self.bus_room_pushes_missed += other.bus_room_pushes_missed;
        self.bus_room_pushes_duplicate += other.bus_room_pushes_duplicate;
        self.bus_subscriptions += other.bus_subscriptions;
        // The view every shard shares: the fewest nodes any shard knows.
        self.cluster_nodes_live = self.cluster_nodes_live.min(other.cluster_nodes_live);
    }
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub connections: u64,
    pub client_ips: u64,
    pub rooms: u64,
    pub shards: u64,
}

/// Renders the Prometheus text format.
pub fn render(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    metric("corecast_connections", "gauge", "Client connections open.", gauges.connections);
    metric("corecast_client_ips", "gauge", "Distinct client IP addresses connected.", gauges.client_ips);
    metric("corecast_rooms", "gauge", "Rooms with at least one member.", gauges.rooms);
    metric("corecast_shards", "gauge", "Shards (pinned executors).", gauges.shards);
    metric("corecast_connections_accepted_total", "counter", "Client connections accepted.", stats.accepted);
    metric(
        "corecast_connections_refused_total",
        "counter",
        "Client connections refused at connections_per_shard_max.",
        stats.refused_full,
    );
    metric(
        "corecast_messages_dropped_total",
        "counter",
        "Messages dropped at outbound_bytes_per_connection_max (policy drop).",
        stats.dropped_messages,
    );
    metric(
        "corecast_frames_queued_total",
        "counter",
        "Pushed frames queued to client connections.",
        stats.frames_queued,
    );
    metric("corecast_writes_total", "counter", "Coalesced socket writes by the flushers.", stats.writes);
    metric(
        "corecast_log_lines_suppressed_total",
        "counter",
        "Log lines not written by the per-site rate limit (log::LINES_PER_SITE_PER_S).",
        crate::log::suppressed_total(),
    );
    metric(
        "corecast_room_pushes_sequenced_total",
        "counter",
        "Room pushes given an offset by their room's sequencer.",
        stats.pushes_sequenced,
    );
    metric(
        "corecast_history_bytes",
        "gauge",
        "Bytes held by room histories (kept frames and bookkeeping).",
        stats.history_bytes,
    );
    metric("corecast_history_pushes", "gauge", "Pushes kept in room histories.", stats.history_pushes);
    metric(
        "corecast_recoveries_served_total",
        "counter",
        "Recoveries answered with every missed push.",
        stats.recoveries_served,
    );
    metric(
        "corecast_cluster_bus_connected_shards",
        "gauge",
        "Shards whose cluster bus (NATS) connection is up (0 on a single node).",
        stats.bus_connected,
    );
    metric(
        "corecast_cluster_nodes_live",
        "gauge",
        "Live cluster nodes every shard of this node knows of, itself included (0 on a single node).",
        stats.cluster_nodes_live,
    );
    metric(
        "corecast_cluster_bus_messages_in_total",
        "counter",
        "Messages received from the bus.",
        stats.bus_messages_in,
    );
    metric(
        "corecast_cluster_bus_messages_out_total",
        "counter",
        "Messages published to the bus.",
        stats.bus_messages_out,
    );
    metric("corecast_cluster_bus_reconnects_total", "counter", "Bus connections re-established.", stats.bus_reconnects);
    metric(
        "corecast_cluster_pushes_failed_total",
        "counter",
        "Pushes answered -500 because the bus could not take them (down, full, too large).",
        stats.bus_pushes_failed,
    );
    metric(
        "corecast_cluster_bus_bad_messages_total",
        "counter",
        "Bus messages that did not decode (ignored).",
        stats.bus_bad_messages,
    );
    metric("corecast_cluster_bus_subscriptions", "gauge", "Subscriptions held on the bus.", stats.bus_subscriptions);
    metric(
        "corecast_cluster_room_pushes_missed_total",
        "counter",
        "Room pushes lost on the bus before a shard (gaps in offsets; members with positions closed as bus_gap).",
        stats.bus_room_pushes_missed,
    );
    metric(
        "corecast_cluster_room_pushes_duplicate_total",
        "counter",
        "Room pushes that arrived twice on the bus (dropped).",
        stats.bus_room_pushes_duplicate,
    );
    by_reason(
        &mut out,
        "corecast_recoveries_refused_total",
        "Recoveries refused (recovered false), by reason.",
        Refusal::ALL.iter().map(|r| (r.name(), stats.recoveries_refused[r.index()])),
    );
    by_reason(
        &mut out,
        "corecast_connections_closed_total",
        "Client connections closed, by reason.",
        CloseReason::ALL.iter().map(|r| (r.name(), stats.closed[r.index()])),
    );
    out
}

/// A counter with one series per `reason` label.
fn by_reason<'a>(out: &mut String, name: &str, help: &str, series: impl Iterator<Item = (&'a str, u64)>) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (reason, value) in series {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_and_sums_shards() {
        let mut total = Stats::default();
        let mut one = Stats { accepted: 2, writes: 5, ..Stats::default() };
        one.closed[CloseReason::SlowConsumer.index()] = 1;
        total.add(&one);
        total.add(&one);
        let text = render(&total, &Gauges { connections: 3, client_ips: 1, rooms: 2, shards: 2 });
        assert!(text.contains("corecast_connections 3\n"));
        assert!(text.contains("corecast_connections_accepted_total 4\n"));
        assert!(text.contains("corecast_writes_total 10\n"));
        assert!(text.contains("corecast_connections_closed_total{reason=\"slow_consumer\"} 2\n"));
    }
}
