//! The NATS server-operation parser and corecast's bus payloads: whole and
//! byte-at-a-time parsing agree, nothing is read past the input, and a
//! decoded bus command re-encodes to a payload of the same length.
#![no_main]

use corecast::conn::conns::ConnRef;
use corecast::proto::nats;
use corecast::route::wire;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

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
    let conn = ConnRef { shard: 1, slot: 2, generation: 3 };
    let subjects = [wire::On::Room(Arc::from("r")), wire::On::Conns(vec![conn]), wire::On::Other];
    for on in subjects {
        let Some(command) = wire::decode(data, on, 1) else { continue };
        // Timestamps travel as Unix time and come back on this process's
        // clock, so the bytes may differ there, but never the length.
        let mut again = Vec::new();
        assert!(wire::encode(&command, "n", &mut again), "a decoded command has a bus encoding");
        assert_eq!(again.len(), data.len(), "a bus command re-encodes to its length");
    }
});
