//! A small blocking WebSocket client for the tests (RFC 6455, written
//! against the RFC, independent of the server's codec): the upgrade,
//! masked client frames, and server messages decoded into goim frames
//! (an op-9 frame is unpacked into the frames in its body).

use super::{encode_frame, token_json, Frame, HEADER_LEN, READ_TIMEOUT};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The key of RFC 6455 section 1.3 and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// One WebSocket message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The opcode with the RSV bits of the first byte: 0x02 is a plain
    /// binary message, 0x42 a compressed one (RSV1, permessage-deflate).
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub struct WsClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    frames: VecDeque<Frame>,
    mask: [u8; 4],
}

/// The upgrade request for `path` with the given extra header lines.
pub fn upgrade_request(addr: SocketAddr, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for line in headers {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Standard upgrade headers.
pub fn standard_headers() -> Vec<&'static str> {
    vec![
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]
}

/// Sends a raw upgrade request and returns the response head (up to the blank line).
pub fn raw_upgrade(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).expect("connect ws");
    stream.write_all(request).expect("write upgrade");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

impl WsClient {
    /// Connects and upgrades; asserts the 101 and its accept key.
    pub fn connect(addr: SocketAddr) -> WsClient {
        WsClient::connect_with(addr, &[]).0
    }

    /// Connects and upgrades with extra request headers; asserts the 101
    /// and returns the response head too.
    pub fn connect_with(addr: SocketAddr, extra_headers: &[&str]) -> (WsClient, String) {
        let mut headers = standard_headers();
        headers.extend_from_slice(extra_headers);
        let (stream, head) = raw_upgrade(addr, &upgrade_request(addr, "/sub", &headers));
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade answered {head:?}");
        assert!(head.contains(&format!("Sec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\n")), "accept key in {head:?}");
        stream.set_nodelay(true).expect("nodelay");
        (WsClient { stream, buf: Vec::new(), frames: VecDeque::new(), mask: [0x37, 0xfa, 0x21, 0x3d] }, head)
    }

    /// Connects, upgrades and authenticates (asserting the op-8 reply).
    pub fn auth(addr: SocketAddr, mid: i64, key: &str, room_id: &str, accepts: &[i32]) -> WsClient {
        let mut client = WsClient::connect(addr);
        client.send_goim(1, 7, 1, &token_json(mid, key, room_id, accepts));
        let reply = client.read_frame();
        assert_eq!(reply, Frame { ver: 1, op: 8, seq: 1, body: Vec::new() }, "auth reply");
        client
    }

    /// Sends one client frame: FIN as given, masked unless `masked` is false.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        self.send_frame_first_byte((if fin { 0x80 } else { 0 }) | opcode, payload, masked);
    }

    /// Sends one client frame whose first byte (FIN, RSV bits, opcode) is given.
    pub fn send_frame_first_byte(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        let mut out = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&self.mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ self.mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        self.stream.write_all(&out).expect("ws write");
    }

    /// Sends one goim frame as one binary message.
    pub fn send_goim(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        self.send_frame(true, 2, &encode_frame(ver, op, seq, body), true);
    }

    /// Reads the next server message (None on timeout or EOF).
    pub fn read_message(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((message, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next goim frame from binary messages (op-9 bodies unpacked).
    pub fn try_read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let message = self.read_message(deadline.saturating_duration_since(Instant::now()))?;
            assert_eq!(message.opcode, 2, "goim frames come in binary messages, got {message:?}");
            let frames = split_frames(&message.payload);
            assert_eq!(frames.len(), 1, "one goim frame per message");
            let frame = frames.into_iter().next().expect("one frame");
            if frame.op == 9 {
                self.frames.extend(split_frames(&frame.body));
            } else {
                self.frames.push_back(frame);
            }
        }
    }

    pub fn read_frame(&mut self) -> Frame {
        self.try_read_frame(READ_TIMEOUT).expect("a goim frame over WebSocket")
    }

    /// Sends a heartbeat and returns the room count of the reply.
    pub fn heartbeat(&mut self) -> i32 {
        self.send_goim(1, 2, 5, b"");
        let reply = self.read_frame();
        assert_eq!((reply.op, reply.seq), (3, 5), "heartbeat reply");
        i32::from_be_bytes(reply.body[..4].try_into().expect("4-byte count"))
    }
}

/// Splits a buffer of back-to-back goim frames.
pub fn split_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let len = i32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert!(len >= HEADER_LEN && len <= bytes.len(), "bad inner frame length {len}");
        frames.push(Frame {
            ver: i16::from_be_bytes(bytes[6..8].try_into().unwrap()),
            op: i32::from_be_bytes(bytes[8..12].try_into().unwrap()),
            seq: i32::from_be_bytes(bytes[12..16].try_into().unwrap()),
            body: bytes[HEADER_LEN..len].to_vec(),
        });
        bytes = &bytes[len..];
    }
    assert!(bytes.is_empty(), "trailing bytes after goim frames");
    frames
}

/// One unmasked server frame from the front of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(Message, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    assert_ne!(buf[0] & 0x80, 0, "server frames are not fragmented");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some((Message { opcode: buf[0] & 0x7f, payload: buf[start..start + len].to_vec() }, start + len))
}

/// Runs tests/ws_conformance.py (Python `websockets`, an independent client
/// library) against `ws_url`; `ca_file` verifies a WSS certificate.
pub fn python_conformance(ws_url: &str, http: SocketAddr, ca_file: Option<&str>) {
    run_python("ws_conformance.py", "conformance ok", ws_url, http, ca_file);
}

/// Runs tests/ws_deflate.py (Python `websockets` with permessage-deflate).
pub fn python_deflate(ws_url: &str, http: SocketAddr, ca_file: Option<&str>) {
    run_python("ws_deflate.py", "deflate ok", ws_url, http, ca_file);
}

fn run_python(script: &str, ok: &str, ws_url: &str, http: SocketAddr, ca_file: Option<&str>) {
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new(super::python());
    command.arg(script).arg(ws_url).arg(format!("http://{http}"));
    if let Some(ca_file) = ca_file {
        command.arg(ca_file);
    }
    let output = command.output().expect("run python3 (scripts/install-test-deps.sh installs websockets)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains(ok), "stdout:\n{stdout}\nstderr:\n{stderr}");
}
