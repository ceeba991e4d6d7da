//! The WebSocket frame decoder: whole-buffer and byte-at-a-time decoding
//! give the same events and the same error, frames never claim bytes past
//! the input, and no fragmented message grows past its bound (a frame
//! claiming a 2^63-byte payload is refused from its header). The first
//! input byte says whether permessage-deflate was negotiated; compressed
//! messages are inflated within the same bound.
#![no_main]

use corecast::proto::ws::deflate::Inflater;
use corecast::proto::ws::frame::{Decoder, Event};
use libfuzzer_sys::fuzz_target;

const MESSAGE_MAX: usize = 4096 + 16;

fn decoder(deflate: bool) -> Decoder {
    let mut decoder = Decoder::new(MESSAGE_MAX);
    if deflate {
        decoder.allow_compressed();
    }
    decoder
}

/// An event as text; a compressed message is inflated first.
fn describe(event: Event<'_>) -> String {
    if let Event::Compressed { opcode, payload } = &event {
        let inflated = Inflater::default().inflate(payload, MESSAGE_MAX);
        if let Ok(message) = &inflated {
            assert!(message.len() <= MESSAGE_MAX, "inflated within the bound");
        }
        return format!("compressed {opcode} {inflated:?}");
    }
    format!("{event:?}")
}

fn events(deflate: bool, chunks: &mut dyn Iterator<Item = u8>) -> (Vec<String>, Option<u16>) {
    let mut decoder = decoder(deflate);
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for byte in chunks {
        buffer.push(byte);
        loop {
            let len = buffer.len();
            match decoder.decode(&mut buffer) {
                Ok(Some((event, used))) => {
                    assert!(used <= len, "a frame within its input");
                    seen.push(describe(event));
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

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let deflate = first & 1 == 1;
    // Whole buffer: all bytes at once, then frames off the front.
    let mut decoder = decoder(deflate);
    let mut buffer = data.to_vec();
    let mut whole = Vec::new();
    let mut whole_error = None;
    loop {
        let len = buffer.len();
        match decoder.decode(&mut buffer) {
            Ok(Some((event, used))) => {
                assert!(used <= len);
                whole.push(describe(event));
                buffer.drain(..used);
            }
            Ok(None) => break,
            Err(code) => {
                whole_error = Some(code.0);
                break;
            }
        }
    }
    let (bytewise, bytewise_error) = events(deflate, &mut data.iter().copied());
    assert_eq!(bytewise, whole, "byte-at-a-time decoding agrees with whole-buffer decoding");
    assert_eq!(bytewise_error, whole_error, "and fails the same way");
});
