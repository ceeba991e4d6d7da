//! The WebSocket upgrade handshake parser: never panics, an accepted upgrade
//! never claims bytes past its input, and a refusal renders a response.
#![no_main]

use corecast::proto::ws::handshake::{parse_upgrade, UpgradeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = UpgradeLimits { allowed_origins: vec!["https://ok.test".into()], ..UpgradeLimits::default() };
    match parse_upgrade(data, &limits) {
        Ok(Some(upgrade)) => {
            assert!(upgrade.head_bytes <= data.len());
            assert_eq!(upgrade.accept.len(), 28, "a base64 SHA-1");
        }
        Ok(None) => assert!(data.len() <= limits.header_bytes_max, "incomplete only while under the bound"),
        Err(refusal) => {
            let response = refusal.response();
            assert!(response.starts_with(b"HTTP/1.1 "));
        }
    }
});
