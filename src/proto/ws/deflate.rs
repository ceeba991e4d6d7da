//! The permessage-deflate codec (RFC 7692 section 7.2), one per shard:
//! a deflater that compresses a server message alone, and an inflater that
//! decompresses a client message alone, each reset between messages.
//!
//! Both sides run with no context takeover (see `extension`), so neither
//! keeps anything between messages and one deflater and one inflater serve
//! every connection of a shard (a shard handles one message at a time).
//! An idle connection that negotiated compression holds no flate state.
//!
//! Backend: `flate2` on zlib-rs (pure Rust, zlib-compatible raw deflate,
//! and faster than miniz_oxide at both ends).
//!
//! Owns: the RFC's framing of a deflated message (the sync-flush tail that
//! is stripped on the way out and put back on the way in) and the bound on
//! what one message may inflate to. Must never: inflate past the caller's
//! bound (a decompression bomb is refused before its memory is spent), or
//! keep a message's bytes after returning it.

use crate::proto::ws::frame::CloseCode;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with: stripped from every
/// compressed message, appended again before inflating one.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grows by at most this much per inflate step, so a message that
/// inflates past its bound has had at most this much beyond it allocated.
const INFLATE_STEP_BYTES: usize = 16 * 1024;

/// Compresses server messages, each on its own (`server_no_context_takeover`).
pub struct Deflater {
    compress: Compress,
}

impl Deflater {
    /// `level`: 0 (store) to 9 (smallest), as zlib's.
    pub fn new(level: u32) -> Deflater {
        Deflater { compress: Compress::new(Compression::new(level.min(9)), false) }
    }

    /// `message` compressed as one permessage-deflate payload (tail
    /// stripped), appended to `out`; false (and `out` as it was) when
    /// compressing would not make it smaller.
    pub fn compress_into(&mut self, message: &[u8], out: &mut Vec<u8>) -> bool {
        self.compress.reset();
        let start = out.len();
        // Room for the message itself plus the tail: anything larger did not pay.
        out.reserve_exact(message.len() + SYNC_TAIL.len());
        let limit = start + message.len() + SYNC_TAIL.len();
        let result = self.compress.compress_vec(message, out, FlushCompress::Sync);
        // The flush is complete only if the input is all consumed and the
        // output did not fill up (zlib: avail_out > 0 after a flush).
        let whole = matches!(result, Ok(Status::Ok))
            && self.compress.total_in() == message.len() as u64
            && out.len() < limit.min(out.capacity())
            && out.ends_with(&SYNC_TAIL);
        if !whole || out.len() - start - SYNC_TAIL.len() >= message.len() {
            out.truncate(start);
            return false;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        true
    }
}

/// Decompresses client messages, each on its own (`client_no_context_takeover`).
pub struct Inflater {
    decompress: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater { decompress: Decompress::new(false) }
    }
}

impl Inflater {
    /// The message `payload` inflates to, at most `bytes_max` bytes.
    ///
    /// `Err(TOO_BIG)` (1009) as soon as the output passes `bytes_max`,
    /// with at most `INFLATE_STEP_BYTES` more allocated; `Err(INVALID_PAYLOAD)`
    /// (1007) when the payload is not valid deflate data.
    pub fn inflate(&mut self, payload: &[u8], bytes_max: usize) -> Result<Vec<u8>, CloseCode> {
        self.decompress.reset(false);
        let mut out = Vec::new();
        for input in [payload, &SYNC_TAIL[..]] {
            if self.feed(input, &mut out, bytes_max)? {
                break;
            }
        }
        Ok(out)
    }

    /// Feeds `input` whole; returns whether the deflate stream ended
    /// (a final block: anything after it is ignored, the tail included).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, bytes_max: usize) -> Result<bool, CloseCode> {
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > bytes_max {
                    return Err(CloseCode::TOO_BIG);
                }
                // Up to one byte past the bound: that byte is what tells
                // "exactly at the bound" from "over it".
                let step = INFLATE_STEP_BYTES.min(bytes_max + 1 - out.len());
                out.reserve_exact(step);
            }
            let in_before = self.decompress.total_in();
            let out_before = out.len();
            let status = self
                .decompress
                .decompress_vec(&input[used..], out, FlushDecompress::Sync)
                .map_err(|_| CloseCode::INVALID_PAYLOAD)?;
            used += (self.decompress.total_in() - in_before) as usize;
            if out.len() > bytes_max {
                return Err(CloseCode::TOO_BIG);
            }
            match status {
                Status::StreamEnd => return Ok(true),
                _ if used == input.len() && out.len() < out.capacity() => return Ok(false),
                // No progress with room on both sides: the data is broken.
                _ if self.decompress.total_in() == in_before
                    && out.len() == out_before
                    && out.len() < out.capacity() =>
                {
                    return Err(CloseCode::INVALID_PAYLOAD)
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: usize) -> Vec<u8> {
        let mut text = String::from("[");
        let mut i = 0;
        while text.len() < bytes {
            text.push_str(&format!("{{\"user\":\"viewer{i}\",\"gift\":\"rose\",\"count\":{i}}},"));
            i += 1;
        }
        text.into_bytes()
    }

    #[test]
    fn a_message_round_trips_and_each_is_compressed_alone() {
        let mut deflater = Deflater::new(1);
        let mut inflater = Inflater::default();
        let message = json(600);
        let mut first = Vec::new();
        assert!(deflater.compress_into(&message, &mut first));
        assert!(first.len() * 2 < message.len(), "{} -> {}", message.len(), first.len());
        assert!(!first.ends_with(&SYNC_TAIL));
        let mut second = Vec::new();
        assert!(deflater.compress_into(&message, &mut second));
        assert_eq!(first, second, "no context carried from one message to the next");
        assert_eq!(inflater.inflate(&first, 1 << 20).unwrap(), message);
        assert_eq!(inflater.inflate(&second, 1 << 20).unwrap(), message);
    }

    #[test]
    fn a_message_that_does_not_shrink_is_left_alone() {
        let mut deflater = Deflater::new(6);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut out = b"head".to_vec();
        assert!(!deflater.compress_into(&random, &mut out));
        assert_eq!(out, b"head");
        assert!(!deflater.compress_into(b"", &mut out));
    }

    #[test]
    fn a_bomb_is_refused_at_the_bound_before_its_memory_is_spent() {
        let zeros = vec![0u8; 10 << 20];
        let mut compressed = Vec::new();
        assert!(Deflater::new(9).compress_into(&zeros, &mut compressed));
        assert!(compressed.len() < 16 * 1024, "{}", compressed.len());
        let mut inflater = Inflater::default();
        assert_eq!(inflater.inflate(&compressed, 65536), Err(CloseCode::TOO_BIG));
        // Exactly at the bound is fine.
        let mut exact = Vec::new();
        assert!(Deflater::new(9).compress_into(&zeros[..65536], &mut exact));
        assert_eq!(inflater.inflate(&exact, 65536).map(|v| v.len()), Ok(65536));
        assert_eq!(inflater.inflate(&exact, 65535), Err(CloseCode::TOO_BIG));
    }

    #[test]
    fn garbage_is_an_invalid_payload_and_the_inflater_recovers() {
        let mut inflater = Inflater::default();
        assert_eq!(inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0x01], 1024), Err(CloseCode::INVALID_PAYLOAD));
        let mut ok = Vec::new();
        assert!(Deflater::new(1).compress_into(&json(400), &mut ok));
        assert_eq!(inflater.inflate(&ok, 1 << 20).unwrap(), json(400));
    }

    #[test]
    fn a_final_block_ends_the_message() {
        // A client may end a message with BFINAL set (RFC 7692 section 7.2.3.3).
        let mut compress = Compress::new(Compression::new(6), false);
        let mut finished = Vec::with_capacity(1024);
        compress.compress_vec(b"hello hello hello", &mut finished, FlushCompress::Finish).unwrap();
        assert_eq!(Inflater::default().inflate(&finished, 1024).unwrap(), b"hello hello hello");
    }
}
