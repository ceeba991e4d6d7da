//! The configuration: read once from TOML at start, validated, then shared
//! read-only (`Arc<Config>`) by every shard.
//!
//! Owns: every tunable limit and its default. Must never: change after start
//! or be consulted for anything but plain reads on the hot path.
//!
//! Every key is optional; `configs/corecast.toml` lists them all with their
//! defaults, units and goim equivalents. The rules a config must meet are
//! in `validate`.

mod validate;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// What happens when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Close the connection as a slow consumer (counted, logged at info level).
    Close,
    /// Drop the new message, as goim does (counted, logged at warn level once a second).
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub shards: usize,
    pub log_level: String,
    /// "text" or "json" (one object per line: ts, level, shard, message, fields).
    pub log_format: String,
    pub online_sync_ms: u64,
    pub shutdown_grace_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            shards: 0,
            log_level: "warn".into(),
            log_format: "text".into(),
            online_sync_ms: 500,
            shutdown_grace_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpSection {
    pub bind: String,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection { bind: "0.0.0.0:3101".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub bind: String,
    pub idle_timeout_ms: u64,
    /// A request must be whole within this long from its first byte, plus
    /// the time its bytes take at `request_body_bytes_per_s_min`.
    pub request_timeout_ms: u64,
    /// The slowest rate a request's bytes may arrive at past `request_timeout_ms`.
    pub request_body_bytes_per_s_min: u64,
    /// Pushes need `Authorization: Bearer <this>`; "" = no token needed.
    pub push_bearer_token: String,
    /// Pushes only from these networks (CIDR, or single addresses); [] = any.
    pub push_allowed_networks: Vec<String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            bind: "0.0.0.0:3111".into(),
            idle_timeout_ms: 60_000,
            request_timeout_ms: 10_000,
            request_body_bytes_per_s_min: 1024,
            push_bearer_token: String::new(),
            push_allowed_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsSection {
    /// WebSocket listener (goim: 3102); empty = no WebSocket.
    pub bind: String,
    /// The upgrade path (goim: /sub).
    pub path: String,
    /// Origins allowed to connect from a browser; empty = every origin.
    pub allowed_origins: Vec<String>,
    /// permessage-deflate (RFC 7692) for clients that offer it, WS and WSS.
    pub compression: Switch,
    /// Pushes (op-9 messages) smaller than this go out uncompressed.
    pub compression_min_bytes: usize,
    /// zlib level, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// Compress a push again for every member instead of once per shard:
    /// the naive way, for scripts/bench-deflate.sh to measure what sharing
    /// buys. Never faster; leave it off.
    pub compression_per_member: bool,
}

impl Default for WsSection {
    fn default() -> Self {
        WsSection {
            bind: "0.0.0.0:3102".into(),
            path: "/sub".into(),
            allowed_origins: Vec::new(),
            compression: Switch::On,
            compression_min_bytes: 256,
            compression_level: 1,
            compression_per_member: false,
        }
    }
}

/// A feature turned `"on"` or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WssSection {
    /// WSS listener (goim: 3103); empty = no WSS (the default).
    pub bind: String,
    /// PEM certificate chain.
    pub cert_path: String,
    /// PEM private key.
    pub key_path: String,
    /// More certificates, chosen by the server name the client asks for (SNI).
    pub sni: Vec<SniCertificate>,
    /// TLS handshakes in progress per shard (their crypto runs on the
    /// shard); past it a new WSS connection is closed at once, counted.
    pub handshakes_per_shard_max: usize,
}

impl Default for WssSection {
    fn default() -> Self {
        WssSection {
            bind: String::new(),
            cert_path: String::new(),
            key_path: String::new(),
            sni: Vec::new(),
            handshakes_per_shard_max: 256,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_name: String,
    pub cert_path: String,
    pub key_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSection {
    /// Serve the demo page at http://<http.bind>/demo/.
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolSection {
    pub handshake_timeout_ms: u64,
    pub heartbeat_s: u64,
    pub heartbeat_max: u64,
}

impl Default for ProtocolSection {
    fn default() -> Self {
        ProtocolSection { handshake_timeout_ms: 5000, heartbeat_s: 240, heartbeat_max: 2 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub frame_body_bytes_max: usize,
    pub request_header_bytes_max: usize,
    pub request_body_bytes_max: usize,
    pub request_targets_max: usize,
    pub connections_per_shard_max: usize,
    pub outbound_bytes_per_connection_max: usize,
    pub slow_consumer_policy: SlowConsumerPolicy,
    pub mesh_pending_messages_max: usize,
    /// Bytes of messages (frames, key lists, replays) a shard has sent to
    /// others and they have not applied yet; past it HTTP publishers wait.
    pub mesh_pending_bytes_max: usize,
    pub api_connections_per_shard_max: usize,
    /// New client connections per IP per second (each shard admits its
    /// share, rounded up); past it they are closed at once. 0 = no limit.
    pub connections_per_ip_per_s_max: u32,
    /// Upstream goim frames per connection per second; past it the
    /// connection is closed (`upstream_rate`). 0 = no limit.
    pub upstream_frames_per_s_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            frame_body_bytes_max: 4096,
            request_header_bytes_max: 8192,
            request_body_bytes_max: 1 << 20,
            request_targets_max: 10_000,
            connections_per_shard_max: 0,
            outbound_bytes_per_connection_max: 256 * 1024,
            slow_consumer_policy: SlowConsumerPolicy::Close,
            mesh_pending_messages_max: 65_536,
            mesh_pending_bytes_max: 64 << 20,
            connections_per_ip_per_s_max: 0,
            upstream_frames_per_s_max: 0,
            api_connections_per_shard_max: 1024,
        }
    }
}

/// Room history (docs/positions.md section 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    /// Pushes kept per room; 0 keeps none (offsets and positions still work).
    pub pushes_per_room_max: usize,
    /// How long a push is kept.
    pub age_max_s: u64,
    /// Bytes of history in the whole process (frames plus bookkeeping),
    /// divided evenly between the shards; past it the oldest pushes go first.
    pub bytes_max: usize,
    /// Default and maximum `limit` of GET /goim/room/history.
    pub api_limit_max: u32,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection { pushes_per_room_max: 100, age_max_s: 300, bytes_max: 64 << 20, api_limit_max: 100 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    pub domain: String,
    pub addr: String,
    pub hostname: String,
    pub region: String,
    pub zone: String,
    pub env: String,
    pub weight: u32,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            domain: "conn.goim.io".into(),
            addr: "127.0.0.1".into(),
            hostname: "corecast".into(),
            region: "sh".into(),
            zone: "sh001".into(),
            env: "dev".into(),
            weight: 10,
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 3103,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffSection {
    pub max_delay: u32,
    pub base_delay: u32,
    pub factor: f32,
    pub jitter: f32,
}

impl Default for BackoffSection {
    fn default() -> Self {
        BackoffSection { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3 }
    }
}

/// A cluster of nodes over NATS (docs/cluster.md); no `nats_urls` = one node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS servers, tried in turn; empty = single node.
    pub nats_urls: Vec<String>,
    /// Unique per node; "" = this machine's hostname and the TCP port.
    pub node_id: String,
    /// Several clusters can share one NATS under different prefixes.
    pub subject_prefix: String,
    /// How often a node publishes its counts and liveness.
    pub report_ms: u64,
    /// A node silent this long is dropped: its counts, its instance, and
    /// the rooms it sequenced (they start new epochs elsewhere).
    pub node_timeout_ms: u64,
    /// Bytes each shard may have queued for the bus before a publish fails
    /// (its push is answered -500 and counted).
    pub bus_outbound_bytes_max: usize,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            nats_urls: Vec::new(),
            node_id: String::new(),
            subject_prefix: "corecast".into(),
            report_ms: 1000,
            node_timeout_ms: 5000,
            bus_outbound_bytes_max: 64 << 20,
        }
    }
}

impl ClusterSection {
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }
}

/// Who may connect: verified client auth tokens (`protocol::jwt`) and/or
/// the business back end's answer (`protocol::auth_url`); both off by
/// default, as goim.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// "" (off: the goim token is trusted), "HS256", "RS256" or "ES256".
    pub jwt_algorithm: String,
    /// The shared secret for HS256.
    pub jwt_secret: String,
    /// PEM public key for RS256 / ES256.
    pub jwt_public_key_path: String,
    /// "" (off) or `http://host:port/path`: every auth frame is POSTed
    /// there and only a 2xx answer admits the client.
    pub url: String,
    /// No answer within this long refuses the client (`auth_unavailable`).
    pub url_timeout_ms: u64,
    /// Calls one shard has open at once; a client past it is refused at
    /// once (`auth_unavailable`, counted as busy).
    pub url_calls_in_flight_per_shard_max: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            jwt_algorithm: String::new(),
            jwt_secret: String::new(),
            jwt_public_key_path: String::new(),
            url: String::new(),
            url_timeout_ms: 1000,
            url_calls_in_flight_per_shard_max: 64,
        }
    }
}

/// The whole configuration, as read from the file (unknown keys are refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub tcp: TcpSection,
    pub http: HttpSection,
    pub ws: WsSection,
    pub wss: WssSection,
    pub demo: DemoSection,
    pub protocol: ProtocolSection,
    pub limits: LimitsSection,
    pub history: HistorySection,
    pub node: NodeSection,
    pub backoff: BackoffSection,
    pub cluster: ClusterSection,
    pub auth: AuthSection,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| format!("bad config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a `host:port` bind address.
    pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
        text.parse().map_err(|_| format!("bad config: bind address {text:?} is not ip:port"))
    }

    /// Idle deadline after auth: heartbeat x heartbeat_max (goim's rule).
    pub fn idle_deadline_ms(&self) -> u64 {
        self.protocol.heartbeat_s * 1000 * self.protocol.heartbeat_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_matches_the_defaults() {
        let text = include_str!("../configs/corecast.toml");
        let config = Config::parse(text).expect("shipped config must parse");
        let defaults = Config::parse("").expect("empty config must parse");
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
        assert_eq!(config.limits.frame_body_bytes_max, 4096);
        assert_eq!(config.tcp.bind, "0.0.0.0:3101");
        assert_eq!(config.http.bind, "0.0.0.0:3111");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("[server]\nshardz = 2\n").is_err());
        assert!(Config::parse("[limits]\nframe_body_bytes_max = 0\n").is_err());
        assert!(Config::parse("[tcp]\nbind = \"nonsense\"\n").is_err());
        assert!(Config::parse("[server]\nlog_level = \"loud\"\n").is_err());
        assert!(Config::parse("[limits]\nslow_consumer_policy = \"drop\"\n").is_ok());
    }
}
