//! The goim frame codec: a 16-byte big-endian header and a body.
//!
//! Owns: the framing rules of docs/goim-compat.md section 1. Must never: allocate
//! from a length read off the wire before that length has been checked
//! against the configured body limit.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of every goim frame header; any other header length is refused.
pub const HEADER_BYTES: usize = 16;

/// A decoded frame borrowing its body from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: &'a [u8],
}

/// Why a byte stream is not a valid goim frame stream. Any of these closes
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Packet length below 16 or negative.
    PacketTooShort(i32),
    /// Packet length above 16 + the body limit.
    BodyTooLarge(i32),
    /// Header length other than 16.
    HeaderLength(i16),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::PacketTooShort(n) => {
                write!(f, "packet length {n} is shorter than the header")
            }
            FrameError::BodyTooLarge(n) => write!(f, "packet length {n} exceeds the body limit"),
            FrameError::HeaderLength(n) => write!(f, "header length {n} is not 16"),
        }
    }
}

/// Decodes the first frame in `input`.
///
/// Returns `Ok(None)` when more bytes are needed, or the frame and the number
/// of bytes it used. Lengths are checked as soon as their bytes are present,
/// so a bad length is refused before the rest of the frame arrives.
pub fn decode(input: &[u8], body_bytes_max: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if input.len() < 4 {
        return Ok(None);
    }
    let packet_len = i32::from_be_bytes([input[0], input[1], input[2], input[3]]);
    if packet_len < HEADER_BYTES as i32 {
        return Err(FrameError::PacketTooShort(packet_len));
    }
    let packet_bytes = packet_len as usize;
    if packet_bytes - HEADER_BYTES > body_bytes_max {
        return Err(FrameError::BodyTooLarge(packet_len));
    }
    if input.len() < 6 {
        return Ok(None);
    }
    let header_len = i16::from_be_bytes([input[4], input[5]]);
    if header_len != HEADER_BYTES as i16 {
        return Err(FrameError::HeaderLength(header_len));
    }
    if input.len() < packet_bytes {
        return Ok(None);
    }
    let frame = Frame {
        ver: i16::from_be_bytes([input[6], input[7]]),
        op: i32::from_be_bytes([input[8], input[9], input[10], input[11]]),
        seq: i32::from_be_bytes([input[12], input[13], input[14], input[15]]),
        body: &input[HEADER_BYTES..packet_bytes],
    };
    Ok(Some((frame, packet_bytes)))
}

/// Bytes a frame with `body_len` body bytes takes on the wire.
pub fn encoded_len(body_len: usize) -> usize {
    HEADER_BYTES + body_len
}

/// Appends one encoded frame to `out`.
pub fn encode_into(out: &mut impl BufMut, ver: i16, op: i32, seq: i32, body: &[u8]) {
    let packet_len = encoded_len(body.len());
    debug_assert!(packet_len <= i32::MAX as usize, "outbound frame over 2 GiB");
    out.put_i32(packet_len as i32);
    out.put_i16(HEADER_BYTES as i16);
    out.put_i16(ver);
    out.put_i32(op);
    out.put_i32(seq);
    out.put_slice(body);
}

/// Encodes one frame into its own buffer.
pub fn encode(ver: i16, op: i32, seq: i32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(encoded_len(body.len()));
    encode_into(&mut out, ver, op, seq, body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    fn sample() -> Bytes {
        encode(1, 7, 42, b"{\"mid\":1}")
    }

    #[test]
    fn encodes_the_exact_goim_header() {
        let bytes = encode(1, 8, 5, b"");
        assert_eq!(&bytes[..], &[0, 0, 0, 16, 0, 16, 0, 1, 0, 0, 0, 8, 0, 0, 0, 5]);
    }

    #[test]
    fn round_trips_a_frame() {
        let bytes = sample();
        let (frame, used) = decode(&bytes, MAX).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame, Frame { ver: 1, op: 7, seq: 42, body: b"{\"mid\":1}" });
    }

    #[test]
    fn incomplete_input_a_byte_at_a_time_is_partial_until_the_last_byte() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], MAX), Ok(None), "cut at {cut}");
        }
        assert!(decode(&bytes, MAX).unwrap().is_some());
    }

    #[test]
    fn two_frames_back_to_back_decode_in_order() {
        let mut buf = BytesMut::new();
        encode_into(&mut buf, 1, 2, 1, b"");
        encode_into(&mut buf, 1, 4, 2, b"hi");
        let (first, used) = decode(&buf, MAX).unwrap().unwrap();
        assert_eq!((first.op, first.seq), (2, 1));
        let (second, used2) = decode(&buf[used..], MAX).unwrap().unwrap();
        assert_eq!((second.op, second.body), (4, &b"hi"[..]));
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn bad_header_length_is_refused() {
        let mut bytes = sample().to_vec();
        bytes[5] = 17;
        assert_eq!(decode(&bytes, MAX), Err(FrameError::HeaderLength(17)));
        // Refused as soon as the header length bytes are present.
        assert_eq!(decode(&bytes[..6], MAX), Err(FrameError::HeaderLength(17)));
    }

    #[test]
    fn random_and_mutated_input_never_panics_and_never_reads_past_its_end() {
        let mut rng = crate::test_rng::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 { sample().to_vec() } else { Vec::new() };
            for _ in 0..(next() % 40) {
                bytes.push(next() as u8);
            }
            if !bytes.is_empty() {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            if let Ok(Some((frame, used))) = decode(&bytes, MAX) {
                assert!(used <= bytes.len() && used >= HEADER_BYTES);
                assert_eq!(frame.body.len(), used - HEADER_BYTES);
            }
        }
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_from_four_bytes() {
        let big = ((HEADER_BYTES + MAX + 1) as i32).to_be_bytes();
        assert!(matches!(decode(&big, MAX), Err(FrameError::BodyTooLarge(_))));
        let exact = ((HEADER_BYTES + MAX) as i32).to_be_bytes();
        assert_eq!(decode(&exact, MAX), Ok(None));
        assert!(matches!(decode(&(-1i32).to_be_bytes(), MAX), Err(FrameError::PacketTooShort(-1))));
        assert!(matches!(decode(&15i32.to_be_bytes(), MAX), Err(FrameError::PacketTooShort(15))));
        assert!(matches!(decode(&i32::MIN.to_be_bytes(), MAX), Err(FrameError::PacketTooShort(_))));
    }
}
