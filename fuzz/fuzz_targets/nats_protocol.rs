//! The NATS server-operation parser and corecast's bus payloads: whole and
//! byte-at-a-time parsing agree, nothing is read past the input, and a
//! decoded bus message re-encodes to the same payload.
#![no_main]

use corecast::proto::nats;
use corecast::route::wire;
use libfuzzer_sys::fuzz_target;

const PAYLOAD_MAX: usize = 4096;

fn ops(input: &[u8]) -> (Vec<String>, bool) {
    let mut used = 0;
    let mut seen = Vec::new();
    loop {
        match nats::parse(&input[used..], PAYLOAD_MAX) {
            Ok(Some((op, n))) => {
                assert!(n > 0 && used + n <= input.len(), "an op within its input");
                seen.push(format!("{op:?}"));
                used += n;
            }
            Ok(None) => return (seen, false),
            Err(_) => return (seen, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, whole_failed) = ops(data);
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    let mut failed = false;
    'bytes: for byte in data {
        buffer.push(*byte);
        loop {
            match nats::parse(&buffer, PAYLOAD_MAX) {
                Ok(Some((op, n))) => {
                    seen.push(format!("{op:?}"));
                    buffer.drain(..n);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'bytes;
                }
            }
        }
    }
    assert_eq!(seen, whole);
    assert_eq!(failed, whole_failed);
    if let Some(msg) = wire::decode(data) {
        let mut again = Vec::new();
        wire::encode(&msg, &mut again);
        assert_eq!(again, data, "a bus message re-encodes to its payload");
    }
});
