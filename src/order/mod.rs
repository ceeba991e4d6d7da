//! The order of pushes: each room's sequencer state (offsets, epochs,
//! history, joins with positions: `sequencer`) and the tickets an API
//! request waits on until every shard has applied its pushes (`tickets`).
//!
//! Must never: deliver or route anything: these are plain structs that the
//! shard's dispatch drives.

pub mod sequencer;
pub mod tickets;
