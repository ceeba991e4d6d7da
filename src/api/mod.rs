//! The push / online / nodes HTTP API (goim's "logic" service).
//!
//! `parser` and `query` are sans-IO; `api` turns a parsed request into a
//! reply and shard commands; `server` is the per-shard connection loop.

pub mod access;
pub mod demo;
pub mod endpoints;
pub mod nodes;
pub mod server;
