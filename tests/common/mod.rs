//! End-to-end test harness: starts the `corecast` binary on ephemeral ports with a
//! config written to a temporary directory, and talks to it over plain sockets.
//!
//! What lives here:
//! - [`ServerConfig`] / [`Server`]: write the config, spawn the binary, wait for the
//!   `corecast ready ...` line on stdout, SIGTERM on drop.
//! - [`Client`]: a small blocking goim TCP client, 16-byte big-endian header frames (`client`).
//! - [`HttpConn`], [`http_request`], [`http_raw`]: a minimal HTTP/1.1 client for the API (`http`).
//! - [`wait_until`], [`poll_eq`]: polling helpers, because online counts are published
//!   between shards only every `online_sync_ms`.
//!
//! The tests never link the corecast library: everything goes through sockets, so the
//! tests check what a goim client or business back end would see.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod http;
pub mod positions;
pub mod ws;

pub use client::*;
pub use http::*;

use std::fmt::Debug;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
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

/// goim operations used by the tests (see docs/goim-compat.md, section 1).
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

/// A directory of a test's own under the temporary directory, removed with
/// everything in it when the value is dropped (a failing test too).
#[allow(dead_code)]
pub struct ScratchDir(PathBuf);

#[allow(dead_code)]
impl ScratchDir {
    /// `<tmp>/<prefix>-<pid>-<n>`, created empty.
    pub fn new(prefix: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
