//! The goim TCP client of the tests: frames, tokens, a blocking client.
#![allow(dead_code)]

use super::*;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// goim TCP client
// ---------------------------------------------------------------------------

/// One decoded goim frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: Vec<u8>,
}

impl Frame {
    /// The frame a server push produces: ver 1, seq 0.
    pub fn push(op: i32, body: &[u8]) -> Frame {
        Frame { ver: 1, op, seq: 0, body: body.to_vec() }
    }
}

impl Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame {{ ver: {}, op: {}, seq: {}, body: {:?} }}",
            self.ver,
            self.op,
            self.seq,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Encodes one goim frame.
pub fn encode_frame(ver: i16, op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    encode_frame_raw((HEADER_LEN + body.len()) as i32, HEADER_LEN as i16, ver, op, seq, body)
}

/// Encodes a frame with arbitrary length fields (for malformed-input tests).
pub fn encode_frame_raw(packet_len: i32, header_len: i16, ver: i16, op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&packet_len.to_be_bytes());
    bytes.extend_from_slice(&header_len.to_be_bytes());
    bytes.extend_from_slice(&ver.to_be_bytes());
    bytes.extend_from_slice(&op.to_be_bytes());
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The auth token (op 7 body).
#[derive(Serialize)]
pub struct Token<'a> {
    pub mid: i64,
    pub key: &'a str,
    pub room_id: &'a str,
    pub platform: &'a str,
    pub accepts: &'a [i32],
}

/// JSON text of a `platform: "web"` token.
pub fn token_json(mid: i64, key: &str, room_id: &str, accepts: &[i32]) -> Vec<u8> {
    simd_json::to_vec(&Token { mid, key, room_id, platform: "web", accepts }).expect("serialize token")
}

/// Outcome of waiting for bytes.
pub(crate) enum Fill {
    Data,
    Eof,
    Timeout,
}

/// Reads more bytes from `stream` into `buf`, waiting at most until `deadline`.
/// A reset or aborted connection counts as end of stream.
pub(crate) fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Fill {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Fill::Timeout;
    }
    stream.set_read_timeout(Some(remaining)).expect("set read timeout");
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Fill::Eof,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Fill::Data;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Fill::Timeout,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                return Fill::Eof
            }
            Err(e) => panic!("read from {:?}: {e}", stream.peer_addr()),
        }
    }
}

/// A blocking goim TCP client. Incoming bytes are buffered, so several frames that
/// arrive in one read are returned one by one.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Default wait for [`Client::read_frame`].
    pub timeout: Duration,
}

impl Client {
    /// Connects (no auth).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Client { stream, buf: Vec::new(), timeout: READ_TIMEOUT }
    }

    /// Connects with a small receive buffer (`rcvbuf_bytes`), so that what
    /// it does not read stays queued in the server.
    pub fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf_bytes: usize) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf_bytes).expect("SO_RCVBUF");
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Client { stream, buf: Vec::new(), timeout: READ_TIMEOUT }
    }

    /// Connects and authenticates; see [`Client::authenticate`].
    pub fn auth(addr: SocketAddr, mid: i64, key: &str, room_id: &str, accepts: &[i32]) -> Client {
        let mut client = Client::connect(addr);
        client.authenticate(mid, key, room_id, accepts);
        client
    }

    /// Sends op 7 (ver 1, seq 1) with a JSON token and asserts the reply is exactly
    /// op 8, ver 1, seq 1, empty body.
    pub fn authenticate(&mut self, mid: i64, key: &str, room_id: &str, accepts: &[i32]) {
        self.send_frame(1, op::AUTH, 1, &token_json(mid, key, room_id, accepts));
        let reply = self.read_frame();
        assert_eq!(
            reply,
            Frame { ver: 1, op: op::AUTH_REPLY, seq: 1, body: Vec::new() },
            "auth reply for mid {mid} key {key:?}"
        );
    }

    /// The local address of this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Sends one well-formed frame.
    pub fn send_frame(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        self.send_raw(&encode_frame(ver, op, seq, body));
    }

    /// Writes raw bytes in one `write_all`.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Decodes one frame from the buffer, if a whole one is there.
    fn take_frame(&mut self) -> Option<Frame> {
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let packet_len = i32::from_be_bytes(self.buf[0..4].try_into().unwrap());
        let header_len = i16::from_be_bytes(self.buf[4..6].try_into().unwrap());
        assert_eq!(
            header_len as usize,
            HEADER_LEN,
            "server sent a frame with header length {header_len}: {:02x?}",
            &self.buf[..HEADER_LEN]
        );
        assert!(packet_len as usize >= HEADER_LEN, "server sent a frame with packet length {packet_len}");
        let packet_len = packet_len as usize;
        if self.buf.len() < packet_len {
            return None;
        }
        let frame = Frame {
            ver: i16::from_be_bytes(self.buf[6..8].try_into().unwrap()),
            op: i32::from_be_bytes(self.buf[8..12].try_into().unwrap()),
            seq: i32::from_be_bytes(self.buf[12..16].try_into().unwrap()),
            body: self.buf[HEADER_LEN..packet_len].to_vec(),
        };
        self.buf.drain(..packet_len);
        Some(frame)
    }

    /// Next frame, waiting at most `timeout`. None on timeout; panics on EOF.
    pub fn try_read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            match fill(&mut self.stream, &mut self.buf, deadline) {
                Fill::Data => {}
                Fill::Timeout => return None,
                Fill::Eof => panic!(
                    "server closed the connection while a frame was expected \
                     ({} bytes buffered)",
                    self.buf.len()
                ),
            }
        }
    }

    /// Next frame; panics if none arrives within `self.timeout`.
    pub fn read_frame(&mut self) -> Frame {
        let timeout = self.timeout;
        self.try_read_frame(timeout).unwrap_or_else(|| panic!("no frame within {timeout:?}"))
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub fn expect_nothing(&mut self) {
        if let Some(frame) = self.try_read_frame(QUIET) {
            panic!("expected no frame, got {frame:?}");
        }
    }

    /// Next frame; asserts it is the push `(op, body)` with ver 1 and seq 0.
    pub fn expect_push(&mut self, op: i32, body: &[u8]) {
        let frame = self.read_frame();
        assert_eq!(frame, Frame::push(op, body), "expected a push");
    }

    /// Whether the server closes the connection within `timeout`. Panics if the
    /// server sends bytes instead: a closing server has nothing left to say here.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(self.buf.is_empty(), "expected the connection to close, got bytes {:02x?}", self.buf);
            match fill(&mut self.stream, &mut self.buf, deadline) {
                Fill::Eof => return true,
                Fill::Timeout => return false,
                Fill::Data => {}
            }
        }
    }

    /// Asserts the server closes the connection (EOF or reset) within `timeout`.
    pub fn expect_eof(&mut self, timeout: Duration) {
        assert!(self.closed_within(timeout), "server did not close the connection within {timeout:?}");
    }

    /// Sends op 2 and returns the op 3 reply's online count.
    pub fn heartbeat(&mut self) -> i32 {
        self.send_frame(1, op::HEARTBEAT, 0, b"");
        let reply = self.read_frame();
        assert_eq!(reply.op, op::HEARTBEAT_REPLY, "heartbeat reply: {reply:?}");
        assert_eq!(reply.body.len(), 4, "heartbeat reply body: {reply:?}");
        i32::from_be_bytes(reply.body[..4].try_into().unwrap())
    }

    /// Heartbeats until the reply count equals `expected` (counts are up to
    /// online_sync_ms stale); panics with the last count after [`SYNC_TIMEOUT`].
    pub fn heartbeat_until(&mut self, expected: i32) {
        poll_eq("heartbeat online count", SYNC_TIMEOUT, expected, || self.heartbeat());
    }

    /// Sends op `request` with `body` and asserts the reply is op `reply` echoing
    /// the body, version and sequence.
    fn request_echo(&mut self, request: i32, reply: i32, seq: i32, body: &[u8]) {
        self.send_frame(1, request, seq, body);
        let frame = self.read_frame();
        assert_eq!(frame, Frame { ver: 1, op: reply, seq, body: body.to_vec() }, "reply to op {request}");
    }

    /// Op 12 → op 13. `room_id` is `type://id`; empty leaves the room.
    pub fn change_room(&mut self, room_id: &str) {
        self.request_echo(op::CHANGE_ROOM, op::CHANGE_ROOM_REPLY, 12, room_id.as_bytes());
    }

    /// Op 14 → op 15. `ops` is a comma list such as `"1000,1001"`.
    pub fn sub(&mut self, ops: &str) {
        self.request_echo(op::SUB, op::SUB_REPLY, 14, ops.as_bytes());
    }

    /// Op 16 → op 17.
    pub fn unsub(&mut self, ops: &str) {
        self.request_echo(op::UNSUB, op::UNSUB_REPLY, 16, ops.as_bytes());
    }

    /// Closes both directions from the client side.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
