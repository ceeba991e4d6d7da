//! corecast: a goim-compatible push server, thread-per-core on glommio.
//! Client sockets sit in each shard's epoll set (`shard::poller`: a
//! connection is state, not an io_uring source and a task); the HTTP API,
//! the shard mesh and the cluster bus use glommio's io_uring rings.
//!
//! # Layout
//!
//! - `config`: the TOML configuration, validated once, shared read-only.
//! - `metrics`: counters and the Prometheus text of `GET /metrics`.
//! - `protocol`: the goim frame codec and auth token (sans-IO).
//! - `http`: the push / online / nodes API: parser, query decoding, the
//!   endpoints, and the per-shard connection loop.
//! - `shard`: everything a core owns: connections (`conns`, `session`),
//!   rooms, the order and history of the rooms it sequences (`sequencer`,
//!   `positions`), its directory partition, online counts, outboxes, the
//!   fan-out and the flusher, the mesh to other shards with its
//!   acknowledgements (`ack`), and the runtime that starts it all.
//! - `tls`: the WSS port's TLS on rustls.
//! - `ws`: the WebSocket wire format and upgrade handshake (sans-IO).
//!
//! # Ownership map
//!
//! Each shard owns its connections, their rooms and outboxes, its part of
//! the key/mid/IP directory (by hash) and its copy of the online counts.
//! Only `ShardMsg` values cross cores, through `shard::mesh`; frames inside
//! them are `Bytes` encoded once. The one process-wide mutable value is the
//! shutdown flag.
//!
//! # Data flow
//!
//! accept → handshake/auth → register (room, directory; with positions,
//! through the room's sequencer) → push (HTTP API → room sequencer or key
//! directory → mesh → dispatch into room batches and outboxes; the reply
//! waits for every shard's acknowledgement) → fan-out → flusher → socket.

pub mod cluster;
pub mod config;
pub mod http;
pub mod latency;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod shard;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod tls;
pub mod ws;
