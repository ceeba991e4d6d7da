//! permessage-deflate: negotiation never panics and answers only what it
//! may; inflating arbitrary bytes never passes its bound; and whatever the
//! deflater compresses inflates back to the same bytes.
#![no_main]

use corecast::proto::ws::deflate::{Deflater, Inflater};
use corecast::proto::ws::extension::negotiate;
use libfuzzer_sys::fuzz_target;

const BOUND: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Some(deflate) = negotiate([data]) {
        let answer = deflate.response_header();
        assert!(answer.starts_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"));
        assert!(answer.ends_with("\r\n") && answer.matches("\r\n").count() == 1);
        assert!((8..=15).contains(&deflate.server_window_bits));
    }
    let mut inflater = Inflater::default();
    if let Ok(message) = inflater.inflate(data, BOUND) {
        assert!(message.len() <= BOUND, "inflated within the bound");
    }
    let mut compressed = Vec::new();
    if Deflater::new(1).compress_into(data, &mut compressed) {
        assert!(compressed.len() < data.len(), "only what pays");
        assert_eq!(inflater.inflate(&compressed, data.len()).as_deref(), Ok(data), "round trip");
    }
});
