//! The HTTP request parser with its query decoder and chunked bodies: the
//! head never claims bytes past its input, the query decoder stays within
//! its pair bound, and a chunked body decoded in one go and resumed byte by
//! byte agree. The same bytes read as an answer of the business auth URL
//! give a verdict only from a complete head within its bound, and a 2xx
//! only when the status line says so.
#![no_main]

use corecast::proto::http::parser::{self, BodyFraming, Chunked};
use corecast::proto::http::query::Query;
use libfuzzer_sys::fuzz_target;

const HEAD_MAX: usize = 8192;
const BODY_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    match corecast::proto::auth_url::verdict(data) {
        Some(corecast::proto::auth_url::Verdict::Allow) => {
            let line = &data[data.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(0)..];
            assert!(line.starts_with(b"HTTP/1.") && line.get(9) == Some(&b'2'), "a 2xx status line");
        }
        None => assert!(data.len() <= corecast::proto::auth_url::ANSWER_HEAD_BYTES_MAX),
        Some(_) => {}
    }
    let Ok(Some(head)) = parser::parse_head(data, HEAD_MAX, BODY_MAX) else { return };
    assert!(
        head.head_bytes <= data.len() && head.target_start <= head.target_end && head.target_end <= head.head_bytes
    );
    let target = &data[head.target_start..head.target_end];
    let raw_query = target.iter().position(|b| *b == b'?').map_or(&b""[..], |q| &target[q + 1..]);
    if let Ok(query) = Query::parse(raw_query, 64) {
        let _ = query.first("keys");
        assert!(query.all("keys").count() <= 64);
    }
    let body = &data[head.head_bytes..];
    match head.framing {
        BodyFraming::Length(length) => assert!(length <= BODY_MAX),
        BodyFraming::Chunked => {
            let mut whole = Vec::new();
            let once = parser::decode_chunked(body, BODY_MAX, &mut whole);
            let mut resumed = Chunked::default();
            let mut outcome = Ok(None);
            for end in 0..=body.len() {
                outcome = resumed.decode(&body[..end], BODY_MAX);
                if !matches!(outcome, Ok(None)) {
                    break;
                }
            }
            assert_eq!(outcome, once, "resumed and whole decoding agree");
            if let Ok(Some(used)) = once {
                assert!(used <= body.len());
                assert_eq!(resumed.body, whole);
            }
        }
    }
});
