//! Graceful drain on SIGTERM, end to end: new client connections are
//! refused, what was queued for clients still leaves (a push sent just
//! before SIGTERM is delivered, even to a client that reads it late),
//! WebSocket clients get close 1001, `/readyz` answers 503 meanwhile, and
//! the process exits 0.

mod common;

use common::ws::WsClient;
use common::{Client, Server, ServerConfig};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const OP: i32 = 1000;
/// Pushes and their size: far more than a 4 KiB receive buffer and the
/// kernel's send buffer hold (up to 4 MiB), so that part of them is still
/// in the server's outbox at SIGTERM; within the raised outbound bound.
const PUSHES: usize = 64;
const BODY_BYTES: usize = 128 * 1024;

fn server() -> Server {
    let mut config = ServerConfig::default();
    config.set("server", "shutdown_grace_ms", 4000).set(
        "limits",
        "outbound_bytes_per_connection_max",
        32 * 1024 * 1024,
    );
    Server::start_with(&config)
}

/// Bytes queued in the server's outboxes (all shards, as last synced).
fn outbox_bytes(server: &Server) -> u64 {
    let text = server.http("GET", "/metrics", b"").body_str();
    text.lines()
        .filter(|l| l.starts_with("corecast_shard_outbox_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn sigterm(server: &Server) {
    let pid = server.pid();
    let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
}

#[test]
fn pushes_queued_at_sigterm_are_still_delivered_and_websocket_clients_get_1001() {
    let mut server = server();
    let mut slow = Client::connect_with_rcvbuf(server.tcp, 4096);
    slow.authenticate(1, "slow", "live://drain", &[OP]);
    let ws_addr = server.ws.expect("ws");
    let mut ws = WsClient::auth(ws_addr, 2, "ws", "live://drain", &[OP]);
    let bodies: Vec<Vec<u8>> = (0..PUSHES).map(|i| format!("{i:04}").repeat(BODY_BYTES / 4).into_bytes()).collect();
    for body in &bodies {
        server.push_keys(OP, &["slow"], body);
    }
    assert!(
        common::wait_until(Duration::from_secs(3), || outbox_bytes(&server) > 0),
        "part of the pushes waits in the server's outbox"
    );
    sigterm(&server);
    // Draining: the API still answers, and says not ready.
    let deadline = Instant::now() + Duration::from_secs(3);
    let ready = loop {
        let reply = server.http("GET", "/readyz", b"");
        if reply.status == 503 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((ready.status, ready.body_str().as_str()), (503, "draining\n"));
    // New client connections are refused (the listeners stopped listening).
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        TcpStream::connect_timeout(&server.tcp, Duration::from_millis(500)).is_err()
    });
    assert!(refused, "no new client connection is accepted while draining");
    // The slow client reads only now: every push, in order, then the end.
    for body in &bodies {
        let frame = slow.try_read_frame(Duration::from_secs(5)).expect("a push queued before SIGTERM");
        assert_eq!(frame.body, *body);
    }
    slow.expect_eof(Duration::from_secs(5));
    // The WebSocket client is told the server is going away.
    let close = loop {
        let message = ws.read_message(Duration::from_secs(5)).expect("a close frame before the end");
        if message.opcode == 0x8 {
            break message;
        }
    };
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1001, "{:?}", close.payload);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}
