//! goim over WebSocket: the upgrade, the same session as on TCP (auth,
//! pushes of every kind, accepts, change room, heartbeat counts), op-9
//! batches, fragmented messages, ping/pong, and protocol errors.

mod common;

use common::ws::*;
use common::*;
use std::time::Duration;

fn frames_of(client: &mut WsClient, n: usize) -> Vec<Frame> {
    (0..n).map(|_| client.read_frame()).collect()
}

#[test]
fn upgrade_and_auth_reply_over_websocket() {
    let server = Server::start();
    let ws = server.ws.expect("the server reports its WebSocket port");
    let mut client = WsClient::auth(ws, 1, "ws-1", "live://1", &[1000]);
    assert_eq!(client.heartbeat(), 1);
}

#[test]
fn every_push_kind_reaches_a_websocket_client_in_op_9_messages() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    let mut client = WsClient::auth(ws, 42, "ws-key", "live://7", &[1000]);
    server.push_keys(1000, &["ws-key"], b"by key");
    assert_eq!(client.read_frame(), Frame::push(1000, b"by key"));
    server.push_mids(1000, &[42], b"by mid");
    assert_eq!(client.read_frame(), Frame::push(1000, b"by mid"));
    server.push_room(1000, "live", "7", b"by room");
    assert_eq!(client.read_frame(), Frame::push(1000, b"by room"));
    server.push_all(1000, b"to all");
    assert_eq!(client.read_frame(), Frame::push(1000, b"to all"));
}

#[test]
fn pushes_arrive_as_op_9_messages_and_room_pushes_ignore_accepts() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    let mut client = WsClient::auth(ws, 0, "w", "live://2", &[1001]);
    server.push_room(1000, "live", "2", b"room ignores accepts");
    let message = client.read_message(READ_TIMEOUT).expect("a message");
    let outer = split_frames(&message.payload);
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].op, 9, "pushes come wrapped in op 9");
    assert_eq!(split_frames(&outer[0].body), vec![Frame::push(1000, b"room ignores accepts")]);
    // Key pushes honour accepts: 1000 is not accepted, 1001 is.
    server.push_keys(1000, &["w"], b"not accepted");
    server.push_keys(1001, &["w"], b"accepted");
    assert_eq!(client.read_frame(), Frame::push(1001, b"accepted"));
}

#[test]
fn tcp_and_websocket_members_of_one_room_get_the_same_push() {
    let server = Server::start();
    let mut tcp = Client::auth(server.tcp, 1, "t", "live://5", &[]);
    let mut ws = WsClient::auth(server.ws.expect("ws port"), 2, "w", "live://5", &[]);
    tcp.heartbeat_until(2);
    server.push_room(1000, "live", "5", b"both");
    tcp.expect_push(1000, b"both");
    assert_eq!(ws.read_frame(), Frame::push(1000, b"both"));
}

#[test]
fn change_room_sub_and_heartbeat_counts_work_over_websocket() {
    let server = Server::start();
    let ws_addr = server.ws.expect("ws port");
    let mut a = WsClient::auth(ws_addr, 1, "a", "live://1", &[]);
    let _b = WsClient::auth(ws_addr, 2, "b", "live://9", &[]);
    a.send_goim(1, 12, 3, b"live://9");
    assert_eq!(a.read_frame(), Frame { ver: 1, op: 13, seq: 3, body: b"live://9".to_vec() });
    poll_eq("room count over ws", SYNC_TIMEOUT, 2, || a.heartbeat());
    a.send_goim(1, 14, 4, b"1005");
    assert_eq!(a.read_frame(), Frame { ver: 1, op: 15, seq: 4, body: b"1005".to_vec() });
    server.push_keys(1005, &["a"], b"subscribed");
    assert_eq!(a.read_frame(), Frame::push(1005, b"subscribed"));
}

#[test]
fn a_fragmented_message_is_reassembled() {
    let server = Server::start();
    let mut client = WsClient::connect(server.ws.expect("ws port"));
    let auth = encode_frame(1, 7, 1, &token_json(3, "frag", "live://3", &[]));
    let (first, rest) = auth.split_at(10);
    let (middle, last) = rest.split_at(7);
    client.send_frame(false, 2, first, true);
    client.send_frame(false, 0, middle, true);
    // A ping between fragments is answered and does not break the message.
    client.send_frame(true, 9, b"hi", true);
    client.send_frame(true, 0, last, true);
    let pong = client.read_message(READ_TIMEOUT).expect("pong");
    assert_eq!(pong, Message { opcode: 10, payload: b"hi".to_vec() });
    assert_eq!(client.read_frame(), Frame { ver: 1, op: 8, seq: 1, body: Vec::new() });
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = Server::start();
    let mut client = WsClient::auth(server.ws.expect("ws port"), 0, "p", "", &[]);
    client.send_frame(true, 9, b"are you there", true);
    assert_eq!(client.read_message(READ_TIMEOUT), Some(Message { opcode: 10, payload: b"are you there".to_vec() }));
}

#[test]
fn close_is_answered_with_close() {
    let server = Server::start();
    let mut client = WsClient::auth(server.ws.expect("ws port"), 0, "c", "", &[]);
    client.send_frame(true, 8, &1000u16.to_be_bytes(), true);
    let reply = client.read_message(READ_TIMEOUT).expect("close reply");
    assert_eq!(reply.opcode, 8);
    assert_eq!(&reply.payload[..2], &1000u16.to_be_bytes());
    assert!(client.read_message(Duration::from_secs(2)).is_none(), "then the connection ends");
}

#[test]
fn an_unmasked_client_frame_is_closed_with_1002() {
    let server = Server::start();
    let mut client = WsClient::connect(server.ws.expect("ws port"));
    client.send_frame(true, 2, &encode_frame(1, 7, 1, &token_json(0, "u", "", &[])), false);
    let reply = client.read_message(READ_TIMEOUT).expect("close frame");
    assert_eq!(reply.opcode, 8);
    assert_eq!(&reply.payload[..2], &1002u16.to_be_bytes());
}

#[test]
fn a_message_that_is_not_whole_goim_frames_closes_the_connection() {
    let server = Server::start();
    let mut member = Client::auth(server.tcp, 1, "still-here", "live://4", &[]);
    let mut client = WsClient::auth(server.ws.expect("ws port"), 0, "bad", "", &[]);
    client.send_frame(true, 2, &[0, 0, 0, 99, 0, 16], true);
    assert!(client.read_message(Duration::from_secs(2)).is_none(), "closed");
    server.push_room(1000, "live", "4", b"others unaffected");
    member.expect_push(1000, b"others unaffected");
}

#[test]
fn bad_upgrades_are_refused_with_an_http_error() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    let wrong_version = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let (_, head) = raw_upgrade(ws, &upgrade_request(ws, "/sub", &wrong_version));
    assert!(head.starts_with("HTTP/1.1 426"), "wrong version: {head:?}");
    assert!(head.contains("Sec-WebSocket-Version: 13"), "names the version: {head:?}");
    let missing_key = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"];
    let (_, head) = raw_upgrade(ws, &upgrade_request(ws, "/sub", &missing_key));
    assert!(head.starts_with("HTTP/1.1 400"), "missing key: {head:?}");
    let (_, head) = raw_upgrade(ws, &upgrade_request(ws, "/elsewhere", &standard_headers()));
    assert!(head.starts_with("HTTP/1.1 404"), "wrong path: {head:?}");
}

#[test]
fn origins_outside_the_allowed_list_are_refused() {
    let mut config = ServerConfig::default();
    config.set("ws", "allowed_origins", toml::Value::Array(vec!["https://good.example".into()]));
    let server = Server::start_with(&config);
    let ws = server.ws.expect("ws port");
    let mut headers = standard_headers();
    headers.push("Origin: https://evil.example");
    let (_, head) = raw_upgrade(ws, &upgrade_request(ws, "/sub", &headers));
    assert!(head.starts_with("HTTP/1.1 403"), "foreign origin: {head:?}");
    let mut headers = standard_headers();
    headers.push("Origin: https://good.example");
    let (_, head) = raw_upgrade(ws, &upgrade_request(ws, "/sub", &headers));
    assert!(head.starts_with("HTTP/1.1 101"), "allowed origin: {head:?}");
}

#[test]
fn websocket_frames_collect_in_batches_of_whole_goim_frames() {
    let server = Server::start();
    let mut client = WsClient::auth(server.ws.expect("ws port"), 0, "many", "live://8", &[]);
    let mut conn = HttpConn::connect(server.http);
    let mut bytes = Vec::new();
    for n in 0..50 {
        bytes.extend(build_request(
            "POST",
            "/goim/push/room?operation=1000&type=live&room=8",
            &[],
            format!("m{n}").as_bytes(),
        ));
    }
    conn.write(&bytes);
    for _ in 0..50 {
        assert_push_ok(&conn.read_response(), "room push");
    }
    let got = frames_of(&mut client, 50);
    let expected: Vec<Frame> = (0..50).map(|n| Frame::push(1000, format!("m{n}").as_bytes())).collect();
    assert_eq!(got, expected);
}
