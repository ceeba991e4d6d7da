//! corecast: a goim-compatible push server, thread-per-core on glommio.
//! Client sockets sit in each shard's epoll set (`io::poller`: a
//! connection is state, not an io_uring source and a task); the HTTP API,
//! the shard mesh and the cluster bus use glommio's io_uring rings.
//!
//! # Layout: folders in the order a push meets them
//!
//! Each folder depends only on the ones listed above it (the `layering`
//! test reads the `use` lines and holds this):
//!
//! - `config`, `log`, `latency`, `signal`, `lifecycle`: the base every
//!   layer may use (the TOML config, logging, clocks, a shard-local wake-up,
//!   the process-wide shutdown and serving flags).
//! - `proto`: the sans-IO codecs: goim frames and tokens, WebSocket, the
//!   HTTP/1 head and request parser, the NATS protocol, JWTs, the auth
//!   URL's request and verdict. Bytes in, values out; no sockets, no clock.
//! - `delivery`: what waits to be written: room member lists and the
//!   per-connection outbox.
//! - `conn`: a connection's state (the slab of sessions), its close
//!   reasons, rate limits, timer wheel and TLS session.
//! - `order`: the order of each room (the sequencer: offsets, epochs,
//!   history) and the tickets an API request waits on.
//! - `metrics`: counters and the Prometheus text (names close reasons and
//!   recovery refusals, so it sits above `conn` and `order`).
//! - `route`: where a push goes: placement (which shard and node own a
//!   room, key or mid), the directory, online counts, the in-memory mesh
//!   between shards and the NATS bus between nodes with its wire encoding.
//! - `shard`: the shard core: the `Shard`, the one owner of a core's state,
//!   and every method on it: admit connections, authenticate, join rooms,
//!   dispatch pushes, sequence, fan out, queue and flush. It does no I/O of
//!   its own: it asks `shard::io::ShardIo` to write, watch and close
//!   sockets and to run its waits and calls.
//! - `io`: the drivers that carry the core's effects out: the epoll poller
//!   (accept, read), the one writer of client sockets, the flusher task,
//!   the tasks of throttled broadcasts and auth URL calls.
//! - `api`: the HTTP endpoints (push, online, history, nodes, metrics) and
//!   their per-shard connection loop.
//! - `server`: process start-up: executors, listeners, the mesh, the NATS
//!   link task, signals and drain.
//!
//! # Ownership map
//!
//! Each shard owns its connections, their rooms and outboxes, its part of
//! the key/mid/IP directory (by hash) and its copy of the online counts.
//! Only `Command` values cross cores, through `route::mesh`; frames inside
//! them are `Bytes` encoded once. The one process-wide mutable values are
//! the shutdown and serving flags (`lifecycle`).
//!
//! # Data flow
//!
//! accept → handshake/auth → register (room, directory; with positions,
//! through the room's sequencer) → push (HTTP API → room sequencer or key
//! directory → mesh → dispatch into room batches and outboxes; the reply
//! waits for every shard's acknowledgement) → fan-out → flusher → socket.

// A shard's state lives in `RefCell`s that its tasks share: a borrow held
// across an `.await` would let another task of the shard panic on it.
// Clippy refuses that at build time rather than a comment asking for it.
#![deny(clippy::await_holding_refcell_ref)]

pub mod config;
pub mod latency;
pub mod lifecycle;
pub mod log;
pub mod signal;

pub mod proto;

pub mod conn;
pub mod delivery;
pub mod order;

pub mod metrics;

pub mod route;

pub mod shard;

pub mod io;

pub mod api;

pub mod server;

#[cfg(test)]
mod sim;
#[cfg(test)]
pub(crate) mod test_rng;
