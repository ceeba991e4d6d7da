//! Hostile clients against the real binary: connections that never
//! authenticate, trickled upgrades, heads and bodies over their limits (also
//! chunked over many chunks), 100,000 repeated query keys, random bytes and
//! absurd lengths, and a member that never reads while its room is pushed
//! flat out. Each asserts the numbers it names, and that everyone else is
//! still served.

mod common;

use common::ws::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

fn metric(server: &Server, name: &str) -> u64 {
    common::cluster::metric(&server.http("GET", "/metrics", b"").body_str(), name).unwrap_or(0)
}

fn wait_metric(server: &Server, name: &str, expected: u64) {
    poll_eq(name, Duration::from_secs(10), expected, || metric(server, name));
}

/// Whether the server closes `stream` within `timeout` (EOF or reset).
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// The harness's config with heartbeats long enough that no client of these
/// tests needs to send one: every close is for what a test did.
fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.set("protocol", "heartbeat_s", 60);
    config
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn connections_that_never_authenticate_are_closed_at_the_handshake_timeout_and_counted() {
    let mut config = config();
    config.set("protocol", "handshake_timeout_ms", 800);
    let server = Server::start_with(&config);
    let ws = server.ws.expect("ws port");
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(server.tcp).expect("connect")).collect();
    // Upgraded but never authenticated.
    let mut upgraded: Vec<TcpStream> = (0..10).map(|_| WsClient::connect(ws).stream).collect();
    // Trickling: a byte of auth frame, or of upgrade request, every 100 ms,
    // so every read restarts nothing (the deadline runs from the accept).
    let auth = encode_frame(1, op::AUTH, 1, &token_json(0, "trickle", "live://1", &[1000]));
    let upgrade = upgrade_request(ws, "/sub", &standard_headers());
    let trickled: Vec<(TcpStream, Vec<u8>)> = (0..10)
        .map(|i| {
            let (addr, bytes) = if i % 2 == 0 { (server.tcp, auth.clone()) } else { (ws, upgrade.clone()) };
            (TcpStream::connect(addr).expect("connect"), bytes)
        })
        .collect();
    let mut good = Client::auth(server.tcp, 0, "good", "live://1", &[1000]);
    let started = Instant::now();
    let trickler = thread::spawn(move || {
        let mut streams = trickled;
        for step in 0..40 {
            for (stream, bytes) in streams.iter_mut() {
                if let Some(byte) = bytes.get(step) {
                    if stream.write_all(&[*byte]).is_err() {
                        continue;
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        streams.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
    });
    for stream in silent.iter_mut().chain(upgraded.iter_mut()) {
        assert!(closed_within(stream, Duration::from_secs(5)), "a silent connection is closed");
    }
    let mut trickled = trickler.join().expect("trickler");
    for stream in trickled.iter_mut() {
        assert!(closed_within(stream, Duration::from_secs(5)), "a trickling connection is closed");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_metric(&server, "corecast_connections_closed_total{reason=\"handshake_timeout\"}", 40);
    assert!(good.heartbeat() >= 1, "the authenticated client was served all along");
}

#[test]
fn heads_and_bodies_over_their_limits_are_refused_also_chunked_and_spread_over_many_chunks() {
    let server = Server::start_with(&config());
    // 100,000 repeated query keys: far past the 8 KiB head limit.
    let mut target = String::from("/goim/push/keys?operation=1000");
    for i in 0..100_000 {
        target.push_str(&format!("&keys=k{i}"));
    }
    let mut conn = HttpConn::connect(server.http);
    conn.write(&build_request("POST", &target, &[], b"x"));
    assert_eq!(conn.read_response().status, 431);

    // Content-Length over request_body_bytes_max (1 MiB): refused from the head.
    let mut conn = HttpConn::connect(server.http);
    conn.write(
        b"POST /goim/push/room?operation=1000&type=live&room=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n",
    );
    assert_eq!(conn.read_response().status, 413);

    // Chunked, 1 KiB at a time: refused once the total passes the limit,
    // without waiting for the end of the body.
    let mut stream = TcpStream::connect(server.http).expect("connect");
    stream
        .write_all(b"POST /goim/push/room?operation=1000&type=live&room=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("head");
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let mut answered = Vec::new();
    stream.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
    for _ in 0..2048 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(n) = stream.read(&mut buf) {
            answered.extend_from_slice(&buf[..n]);
            if n == 0 || answered.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    let mut rest = [0u8; 256];
    while !answered.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(n) => answered.extend_from_slice(&rest[..n]),
        }
    }
    assert!(answered.starts_with(b"HTTP/1.1 413"), "got {:?}", String::from_utf8_lossy(&answered));
    assert!(closed_within(&mut stream, Duration::from_secs(5)), "and the connection is closed");

    // Everyone else is served.
    server.push_room(1000, "live", "1", b"still here");
}

#[test]
fn random_bytes_and_absurd_lengths_close_only_that_connection() {
    let server = Server::start_with(&config());
    let ws = server.ws.expect("ws port");
    let mut bystander = Client::auth(server.tcp, 0, "bystander", "live://r", &[1000]);
    let mut ws_bystander = WsClient::auth(ws, 0, "ws-bystander", "live://r", &[1000]);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    for round in 0..10 {
        // Before auth, after auth, on the WebSocket port before and after the upgrade.
        let mut raw = TcpStream::connect(server.tcp).expect("connect");
        raw.write_all(&noise(4096)).expect("noise");
        assert!(closed_within(&mut raw, Duration::from_secs(5)), "round {round}: random bytes on TCP");
        let mut authed = Client::auth(server.tcp, 0, &format!("noisy-{round}"), "live://r", &[1000]);
        authed.send_raw(&noise(64 * 1024));
        assert!(authed.closed_within(Duration::from_secs(5)), "round {round}: random bytes after auth");
        let mut pre = TcpStream::connect(ws).expect("connect");
        let _ = pre.write_all(&noise(2048));
        assert!(closed_within(&mut pre, Duration::from_secs(5)), "round {round}: random bytes instead of an upgrade");
        let mut post = WsClient::connect(ws);
        let _ = post.stream.write_all(&noise(2048));
        assert!(closed_within(&mut post.stream, Duration::from_secs(5)), "round {round}: random WebSocket frames");
    }
    // A goim frame claiming 2 GiB, and one with a negative length.
    for len in [i32::MAX, -1] {
        let mut client = Client::auth(server.tcp, 0, &format!("len{len}"), "live://r", &[1000]);
        client.send_raw(&encode_frame_raw(len, 16, 1, op::HEARTBEAT, 1, b""));
        assert!(client.closed_within(Duration::from_secs(5)), "packet length {len}");
    }
    // WebSocket frames claiming 2^63 - 1 bytes (too big: 1009, before any
    // payload) and 2^63 (the top bit is reserved: 1002).
    for (claim, code) in [(u64::MAX >> 1, 1009u16), (1u64 << 63, 1002)] {
        let mut client = WsClient::connect(ws);
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&claim.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        client.stream.write_all(&frame).expect("frame header");
        let close = client.read_message(READ_TIMEOUT).expect("a close frame");
        assert_eq!(close.opcode, 0x08);
        assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), code, "claim {claim}");
        assert!(client.read_message(READ_TIMEOUT).is_none(), "then closed");
    }
    server.push_room(1000, "live", "r", b"after the noise");
    bystander.expect_push(1000, b"after the noise");
    let frame = ws_bystander.read_frame();
    assert_eq!((frame.op, frame.body.as_slice()), (1000, &b"after the noise"[..]));
    // 10 rounds of 4, two goim lengths, two WebSocket claims: each closed
    // for what it sent (bad frame, or a bad upgrade), none for anything else.
    let refused = || {
        ["bad_frame", "bad_handshake", "bad_token"]
            .iter()
            .map(|r| metric(&server, &format!("corecast_connections_closed_total{{reason=\"{r}\"}}")))
            .sum::<u64>()
    };
    poll_eq("connections closed for what they sent", Duration::from_secs(10), 44, refused);
}

/// A member whose kernel buffer is tiny and who never reads.
fn never_reading(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(&encode_frame(1, op::AUTH, 1, &token_json(0, "never-reads", "live://flat", &[1000])))
        .expect("auth");
    stream
}

#[test]
fn a_member_that_never_reads_is_bounded_closed_and_counted_while_the_others_keep_their_order_and_p99() {
    const PUSHES: u64 = 20_000;
    const BODY: usize = 1000;
    const READERS: usize = 8;
    let server = Server::start_with(&config());
    let epoch = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut client = Client::auth(server.tcp, 0, &format!("reader-{i}"), "live://flat", &[1000]);
            thread::spawn(move || {
                let mut latencies_us = Vec::with_capacity(PUSHES as usize);
                let mut next = 0u64;
                while next < PUSHES {
                    let Some(frame) = client.try_read_frame(Duration::from_secs(20)) else { break };
                    let n = u64::from_be_bytes(frame.body[..8].try_into().expect("number"));
                    assert_eq!(n, next, "reader {i}: every push, in order");
                    let sent_us = u64::from_be_bytes(frame.body[8..16].try_into().expect("stamp"));
                    latencies_us.push(epoch.elapsed().as_micros() as u64 - sent_us);
                    next += 1;
                }
                (next, latencies_us)
            })
        })
        .collect();
    let _stalled = never_reading(server.tcp);
    let rss_before = rss_kib(server.pid());
    // Flat out: 20 MB through one pipelined publisher, 100 pushes a write.
    let mut conn = HttpConn::connect(server.http);
    let mut n = 0u64;
    while n < PUSHES {
        let mut bytes = Vec::new();
        let batch = 100.min(PUSHES - n);
        for k in n..n + batch {
            let mut body = vec![b'.'; BODY];
            body[..8].copy_from_slice(&k.to_be_bytes());
            body[8..16].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
            bytes.extend(build_request("POST", "/goim/push/room?operation=1000&type=live&room=flat", &[], &body));
        }
        conn.write(&bytes);
        for _ in 0..batch {
            assert_push_ok(&conn.read_response(), "room push");
        }
        n += batch;
    }
    let rss_after = rss_kib(server.pid());
    let mut all = Vec::new();
    for reader in readers {
        let (got, latencies) = reader.join().expect("reader");
        assert_eq!(got, PUSHES, "every reader got everything");
        all.extend(latencies);
    }
    all.sort_unstable();
    let p99_ms = all[all.len() * 99 / 100] as f64 / 1000.0;
    eprintln!("readers' p99 with a member that never reads: {p99_ms:.1} ms over {} deliveries", all.len());
    assert!(p99_ms < 500.0, "the others' p99 stays low: {p99_ms:.1} ms");
    wait_metric(&server, "corecast_connections_closed_total{reason=\"slow_consumer\"}", 1);
    assert!(metric(&server, "corecast_messages_undelivered_total{reason=\"queue_full\"}") >= 1);
    // 20 MB went to a member that takes nothing: what it held stayed at its
    // 256 KiB bound (plus what the readers had in flight).
    let grown_kib = rss_after.saturating_sub(rss_before);
    eprintln!("server RSS grew by {grown_kib} KiB while 20 MB went to the room");
    assert!(grown_kib < 12 * 1024, "RSS grew by {grown_kib} KiB");
}
