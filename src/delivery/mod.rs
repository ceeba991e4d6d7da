//! What waits to reach a client: each room's member list and pending batch
//! (`room`) and each connection's bounded outbox (`outbox`).
//!
//! Must never: write to a socket (the shard's writer does) or know about
//! sessions, routing or order.

pub mod outbox;
pub mod room;
