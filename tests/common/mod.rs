//! End-to-end test harness: starts the `corecast` binary on ephemeral ports with a
//! config written to a temporary directory, and talks to it over plain sockets.
//!
//! What lives here:
//! - [`ServerConfig`] / [`Server`]: write the config, spawn the binary, wait for the
//!   `corecast ready ...` line on stdout, SIGTERM on drop.
//! - [`Client`]: a small blocking goim TCP client (16-byte big-endian header frames).
//! - [`HttpConn`], [`http_request`], [`http_raw`]: a minimal HTTP/1.1 client for the API.
//! - [`wait_until`], [`poll_eq`]: polling helpers, because online counts are published
//!   between shards only every `online_sync_ms`.
//!
//! The tests never link the corecast library: everything goes through sockets, so the
//! tests check what a goim client or business back end would see.
#![allow(dead_code)]

pub mod cluster;
pub mod positions;
pub mod ws;

use std::fmt::Debug;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use simd_json::prelude::*;
use simd_json::OwnedValue;

/// goim operations used by the tests (see goim-compat.md, section 1).
pub mod op {
    pub const HEARTBEAT: i32 = 2;
    pub const HEARTBEAT_REPLY: i32 = 3;
    pub const AUTH: i32 = 7;
    pub const AUTH_REPLY: i32 = 8;
    pub const CHANGE_ROOM: i32 = 12;
    pub const CHANGE_ROOM_REPLY: i32 = 13;
    pub const SUB: i32 = 14;
    pub const SUB_REPLY: i32 = 15;
    pub const UNSUB: i32 = 16;
    pub const UNSUB_REPLY: i32 = 17;
}

/// Header length of every goim frame.
pub const HEADER_LEN: usize = 16;
/// How long a client waits for an expected frame or HTTP response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a test waits to be sure that a frame was *not* delivered. Always followed
/// by a positive check, so a short wait cannot make a test pass by accident.
pub const QUIET: Duration = Duration::from_millis(300);
/// How long online counts may take to converge across shards (online_sync_ms is 100 ms).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Config and server process
// ---------------------------------------------------------------------------

/// The TOML config the harness writes. Starts from the test defaults below; a test
/// overrides or adds single keys with [`ServerConfig::set`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    table: toml::Table,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut config = ServerConfig { table: toml::Table::new() };
        config
            .set("server", "shards", 2)
            .set("server", "log_level", "warn")
            .set("server", "online_sync_ms", 100)
            .set("tcp", "bind", "127.0.0.1:0")
            .set("http", "bind", "127.0.0.1:0")
            .set("ws", "bind", "127.0.0.1:0")
            .set("protocol", "handshake_timeout_ms", 1000)
            .set("protocol", "heartbeat_s", 2)
            .set("protocol", "heartbeat_max", 2);
        config
    }
}

impl ServerConfig {
    /// Sets `[section] key = value`, replacing a default of the same name.
    pub fn set(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        let entry = self.table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            panic!("config section [{section}] is not a table");
        };
        section_table.insert(key.to_string(), value.into());
        self
    }

    /// The config file text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).expect("serialize test config")
    }
}

/// A running corecast process. Sends SIGTERM when dropped.
pub struct Server {
    child: Option<Child>,
    /// goim TCP client address.
    pub tcp: SocketAddr,
    /// Push / online / nodes HTTP API address.
    pub http: SocketAddr,
    /// WebSocket address, once the server reports one.
    pub ws: Option<SocketAddr>,
    /// WSS address, when the config enables it.
    pub wss: Option<SocketAddr>,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts a server with the test defaults.
    pub fn start() -> Server {
        Server::start_with(&ServerConfig::default())
    }

    /// Starts a server with the given config and waits for its ready line.
    pub fn start_with(config: &ServerConfig) -> Server {
        let dir = std::env::temp_dir().join(format!("corecast-test-{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&dir).expect("create test config dir");
        let config_path = dir.join("corecast.toml");
        std::fs::write(&config_path, config.to_toml()).expect("write test config");

        let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn corecast binary");

        // Both pipes are drained by threads for the whole life of the process, so the
        // server never blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pipe = child.stderr.take().expect("stderr pipe");
        let stderr_sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = stderr_sink.lock().unwrap_or_else(|e| e.into_inner());
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let stdout_pipe = child.stdout.take().expect("stdout pipe");
        thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                // After the ready line nobody listens; keep draining anyway.
                let _ = lines_tx.send(line);
            }
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(remaining) {
                Ok(line) if line.starts_with("corecast ready ") => break line,
                Ok(_) => continue,
                Err(err) => {
                    let _ = child.kill();
                    let status = child.wait();
                    // Give the stderr thread a moment to collect the last lines.
                    thread::sleep(Duration::from_millis(100));
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!(
                        "corecast did not print its ready line ({err:?}; exit: {status:?})\n\
                         --- config ---\n{}\n--- stderr ---\n{}",
                        config.to_toml(),
                        stderr.lock().unwrap_or_else(|e| e.into_inner())
                    );
                }
            }
        };

        let field =
            |name: &str| -> Option<SocketAddr> {
                ready.split_whitespace().filter_map(|token| token.split_once('=')).find(|(key, _)| *key == name).map(
                    |(_, value)| value.parse().unwrap_or_else(|e| panic!("bad {name}= in ready line {ready:?}: {e}")),
                )
            };
        let tcp = field("tcp").unwrap_or_else(|| panic!("no tcp= in ready line {ready:?}"));
        let http = field("http").unwrap_or_else(|| panic!("no http= in ready line {ready:?}"));
        let ws = field("ws");
        let wss = field("wss");

        Server { child: Some(child), tcp, http, ws, wss, dir, stderr }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends SIGTERM and waits for the exit status. Panics if the process is still
    /// running after 5 s (and kills it).
    pub fn stop_and_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        sigterm(&child);
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("corecast did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n--- stderr ---\n{}", self.stderr());
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Waits for the process to exit by itself (after a signal the test
    /// sent); panics if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        match wait_timeout(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("corecast did not exit within {timeout:?}\n--- stderr ---\n{}", self.stderr());
            }
        }
    }

    /// A fresh goim TCP connection (not authenticated).
    pub fn connect(&self) -> Client {
        Client::connect(self.tcp)
    }

    /// A fresh connection that has authenticated with the given token fields.
    pub fn auth(&self, mid: i64, key: &str, room_id: &str, accepts: &[i32]) -> Client {
        Client::auth(self.tcp, mid, key, room_id, accepts)
    }

    /// One HTTP request on a fresh connection (`Connection: close`).
    pub fn http(&self, method: &str, path_and_query: &str, body: &[u8]) -> HttpResponse {
        http_request_full(self.http, method, path_and_query, body)
    }

    /// `GET path` and the parsed goim JSON envelope; asserts HTTP 200.
    pub fn get_json(&self, path_and_query: &str) -> OwnedValue {
        let response = self.http("GET", path_and_query, b"");
        assert_eq!(response.status, 200, "GET {path_and_query}: body {:?}", response.body_str());
        response.json()
    }

    /// `GET path` and the `data` member of a code-0 envelope.
    pub fn get_data(&self, path_and_query: &str) -> OwnedValue {
        let envelope = self.get_json(path_and_query);
        assert_eq!(envelope.get_i64("code"), Some(0), "GET {path_and_query}: {envelope}");
        envelope.get("data").unwrap_or_else(|| panic!("GET {path_and_query}: no data in {envelope}")).clone()
    }

    /// POSTs a push and asserts HTTP 200 with exactly `{"code":0,"message":""}`.
    pub fn push(&self, path_and_query: &str, body: &[u8]) {
        let response = self.http("POST", path_and_query, body);
        assert_push_ok(&response, path_and_query);
    }

    /// `POST /goim/push/keys`; keys are percent-encoded by the helper.
    pub fn push_keys(&self, operation: i32, keys: &[&str], body: &[u8]) {
        let mut path = format!("/goim/push/keys?operation={operation}");
        for key in keys {
            path.push_str("&keys=");
            path.push_str(&percent_encode(key));
        }
        self.push(&path, body);
    }

    /// `POST /goim/push/mids`.
    pub fn push_mids(&self, operation: i32, mids: &[i64], body: &[u8]) {
        let mut path = format!("/goim/push/mids?operation={operation}");
        for mid in mids {
            path.push_str(&format!("&mids={mid}"));
        }
        self.push(&path, body);
    }

    /// `POST /goim/push/room` to room `type://room`.
    pub fn push_room(&self, operation: i32, room_type: &str, room: &str, body: &[u8]) {
        let path = format!(
            "/goim/push/room?operation={operation}&type={}&room={}",
            percent_encode(room_type),
            percent_encode(room)
        );
        self.push(&path, body);
    }

    /// `POST /goim/push/all`.
    pub fn push_all(&self, operation: i32, body: &[u8]) {
        self.push(&format!("/goim/push/all?operation={operation}"), body);
    }

    /// `conn_count` and `ip_count` from `/goim/online/total`.
    pub fn online_total(&self) -> (i64, i64) {
        let data = self.get_data("/goim/online/total");
        (
            data.get_i64("conn_count").unwrap_or_else(|| panic!("conn_count in {data}")),
            data.get_i64("ip_count").unwrap_or_else(|| panic!("ip_count in {data}")),
        )
    }
}

impl Drop for Server {
    /// Stops the server; fails the test when the server panicked (a crashed
    /// shard must not hide behind a healthy one) or did not exit cleanly.
    fn drop(&mut self) {
        let mut status = None;
        let running = self.child.is_some();
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            status = wait_timeout(&mut child, EXIT_TIMEOUT);
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Give the stderr thread a moment to collect the last lines.
            thread::sleep(Duration::from_millis(50));
        }
        let stderr = self.stderr();
        let _ = std::fs::remove_dir_all(&self.dir);
        if thread::panicking() {
            // Shown by the test runner next to the failure.
            eprintln!("--- corecast stderr ---\n{stderr}");
            return;
        }
        assert!(!stderr.contains("panicked"), "corecast panicked:\n{stderr}");
        if running {
            let status = status.unwrap_or_else(|| panic!("corecast did not exit within {EXIT_TIMEOUT:?}:\n{stderr}"));
            assert!(status.success(), "corecast exited with {status} after SIGTERM:\n{stderr}");
        }
    }
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The Python with the test tools (websockets, prometheus_client): the
/// virtual environment scripts/install-test-deps.sh makes, else python3.
pub fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin/python3");
    if std::path::Path::new(venv).exists() {
        venv.to_string()
    } else {
        "python3".to_string()
    }
}

/// Process-unique number for temporary directory names.
fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Calls `condition` every 20 ms until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `observe` until it returns `expected` or `timeout` passes; panics with the
/// last observed value otherwise.
pub fn poll_eq<T: PartialEq + Debug>(what: &str, timeout: Duration, expected: T, mut observe: impl FnMut() -> T) {
    let mut last = None;
    let converged = wait_until(timeout, || {
        let value = observe();
        let done = value == expected;
        last = Some(value);
        done
    });
    assert!(converged, "{what}: expected {expected:?} within {timeout:?}, last observed {last:?}");
}

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
enum Fill {
    Data,
    Eof,
    Timeout,
}

/// Reads more bytes from `stream` into `buf`, waiting at most until `deadline`.
/// A reset or aborted connection counts as end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Fill {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
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
