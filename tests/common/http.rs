//! The HTTP/1.1 client of the tests: requests, keep-alive connections, responses.
#![allow(dead_code)]

use super::*;
use simd_json::prelude::*;
use simd_json::OwnedValue;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// One parsed HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> OwnedValue {
        json(&self.body_str())
    }
}

/// Parses JSON text with simd-json.
pub fn json(text: &str) -> OwnedValue {
    let mut bytes = text.as_bytes().to_vec();
    simd_json::to_owned_value(&mut bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Asserts HTTP 200 and a body equal (as JSON) to `{"code":0,"message":""}`.
pub fn assert_push_ok(response: &HttpResponse, what: &str) {
    assert_eq!(response.status, 200, "{what}: status, body {:?}", response.body_str());
    assert_eq!(response.json(), json(r#"{"code":0,"message":""}"#), "{what}: envelope {:?}", response.body_str());
}

/// Asserts HTTP 200, code -400 and a non-empty message.
pub fn assert_request_error(response: &HttpResponse, what: &str) {
    assert_eq!(response.status, 200, "{what}: status, body {:?}", response.body_str());
    let envelope = response.json();
    assert_eq!(envelope.get_i64("code"), Some(-400), "{what}: {envelope}");
    let message = envelope.get_str("message").unwrap_or_else(|| panic!("{what}: no message string in {envelope}"));
    assert!(!message.is_empty(), "{what}: empty message in {envelope}");
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Builds a request with `Content-Length`; `extra_headers` are full header lines
/// without CRLF.
pub fn build_request(method: &str, path_and_query: &str, extra_headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for line in extra_headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A keep-alive HTTP connection that reads responses one at a time.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        HttpConn { stream, buf: Vec::new() }
    }

    /// Writes raw bytes in one `write_all`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("HTTP write: {e}"));
    }

    /// Reads the next response (a 1xx interim response counts as one, without a
    /// body). The body is framed by Content-Length, or by EOF when there is none.
    pub fn read_response(&mut self) -> HttpResponse {
        let deadline = Instant::now() + READ_TIMEOUT;
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            match fill(&mut self.stream, &mut self.buf, deadline) {
                Fill::Data => {}
                Fill::Eof => panic!(
                    "connection closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Fill::Timeout => panic!(
                    "no full response head within {READ_TIMEOUT:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert!(version.starts_with("HTTP/1."), "bad status line {status_line:?}");
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        self.buf.drain(..head_end + 4);

        let mut response = HttpResponse { status, headers, body: Vec::new() };
        if (100..200).contains(&status) {
            return response;
        }
        match response.header("content-length") {
            Some(length) => {
                let length: usize = length.parse().unwrap_or_else(|e| panic!("bad Content-Length {length:?}: {e}"));
                while self.buf.len() < length {
                    match fill(&mut self.stream, &mut self.buf, deadline) {
                        Fill::Data => {}
                        _ => panic!("response body cut short: {} of {length} bytes", self.buf.len()),
                    }
                }
                response.body = self.buf.drain(..length).collect();
            }
            None => {
                assert!(
                    response.header("transfer-encoding").is_none(),
                    "chunked responses are not expected from corecast"
                );
                while let Fill::Data = fill(&mut self.stream, &mut self.buf, deadline) {}
                response.body = std::mem::take(&mut self.buf);
            }
        }
        response
    }

    /// Asserts the server closes the connection within `timeout` without sending
    /// anything more.
    pub fn expect_eof(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the HTTP connection to close, got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            match fill(&mut self.stream, &mut self.buf, deadline) {
                Fill::Eof => return,
                Fill::Timeout => panic!("HTTP connection still open after {timeout:?}"),
                Fill::Data => {}
            }
        }
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// One request on a fresh connection with `Connection: close`.
/// POSTs every `(path_and_query, body)` on one keep-alive connection in one
/// write, then reads every response (in order).
#[allow(dead_code)]
pub fn http_pipelined(addr: SocketAddr, requests: &[(String, String)]) -> Vec<HttpResponse> {
    let mut conn = HttpConn::connect(addr);
    let mut bytes = Vec::new();
    for (path, body) in requests {
        bytes.extend_from_slice(&build_request("POST", path, &[], body.as_bytes()));
    }
    conn.write(&bytes);
    requests.iter().map(|_| conn.read_response()).collect()
}

pub fn http_request_full(addr: SocketAddr, method: &str, path_and_query: &str, body: &[u8]) -> HttpResponse {
    let mut conn = HttpConn::connect(addr);
    conn.write(&build_request(method, path_and_query, &["Connection: close"], body));
    conn.read_response()
}

/// One request on a fresh connection: `(status, body)`.
pub fn http_request(addr: SocketAddr, method: &str, path_and_query: &str, body: &[u8]) -> (u16, String) {
    let response = http_request_full(addr, method, path_and_query, body);
    (response.status, response.body_str())
}

/// Writes raw bytes on a fresh connection and returns everything read until EOF or
/// until nothing arrived for [`READ_TIMEOUT`].
pub fn http_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut conn = HttpConn::connect(addr);
    conn.write(bytes);
    let mut out = Vec::new();
    loop {
        let deadline = Instant::now() + READ_TIMEOUT;
        match fill(&mut conn.stream, &mut out, deadline) {
            Fill::Data => {}
            Fill::Eof | Fill::Timeout => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
