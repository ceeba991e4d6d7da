//! The WebSocket upgrade and the push API read a request head by one rule
//! (`proto::http::head`): the same bytes get the same verdict from both.
//! Tested here, on the upgrade's side, because the upgrade depends on the
//! head parser and not the other way round.

use crate::proto::http::head::HEADERS_MAX;
use crate::proto::http::parser::{parse_head, HttpError};
use crate::proto::ws::handshake::{parse_upgrade, UpgradeLimits};

const UPGRADE: &str = "GET /sub HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// The API's and the upgrade's verdict on one head: incomplete,
/// complete, too large or malformed.
fn verdicts(head: &[u8], max: usize) -> (&'static str, &'static str) {
    let api = match parse_head(head, max, 1 << 20) {
        Ok(None) => "incomplete",
        Ok(Some(_)) => "complete",
        Err(HttpError::HeaderTooLarge) => "too large",
        Err(_) => "malformed",
    };
    let limits = UpgradeLimits { header_bytes_max: max, ..UpgradeLimits::default() };
    let upgrade = match parse_upgrade(head, &limits) {
        Ok(None) => "incomplete",
        Ok(Some(_)) => "complete",
        Err(refusal) if refusal.status == 431 => "too large",
        Err(refusal) if refusal.reason == "malformed request" => "malformed",
        // A head the parser took whole but the upgrade rules refuse.
        Err(_) => "complete",
    };
    (api, upgrade)
}

#[test]
fn the_api_and_the_upgrade_read_heads_by_one_rule() {
    let whole = format!("{UPGRADE}\r\n");
    let many: String = (0..HEADERS_MAX).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (whole.clone().into_bytes(), 8192, "complete"),
        (whole.clone().into_bytes(), whole.len(), "complete"),
        (whole.clone().into_bytes(), whole.len() - 1, "too large"),
        (UPGRADE.as_bytes().to_vec(), 8192, "incomplete"),
        (UPGRADE.as_bytes().to_vec(), 10, "too large"),
        (format!("{UPGRADE}{many}\r\n").into_bytes(), 1 << 16, "too large"),
        (b"GET /sub HTTP/1.1\r\nHost h\r\n\r\n".to_vec(), 8192, "malformed"),
        (b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), 8192, "malformed"),
    ];
    for (head, max, expected) in cases {
        assert_eq!(verdicts(&head, max), (expected, expected), "{:?} at {max}", String::from_utf8_lossy(&head));
    }
}

#[test]
fn values_are_trimmed_of_spaces_and_tabs_only_by_both() {
    let tabbed = format!("{}\r\n", UPGRADE.replace("Connection: Upgrade", "Connection:\tkeep-alive,\tUpgrade\t"));
    let limits = UpgradeLimits::default();
    assert!(parse_upgrade(tabbed.as_bytes(), &limits).unwrap().is_some());
    assert!(parse_head(tabbed.as_bytes(), 8192, 1 << 20).unwrap().unwrap().keep_alive);
}
