//! Why a connection ended. Every exit path sets exactly one reason; the
//! shard counts them and logs them at debug level.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or reset the connection.
    ClientClosed,
    /// No auth frame within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// A frame broke goim's framing rules (bad lengths).
    BadFrame,
    /// The auth token was not valid JSON.
    BadToken,
    /// No heartbeat within heartbeat x heartbeat_max.
    IdleTimeout,
    /// The outbound queue passed `outbound_bytes_per_connection_max`.
    SlowConsumer,
    /// A newer connection authenticated with the same key.
    Replaced,
    /// The server is shutting down.
    Shutdown,
    /// A socket error other than the peer closing.
    IoError,
    /// A WebSocket upgrade request was refused (bad path, version, key, origin).
    BadHandshake,
    /// Cluster: pushes of the connection's room were lost on the bus (a gap
    /// in its offsets); a connection with positions is closed rather than
    /// shown a gap, and recovers when it reconnects.
    BusGap,
    /// More upstream frames in a second than `limits.upstream_frames_per_s_max`.
    UpstreamRate,
    /// `[auth]` verifies tokens and this one was forged, expired, for
    /// another mid or room, or missing (or a room change left its grant).
    TokenRefused,
    /// `[auth] url` answered with a status other than 2xx.
    AuthDenied,
    /// `[auth] url` gave no usable answer in time (or too many calls were
    /// in flight): the check fails closed.
    AuthUnavailable,
}

impl CloseReason {
    pub const ALL: [CloseReason; 15] = [
        CloseReason::ClientClosed,
        CloseReason::HandshakeTimeout,
        CloseReason::BadFrame,
        CloseReason::BadToken,
        CloseReason::IdleTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Replaced,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::BadHandshake,
        CloseReason::BusGap,
        CloseReason::UpstreamRate,
        CloseReason::TokenRefused,
        CloseReason::AuthDenied,
        CloseReason::AuthUnavailable,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::BadToken => "bad_token",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Replaced => "replaced",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::BadHandshake => "bad_handshake",
            CloseReason::BusGap => "bus_gap",
            CloseReason::UpstreamRate => "upstream_rate",
            CloseReason::TokenRefused => "token_refused",
            CloseReason::AuthDenied => "auth_denied",
            CloseReason::AuthUnavailable => "auth_unavailable",
        }
    }
}
