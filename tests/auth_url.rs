//! The business auth URL (`[auth] url`), end to end: every auth
//! frame is POSTed to a real HTTP service run by the test; a 2xx admits the
//! client, anything else closes it with a counted reason, a slow or absent
//! service fails closed within `auth.url_timeout_ms`, and calls in flight
//! are bounded per shard.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A request the auth service got: (request line and headers, body).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An auth service on loopback: answers by the token's mid. 1: 200,
/// 2: 403, 3: 200 after 3 s (past any timeout here), 4: 503.
fn auth_service() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            thread::spawn(move || answer(stream, &record));
        }
    });
    (addr, seen)
}

fn answer(mut stream: TcpStream, seen: &Seen) {
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&input[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if input.len() >= end + 4 + length {
                break (head, input[end + 4..end + 4 + length].to_vec());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    seen.lock().unwrap().push((head, body));
    let status = if text.contains("\"mid\":1,") {
        "200 OK"
    } else if text.contains("\"mid\":2,") {
        "403 Forbidden"
    } else if text.contains("\"mid\":3,") {
        thread::sleep(Duration::from_secs(3));
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
}

fn server_asking(url: &str, in_flight_max: i64) -> Server {
    let mut config = ServerConfig::default();
    config
        .set("auth", "url", url)
        .set("auth", "url_timeout_ms", 500)
        .set("auth", "url_calls_in_flight_per_shard_max", in_flight_max)
        .set("server", "shards", 1)
        .set("protocol", "heartbeat_s", 60);
    Server::start_with(&config)
}

fn metric(server: &Server, name: &str) -> u64 {
    common::cluster::metric(&server.http("GET", "/metrics", b"").body_str(), name).unwrap_or(0)
}

/// Sends the auth frame for `mid` and returns the stream.
fn send_auth(server: &Server, mid: i64, key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.tcp).expect("connect");
    stream.write_all(&encode_frame(1, op::AUTH, 1, &token_json(mid, key, "live://1", &[1000]))).expect("auth");
    stream
}

/// Whether the server closes `stream` without a byte, within `timeout`.
fn closed_unanswered(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn an_allowed_client_is_admitted_and_the_service_sees_its_token_as_sent() {
    let (service, seen) = auth_service();
    let server = server_asking(&format!("http://{service}/goim/auth?app=7"), 64);
    let token = token_json(1, "allowed", "live://1", &[1000]);
    let mut client = Client::connect(server.tcp);
    // A heartbeat right behind the auth frame waits for the answer, then is answered.
    let mut both = encode_frame(1, op::AUTH, 1, &token);
    both.extend(encode_frame(1, op::HEARTBEAT, 2, b""));
    client.send_raw(&both);
    assert_eq!(client.read_frame().op, op::AUTH_REPLY, "admitted");
    let heartbeat = client.read_frame();
    assert_eq!((heartbeat.op, heartbeat.seq), (op::HEARTBEAT_REPLY, 2), "the held heartbeat, after the auth reply");
    server.push_keys(1000, &["allowed"], b"hello");
    client.expect_push(1000, b"hello");
    let (head, body) = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /goim/auth?app=7 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Corecast-Client-Ip: 127.0.0.1") && head.contains("\r\nX-Corecast-Transport: tcp"),
        "{head}"
    );
    assert_eq!(body, token, "the auth frame body, byte for byte");
    assert_eq!(metric(&server, "corecast_auth_url_calls_total{result=\"allow\"}"), 1);
}

#[test]
fn a_denied_or_failing_check_closes_the_client_and_counts_why() {
    let (service, _) = auth_service();
    let server = server_asking(&format!("http://{service}/auth"), 64);
    let started = Instant::now();
    let mut denied = send_auth(&server, 2, "denied");
    let mut slow = send_auth(&server, 3, "slow");
    let mut failing = send_auth(&server, 4, "failing");
    assert!(closed_unanswered(&mut denied, Duration::from_secs(5)), "403: closed without an auth reply");
    assert!(closed_unanswered(&mut failing, Duration::from_secs(5)), "503: closed without an auth reply");
    assert!(closed_unanswered(&mut slow, Duration::from_secs(5)), "no answer in 500 ms: closed");
    assert!(started.elapsed() < Duration::from_millis(2500), "closed at the call's timeout, not the service's 3 s");
    poll_eq("deny counted", Duration::from_secs(5), 1, || {
        metric(&server, "corecast_auth_url_calls_total{result=\"deny\"}")
    });
    poll_eq("unavailable counted", Duration::from_secs(5), 2, || {
        metric(&server, "corecast_auth_url_calls_total{result=\"unavailable\"}")
    });
    assert_eq!(metric(&server, "corecast_connections_closed_total{reason=\"auth_denied\"}"), 1);
    assert_eq!(metric(&server, "corecast_connections_closed_total{reason=\"auth_unavailable\"}"), 2);
    // A service that is not there fails closed too.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let server = server_asking(&format!("http://{dead}/auth"), 64);
    assert!(closed_unanswered(&mut send_auth(&server, 1, "nobody"), Duration::from_secs(5)), "refused connect: closed");
    poll_eq("unavailable counted", Duration::from_secs(5), 1, || {
        metric(&server, "corecast_auth_url_calls_total{result=\"unavailable\"}")
    });
}

#[test]
fn calls_in_flight_are_bounded_and_a_client_past_the_bound_is_refused_at_once() {
    let (service, seen) = auth_service();
    let server = server_asking(&format!("http://{service}/auth"), 1);
    let mut slow = send_auth(&server, 3, "slow");
    assert!(wait_until(Duration::from_secs(5), || seen.lock().unwrap().len() == 1), "the slow call is open");
    let mut second = send_auth(&server, 1, "second");
    assert!(closed_unanswered(&mut second, Duration::from_millis(400)), "refused before the slow call ends");
    assert_eq!(metric(&server, "corecast_auth_url_calls_total{result=\"busy\"}"), 1);
    assert_eq!(seen.lock().unwrap().len(), 1, "the refused client was never put to the service");
    assert!(closed_unanswered(&mut slow, Duration::from_secs(5)), "the slow call times out");
    // The slot is free again.
    let mut third = Client::connect(server.tcp);
    third.send_frame(1, op::AUTH, 1, &token_json(1, "third", "live://1", &[1000]));
    assert_eq!(third.read_frame().op, op::AUTH_REPLY, "admitted once the bound has room");
}

#[test]
fn a_denied_websocket_client_gets_close_1008() {
    let (service, _) = auth_service();
    let server = server_asking(&format!("http://{service}/auth"), 64);
    let mut client = common::ws::WsClient::connect(server.ws.expect("ws listener"));
    client.send_goim(1, op::AUTH, 1, &token_json(2, "denied-ws", "live://1", &[1000]));
    let message = client.read_message(Duration::from_secs(5)).expect("a close frame");
    assert_eq!(message.opcode, 8, "close");
    assert_eq!(u16::from_be_bytes([message.payload[0], message.payload[1]]), 1008, "policy violation");
    assert_eq!(&message.payload[2..], b"auth denied");
    let mut allowed = common::ws::WsClient::connect(server.ws.expect("ws listener"));
    allowed.send_goim(1, op::AUTH, 1, &token_json(1, "allowed-ws", "live://1", &[1000]));
    assert_eq!(allowed.read_frame().op, op::AUTH_REPLY, "an allowed WebSocket client is admitted");
}

#[test]
fn a_bad_url_or_a_timeout_past_the_handshake_deadline_refuses_to_start() {
    for (key, value, named) in [
        ("url", toml::Value::from("https://127.0.0.1/auth"), "auth.url"),
        ("url_timeout_ms", toml::Value::from(6000), "auth.url_timeout_ms"),
    ] {
        let mut config = ServerConfig::default();
        config.set("auth", "url", "http://127.0.0.1:9/auth").set("auth", key, value);
        let dir = ScratchDir::new("corecast-auth-url");
        let path = dir.join(format!("{key}.toml"));
        std::fs::write(&path, config.to_toml()).expect("write config");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .expect("run");
        let _ = std::fs::remove_file(&path);
        assert_eq!(output.status.code(), Some(1), "{key}: refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}: the message names {named}: {stderr}");
    }
}
