//! A client connection's state, without its I/O.
//!
//! Owns: the slab of sessions (`conns`: phase, identity, room, outbox,
//! WebSocket state), why a connection closed (`close`), the per-IP
//! connection rate (`rate`), the deadline wheel (`wheel`) and the WSS TLS
//! session on rustls (`tls`). The shard's poller and writer carry these
//! out on sockets.
//!
//! Must never: reach up into routing, ordering or the shard: a session is
//! plain data that the shard's methods change.

pub mod close;
pub mod conns;
pub mod rate;
pub mod tls;
pub mod wheel;
