//! Negotiating permessage-deflate (RFC 7692 section 5 and 7.1) on the
//! upgrade: read the client's `Sec-WebSocket-Extensions` offers, accept the
//! first acceptable one, and write the answer.
//!
//! corecast always answers with `server_no_context_takeover` (every server
//! message is compressed alone, so one compressed payload is valid for every
//! member of a push) and `client_no_context_takeover` (every client message
//! inflates alone, so no connection keeps a window between messages).
//!
//! Owns: the offer grammar and the rules for declining an offer. Must never:
//! fail an upgrade over an extension (a bad offer is declined and the
//! connection goes on uncompressed), or allocate from the client's input
//! (everything borrows the request head).

/// Largest LZ77 window (2^15 bytes), and the default on both sides.
pub const WINDOW_BITS_MAX: u8 = 15;

/// Smallest window RFC 7692 allows a peer to ask for.
pub const WINDOW_BITS_MIN: u8 = 8;

/// An accepted permessage-deflate offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The window this client lets the server use (`server_max_window_bits`,
    /// 15 when not offered). A payload compressed with a 2^15 window stays
    /// valid for it as long as the message is at most 2^bits bytes: with no
    /// context taken over, no back-reference reaches further than the
    /// message's own start. Longer messages go to it uncompressed.
    pub server_window_bits: u8,
    /// The client offered `server_max_window_bits`: the answer must carry it.
    server_window_offered: bool,
}

impl Deflate {
    /// Whether a message of `message_bytes` may go to this client in the
    /// payload compressed once for everyone (see `server_window_bits`).
    pub fn takes_shared(&self, message_bytes: usize) -> bool {
        // The deflater's own window is 2^15: a client that allows that
        // takes any message.
        self.server_window_bits >= WINDOW_BITS_MAX || message_bytes <= 1usize << self.server_window_bits
    }

    /// The `Sec-WebSocket-Extensions` line of the 101 response, CRLF included.
    pub fn response_header(&self) -> String {
        let mut line = String::from(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.server_window_offered {
            line.push_str(&format!("; server_max_window_bits={}", self.server_window_bits));
        }
        line.push_str("\r\n");
        line
    }
}

/// The first acceptable permessage-deflate offer among every
/// `Sec-WebSocket-Extensions` value of the request (each a comma-separated
/// list), or `None`: then nothing is negotiated and the connection gets
/// uncompressed frames, exactly as without the header.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Deflate> {
    values.into_iter().flat_map(|value| split_outside_quotes(value, b',')).find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`), or `None` when it is
/// another extension or has a parameter RFC 7692 says to decline: an
/// unknown one, a repeated one, a value where none belongs, or a window
/// size outside 8..15.
fn accept_offer(offer: &[u8]) -> Option<Deflate> {
    let mut parts = split_outside_quotes(offer, b';');
    if !trim(parts.next()?).eq_ignore_ascii_case(b"permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut deflate = Deflate { server_window_bits: WINDOW_BITS_MAX, server_window_offered: false };
    for param in parts {
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(at) => (trim(&param[..at]), Some(unquote(trim(&param[at + 1..]))?)),
            None => (trim(param), None),
        };
        let index = PARAMS.iter().position(|known| name.eq_ignore_ascii_case(known.as_bytes()))?;
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (PARAMS[index], value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => {
                deflate.server_window_bits = window_bits(value)?;
                deflate.server_window_offered = true;
            }
            // The client can take a smaller window; the server's inflater
            // has the full one, so any value is fine once it is valid.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
    }
    Some(deflate)
}

const PARAMS: [&str; 4] =
    ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"];

/// RFC 7692 section 7.1.2: a decimal integer from 8 to 15, no leading zero.
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [digit @ b'8'..=b'9'] => Some(digit - b'0'),
        [b'1', digit @ b'0'..=b'5'] => Some(10 + digit - b'0'),
        _ => None,
    }
}

/// A parameter value: a token, or a quoted string without escapes (RFC 7692
/// section 7.1 values are tokens either way; an escape is declined).
fn unquote(value: &[u8]) -> Option<&[u8]> {
    match value {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') && !inner.contains(&b'"') => Some(inner),
        [b'"', ..] | [.., b'"'] => None,
        _ => Some(value),
    }
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_outside_quotes(input: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    input.split(move |&b| {
        if b == b'"' {
            quoted = !quoted;
        }
        b == separator && !quoted
    })
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<Deflate> {
        negotiate([value.as_bytes()])
    }

    #[test]
    fn the_browser_offer_is_accepted_with_both_no_context_takeovers() {
        let deflate = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(deflate.server_window_bits, 15);
        assert!(deflate.takes_shared(1 << 20), "any message when the full window is allowed");
        assert_eq!(
            deflate.response_header(),
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
    }

    #[test]
    fn server_max_window_bits_is_echoed_and_bounds_what_is_shared() {
        let deflate = offer("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9").unwrap();
        assert_eq!(deflate.server_window_bits, 10);
        assert!(deflate.response_header().ends_with("; server_max_window_bits=10\r\n"));
        assert!(deflate.takes_shared(1024));
        assert!(!deflate.takes_shared(1025));
        let quoted = offer("permessage-deflate; server_max_window_bits=\"12\"").unwrap();
        assert_eq!(quoted.server_window_bits, 12);
    }

    #[test]
    fn offers_the_rfc_says_to_decline_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits=\"1\\2\"",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(offer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_upgrade_negotiates_only_when_compression_is_on() {
        use crate::proto::ws::handshake::{parse_upgrade, switching_protocols, UpgradeLimits};
        let request = b"GET /sub HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        let on = UpgradeLimits { compression: true, ..UpgradeLimits::default() };
        let upgrade = parse_upgrade(request, &on).unwrap().unwrap();
        let deflate = upgrade.deflate.expect("the second line's offer");
        let response = String::from_utf8(switching_protocols(&upgrade.accept, Some(&deflate))).unwrap();
        assert!(response.ends_with(&format!("{}\r\n", deflate.response_header())), "{response:?}");
        let off = parse_upgrade(request, &UpgradeLimits::default()).unwrap().unwrap();
        assert_eq!(off.deflate, None);
    }

    #[test]
    fn the_first_acceptable_offer_wins_across_lists_and_lines() {
        let deflate = negotiate([
            b"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=99".as_slice(),
            b"permessage-deflate; server_max_window_bits=9, permessage-deflate".as_slice(),
        ])
        .unwrap();
        assert_eq!(deflate.server_window_bits, 9);
        assert!(offer("PerMessage-Deflate ;  SERVER_NO_CONTEXT_TAKEOVER ").is_some());
    }
}
