//! The sans-IO codecs: bytes in, values (frames, requests, verdicts) out.
//!
//! Owns: every wire format corecast speaks: goim frames and auth tokens
//! (`goim`), WebSocket (`ws`), the HTTP/1 head, request parser, query and
//! responses (`http`), the core NATS protocol (`nats`), verified tokens
//! (`jwt`) and the business auth URL's request and verdict (`auth_url`).
//!
//! Must never: touch a socket, a clock or an executor, or depend on any
//! module above it (only `config` for limits): every rule here is
//! unit-tested and fuzzed on plain slices.

pub mod auth_url;
pub mod goim;
pub mod http;
pub mod jwt;
pub mod nats;
pub mod ws;
