//! The cluster: several corecast nodes behind one goim API, over NATS.
//!
//! Every shard of every node holds its own NATS connection (`link`, `bus`)
//! and subscribes by interest: a room's subject while it has members of
//! the room, a key's or mid's subject while it holds a connection with it,
//! the broadcast subject, the reports, its inbox and its sequencer subject.
//! A room push goes from the API shard to the room's sequencer (the live
//! node rendezvous hashing picks, then the room's shard there), which
//! numbers it, keeps it, publishes it once on the room's subject and only
//! then replies; key, mid and broadcast pushes are published by the API
//! shard itself, and answered once the server's PONG proves it processed
//! them. One NATS server appends messages for each subscriber in the order
//! it processed them, so the reply is the ordering point across nodes as
//! the mesh acknowledgement is inside one node (docs/positions.md section 1).
//!
//! - `nats`: the core NATS protocol, sans IO.
//! - `subject`: subject names.
//! - `wire`: the payloads nodes exchange.
//! - `nodes`: live nodes, rendezvous hashing, goim's weighted order.
//! - `bus`: one shard's subscriptions, outbound buffer and PING waiters.
//! - `link`: the connection task (connect, backoff, read, write).
//! - `route`: what a shard publishes and how it applies what arrives.
//! - `report`: liveness and counts reports, and membership changes.
//!
//! Must never: deliver a push that came from the bus anywhere but on the
//! shard that received it (each shard subscribes for its own connections).

pub mod bus;
pub mod directory;
pub mod mesh;
pub mod nodes;
pub mod online;
pub mod placement;
pub mod subject;
pub mod wire;

/// The node id when `cluster.node_id` is "": the machine's hostname and
/// the TCP port the node listens on.
pub fn default_node_id(tcp_port: u16) -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{hostname}:{tcp_port}")
}
