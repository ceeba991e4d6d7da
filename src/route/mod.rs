//! Where a push goes: between the shards of one node (the mesh) and
//! between nodes (the bus over NATS), and who owns what.
//!
//! - `command`: the one vocabulary shards and nodes send each other
//!   (`Command`), and where a command goes (`Dest`).
//! - `placement`: which node and shard own a room, key, mid or IP, and
//!   the `Dest`s each kind of push goes to.
//! - `directory`: this shard's part of key -> conn, mid -> conns, IP -> count.
//! - `online`: online counts of every shard, as this shard knows them.
//! - `mesh`: the in-memory transport of commands between shards, batched
//!   per peer.
//! - `bus`: one shard's NATS subscriptions (by interest), outbound buffer
//!   and the ticket shares waiting for a PONG.
//! - `wire`: the bus transport's encoding of commands.
//! - `subject`: subject names. `nodes`: live nodes, rendezvous hashing,
//!   goim's weighted order.
//!
//! Across nodes every shard holds its own NATS connection
//! (`server::link`) and subscribes by interest: a room's subject while it
//! has members of the room, a key's or mid's subject while it holds a
//! connection with it, the broadcast subject, the reports, and its own
//! subject (`shard.<node>.<shard>`: requests to it as a room's sequencer,
//! and the answers to its tickets and joins). A room push goes from the API shard to the room's
//! sequencer, which numbers it, keeps it, publishes it once on the room's
//! subject and only then replies; key, mid and broadcast pushes are
//! published by the API shard itself, and answered once the server's PONG
//! proves it processed them. One NATS server appends messages for each
//! subscriber in the order it processed them, so the reply is the ordering
//! point across nodes as the mesh acknowledgement is inside one node
//! (docs/positions.md section 1). The shard's side of all this is
//! `shard::send` (leaving), `shard::bus_side` (arriving) and
//! `shard::report`.
//!
//! Must never: deliver a push that came from the bus anywhere but on the
//! shard that received it (each shard subscribes for its own connections).

pub mod bus;
pub mod command;
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
