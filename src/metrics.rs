//! Counters and their Prometheus text exposition (`GET /metrics`).
//!
//! Owns: the counter set of a shard. Each shard counts in plain integers
//! (only it writes them) and ships a copy to the others with its online
//! report, so any shard can answer a scrape; figures of other shards are at
//! most `online_sync_ms` old. Must never: be incremented per frame inside a
//! loop when a total can be added once.

use crate::conn::close::CloseReason;
use crate::latency::Latency;
use crate::order::sequencer::Refusal;
use std::fmt::Write;

/// The API endpoints, as the `endpoint` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    PushKeys,
    PushMids,
    PushRoom,
    PushAll,
    RoomHistory,
    OnlineTop,
    OnlineRoom,
    OnlineTotal,
    NodesWeighted,
    NodesInstances,
    Metrics,
    Healthz,
    Readyz,
    Demo,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 15] = [
        Endpoint::PushKeys,
        Endpoint::PushMids,
        Endpoint::PushRoom,
        Endpoint::PushAll,
        Endpoint::RoomHistory,
        Endpoint::OnlineTop,
        Endpoint::OnlineRoom,
        Endpoint::OnlineTotal,
        Endpoint::NodesWeighted,
        Endpoint::NodesInstances,
        Endpoint::Metrics,
        Endpoint::Healthz,
        Endpoint::Readyz,
        Endpoint::Demo,
        Endpoint::Other,
    ];

    /// The endpoint of a request path.
    pub fn of(path: &[u8]) -> Endpoint {
        match path {
            b"/goim/push/keys" => Endpoint::PushKeys,
            b"/goim/push/mids" => Endpoint::PushMids,
            b"/goim/push/room" => Endpoint::PushRoom,
            b"/goim/push/all" => Endpoint::PushAll,
            b"/goim/room/history" => Endpoint::RoomHistory,
            b"/goim/online/top" => Endpoint::OnlineTop,
            b"/goim/online/room" => Endpoint::OnlineRoom,
            b"/goim/online/total" => Endpoint::OnlineTotal,
            b"/goim/nodes/weighted" => Endpoint::NodesWeighted,
            b"/goim/nodes/instances" | b"/nodes/instances" => Endpoint::NodesInstances,
            b"/metrics" => Endpoint::Metrics,
            b"/healthz" => Endpoint::Healthz,
            b"/readyz" => Endpoint::Readyz,
            p if p.starts_with(b"/demo") => Endpoint::Demo,
            _ => Endpoint::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::PushKeys => "push_keys",
            Endpoint::PushMids => "push_mids",
            Endpoint::PushRoom => "push_room",
            Endpoint::PushAll => "push_all",
            Endpoint::RoomHistory => "room_history",
            Endpoint::OnlineTop => "online_top",
            Endpoint::OnlineRoom => "online_room",
            Endpoint::OnlineTotal => "online_total",
            Endpoint::NodesWeighted => "nodes_weighted",
            Endpoint::NodesInstances => "nodes_instances",
            Endpoint::Metrics => "metrics",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Demo => "demo",
            Endpoint::Other => "other",
        }
    }
}

/// Result codes of the `code` label: goim's envelope code for JSON replies,
/// the HTTP status for the others.
pub const API_CODES: [&str; 10] = ["0", "-400", "-401", "-403", "-500", "200", "404", "408", "503", "other"];

/// The `code` label index of a reply.
pub fn api_code_index(status: u16, body: &str) -> usize {
    let label = match body.strip_prefix("{\"code\":") {
        Some(rest) => rest.split(',').next().unwrap_or(""),
        None => match status {
            200 => "200",
            404 => "404",
            408 => "408",
            503 => "503",
            _ => "other",
        },
    };
    API_CODES.iter().position(|c| *c == label).unwrap_or(API_CODES.len() - 1)
}

/// Why a push frame did not reach a connection (`reason` label of
/// `corecast_messages_undelivered_total`): its queue was full (dropped, or
/// the connection closed as a slow consumer), the connection was closing,
/// it does not accept the operation (keys and mids), the bus was down.
pub const UNDELIVERED: [&str; 4] = ["queue_full", "closed", "not_accepted", "bus_down"];
pub const UNDELIVERED_QUEUE_FULL: usize = 0;
pub const UNDELIVERED_CLOSED: usize = 1;
pub const UNDELIVERED_NOT_ACCEPTED: usize = 2;

/// What a call to `[auth] url` came to (`result` label of
/// `corecast_auth_url_calls_total`); busy: refused before calling, past
/// `auth.url_calls_in_flight_per_shard_max`.
pub const AUTH_URL_RESULTS: [&str; 4] = ["allow", "deny", "unavailable", "busy"];
pub const AUTH_URL_ALLOW: usize = 0;
pub const AUTH_URL_DENY: usize = 1;
pub const AUTH_URL_UNAVAILABLE: usize = 2;
pub const AUTH_URL_BUSY: usize = 3;

/// Push kinds (`kind` label).
pub const PUSH_KINDS: [&str; 4] = ["keys", "mids", "room", "all"];
/// Client transports (`transport` label).
pub const TRANSPORTS: [&str; 3] = ["tcp", "ws", "wss"];

/// Counters of one shard.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// API replies, by endpoint and `API_CODES` index.
    pub api_requests: [[u64; API_CODES.len()]; Endpoint::ALL.len()],
    /// API request latency (request whole to reply written), by endpoint.
    pub api_latency: [Latency; Endpoint::ALL.len()],
    /// Pushes the API accepted, by `PUSH_KINDS` index.
    pub pushes: [u64; PUSH_KINDS.len()],
    /// Push frames not delivered, by `UNDELIVERED` index (bus_down is
    /// `bus_pushes_failed`).
    pub undelivered: [u64; UNDELIVERED.len()],
    /// Calls to `[auth] url`, by `AUTH_URL_RESULTS` index.
    pub auth_url_calls: [u64; AUTH_URL_RESULTS.len()],
    /// Push frames queued to connections, by `TRANSPORTS` index.
    pub deliveries: [u64; TRANSPORTS.len()],
    /// Bytes handed to client sockets (plaintext for WSS), by `TRANSPORTS` index.
    pub bytes_written: [u64; TRANSPORTS.len()],
    /// Push latency: API request whole to the bytes handed to every member's
    /// socket (one observation per push per shard; see `Shard::note_delivered`).
    pub delivery_latency: Latency,
    /// Gauge: this shard's client connections.
    pub shard_connections: u64,
    /// Gauge: bytes queued in this shard's outboxes.
    pub shard_outbox_bytes: u64,
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections refused at `connections_per_shard_max`.
    pub refused_full: u64,
    /// Client connections refused at `connections_per_ip_per_s_max`.
    pub refused_ip_rate: u64,
    /// WSS connections refused at `wss.handshakes_per_shard_max`.
    pub refused_tls_handshakes: u64,
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
    pub compression: CompressionStats,
}

/// permessage-deflate on this shard: pushes are compressed once per shard
/// and shared, so these count messages compressed, not deliveries.
#[derive(Default, Debug, Clone, Copy)]
pub struct CompressionStats {
    /// Push messages compressed (once per shard, whatever the member count).
    pub messages: u64,
    /// Their bytes before compression (the op-9 frame).
    pub bytes_in: u64,
    /// Their bytes after (the deflate payload, without the frame header).
    pub bytes_out: u64,
    /// Push messages at or above `ws.compression_min_bytes` sent plain
    /// because compressing did not make them smaller.
    pub not_paid: u64,
    /// Compressed client messages inflated.
    pub inflated: u64,
}

impl CompressionStats {
    fn add(&mut self, other: &CompressionStats) {
        self.messages += other.messages;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.not_paid += other.not_paid;
        self.inflated += other.inflated;
    }
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        for (mine, theirs) in self.api_requests.iter_mut().zip(other.api_requests.iter()) {
            for (total, count) in mine.iter_mut().zip(theirs.iter()) {
                *total += count;
            }
        }
        for (mine, theirs) in self.api_latency.iter_mut().zip(other.api_latency.iter()) {
            mine.add(theirs);
        }
        for (total, count) in self.pushes.iter_mut().zip(other.pushes.iter()) {
            *total += count;
        }
        for (total, count) in self.undelivered.iter_mut().zip(other.undelivered.iter()) {
            *total += count;
        }
        for (total, count) in self.auth_url_calls.iter_mut().zip(other.auth_url_calls.iter()) {
            *total += count;
        }
        for (total, count) in self.deliveries.iter_mut().zip(other.deliveries.iter()) {
            *total += count;
        }
        for (total, count) in self.bytes_written.iter_mut().zip(other.bytes_written.iter()) {
            *total += count;
        }
        self.delivery_latency.add(&other.delivery_latency);
        self.shard_connections += other.shard_connections;
        self.shard_outbox_bytes += other.shard_outbox_bytes;
        self.accepted += other.accepted;
        self.refused_full += other.refused_full;
        self.refused_ip_rate += other.refused_ip_rate;
        self.refused_tls_handshakes += other.refused_tls_handshakes;
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
        self.compression.add(&other.compression);
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
        "corecast_connections_rate_limited_total",
        "counter",
        "Client connections refused at connections_per_ip_per_s_max.",
        stats.refused_ip_rate,
    );
    metric(
        "corecast_wss_handshakes_refused_total",
        "counter",
        "WSS connections refused at wss.handshakes_per_shard_max TLS handshakes in progress.",
        stats.refused_tls_handshakes,
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
    let compression = &stats.compression;
    metric(
        "corecast_ws_compressed_messages_total",
        "counter",
        "Push messages compressed with permessage-deflate (once per shard, shared by its members).",
        compression.messages,
    );
    metric(
        "corecast_ws_compression_in_bytes_total",
        "counter",
        "Bytes of push messages before compression.",
        compression.bytes_in,
    );
    metric(
        "corecast_ws_compression_out_bytes_total",
        "counter",
        "Bytes of the same messages after compression.",
        compression.bytes_out,
    );
    metric(
        "corecast_ws_compression_not_paid_total",
        "counter",
        "Push messages sent uncompressed because compressing did not make them smaller.",
        compression.not_paid,
    );
    metric(
        "corecast_ws_inflated_messages_total",
        "counter",
        "Compressed client messages inflated.",
        compression.inflated,
    );
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
    by_label(
        &mut out,
        "corecast_pushes_total",
        "Pushes the API accepted, by kind.",
        "kind",
        PUSH_KINDS.iter().zip(stats.pushes.iter()).map(|(k, v)| (*k, *v)),
    );
    by_label(
        &mut out,
        "corecast_messages_undelivered_total",
        "Push frames that did not reach a connection, by reason (nothing is lost without a count).",
        "reason",
        UNDELIVERED.iter().enumerate().map(|(i, reason)| {
            let count = if i == 3 { stats.bus_pushes_failed } else { stats.undelivered[i] };
            (*reason, count)
        }),
    );
    by_label(
        &mut out,
        "corecast_auth_url_calls_total",
        "Calls to the business auth URL ([auth] url), by result.",
        "result",
        AUTH_URL_RESULTS.iter().zip(stats.auth_url_calls.iter()).map(|(r, v)| (*r, *v)),
    );
    by_label(
        &mut out,
        "corecast_deliveries_total",
        "Push frames queued to client connections, by transport.",
        "transport",
        TRANSPORTS.iter().zip(stats.deliveries.iter()).map(|(k, v)| (*k, *v)),
    );
    by_label(
        &mut out,
        "corecast_written_bytes_total",
        "Bytes handed to client sockets (plaintext for WSS), by transport.",
        "transport",
        TRANSPORTS.iter().zip(stats.bytes_written.iter()).map(|(k, v)| (*k, *v)),
    );
    let _ = write!(
        out,
        "# HELP corecast_api_requests_total API requests answered, by endpoint and result code (goim's code for JSON replies, else the HTTP status).\n# TYPE corecast_api_requests_total counter\n"
    );
    for endpoint in Endpoint::ALL {
        for (code, count) in API_CODES.iter().zip(stats.api_requests[endpoint as usize].iter()) {
            if *count > 0 {
                let _ = writeln!(
                    out,
                    "corecast_api_requests_total{{endpoint=\"{}\",code=\"{code}\"}} {count}",
                    endpoint.name()
                );
            }
        }
    }
    let _ = write!(
        out,
        "# HELP corecast_api_request_duration_seconds API request latency, request whole to reply written, by endpoint.\n# TYPE corecast_api_request_duration_seconds summary\n"
    );
    for endpoint in Endpoint::ALL {
        let latency = &stats.api_latency[endpoint as usize];
        if latency.count() > 0 {
            latency.render(
                &mut out,
                "corecast_api_request_duration_seconds",
                &format!("endpoint=\"{}\"", endpoint.name()),
            );
        }
    }
    let _ = write!(
        out,
        "# HELP corecast_push_delivery_seconds Push latency: API request whole to its bytes handed to every member's socket (one observation per push per shard).\n# TYPE corecast_push_delivery_seconds summary\n"
    );
    stats.delivery_latency.render(&mut out, "corecast_push_delivery_seconds", "");
    out
}

/// Per-shard gauges, one series per shard (skew between shards matters).
pub fn render_per_shard(out: &mut String, shards: &[Stats]) {
    let _ = write!(out, "# HELP corecast_shard_connections Client connections on each shard.\n# TYPE corecast_shard_connections gauge\n");
    for (shard, stats) in shards.iter().enumerate() {
        let _ = writeln!(out, "corecast_shard_connections{{shard=\"{shard}\"}} {}", stats.shard_connections);
    }
    let _ = write!(out, "# HELP corecast_shard_outbox_bytes Bytes queued in each shard's outboxes.\n# TYPE corecast_shard_outbox_bytes gauge\n");
    for (shard, stats) in shards.iter().enumerate() {
        let _ = writeln!(out, "corecast_shard_outbox_bytes{{shard=\"{shard}\"}} {}", stats.shard_outbox_bytes);
    }
}

/// A counter with one series per value of `label`.
fn by_label<'a>(out: &mut String, name: &str, help: &str, label: &str, series: impl Iterator<Item = (&'a str, u64)>) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (value, count) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
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
