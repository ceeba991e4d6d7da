//! The one HTTP/1.1 head parser, on httparse. The push API
//! (`parser::parse_head`) and the WebSocket upgrade
//! (`ws::handshake::parse_upgrade`) both read their request heads through
//! it, so a head is complete, too large or malformed by one rule, and
//! header values are trimmed one way; the business auth URL's answers
//! (`protocol::auth_url`) are read by `parse_response` under the same
//! bounds.
//!
//! Owns: the head size bound, the header count bound, and optional
//! whitespace (RFC 9110 section 5.6.3: spaces and tabs only). Must never:
//! read past `header_bytes_max` bytes of an incomplete head, or allocate.

/// Headers beyond this count are refused as too large (the array is on the stack).
pub const HEADERS_MAX: usize = 64;

/// Why a head is refused; each caller answers in its own terms (431 / 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    Malformed,
}

/// A complete head, borrowing the input and the caller's header array.
pub struct Parsed<'h, 'b> {
    pub method: Option<&'b str>,
    pub path: Option<&'b str>,
    /// The minor version: 1 for HTTP/1.1.
    pub version: Option<u8>,
    pub headers: &'h [httparse::Header<'b>],
    /// Request line + headers + the blank line.
    pub head_bytes: usize,
}

/// Parses the head at the start of `input`. `Ok(None)`: incomplete and
/// still within `header_bytes_max`, read more and call again.
pub fn parse<'h, 'b>(
    input: &'b [u8],
    header_bytes_max: usize,
    headers: &'h mut [httparse::Header<'b>; HEADERS_MAX],
) -> Result<Option<Parsed<'h, 'b>>, HeadError> {
    let mut request = httparse::Request::new(headers);
    let head_bytes = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if input.len() > header_bytes_max { Err(HeadError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_bytes > header_bytes_max {
        return Err(HeadError::TooLarge);
    }
    Ok(Some(Parsed {
        method: request.method,
        path: request.path,
        version: request.version,
        headers: request.headers,
        head_bytes,
    }))
}

/// The status code of the response head at the start of `input`.
/// `Ok(None)`: incomplete and still within `header_bytes_max`.
pub fn parse_response(input: &[u8], header_bytes_max: usize) -> Result<Option<u16>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(input) {
        Ok(httparse::Status::Complete(n)) if n > header_bytes_max => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(_)) => response.code.map(Some).ok_or(HeadError::Malformed),
        Ok(httparse::Status::Partial) if input.len() > header_bytes_max => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// A header value without its optional whitespace (spaces and tabs).
pub fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether a comma-separated list (`Connection`, `Upgrade`) holds `token`,
/// ASCII case-insensitively.
pub fn contains_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|item| trim(item).eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_response_head_gives_its_status_under_the_same_bounds() {
        let head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(head, 8192), Ok(Some(403)));
        assert_eq!(parse_response(&head[..20], 8192), Ok(None));
        assert_eq!(parse_response(&head[..20], 10), Err(HeadError::TooLarge));
        assert_eq!(parse_response(head, 20), Err(HeadError::TooLarge));
        assert_eq!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", 8192), Err(HeadError::Malformed));
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", 8192), Err(HeadError::Malformed));
    }

    #[test]
    fn values_are_trimmed_of_spaces_and_tabs_only() {
        assert_eq!(trim(b" \t keep-alive\t "), b"keep-alive");
        assert_eq!(trim(b"\x0bx\x0c"), b"\x0bx\x0c");
        assert!(contains_token(b"keep-alive, \tUpgrade ", b"upgrade"));
        assert!(!contains_token(b"upgrades", b"upgrade"));
    }
}
