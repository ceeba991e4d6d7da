//! WebSocket frames (RFC 6455 section 5): decoding client frames into
//! events, one frame per call, and encoding server frames.
//!
//! ```text
//!  0               1               2               3
//!  |F|R|R|R| op    |M| len7        | len16 / len64 (if len7 = 126 / 127)
//!  |I|S|S|S| code  |A|             | ... | masking key (4, client only) |
//!  |N|V|V|V|       |S|             | payload ...
//! ```
//!
//! Owns: the framing rules, masking, fragment reassembly up to
//! `message_bytes_max`, UTF-8 checks of text and close reasons, close code
//! validity, and the RSV1 bit of permessage-deflate (allowed on the first
//! frame of a data message once negotiated, refused everywhere else; the
//! payload is inflated by the caller, `deflate::Inflater`). Must never: allocate or buffer from a declared length
//! before checking it against `message_bytes_max`, hold memory between
//! messages, or panic on any input.

use std::borrow::Cow;

use bytes::BufMut;

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Largest payload of a control frame (RFC 6455 section 5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Largest frame header: 2 + 8 length bytes + 4 mask bytes.
pub const HEADER_BYTES_MAX: usize = 14;

/// A close status code (RFC 6455 section 7.4). The decoder fails with one of
/// these; the caller sends it in a close frame and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);

    /// Whether a peer may send `code` in a close frame: 1000-1003,
    /// 1007-1011 and 3000-4999. 1004-1006 and 1015 are reserved for local
    /// use and never go on the wire; everything else is unassigned.
    pub fn is_valid_on_wire(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }

    /// A short text for logs and the close frame's reason.
    pub fn reason(self) -> &'static str {
        match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1007 => "invalid payload",
            1008 => "policy violation",
            1009 => "message too big",
            _ => "",
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// What one decoded frame amounts to. Payloads borrow the (unmasked) input
/// when the message was a single frame, and own the reassembled bytes when
/// it was fragmented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete binary message (goim frames).
    Binary(Cow<'a, [u8]>),
    /// A complete text message, UTF-8 checked.
    Text(Cow<'a, str>),
    /// A ping; answer with `encode_pong(payload)`.
    Ping(&'a [u8]),
    /// A pong (unsolicited ones included); nothing to do.
    Pong,
    /// The peer closes; echo a close frame and end the connection.
    Close { code: Option<u16>, reason: &'a str },
    /// A complete data message sent compressed (RSV1, permessage-deflate):
    /// inflate it, then read it as `message_event(opcode, inflated)`.
    Compressed { opcode: u8, payload: Cow<'a, [u8]> },
    /// A non-final fragment was buffered; no message is complete yet.
    Fragment,
}

/// A fragmented data message in progress.
#[derive(Debug)]
struct Partial {
    /// `opcode::TEXT` or `opcode::BINARY`, from the first fragment.
    opcode: u8,
    /// The first fragment had RSV1 set: the whole message is compressed.
    compressed: bool,
    payload: Vec<u8>,
}

/// Incremental decoder of one connection's client frames.
///
/// Holds nothing but a fragmented message in progress: no bytes are kept
/// between calls otherwise, and nothing is allocated while no fragmented
/// message is in progress. The caller keeps unconsumed input and calls
/// again when more arrives; a frame never needs more than
/// `frame_bytes_max()` buffered bytes.
#[derive(Debug)]
pub struct Decoder {
    message_bytes_max: usize,
    partial: Option<Partial>,
    /// permessage-deflate was negotiated: RSV1 may mark a compressed message.
    deflate: bool,
}

impl Decoder {
    pub fn new(message_bytes_max: usize) -> Self {
        Decoder { message_bytes_max, partial: None, deflate: false }
    }

    /// After the upgrade negotiated permessage-deflate.
    pub fn allow_compressed(&mut self) {
        self.deflate = true;
    }

    /// The bound on a whole message (an inflated one included).
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// The most input bytes one frame can take: a read buffer this large
    /// never has to grow to decode any accepted frame.
    pub fn frame_bytes_max(&self) -> usize {
        HEADER_BYTES_MAX.saturating_add(self.message_bytes_max)
    }

    /// Bytes held for a fragmented message in progress (0 when none).
    pub fn buffered_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.payload.len())
    }

    /// Decodes at most one frame from the start of `input`.
    ///
    /// `Ok(None)`: more bytes are needed; `input` is untouched, call again
    /// with it extended. `Ok(Some((event, used)))`: the first `used` bytes
    /// were one frame; they are unmasked in place (the event may borrow
    /// them), so drop them once done with the event. Header rules and the
    /// size limit are checked as soon as their bytes are present, before the
    /// payload arrives. `Err(code)`: close the connection with `code`; the
    /// decoder is not to be used again.
    pub fn decode<'a>(&mut self, input: &'a mut [u8]) -> Result<Option<(Event<'a>, usize)>, CloseCode> {
        let Some(header) = self.parse_header(input)? else {
            return Ok(None);
        };
        // parse_header bounded payload_len by message_bytes_max or 125, so
        // this sum cannot overflow a usize.
        let frame_bytes = header.header_bytes + header.payload_len;
        if input.len() < frame_bytes {
            return Ok(None);
        }
        let payload = &mut input[header.header_bytes..frame_bytes];
        unmask(payload, header.mask);
        let payload: &'a [u8] = payload;
        let event = match header.opcode {
            opcode::PING => Event::Ping(payload),
            opcode::PONG => Event::Pong,
            opcode::CLOSE => close_event(payload)?,
            _ => self.data_event(header, payload)?,
        };
        Ok(Some((event, frame_bytes)))
    }

    /// Parses and checks a frame header; `Ok(None)` while incomplete.
    fn parse_header(&self, input: &[u8]) -> Result<Option<Header>, CloseCode> {
        let [first, second, ..] = *input else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        let compressed = first & 0x40 != 0;
        // RSV2 and RSV3 belong to no extension we negotiate; RSV1 only to
        // permessage-deflate, and only on a message's first frame (RFC 7692
        // section 6: never on control frames or continuations).
        if first & 0x30 != 0 || (compressed && !self.deflate) {
            return Err(CloseCode::PROTOCOL_ERROR);
        }
        let opcode = first & 0x0F;
        if compressed && !matches!(opcode, opcode::TEXT | opcode::BINARY) {
            return Err(CloseCode::PROTOCOL_ERROR);
        }
        let is_control = match opcode {
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => false,
            opcode::CLOSE | opcode::PING | opcode::PONG => true,
            _ => return Err(CloseCode::PROTOCOL_ERROR),
        };
        // RFC 6455 section 5.1: the server must close on an unmasked frame.
        if second & 0x80 == 0 {
            return Err(CloseCode::PROTOCOL_ERROR);
        }
        let len7 = second & 0x7F;
        if is_control {
            // Control frames are never fragmented and carry at most 125
            // bytes, which also rules out the 16- and 64-bit length forms.
            if !fin || usize::from(len7) > CONTROL_PAYLOAD_BYTES_MAX {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
        } else {
            let in_progress = self.partial.is_some();
            let is_continuation = opcode == opcode::CONTINUATION;
            // A continuation needs a message to continue; a new message may
            // not start inside another.
            if is_continuation != in_progress {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
        }
        let (payload_len, length_bytes) = match len7 {
            126 => {
                let Some(bytes) = input.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2)
            }
            127 => {
                let Some(bytes) = input.get(2..10) else { return Ok(None) };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(CloseCode::PROTOCOL_ERROR);
                }
                (len, 8)
            }
            short => (u64::from(short), 0),
        };
        // Refuse an oversized message from its declared length, before a
        // single payload byte is buffered: the whole message (what is held
        // already plus this frame) must fit.
        if !is_control {
            let room = self.message_bytes_max.saturating_sub(self.buffered_bytes());
            if payload_len > room as u64 {
                return Err(CloseCode::TOO_BIG);
            }
        }
        // Bounded by message_bytes_max (a usize) or 125 above.
        let payload_len = usize::try_from(payload_len).map_err(|_| CloseCode::TOO_BIG)?;
        let mask_at = 2 + length_bytes;
        let Some(mask) = input.get(mask_at..mask_at + 4) else {
            return Ok(None);
        };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        Ok(Some(Header { fin, compressed, opcode, payload_len, mask, header_bytes: mask_at + 4 }))
    }

    /// Turns a text, binary or continuation frame into an event.
    fn data_event<'a>(&mut self, header: Header, payload: &'a [u8]) -> Result<Event<'a>, CloseCode> {
        if header.opcode == opcode::CONTINUATION {
            let Some(partial) = self.partial.as_mut() else {
                // parse_header refused a continuation with nothing in progress.
                return Err(CloseCode::PROTOCOL_ERROR);
            };
            // parse_header checked buffered + payload_len <= message_bytes_max.
            partial.payload.extend_from_slice(payload);
            if !header.fin {
                return Ok(Event::Fragment);
            }
            let Some(Partial { opcode, compressed, payload }) = self.partial.take() else {
                return Err(CloseCode::PROTOCOL_ERROR);
            };
            if compressed {
                return Ok(Event::Compressed { opcode, payload: Cow::Owned(payload) });
            }
            return message_event(opcode, Cow::Owned(payload));
        }
        if !header.fin {
            // Sized from this fragment only, never from the limit.
            let partial = Partial { opcode: header.opcode, compressed: header.compressed, payload: payload.to_vec() };
            self.partial = Some(partial);
            return Ok(Event::Fragment);
        }
        if header.compressed {
            return Ok(Event::Compressed { opcode: header.opcode, payload: Cow::Borrowed(payload) });
        }
        message_event(header.opcode, Cow::Borrowed(payload))
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    compressed: bool,
    opcode: u8,
    payload_len: usize,
    mask: [u8; 4],
    header_bytes: usize,
}

/// A whole data message as its event: binary as it is, text UTF-8 checked.
pub fn message_event(opcode: u8, payload: Cow<'_, [u8]>) -> Result<Event<'_>, CloseCode> {
    if opcode == opcode::BINARY {
        return Ok(Event::Binary(payload));
    }
    let text = match payload {
        Cow::Borrowed(bytes) => Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| CloseCode::INVALID_PAYLOAD)?),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).map_err(|_| CloseCode::INVALID_PAYLOAD)?),
    };
    Ok(Event::Text(text))
}

/// RFC 6455 section 5.5.1: empty, or a valid 2-byte code then UTF-8 text.
fn close_event(payload: &[u8]) -> Result<Event<'_>, CloseCode> {
    match payload {
        [] => Ok(Event::Close { code: None, reason: "" }),
        [_] => Err(CloseCode::PROTOCOL_ERROR),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !CloseCode::is_valid_on_wire(code) {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseCode::INVALID_PAYLOAD)?;
            Ok(Event::Close { code: Some(code), reason })
        }
    }
}

/// XORs `payload` with the 4-byte masking key (RFC 6455 section 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (byte, key) in chunk.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Bytes of a server frame header for `payload_len` (minimal length form,
/// unmasked).
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Appends a server frame header: FIN set, unmasked, minimal length form.
/// The payload follows it unchanged.
pub fn encode_header(out: &mut impl BufMut, opcode: u8, payload_len: usize) {
    encode_header_with(out, opcode, false, payload_len)
}

/// As `encode_header`, with RSV1 set when `compressed` (a permessage-deflate
/// payload follows).
pub fn encode_header_with(out: &mut impl BufMut, opcode: u8, compressed: bool, payload_len: usize) {
    out.put_u8(0x80 | if compressed { 0x40 } else { 0 } | (opcode & 0x0F));
    match payload_len {
        0..=125 => out.put_u8(payload_len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(payload_len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(payload_len as u64);
        }
    }
}

fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    encode_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// One binary message in one frame.
pub fn encode_binary(payload: &[u8]) -> Vec<u8> {
    encode(opcode::BINARY, payload)
}

/// A close frame. The reason is cut (at a character boundary) to fit the
/// 125-byte control payload with its 2-byte code.
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut reason_bytes = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(reason_bytes) {
        reason_bytes -= 1;
    }
    let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason_bytes].copy_from_slice(&reason.as_bytes()[..reason_bytes]);
    encode(opcode::CLOSE, &payload[..2 + reason_bytes])
}

/// The pong answering a ping with `payload`. A decoded ping never exceeds
/// 125 bytes; anything longer is cut so the pong stays a valid control frame.
pub fn encode_pong(payload: &[u8]) -> Vec<u8> {
    encode(opcode::PONG, &payload[..payload.len().min(CONTROL_PAYLOAD_BYTES_MAX)])
}

#[cfg(test)]
mod tests;
