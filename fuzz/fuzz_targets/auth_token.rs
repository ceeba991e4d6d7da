//! The auth token parser (JSON from the network): never panics; a token it
//! accepts parses the same again, and its op list stays within its bound.
#![no_main]

use corecast::proto::goim::auth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut scratch = Vec::new();
    let first = auth::parse(data, &mut scratch);
    let mut scratch_again = Vec::new();
    let second = auth::parse(data, &mut scratch_again);
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "parsing is deterministic");
    if let Ok(token) = first {
        assert!(token.accepts.len() <= auth::ACCEPTS_MAX);
        assert!(token.accepts.windows(2).all(|w| w[0] < w[1]), "accepts sorted and unique");
    }
    let _ = auth::parse_op_list(data);
});
