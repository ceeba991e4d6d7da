//! The WebSocket opening handshake (RFC 6455 section 4.2): parse the client's
//! HTTP/1.1 upgrade request, compute `Sec-WebSocket-Accept`, and write either
//! the 101 response or a complete refusal.
//!
//! Owns: the rules for accepting an upgrade on the WS port. Must never: read
//! past `header_bytes_max` bytes of a head, allocate from a client-supplied
//! length, or panic on any input. No subprotocol is negotiated (goim
//! negotiates none); the one extension is permessage-deflate, when
//! `compression` is on and the client offers it (`extension`).

use crate::proto::ws::extension::{self, Deflate};
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::http::head::{self, contains_token, trim, HeadError};

/// Headers beyond this count are refused with 431 (the array is on the stack).
pub const HEADERS_MAX: usize = head::HEADERS_MAX;

/// The GUID RFC 6455 appends to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bytes a valid `Sec-WebSocket-Key` decodes to.
const KEY_BYTES: usize = 16;

/// Base64 characters (with padding) of a 16-byte key.
const KEY_CHARS: usize = 24;

/// What the upgrade parser checks against; built once from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeLimits {
    /// The only path that upgrades (goim: "/sub"); a query string is ignored.
    pub path: String,
    /// A head (request line + headers + blank line) larger than this is 431.
    pub header_bytes_max: usize,
    /// When non-empty, a present `Origin` must equal one of these
    /// (ASCII case-insensitive). A missing `Origin` is always allowed:
    /// non-browser clients (goim's SDKs) send none, and browsers always do.
    pub allowed_origins: Vec<String>,
    /// Accept a permessage-deflate offer (`ws.compression = "on"`).
    pub compression: bool,
}

impl Default for UpgradeLimits {
    fn default() -> Self {
        UpgradeLimits {
            path: "/sub".to_string(),
            header_bytes_max: 8192,
            allowed_origins: Vec::new(),
            compression: false,
        }
    }
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Bytes of the request head; anything after them is already frames.
    pub head_bytes: usize,
    /// The `Sec-WebSocket-Accept` value for `switching_protocols`.
    pub accept: String,
    /// The permessage-deflate offer accepted, if any.
    pub deflate: Option<Deflate>,
}

/// A refused upgrade: the caller writes `response()` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Short diagnostic, sent as the response body and fit for a log line.
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Self {
        Refusal { status, reason }
    }

    /// A complete HTTP/1.1 response that ends the connection.
    pub fn response(&self) -> Vec<u8> {
        let body_len = self.reason.len() + 1;
        let mut out = Vec::with_capacity(192 + body_len);
        let head = format!(
            "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            self.status,
            status_text(self.status),
            body_len
        );
        out.extend_from_slice(head.as_bytes());
        match self.status {
            // RFC 6455 section 4.4: tell the client which version we speak;
            // RFC 9110 section 15.5.22: a 426 names the protocol to upgrade to.
            426 => out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
            // RFC 9110 section 15.5.6: a 405 lists the allowed methods.
            405 => out.extend_from_slice(b"Allow: GET\r\n"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.reason.as_bytes());
        out.push(b'\n');
        out
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

const TOO_LARGE: Refusal = Refusal::new(431, "request head too large");
const MALFORMED: Refusal = Refusal::new(400, "malformed request");

/// Parses an upgrade request from the start of `input`.
///
/// `Ok(None)` means the head is incomplete and within `header_bytes_max`:
/// read more and call again with the whole buffer. `Ok(Some)` is a valid
/// upgrade; answer it with `switching_protocols`. `Err` is a refusal.
pub fn parse_upgrade(input: &[u8], config: &UpgradeLimits) -> Result<Option<Upgrade>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let request = match head::parse(input, config.header_bytes_max, &mut headers) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(None),
        Err(HeadError::TooLarge) => return Err(TOO_LARGE),
        Err(HeadError::Malformed) => return Err(MALFORMED),
    };
    let head_bytes = request.head_bytes;
    if request.method != Some("GET") {
        return Err(Refusal::new(405, "only GET upgrades"));
    }
    let target = request.path.ok_or(MALFORMED)?;
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if path != config.path {
        return Err(Refusal::new(404, "no WebSocket endpoint at this path"));
    }
    if request.version != Some(1) {
        return Err(Refusal::new(400, "WebSocket needs HTTP/1.1"));
    }

    let mut host_seen = false;
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut version: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    let mut origin: Option<&[u8]> = None;
    let mut extension_offers: [&[u8]; 8] = [&[]; 8];
    let mut extension_lines = 0;
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim(header.value);
        // Upgrade and Connection are lists and may be split over several
        // lines; the single-valued headers must appear once, since two
        // differing values leave no right answer.
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= contains_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= contains_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case("host") {
            host_seen = true;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            set_once(&mut version, value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            set_once(&mut key, value)?;
        } else if name.eq_ignore_ascii_case("origin") {
            set_once(&mut origin, value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            // A list that may span lines; past eight lines the rest is
            // ignored (declining is always allowed).
            if let Some(slot) = extension_offers.get_mut(extension_lines) {
                *slot = value;
                extension_lines += 1;
            }
        }
    }

    // RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400.
    if !host_seen {
        return Err(Refusal::new(400, "missing Host"));
    }
    if !upgrade_websocket {
        return Err(Refusal::new(400, "missing Upgrade: websocket"));
    }
    if !connection_upgrade {
        return Err(Refusal::new(400, "missing Connection: upgrade"));
    }
    if version != Some(b"13") {
        return Err(Refusal::new(426, "unsupported Sec-WebSocket-Version"));
    }
    let key = key.ok_or(Refusal::new(400, "missing Sec-WebSocket-Key"))?;
    if !is_valid_key(key) {
        return Err(Refusal::new(400, "invalid Sec-WebSocket-Key"));
    }
    if let Some(origin) = origin {
        let allowed = config.allowed_origins.is_empty()
            || config.allowed_origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin));
        if !allowed {
            return Err(Refusal::new(403, "origin not allowed"));
        }
    }
    // A valid key is 24 base64 characters, hence ASCII.
    let key = std::str::from_utf8(key).map_err(|_| MALFORMED)?;
    let deflate = match config.compression {
        true => extension::negotiate(extension_offers[..extension_lines].iter().copied()),
        false => None,
    };
    Ok(Some(Upgrade { head_bytes, accept: accept_key(key), deflate }))
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// The 101 response that completes an accepted upgrade, with the
/// extension answer when one was negotiated.
pub fn switching_protocols(accept: &str, deflate: Option<&Deflate>) -> Vec<u8> {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    const ACCEPT: &[u8] = b"Sec-WebSocket-Accept: ";
    let mut out = Vec::with_capacity(HEAD.len() + ACCEPT.len() + accept.len() + 128);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(ACCEPT);
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(deflate) = deflate {
        out.extend_from_slice(deflate.response_header().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Result<(), Refusal> {
    if slot.is_some() {
        return Err(Refusal::new(400, "duplicate WebSocket header"));
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 6455 section 4.1: the key is base64 of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    if key.len() != KEY_CHARS {
        return false;
    }
    // 24 characters decode to at most 18 bytes; the room keeps decode_slice
    // from refusing on its conservative size estimate.
    let mut decoded = [0u8; KEY_CHARS];
    matches!(base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded), Ok(KEY_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn limits() -> UpgradeLimits {
        UpgradeLimits::default()
    }

    /// A valid goim upgrade with `extra` header lines (each ending in CRLF).
    fn request_with(request_line: &str, extra: &str) -> Vec<u8> {
        format!(
            "{request_line}\r\nHost: push.example.com:3102\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn valid() -> Vec<u8> {
        request_with("GET /sub HTTP/1.1", "")
    }

    /// A request built line by line, for leaving headers out.
    fn request_lines(lines: &[&str]) -> Vec<u8> {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    fn status(input: &[u8], config: &UpgradeLimits) -> u16 {
        match parse_upgrade(input, config) {
            Err(refusal) => refusal.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455_section_1_3() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accepts_the_rfc_6455_example_request() {
        let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let config = UpgradeLimits { path: "/chat".to_string(), ..limits() };
        let upgrade = parse_upgrade(request, &config).unwrap().unwrap();
        assert_eq!(upgrade.head_bytes, request.len());
        assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn switching_protocols_is_the_exact_101_response() {
        assert_eq!(
            switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec()
        );
    }

    #[test]
    fn head_bytes_stops_before_the_first_frame() {
        let mut input = valid();
        let head = input.len();
        input.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
        assert_eq!(parse_upgrade(&input, &limits()).unwrap().unwrap().head_bytes, head);
    }

    #[test]
    fn incomplete_head_a_byte_at_a_time_is_none_until_the_blank_line() {
        let input = valid();
        for cut in 0..input.len() {
            assert_eq!(parse_upgrade(&input[..cut], &limits()), Ok(None), "cut at {cut}");
        }
        assert!(parse_upgrade(&input, &limits()).unwrap().is_some());
    }

    #[test]
    fn query_string_is_ignored() {
        assert!(parse_upgrade(&request_with("GET /sub?token=abc&x=1 HTTP/1.1", ""), &limits()).unwrap().is_some());
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive_and_lists_are_walked() {
        let input = request_lines(&[
            "GET /sub HTTP/1.1",
            "host: a",
            "UPGRADE: WebSocket",
            "connection: keep-alive, Upgrade",
            "sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  ",
            "SEC-WEBSOCKET-VERSION: 13",
        ]);
        let upgrade = parse_upgrade(&input, &limits()).unwrap().unwrap();
        assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn connection_token_may_arrive_on_a_second_line() {
        let input = request_lines(&[
            "GET /sub HTTP/1.1",
            "Host: a",
            "Upgrade: websocket",
            "Connection: keep-alive",
            "Connection: upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ]);
        assert!(parse_upgrade(&input, &limits()).unwrap().is_some());
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let refusal = parse_upgrade(&request_with("POST /sub HTTP/1.1", ""), &limits()).unwrap_err();
        assert_eq!(refusal.status, 405);
        assert!(String::from_utf8(refusal.response()).unwrap().contains("\r\nAllow: GET\r\n"));
    }

    #[test]
    fn wrong_path_is_404() {
        assert_eq!(status(&request_with("GET /chat HTTP/1.1", ""), &limits()), 404);
        assert_eq!(status(&request_with("GET /sub/ HTTP/1.1", ""), &limits()), 404);
        assert_eq!(status(&request_with("GET /SUB HTTP/1.1", ""), &limits()), 404);
    }

    #[test]
    fn http_1_0_is_400() {
        assert_eq!(status(&request_with("GET /sub HTTP/1.0", ""), &limits()), 400);
    }

    #[test]
    fn missing_host_is_400() {
        let input = request_lines(&[
            "GET /sub HTTP/1.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ]);
        assert_eq!(status(&input, &limits()), 400);
    }

    #[test]
    fn missing_or_wrong_upgrade_is_400() {
        let base = ["GET /sub HTTP/1.1", "Host: a", "Connection: Upgrade", "Sec-WebSocket-Version: 13"];
        let key_line = format!("Sec-WebSocket-Key: {KEY}");
        let mut lines: Vec<&str> = base.to_vec();
        lines.push(&key_line);
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
        lines.push("Upgrade: h2c");
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
        // A token is matched whole, not as a substring.
        lines.pop();
        lines.push("Upgrade: websockets");
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
    }

    #[test]
    fn missing_connection_upgrade_is_400() {
        let key_line = format!("Sec-WebSocket-Key: {KEY}");
        let mut lines = vec!["GET /sub HTTP/1.1", "Host: a", "Upgrade: websocket", "Sec-WebSocket-Version: 13"];
        lines.push(&key_line);
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
        lines.push("Connection: keep-alive");
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
        lines.pop();
        lines.push("Connection: upgraded");
        assert_eq!(status(&request_lines(&lines), &limits()), 400);
    }

    #[test]
    fn wrong_or_missing_version_is_426_naming_version_13() {
        for version in ["8", "12", "", "13, 8", "abc"] {
            let input = request_lines(&[
                "GET /sub HTTP/1.1",
                "Host: a",
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {KEY}"),
                &format!("Sec-WebSocket-Version: {version}"),
            ]);
            let refusal = parse_upgrade(&input, &limits()).unwrap_err();
            assert_eq!(refusal.status, 426, "version {version:?}");
            let response = String::from_utf8(refusal.response()).unwrap();
            assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
            assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        }
        let input = request_lines(&[
            "GET /sub HTTP/1.1",
            "Host: a",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
        ]);
        assert_eq!(status(&input, &limits()), 426);
    }

    #[test]
    fn missing_key_is_400() {
        let input = request_lines(&[
            "GET /sub HTTP/1.1",
            "Host: a",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
        ]);
        assert_eq!(status(&input, &limits()), 400);
    }

    #[test]
    fn key_that_is_not_base64_of_16_bytes_is_400() {
        for key in [
            "",
            "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 21 bytes
            "dGhlIHNhbXBsZSBub25jZQ",       // padding left off
            "dGhlIHNhbXBsZSBub25jZQ=*",     // not base64
            "dGhlIHNhbXBsZSBub25jZR==",     // non-canonical trailing bits
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            let input = request_lines(&[
                "GET /sub HTTP/1.1",
                "Host: a",
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {key}"),
                "Sec-WebSocket-Version: 13",
            ]);
            assert_eq!(status(&input, &limits()), 400, "key {key:?}");
        }
    }

    #[test]
    fn duplicate_key_is_400() {
        let input = request_with("GET /sub HTTP/1.1", &format!("Sec-WebSocket-Key: {KEY}\r\n"));
        assert_eq!(status(&input, &limits()), 400);
    }

    #[test]
    fn origin_not_in_a_non_empty_list_is_403() {
        let config = UpgradeLimits { allowed_origins: vec!["https://App.Example.com".to_string()], ..limits() };
        let other = request_with("GET /sub HTTP/1.1", "Origin: https://evil.example\r\n");
        assert_eq!(status(&other, &config), 403);
        let listed = request_with("GET /sub HTTP/1.1", "Origin: https://app.example.COM\r\n");
        assert!(parse_upgrade(&listed, &config).unwrap().is_some());
        // Non-browser clients send no Origin at all.
        assert!(parse_upgrade(&valid(), &config).unwrap().is_some());
        // With no list, any Origin passes.
        assert!(parse_upgrade(&other, &limits()).unwrap().is_some());
    }

    #[test]
    fn head_larger_than_the_limit_is_431() {
        let config = UpgradeLimits { header_bytes_max: 256, ..limits() };
        // Complete but too large.
        let padded = request_with("GET /sub HTTP/1.1", &format!("X-Pad: {}\r\n", "a".repeat(300)));
        assert_eq!(status(&padded, &config), 431);
        // Incomplete and already past the limit: refused without waiting.
        let partial = &padded[..padded.len() - 4];
        assert_eq!(status(partial, &config), 431);
        // Incomplete and within the limit: wait.
        assert_eq!(parse_upgrade(&padded[..200], &config), Ok(None));
    }

    #[test]
    fn more_than_64_headers_is_431() {
        let extra: String = (0..HEADERS_MAX).map(|i| format!("X-{i}: v\r\n")).collect();
        let config = UpgradeLimits { header_bytes_max: 1 << 16, ..limits() };
        assert_eq!(status(&request_with("GET /sub HTTP/1.1", &extra), &config), 431);
    }

    #[test]
    fn malformed_request_is_400() {
        assert_eq!(status(b"GET /sub HTTP/1.1\r\nHost a\r\n\r\n", &limits()), 400);
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", &limits()), 400);
    }

    #[test]
    fn refusal_response_is_complete_http_with_content_length() {
        let refusal = Refusal { status: 403, reason: "origin not allowed" };
        let response = String::from_utf8(refusal.response()).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, "origin not allowed\n");
        assert!(!head.contains("Sec-WebSocket-Version"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::test_rng::XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let config = UpgradeLimits { header_bytes_max: 512, allowed_origins: vec!["x".to_string()], ..limits() };
        let valid = request_with("GET /sub HTTP/1.1", "Origin: x\r\n");
        for _ in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut input: Vec<u8> = if next() % 2 == 0 {
                // Mutations of a valid request reach deeper branches.
                let mut bytes = valid.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                bytes
            } else {
                (0..len).map(|_| next() as u8).collect()
            };
            if next() % 4 == 0 {
                let cut = (next() as usize) % (input.len() + 1);
                input.truncate(cut);
            }
            let _ = parse_upgrade(&input, &config);
        }
    }
}
