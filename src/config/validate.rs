//! Validating a parsed configuration: every range, and the settings that
//! contradict each other (listeners on one port, a JWT key without its
//! algorithm, ...). A refusal names the key.
//!
//! Owns: the rules a config must meet to start. Must never: change a value
//! (the config is used exactly as written, or refused).

use super::Config;
use std::net::SocketAddr;

/// Hard bounds a config must respect; checked at start so a bad file refuses
/// to start instead of failing later under load.
const FRAME_BODY_BYTES_MAX_CEILING: usize = 1 << 20;
const REQUEST_HEADER_BYTES_MIN: usize = 1024;
const SHARDS_MAX: usize = 256;

impl Config {
    /// Refuses a config that breaks a range or contradicts itself, naming the key.
    pub(super) fn validate(&self) -> Result<(), String> {
        let limits = &self.limits;
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("bad config: {what}"))
            }
        };
        check(self.server.shards <= SHARDS_MAX, "server.shards must be at most 256")?;
        check(self.server.online_sync_ms >= 10, "server.online_sync_ms must be at least 10")?;
        check(
            (1..=FRAME_BODY_BYTES_MAX_CEILING).contains(&limits.frame_body_bytes_max),
            "limits.frame_body_bytes_max must be 1..=1048576",
        )?;
        check(
            limits.request_header_bytes_max >= REQUEST_HEADER_BYTES_MIN,
            "limits.request_header_bytes_max must be at least 1024",
        )?;
        check(limits.request_targets_max >= 1, "limits.request_targets_max must be at least 1")?;
        check(limits.api_connections_per_shard_max >= 1, "limits.api_connections_per_shard_max must be at least 1")?;
        check(
            limits.outbound_bytes_per_connection_max >= 4096,
            "limits.outbound_bytes_per_connection_max must be at least 4096",
        )?;
        check(limits.mesh_pending_messages_max >= 16, "limits.mesh_pending_messages_max must be at least 16")?;
        check(
            limits.mesh_pending_bytes_max >= limits.request_body_bytes_max,
            "limits.mesh_pending_bytes_max must be at least limits.request_body_bytes_max",
        )?;
        check(self.http.request_timeout_ms >= 1, "http.request_timeout_ms must be at least 1")?;
        check(self.http.request_body_bytes_per_s_min >= 1, "http.request_body_bytes_per_s_min must be at least 1")?;
        check(self.history.api_limit_max >= 1, "history.api_limit_max must be at least 1")?;
        check(self.history.pushes_per_room_max <= 1 << 20, "history.pushes_per_room_max must be at most 1048576")?;
        check(self.protocol.heartbeat_s >= 1, "protocol.heartbeat_s must be at least 1")?;
        check(self.protocol.heartbeat_max >= 1, "protocol.heartbeat_max must be at least 1")?;
        check(self.protocol.handshake_timeout_ms >= 1, "protocol.handshake_timeout_ms must be at least 1")?;
        Self::parse_addr(&self.tcp.bind)?;
        Self::parse_addr(&self.http.bind)?;
        if !self.ws.bind.is_empty() {
            Self::parse_addr(&self.ws.bind)?;
        }
        check(self.ws.path.starts_with('/'), "ws.path must start with /")?;
        check(self.auth.url_timeout_ms >= 1, "auth.url_timeout_ms must be at least 1")?;
        check(
            self.auth.url.is_empty() || self.auth.url_timeout_ms < self.protocol.handshake_timeout_ms,
            "auth.url_timeout_ms must be less than protocol.handshake_timeout_ms (the handshake deadline would close every client the auth URL is slow to answer)",
        )?;
        check(
            self.auth.url_calls_in_flight_per_shard_max >= 1,
            "auth.url_calls_in_flight_per_shard_max must be at least 1",
        )?;
        check((1..=9).contains(&self.ws.compression_level), "ws.compression_level must be 1 to 9")?;
        check(self.wss.handshakes_per_shard_max >= 1, "wss.handshakes_per_shard_max must be at least 1")?;
        if !self.wss.bind.is_empty() {
            Self::parse_addr(&self.wss.bind)?;
            check(
                !self.wss.cert_path.is_empty() && !self.wss.key_path.is_empty(),
                "wss.bind needs wss.cert_path and wss.key_path",
            )?;
        }
        self.check_listeners_apart()?;
        self.check_settings_agree()?;
        let cluster = &self.cluster;
        check(cluster.report_ms >= 10, "cluster.report_ms must be at least 10")?;
        check(
            cluster.node_timeout_ms > cluster.report_ms,
            "cluster.node_timeout_ms must be more than cluster.report_ms",
        )?;
        check(cluster.bus_outbound_bytes_max >= 1 << 20, "cluster.bus_outbound_bytes_max must be at least 1048576")?;
        check(
            matches!(self.server.log_format.as_str(), "text" | "json"),
            "server.log_format must be \"text\" or \"json\"",
        )?;
        crate::log::Level::parse(&self.server.log_level)
            .ok_or_else(|| format!("bad config: unknown log level {:?}", self.server.log_level))?;
        Ok(())
    }

    /// Settings that each pass alone but contradict another one (the
    /// operator meant something this config would not do): refused, naming
    /// both keys.
    fn check_settings_agree(&self) -> Result<(), String> {
        let refuse = |why: String| Err(format!("bad config: {why}"));
        let auth = &self.auth;
        let key_given = !auth.jwt_public_key_path.is_empty();
        let secret_given = !auth.jwt_secret.is_empty();
        match auth.jwt_algorithm.as_str() {
            "" if key_given || secret_given => {
                return refuse(
                    "auth.jwt_secret or auth.jwt_public_key_path is set but auth.jwt_algorithm is empty: \
                     tokens would not be verified"
                        .into(),
                )
            }
            "HS256" if key_given => {
                return refuse(
                    "auth.jwt_public_key_path is set but auth.jwt_algorithm is HS256, which uses auth.jwt_secret"
                        .into(),
                )
            }
            algorithm @ ("RS256" | "ES256") if secret_given => {
                return refuse(format!(
                    "auth.jwt_secret is set but auth.jwt_algorithm is {algorithm}, which uses auth.jwt_public_key_path"
                ))
            }
            _ => {}
        }
        if self.demo.enabled && self.ws.bind.is_empty() {
            return refuse("demo.enabled needs ws.bind: the demo page connects over WebSocket".into());
        }
        let cluster = &self.cluster;
        if !cluster.enabled() && !cluster.node_id.is_empty() {
            return refuse("cluster.node_id is set but cluster.nats_urls is empty: the node would run alone".into());
        }
        if cluster.enabled() && cluster.bus_outbound_bytes_max < self.limits.request_body_bytes_max + (64 << 10) {
            return refuse(
                "cluster.bus_outbound_bytes_max must be at least limits.request_body_bytes_max + 65536: \
                 the largest push must fit the bus's buffer"
                    .into(),
            );
        }
        Ok(())
    }

    /// Two listeners on one port contradict each other: every shard binds
    /// with SO_REUSEPORT, so the kernel would split one port's clients
    /// between, say, the goim TCP and the WebSocket handlers. Port 0 (any
    /// free port) never clashes; a wildcard address clashes with any
    /// address on its port.
    fn check_listeners_apart(&self) -> Result<(), String> {
        let binds = [
            ("tcp.bind", &self.tcp.bind),
            ("http.bind", &self.http.bind),
            ("ws.bind", &self.ws.bind),
            ("wss.bind", &self.wss.bind),
        ];
        let mut seen: Vec<(&str, SocketAddr)> = Vec::new();
        for (key, bind) in binds {
            if bind.is_empty() {
                continue;
            }
            let addr = Self::parse_addr(bind)?;
            if addr.port() == 0 {
                continue;
            }
            for (other_key, other) in &seen {
                let overlap = addr.ip() == other.ip() || addr.ip().is_unspecified() || other.ip().is_unspecified();
                if other.port() == addr.port() && overlap {
                    return Err(format!(
                        "bad config: {other_key} ({other}) and {key} ({addr}) are on the same port; each listener needs its own"
                    ));
                }
            }
            seen.push((key, addr));
        }
        Ok(())
    }
}
