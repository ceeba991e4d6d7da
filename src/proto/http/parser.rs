//! HTTP/1.1 request parsing on top of httparse: request head, body framing
//! (Content-Length or chunked) and the keep-alive decision.
//!
//! Owns: turning bytes into a request description. Must never: allocate
//! from a length it has not checked against the configured limit, or accept
//! an ambiguous message (both Content-Length and Transfer-Encoding).

use crate::proto::http::head::{self, contains_token, trim, HeadError};

/// Headers beyond this count are refused with 431 (the array is on the stack).
pub const HEADERS_MAX: usize = head::HEADERS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
}

/// A parsed request head. The target is kept as offsets into the buffer it
/// was parsed from, so the head can outlive the borrow of that buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub target_start: usize,
    pub target_end: usize,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub framing: BodyFraming,
    /// Bytes of request line + headers + the blank line.
    pub head_bytes: usize,
    /// Where the `Authorization` value is in the head (start, end), if sent.
    pub authorization: Option<(usize, usize)>,
}

/// Why a request is refused; each maps to a status and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    Malformed,
    HeaderTooLarge,
    BodyTooLarge,
    UnsupportedTransferEncoding,
}

impl HttpError {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::Malformed => (400, "Bad Request"),
            HttpError::HeaderTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::BodyTooLarge => (413, "Payload Too Large"),
            HttpError::UnsupportedTransferEncoding => (501, "Not Implemented"),
        }
    }
}

/// Parses a request head from the start of `input`. `Ok(None)` means more
/// bytes are needed; the caller refuses the request once it holds
/// `header_bytes_max` bytes without a complete head.
pub fn parse_head(input: &[u8], header_bytes_max: usize, body_bytes_max: usize) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let request = match head::parse(input, header_bytes_max, &mut headers) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(None),
        Err(HeadError::TooLarge) => return Err(HttpError::HeaderTooLarge),
        Err(HeadError::Malformed) => return Err(HttpError::Malformed),
    };
    let head_bytes = request.head_bytes;
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let path = request.path.ok_or(HttpError::Malformed)?;
    // httparse borrows `path` from `input`: recover its offset.
    let target_start = path.as_ptr() as usize - input.as_ptr() as usize;
    let http11 = request.version == Some(1);
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut authorization = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::Malformed);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if contains_token(value, b"close") {
                keep_alive = false;
            } else if contains_token(value, b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("authorization") {
            // httparse borrows the value from `input`: its offset.
            let start = value.as_ptr() as usize - input.as_ptr() as usize;
            authorization = Some((start, start + value.len()));
        }
    }
    let framing = match (content_length, chunked) {
        (Some(_), true) => return Err(HttpError::Malformed),
        (_, true) => BodyFraming::Chunked,
        (Some(length), false) if length > body_bytes_max => return Err(HttpError::BodyTooLarge),
        (length, false) => BodyFraming::Length(length.unwrap_or(0)),
    };
    Ok(Some(Head {
        method,
        target_start,
        target_end: target_start + path.len(),
        keep_alive,
        expect_continue,
        framing,
        head_bytes,
        authorization,
    }))
}

fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed);
    }
    let mut length = 0usize;
    for digit in value {
        length = length * 10 + (digit - b'0') as usize;
    }
    Ok(length)
}

/// A chunked body being decoded, resumable: each call continues where the
/// previous one stopped, so a body arriving in many small reads costs work
/// linear in its size (decoding from the start at every read was quadratic:
/// a client trickling tiny chunks could keep a shard busy).
#[derive(Debug, Default)]
pub struct Chunked {
    /// Bytes of the body's input already decoded (whole chunks).
    consumed: usize,
    /// The data of those chunks.
    pub body: Vec<u8>,
    /// Past the last chunk: where the trailer section starts (`consumed` is
    /// then where its next line starts, so trailers are scanned once too).
    trailers_start: Option<usize>,
}

impl Chunked {
    /// Continues decoding `input`: the body's bytes from its first one, as
    /// given to the previous call plus what arrived since. Returns the bytes
    /// the whole body used (its data is in `body`), or `Ok(None)` when more
    /// input is needed. Trailers are read and ignored. After `Some` or an
    /// error, `reset` before the next body.
    pub fn decode(&mut self, input: &[u8], body_bytes_max: usize) -> Result<Option<usize>, HttpError> {
        loop {
            if let Some(start) = self.trailers_start {
                return self.skip_trailers(input, start);
            }
            let pos = self.consumed;
            let rest = input.get(pos..).ok_or(HttpError::Malformed)?;
            let (data_start, size) = match httparse::parse_chunk_size(rest) {
                // Past the bound complete as in pieces (`pending`): one verdict
                // however the line arrives.
                Ok(httparse::Status::Complete((used, _))) if used > CHUNK_LINE_BYTES_MAX + 2 => {
                    return Err(HttpError::Malformed)
                }
                Ok(httparse::Status::Complete((used, size))) => (pos + used, size),
                Ok(httparse::Status::Partial) => return pending(rest.len()),
                Err(_) => return Err(HttpError::Malformed),
            };
            if size == 0 {
                self.consumed = data_start;
                self.trailers_start = Some(data_start);
                continue;
            }
            if size > (body_bytes_max - self.body.len()) as u64 {
                return Err(HttpError::BodyTooLarge);
            }
            let data_end = data_start + size as usize;
            if input.len() < data_end + 2 {
                return Ok(None);
            }
            if &input[data_end..data_end + 2] != b"\r\n" {
                return Err(HttpError::Malformed);
            }
            self.body.extend_from_slice(&input[data_start..data_end]);
            self.consumed = data_end + 2;
        }
    }

    /// Skips trailer lines from `consumed` to the empty line that ends the
    /// body; returns the bytes the whole body used. A line is bounded by
    /// `CHUNK_LINE_BYTES_MAX` and the section by `TRAILERS_BYTES_MAX`,
    /// complete or still arriving, so the verdict does not depend on how
    /// the bytes were split.
    fn skip_trailers(&mut self, input: &[u8], start: usize) -> Result<Option<usize>, HttpError> {
        loop {
            let pos = self.consumed;
            let rest = input.get(pos..).ok_or(HttpError::Malformed)?;
            let Some(line_len) = rest.windows(2).position(|w| w == b"\r\n") else {
                // 1,025 bytes without the LF may still be a line at the bound.
                let too_long = rest.len() > CHUNK_LINE_BYTES_MAX + 1 || input.len() - start > TRAILERS_BYTES_MAX;
                return if too_long { Err(HttpError::Malformed) } else { Ok(None) };
            };
            if line_len > CHUNK_LINE_BYTES_MAX || pos + line_len + 2 - start > TRAILERS_BYTES_MAX {
                return Err(HttpError::Malformed);
            }
            self.consumed = pos + line_len + 2;
            if line_len == 0 {
                return Ok(Some(self.consumed));
            }
        }
    }

    /// Ready for the next body (a large buffer is given back).
    pub fn reset(&mut self) {
        self.trailers_start = None;
        self.consumed = 0;
        self.body.clear();
        if self.body.capacity() > 64 * 1024 {
            self.body = Vec::new();
        }
    }
}

/// Decodes a complete chunked body from the start of `input` into `body`
/// in one call (tests and tools; the server resumes with `Chunked`).
pub fn decode_chunked(input: &[u8], body_bytes_max: usize, body: &mut Vec<u8>) -> Result<Option<usize>, HttpError> {
    let mut chunked = Chunked::default();
    let result = chunked.decode(input, body_bytes_max);
    *body = match result {
        Ok(Some(_)) => chunked.body,
        _ => Vec::new(),
    };
    result
}

/// A chunk-size or trailer line longer than this is malformed (hex digits +
/// extensions; a trailer field), complete or not.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// The trailer section (after the last chunk) is malformed past this
/// (corecast ignores trailers: a client has no reason to send many).
const TRAILERS_BYTES_MAX: usize = 8 * 1024;

/// An incomplete chunk-size line: wait for more, unless it can no longer
/// end within the bound (a line of `CHUNK_LINE_BYTES_MAX` is taken with its
/// CRLF, so 1,025 bytes without the LF may still be one).
fn pending(pending_line: usize) -> Result<Option<usize>, HttpError> {
    if pending_line > CHUNK_LINE_BYTES_MAX + 1 {
        return Err(HttpError::Malformed);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/fuzz_targets/http_request.rs` (60 s run): a trailer line
    /// of 1,100 bytes was refused while arriving in pieces but taken whole;
    /// likewise a chunk-size line with a long extension. Both are refused
    /// now, however the bytes are split.
    #[test]
    fn long_chunk_and_trailer_lines_get_one_verdict_whole_or_in_pieces() {
        let long = "a".repeat(CHUNK_LINE_BYTES_MAX + 76);
        let trailer = format!("3\r\nabc\r\n0\r\nX: {long}\r\n\r\n").into_bytes();
        let extension = format!("3;x={long}\r\nabc\r\n0\r\n\r\n").into_bytes();
        let many: String = (0..1500).map(|i| format!("T{i}: v\r\n")).collect();
        let trailers = format!("0\r\n{many}\r\n").into_bytes();
        for body in [trailer, extension, trailers] {
            let (once, outcome) = whole_and_in_pieces(&body);
            assert_eq!(once, Err(HttpError::Malformed), "{}", String::from_utf8_lossy(&body[..40]));
            assert_eq!(outcome, once, "whole and in pieces agree");
        }
    }

    /// Found by the same fuzz target (5 s smoke): a trailer line of exactly
    /// the bound (1,024 bytes and its CRLF) was taken whole but refused in
    /// pieces once 1,025 bytes of it had arrived without the LF; a
    /// chunk-size line likewise.
    #[test]
    fn a_chunk_or_trailer_line_at_the_bound_is_taken_whole_and_in_pieces() {
        for line_bytes in [CHUNK_LINE_BYTES_MAX - 1, CHUNK_LINE_BYTES_MAX, CHUNK_LINE_BYTES_MAX + 1] {
            let filler = "a".repeat(line_bytes - 4);
            let chunk = format!("3;x={filler}\r\nabc\r\n0\r\n\r\n").into_bytes();
            let trailer = format!("3\r\nabc\r\n0\r\nX: {filler}a\r\n\r\n").into_bytes();
            for body in [chunk, trailer] {
                let (once, outcome) = whole_and_in_pieces(&body);
                let expected =
                    if line_bytes <= CHUNK_LINE_BYTES_MAX { Ok(Some(body.len())) } else { Err(HttpError::Malformed) };
                assert_eq!(once, expected, "a line of {line_bytes} bytes, whole");
                assert_eq!(outcome, once, "a line of {line_bytes} bytes: whole and in pieces agree");
            }
        }
    }

    /// `body` decoded in one go, and resumed byte by byte until a verdict.
    fn whole_and_in_pieces(body: &[u8]) -> (Result<Option<usize>, HttpError>, Result<Option<usize>, HttpError>) {
        let mut whole = Vec::new();
        let once = decode_chunked(body, 1 << 20, &mut whole);
        let mut resumed = Chunked::default();
        let mut outcome = Ok(None);
        for end in 0..=body.len() {
            outcome = resumed.decode(&body[..end], 1 << 20);
            if outcome != Ok(None) {
                break;
            }
        }
        (once, outcome)
    }

    #[test]
    fn a_chunked_body_resumed_byte_by_byte_decodes_as_a_whole_and_scans_each_byte_once() {
        let text = b"3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nTrailer: x\r\n\r\n";
        let mut whole = Vec::new();
        let complete = decode_chunked(text, 1024, &mut whole).unwrap().unwrap();
        assert_eq!((whole.as_slice(), complete), (&b"abcd"[..], text.len()));
        let mut chunked = Chunked::default();
        for end in 1..text.len() {
            assert_eq!(chunked.decode(&text[..end], 1024), Ok(None), "at {end}");
            assert!(chunked.consumed <= end, "never past the input");
        }
        assert_eq!(chunked.decode(text, 1024), Ok(Some(complete)));
        assert_eq!(chunked.body, b"abcd");
        chunked.reset();
        assert_eq!(chunked.decode(b"2\r\nxy\r\n0\r\n\r\n", 1024), Ok(Some(12)));
        assert_eq!(chunked.body, b"xy");
    }

    const HEAD_MAX: usize = 8192;
    const BODY_MAX: usize = 1024;

    fn head(text: &[u8]) -> Result<Option<Head>, HttpError> {
        parse_head(text, HEAD_MAX, BODY_MAX)
    }

    #[test]
    fn parses_a_post_with_content_length() {
        let text = b"POST /goim/push/keys?operation=1000&keys=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let parsed = head(text).unwrap().unwrap();
        assert_eq!(parsed.method, Method::Post);
        assert_eq!(&text[parsed.target_start..parsed.target_end], b"/goim/push/keys?operation=1000&keys=a");
        assert_eq!(parsed.framing, BodyFraming::Length(5));
        assert!(parsed.keep_alive);
        assert_eq!(&text[parsed.head_bytes..], b"hello");
    }

    #[test]
    fn a_request_arriving_a_byte_at_a_time_is_partial_until_the_blank_line() {
        let text = b"GET /goim/online/total HTTP/1.1\r\nConnection: close\r\n\r\n";
        for cut in 0..text.len() {
            assert_eq!(head(&text[..cut]), Ok(None), "cut at {cut}");
        }
        let parsed = head(text).unwrap().unwrap();
        assert!(!parsed.keep_alive);
        assert_eq!(parsed.framing, BodyFraming::Length(0));
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
    }

    #[test]
    fn expect_continue_is_seen() {
        let parsed = head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(parsed.expect_continue);
    }

    #[test]
    fn refuses_garbage_oversize_and_ambiguity() {
        assert_eq!(head(b"\x00\x01hello\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(head(b"POST / HTTP/1.1\r\nContent-Length: 2048\r\n\r\n"), Err(HttpError::BodyTooLarge));
        assert_eq!(head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(head(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        let long = vec![b'a'; HEAD_MAX + 1];
        assert_eq!(head(&long), Err(HttpError::HeaderTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..HEADERS_MAX + 1 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(head(&many), Err(HttpError::HeaderTooLarge));
    }

    #[test]
    fn random_and_mutated_requests_never_panic() {
        let mut rng = crate::test_rng::XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let valid = b"POST /goim/push/room?operation=1000&type=live&room=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let mut body = Vec::new();
        for _ in 0..20_000 {
            let mut bytes = valid.to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1));
            if let Ok(Some(parsed)) = head(&bytes) {
                assert!(parsed.head_bytes <= bytes.len());
                assert!(parsed.target_start <= parsed.target_end && parsed.target_end <= bytes.len());
                if parsed.framing == BodyFraming::Chunked {
                    if let Ok(Some(used)) = decode_chunked(&bytes[parsed.head_bytes..], BODY_MAX, &mut body) {
                        assert!(parsed.head_bytes + used <= bytes.len());
                        assert!(body.len() <= BODY_MAX);
                    }
                }
            }
        }
    }

    #[test]
    fn decodes_chunked_bodies_a_byte_at_a_time() {
        let text = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut body = Vec::new();
        let complete = text.len() - 4;
        for cut in 0..complete {
            assert_eq!(decode_chunked(&text[..cut], BODY_MAX, &mut body), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_chunked(text, BODY_MAX, &mut body), Ok(Some(complete)));
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn refuses_bad_and_oversized_chunks() {
        let mut body = Vec::new();
        assert_eq!(decode_chunked(b"zz\r\n", BODY_MAX, &mut body), Err(HttpError::Malformed));
        assert_eq!(decode_chunked(b"3\r\nabcX\r\n", BODY_MAX, &mut body), Err(HttpError::Malformed));
        assert_eq!(decode_chunked(b"401\r\n", BODY_MAX, &mut body), Err(HttpError::BodyTooLarge));
        assert_eq!(decode_chunked(b"ffffffffffffffff\r\n", BODY_MAX, &mut body), Err(HttpError::BodyTooLarge));
    }
}
