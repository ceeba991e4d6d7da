//! The WebSocket frame decoder: whole-buffer and byte-at-a-time decoding
//! give the same events and the same error, frames never claim bytes past
//! the input, and no fragmented message grows past its bound (a frame
//! claiming a 2^63-byte payload is refused from its header).
#![no_main]

use corecast::ws::frame::Decoder;
use libfuzzer_sys::fuzz_target;

const MESSAGE_MAX: usize = 4096 + 16;

fn events(chunks: &mut dyn Iterator<Item = u8>) -> (Vec<String>, Option<u16>) {
    let mut decoder = Decoder::new(MESSAGE_MAX);
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for byte in chunks {
        buffer.push(byte);
        loop {
            let len = buffer.len();
            match decoder.decode(&mut buffer) {
                Ok(Some((event, used))) => {
                    assert!(used <= len, "a frame within its input");
                    seen.push(format!("{event:?}"));
                    buffer.drain(..used);
                }
                Ok(None) => break,
                Err(code) => return (seen, Some(code.0)),
            }
            assert!(decoder.buffered_bytes() <= MESSAGE_MAX, "a fragmented message stays within its bound");
        }
    }
    (seen, None)
}

fuzz_target!(|data: &[u8]| {
    // Whole buffer: all bytes at once, then frames off the front.
    let mut decoder = Decoder::new(MESSAGE_MAX);
    let mut buffer = data.to_vec();
    let mut whole = Vec::new();
    let mut whole_error = None;
    loop {
        let len = buffer.len();
        match decoder.decode(&mut buffer) {
            Ok(Some((event, used))) => {
                assert!(used <= len);
                whole.push(format!("{event:?}"));
                buffer.drain(..used);
            }
            Ok(None) => break,
            Err(code) => {
                whole_error = Some(code.0);
                break;
            }
        }
    }
    let (bytewise, bytewise_error) = events(&mut data.iter().copied());
    assert_eq!(bytewise, whole, "byte-at-a-time decoding agrees with whole-buffer decoding");
    assert_eq!(bytewise_error, whole_error, "and fails the same way");
});
