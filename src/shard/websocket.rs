//! The WebSocket transport of a client connection: the upgrade, then goim
//! frames inside binary (or text) messages, ping/pong and the close
//! handshake. Everything after the upgrade is the same session as on TCP.
//!
//! Owns: turning WebSocket bytes into goim frames for `session` (inflating
//! compressed messages with the shard's inflater), and goim pushes into
//! WebSocket messages (`Payload::for_ws_to`: op 9 around the batch, built
//! once per shard and shared by every WebSocket member; compressed once
//! per shard too, and shared by every member that negotiated
//! permessage-deflate).
//! Must never: hold a buffer or flate state while idle (the decoder keeps
//! nothing between messages; the deflater and inflater are the shard's),
//! or write anything before the 101 response.

use crate::config::Switch;
use crate::conn::close::CloseReason;
use crate::conn::conns::{ConnRef, WsState};
use crate::delivery::outbox::Chunk;
use crate::proto::goim::{frame, op};
use crate::proto::ws::deflate::{Deflater, Inflater};
use crate::proto::ws::extension::Deflate;
use crate::proto::ws::frame::{
    self as ws_frame, encode_close, encode_header, encode_pong, opcode, CloseCode, Decoder, Event,
};
use crate::proto::ws::handshake::{parse_upgrade, switching_protocols, UpgradeLimits};
use crate::shard::session;
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::rc::Rc;

/// The shard's permessage-deflate state, made on first use: one deflater
/// and one inflater serve every connection (no context takeover either
/// way), with scratch buffers reused from one message to the next.
#[derive(Default)]
pub struct ShardDeflate {
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    message: Vec<u8>,
    compressed: Vec<u8>,
}

/// Scratch larger than this is given back after use.
const DEFLATE_SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// A pushed chunk of goim frames, as TCP clients get it, plus the
/// WebSocket messages WebSocket clients get, each built on first use.
pub struct Payload {
    pub tcp: Chunk,
    pub frames: u64,
    ws: OnceCell<Chunk>,
    /// The same message compressed (RSV1); `None` when compressing did not pay.
    ws_deflated: OnceCell<Option<Chunk>>,
}

impl Payload {
    pub fn new(tcp: Chunk, frames: u64) -> Payload {
        Payload { tcp, frames, ws: OnceCell::new(), ws_deflated: OnceCell::new() }
    }

    /// One binary message holding an op-9 frame around every frame of the chunk.
    pub fn for_ws(&self) -> Chunk {
        self.ws.get_or_init(|| Rc::new(raw_message(&self.tcp))).clone()
    }

    /// The message for one WebSocket member: compressed when it negotiated
    /// permessage-deflate, the message is at least `ws.compression_min_bytes`
    /// and fits the window it allows, and compressing paid; else `for_ws`.
    /// Compressed once per shard, whatever the member count.
    pub fn for_ws_to(&self, shard: &Shard, deflate: Option<&Deflate>) -> Chunk {
        let inner_bytes = frame::encoded_len(self.tcp.len());
        let wanted = deflate.is_some_and(|d| d.takes_shared(inner_bytes))
            && inner_bytes >= shard.config.ws.compression_min_bytes;
        if wanted && shard.config.ws.compression_per_member {
            if let Some(compressed) = compressed_message(shard, &self.tcp) {
                return compressed;
            }
        } else if wanted {
            if let Some(compressed) = self.ws_deflated.get_or_init(|| compressed_message(shard, &self.tcp)) {
                return compressed.clone();
            }
        }
        self.for_ws()
    }
}

/// The op-9 message around `frames`, deflated, as one binary frame with
/// RSV1; `None` (counted) when that is not smaller.
fn compressed_message(shard: &Shard, frames: &[u8]) -> Option<Chunk> {
    let mut codec = shard.ws_deflate.borrow_mut();
    let ShardDeflate { deflater, message, compressed, .. } = &mut *codec;
    let deflater = deflater.get_or_insert_with(|| Deflater::new(shard.config.ws.compression_level));
    message.clear();
    frame::encode_into(message, op::PUSH_VERSION, op::RAW, 0, frames);
    compressed.clear();
    let paid = deflater.compress_into(message, compressed);
    let mut stats = shard.stats.borrow_mut();
    let result = if paid {
        stats.compression.messages += 1;
        stats.compression.bytes_in += message.len() as u64;
        stats.compression.bytes_out += compressed.len() as u64;
        let mut out = BytesMut::with_capacity(ws_frame::header_len(compressed.len()) + compressed.len());
        ws_frame::encode_header_with(&mut out, opcode::BINARY, true, compressed.len());
        out.put_slice(compressed);
        Some(Rc::new(out.freeze()))
    } else {
        stats.compression.not_paid += 1;
        None
    };
    if message.capacity() > DEFLATE_SCRATCH_KEPT_BYTES {
        *message = Vec::new();
        *compressed = Vec::new();
    }
    result
}

/// A compressed client message, inflated within the decoder's message bound.
fn inflate(shard: &Shard, payload: &[u8], bytes_max: usize) -> Result<Vec<u8>, CloseCode> {
    let mut codec = shard.ws_deflate.borrow_mut();
    let inflated = codec.inflater.get_or_insert_with(Inflater::default).inflate(payload, bytes_max)?;
    shard.stats.borrow_mut().compression.inflated += 1;
    Ok(inflated)
}

/// A binary WebSocket message holding one op-9 goim frame whose body is `frames`.
fn raw_message(frames: &[u8]) -> Bytes {
    let inner = frame::encoded_len(frames.len());
    let mut out = BytesMut::with_capacity(crate::proto::ws::frame::header_len(inner) + inner);
    encode_header(&mut out, opcode::BINARY, inner);
    frame::encode_into(&mut out, op::PUSH_VERSION, op::RAW, 0, frames);
    out.freeze()
}

/// One goim frame (a reply) as its own binary WebSocket message.
pub fn reply_message(goim_frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(crate::proto::ws::frame::header_len(goim_frame.len()) + goim_frame.len());
    encode_header(&mut out, opcode::BINARY, goim_frame.len());
    out.put_slice(goim_frame);
    out.freeze()
}

/// Consumes WebSocket bytes; returns how many were used (the rest is an
/// incomplete request head or frame, kept by the caller).
pub fn consume(shard: &Shard, conn: ConnRef, input: &mut [u8]) -> Result<usize, CloseReason> {
    // The state is copied out while frames are handled (they borrow the
    // shard's tables) and put back after; the session stays a WebSocket
    // session meanwhile, so replies are framed for it.
    let Some(mut ws) = take_state(shard, conn) else { return Ok(input.len()) };
    let result = consume_with(shard, conn, &mut ws, input);
    if let Some(slot) = shard.state.borrow_mut().conns.get_mut(conn).and_then(|s| s.ws.as_mut()) {
        **slot = ws;
    }
    result
}

fn take_state(shard: &Shard, conn: ConnRef) -> Option<WsState> {
    let mut state = shard.state.borrow_mut();
    let session = state.conns.get_mut(conn)?;
    let ws = session.ws.as_mut()?;
    let decoder = std::mem::replace(&mut ws.decoder, Decoder::new(0));
    let taken = WsState { open: ws.open, decoder, deflate: ws.deflate };
    Some(taken)
}

fn consume_with(shard: &Shard, conn: ConnRef, ws: &mut WsState, input: &mut [u8]) -> Result<usize, CloseReason> {
    let mut used = 0;
    if !ws.open {
        let limits = UpgradeLimits {
            path: shard.config.ws.path.clone(),
            header_bytes_max: shard.config.limits.request_header_bytes_max,
            allowed_origins: shard.config.ws.allowed_origins.clone(),
            compression: shard.config.ws.compression == Switch::On,
        };
        match parse_upgrade(input, &limits) {
            Ok(None) => return Ok(0),
            Err(refusal) => {
                crate::log_debug!(
                    "shard {}: WebSocket upgrade refused: {} {}",
                    shard.id,
                    refusal.status,
                    refusal.reason
                );
                shard.write_control(conn, refusal.response());
                return Err(CloseReason::BadHandshake);
            }
            Ok(Some(upgrade)) => {
                shard.write_control(conn, switching_protocols(&upgrade.accept, upgrade.deflate.as_ref()));
                ws.open = true;
                if upgrade.deflate.is_some() {
                    ws.decoder.allow_compressed();
                    ws.deflate = upgrade.deflate;
                }
                used = upgrade.head_bytes;
            }
        }
    }
    loop {
        if checking(shard, conn) {
            // The auth URL is being asked: later messages wait unread (one
            // message's worth at most), handled once the client is admitted.
            if input.len() - used > ws.decoder.message_bytes_max() + WS_HEADER_BYTES_MAX {
                return Err(CloseReason::BadFrame);
            }
            return Ok(used);
        }
        match ws.decoder.decode(&mut input[used..]) {
            Ok(None) => return Ok(used),
            Ok(Some((event, len))) => {
                match event {
                    Event::Binary(payload) => goim_frames(shard, conn, &payload)?,
                    // goim's server reads text messages as frames too.
                    Event::Text(payload) => goim_frames(shard, conn, payload.as_bytes())?,
                    Event::Ping(payload) => enqueue_control(shard, conn, encode_pong(payload)),
                    Event::Compressed { opcode, payload } => {
                        let message = inflate(shard, &payload, ws.decoder.message_bytes_max()).and_then(|inflated| {
                            match ws_frame::message_event(opcode, Cow::Owned(inflated))? {
                                Event::Text(text) => Ok(text.into_owned().into_bytes()),
                                Event::Binary(binary) => Ok(binary.into_owned()),
                                _ => Err(CloseCode::PROTOCOL_ERROR),
                            }
                        });
                        match message {
                            Ok(message) => goim_frames(shard, conn, &message)?,
                            Err(code) => return Err(protocol_error(shard, conn, code)),
                        }
                    }
                    Event::Pong | Event::Fragment => {}
                    Event::Close { .. } => {
                        shard.write_control(conn, encode_close(CloseCode::NORMAL.0, ""));
                        return Err(CloseReason::ClientClosed);
                    }
                }
                used += len;
            }
            Err(code) => return Err(protocol_error(shard, conn, code)),
        }
    }
}

/// Closes with `code` (a close frame if it can go now): the connection ends.
fn protocol_error(shard: &Shard, conn: ConnRef, code: CloseCode) -> CloseReason {
    crate::log_debug!("shard {}: WebSocket protocol error {}", shard.id, code.0);
    shard.write_control(conn, encode_close(code.0, code.reason()));
    CloseReason::BadFrame
}

/// The longest WebSocket frame header (2 + 8 length + 4 mask).
const WS_HEADER_BYTES_MAX: usize = 14;

fn checking(shard: &Shard, conn: ConnRef) -> bool {
    shard.state.borrow().conns.get(conn).is_some_and(|s| s.phase == crate::conn::conns::Phase::Checking)
}

/// Every message must hold whole goim frames.
fn goim_frames(shard: &Shard, conn: ConnRef, payload: &[u8]) -> Result<(), CloseReason> {
    let used = session::handle_frames(shard, conn, payload)?;
    if used != payload.len() {
        return Err(CloseReason::BadFrame);
    }
    Ok(())
}

fn enqueue_control(shard: &Shard, conn: ConnRef, message: Vec<u8>) {
    let mut state = shard.state.borrow_mut();
    shard.enqueue_raw(&mut state, conn, Rc::new(Bytes::from(message)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_batch_becomes_one_binary_message_with_an_op_9_frame() {
        let mut frames = BytesMut::new();
        frame::encode_into(&mut frames, 1, 1000, 0, b"a");
        frame::encode_into(&mut frames, 1, 1000, 0, b"bc");
        let payload = Payload::new(Rc::new(frames.clone().freeze()), 2);
        let message = payload.for_ws();
        assert!(Rc::ptr_eq(&message, &payload.for_ws()), "built once, shared");
        assert_eq!(message[0], 0x80 | opcode::BINARY);
        let inner_len = 16 + frames.len();
        assert_eq!(message[1] as usize, inner_len);
        let (raw, used) = frame::decode(&message[2..], 4096).unwrap().unwrap();
        assert_eq!(used, inner_len);
        assert_eq!(raw.op, op::RAW);
        assert_eq!(raw.body, &frames[..]);
    }

    #[test]
    fn a_reply_is_its_own_message() {
        let reply = frame::encode(1, op::AUTH_REPLY, 1, b"");
        let message = reply_message(&reply);
        assert_eq!(&message[..2], &[0x82, 16]);
        assert_eq!(&message[2..], &reply[..]);
    }
}
