//! The push / online / nodes HTTP API (goim's "logic" service).
//!
//! The request is read by the sans-IO codecs in `proto::http`;
//! `endpoints` turns it into a reply and shard commands (asking
//! `route::placement` where they go); `access` says who may push; `nodes`
//! and `demo` answer from this node; `server` is the per-shard connection
//! loop (pipelining by class, backpressure).

pub mod access;
pub mod demo;
pub mod endpoints;
pub mod nodes;
pub mod server;
