//! The WebSocket wire format (RFC 6455, version 13) and its HTTP upgrade
//! handshake, sans-IO: bytes in, events and bytes out. No sockets, no clock,
//! no glommio here, so every rule is unit-tested on plain slices.
//!
//! Owns: parsing and answering the `GET /sub` upgrade (`handshake`), and
//! decoding client frames / encoding server frames (`frame`), as goim
//! clients expect (docs/goim-compat.md sections 1, 3 and 4): binary messages each
//! carrying goim frames, ping answered by pong, close ending the connection,
//! no subprotocol. The one extension, permessage-deflate (RFC 7692), is
//! negotiated in `extension` and coded in `deflate`, only for clients that
//! offer it.
//!
//! Must never: allocate from a length read off the wire before checking it
//! against the configured limit, or panic on any input. Every refusal is a
//! value (`handshake::Refusal`, `frame::CloseCode`) that the connection loop
//! turns into a response and a close.
//!
//! Data flow on a connection: `handshake::parse_upgrade` on the first bytes
//! → `handshake::switching_protocols` (or `Refusal::response` and close) →
//! `frame::Decoder::decode` on the bytes after `Upgrade::head_bytes`, one
//! frame per call → goim frames out of each binary message (compressed ones
//! inflated by `deflate::Inflater` first); server pushes go out through
//! `frame::encode_header` + payload, or `encode_header_with` (RSV1) + the
//! payload `deflate::Deflater` compressed once per shard.

pub mod deflate;
pub mod extension;
pub mod frame;
pub mod handshake;
#[cfg(test)]
mod head_rule_tests;
