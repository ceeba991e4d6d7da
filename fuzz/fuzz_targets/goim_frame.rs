//! The goim frame decoder: whole-buffer and byte-at-a-time decoding agree,
//! every decoded frame re-encodes to exactly the bytes it used, and no
//! frame claims more bytes than the input has.
#![no_main]

use corecast::proto::goim::frame;
use libfuzzer_sys::fuzz_target;

const BODY_MAX: usize = 4096;

fn all_frames(input: &[u8]) -> (Vec<(i16, i32, i32, Vec<u8>)>, Result<usize, frame::FrameError>) {
    let mut used = 0;
    let mut frames = Vec::new();
    loop {
        match frame::decode(&input[used..], BODY_MAX) {
            Ok(Some((f, n))) => {
                assert!(n >= frame::HEADER_BYTES && used + n <= input.len(), "a frame within its input");
                let again = frame::encode(f.ver, f.op, f.seq, f.body);
                assert_eq!(&again[..], &input[used..used + n], "re-encodes to the same bytes");
                frames.push((f.ver, f.op, f.seq, f.body.to_vec()));
                used += n;
            }
            Ok(None) => return (frames, Ok(used)),
            Err(e) => return (frames, Err(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, end) = all_frames(data);
    // Byte at a time: a buffer that grows by one byte, frames taken off the front.
    let mut buffer = Vec::new();
    let mut frames = Vec::new();
    let mut failed = None;
    'bytes: for byte in data {
        buffer.push(*byte);
        loop {
            match frame::decode(&buffer, BODY_MAX) {
                Ok(Some((f, n))) => {
                    frames.push((f.ver, f.op, f.seq, f.body.to_vec()));
                    buffer.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'bytes;
                }
            }
        }
    }
    assert_eq!(frames, whole, "byte-at-a-time decoding agrees with whole-buffer decoding");
    assert_eq!(failed, end.err(), "and fails the same way");
});
