//! goim TCP client behaviour, end to end against the `corecast` binary: handshake,
//! auth, heartbeat, room changes, sub/unsub, malformed input, same-key replacement
//! and shutdown. HTTP is used only to produce pushes.

mod common;

use std::time::{Duration, Instant};

use common::{encode_frame, encode_frame_raw, op, token_json, Frame, Server, HEADER_LEN};

/// The test config's idle deadline: heartbeat_s (2) x heartbeat_max (2).
const IDLE_DEADLINE: Duration = Duration::from_secs(4);

#[test]
fn auth_reply_is_op_8_with_empty_body_echoing_version_and_sequence() {
    let server = Server::start();
    let mut client = server.connect();
    client.send_frame(3, op::AUTH, 42, &token_json(1, "auth-echo", "", &[1000]));
    let reply = client.read_frame();
    assert_eq!(reply, Frame { ver: 3, op: op::AUTH_REPLY, seq: 42, body: Vec::new() });
    client.expect_nothing();
}

#[test]
fn connection_that_never_authenticates_is_closed_after_handshake_timeout() {
    let server = Server::start();
    let mut client = server.connect();
    let started = Instant::now();
    client.expect_eof(Duration::from_secs(3));
    // handshake_timeout_ms is 1000: closing at once would be a different bug.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed after {:?}, before the handshake timeout",
        started.elapsed()
    );
}

#[test]
fn heartbeat_reply_carries_the_room_online_count_across_shards() {
    let server = Server::start();
    let mut first = server.auth(1, "hb-0", "live://hb", &[]);
    first.heartbeat_until(1);

    // Enough members that both shards hold some of them.
    let mut others: Vec<_> = (1..6).map(|i| server.auth(1, &format!("hb-{i}"), "live://hb", &[])).collect();
    first.heartbeat_until(6);
    others[0].heartbeat_until(6);

    let mut roomless = server.auth(2, "hb-none", "", &[]);
    assert_eq!(roomless.heartbeat(), 0, "a client without a room counts 0");

    others.pop().unwrap().close();
    others.pop().unwrap().close();
    first.heartbeat_until(4);
}

#[test]
fn idle_connection_is_closed_after_heartbeat_deadline_but_heartbeats_keep_one_open() {
    let server = Server::start();
    let mut beating = server.auth(1, "idle-beating", "", &[]);
    let mut silent = server.auth(2, "idle-silent", "", &[]);
    let started = Instant::now();

    // Heartbeat one client every ~500 ms while waiting for the other to be closed.
    let closed_after = loop {
        assert_eq!(beating.heartbeat(), 0);
        if silent.closed_within(Duration::from_millis(500)) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < IDLE_DEADLINE + Duration::from_secs(4),
            "silent client still open after {:?}",
            started.elapsed()
        );
    };
    // Allow one second of timer granularity below the 4 s deadline.
    assert!(closed_after >= IDLE_DEADLINE - Duration::from_secs(1), "silent client closed after only {closed_after:?}");

    // The heartbeating client outlives the deadline by a margin.
    while started.elapsed() < IDLE_DEADLINE + Duration::from_secs(2) {
        assert_eq!(beating.heartbeat(), 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(beating.heartbeat(), 0);
}

#[test]
fn change_room_moves_the_client_and_empty_body_leaves_the_room() {
    let server = Server::start();
    let mut client = server.auth(1, "mover", "live://1", &[1000]);

    client.change_room("live://2000");
    client.heartbeat_until(1);
    server.push_room(1000, "live", "1", b"old room");
    server.push_room(1000, "live", "2000", b"new room");
    client.expect_push(1000, b"new room");

    client.change_room("");
    client.heartbeat_until(0);
    server.push_room(1000, "live", "2000", b"left room");
    server.push_keys(1000, &["mover"], b"by key");
    client.expect_push(1000, b"by key");
}

#[test]
fn change_room_updates_the_count_seen_by_other_members() {
    let server = Server::start();
    let mut stayer = server.auth(1, "stayer", "live://a", &[]);
    let mut mover = server.auth(2, "mover", "live://a", &[]);
    stayer.heartbeat_until(2);

    mover.change_room("live://b");
    stayer.heartbeat_until(1);
    mover.heartbeat_until(1);

    mover.change_room("live://a");
    stayer.heartbeat_until(2);
}

#[test]
fn sub_and_unsub_add_and_remove_accepted_operations() {
    let server = Server::start();
    let mut client = server.auth(1, "subber", "", &[1000]);

    server.push_keys(1001, &["subber"], b"before sub");
    server.push_keys(1000, &["subber"], b"accepted");
    client.expect_push(1000, b"accepted");

    client.sub("1001,1002");
    server.push_keys(1001, &["subber"], b"after sub 1001");
    client.expect_push(1001, b"after sub 1001");
    server.push_keys(1002, &["subber"], b"after sub 1002");
    client.expect_push(1002, b"after sub 1002");

    client.unsub("1001");
    server.push_keys(1001, &["subber"], b"after unsub");
    server.push_keys(1002, &["subber"], b"still subbed");
    client.expect_push(1002, b"still subbed");
    server.push_keys(1000, &["subber"], b"original accept");
    client.expect_push(1000, b"original accept");
}

#[test]
fn sub_with_a_bad_list_is_echoed_and_keeps_existing_accepts() {
    let server = Server::start();
    let mut client = server.auth(1, "bad-sub", "", &[1000]);
    client.sub("abc,,x");
    server.push_keys(1000, &["bad-sub"], b"still accepted");
    client.expect_push(1000, b"still accepted");
}

#[test]
fn unknown_operation_is_answered_with_same_op_and_empty_body() {
    let server = Server::start();
    let mut client = server.auth(1, "op50", "", &[]);
    client.send_frame(1, 50, 77, b"upstream payload");
    assert_eq!(client.read_frame(), Frame { ver: 1, op: 50, seq: 77, body: Vec::new() });
}

#[test]
fn many_pushes_arrive_as_back_to_back_frames_in_order() {
    let server = Server::start();
    let mut client = server.auth(1, "burst", "", &[1000]);
    // One keep-alive HTTP connection, so the pushes are issued in a fixed order.
    let mut http = common::HttpConn::connect(server.http);
    let bodies: Vec<Vec<u8>> = (0..30)
        .map(|i| match i % 3 {
            0 => Vec::new(),
            1 => format!("message {i}").into_bytes(),
            _ => vec![b'a' + (i % 26) as u8; 3000 + i],
        })
        .collect();
    for body in &bodies {
        http.write(&common::build_request("POST", "/goim/push/keys?operation=1000&keys=burst", &[], body));
        common::assert_push_ok(&http.read_response(), "push burst");
    }
    for body in &bodies {
        client.expect_push(1000, body);
    }
}

#[test]
fn anonymous_connections_with_empty_keys_do_not_replace_each_other() {
    let server = Server::start();
    let mut first = server.auth(0, "", "", &[1000]);
    let mut second = server.auth(0, "", "", &[1000]);
    server.push_all(1000, b"both");
    first.expect_push(1000, b"both");
    second.expect_push(1000, b"both");
}

#[test]
fn newer_connection_with_same_key_replaces_the_older_one() {
    let server = Server::start();
    let mut older = server.auth(1, "dup", "", &[1000]);
    // Several generations, so some replacements cross shards.
    for generation in 0..6 {
        let mut newer = server.auth(1, "dup", "", &[1000]);
        older.expect_eof(Duration::from_secs(3));
        let body = format!("generation {generation}");
        server.push_keys(1000, &["dup"], body.as_bytes());
        newer.expect_push(1000, body.as_bytes());
        older = newer;
    }
}

/// Sends `bad` bytes on a fresh connection (after auth when `authenticate_first`),
/// and checks that only that connection is closed: an authenticated bystander still
/// gets a room push and heartbeat replies afterwards.
fn assert_bad_input_closes_only_that_connection(authenticate_first: bool, bad: &[u8]) {
    let server = Server::start();
    let mut bystander = server.auth(1, "bystander", "live://safe", &[]);

    let mut offender =
        if authenticate_first { server.auth(2, "offender", "live://safe", &[]) } else { server.connect() };
    offender.send_raw(bad);
    offender.expect_eof(Duration::from_secs(3));

    server.push_room(1000, "live", "safe", b"still delivered");
    bystander.expect_push(1000, b"still delivered");
    bystander.heartbeat_until(1);
}

#[test]
fn header_length_other_than_16_closes_only_that_connection() {
    let frame = encode_frame_raw(16 + 8, 20, 1, op::HEARTBEAT, 0, &[0; 8]);
    assert_bad_input_closes_only_that_connection(true, &frame);
}

#[test]
fn frame_body_over_4096_bytes_closes_only_that_connection() {
    let body = vec![b' '; 5000];
    let frame = encode_frame_raw((HEADER_LEN + 5000) as i32, 16, 1, op::AUTH, 1, &body);
    assert_bad_input_closes_only_that_connection(false, &frame);
}

#[test]
fn packet_length_shorter_than_header_closes_only_that_connection() {
    let frame = encode_frame_raw(8, 16, 1, op::HEARTBEAT, 0, b"");
    assert_bad_input_closes_only_that_connection(true, &frame);
}

#[test]
fn negative_packet_length_closes_only_that_connection() {
    let frame = encode_frame_raw(-1, 16, 1, op::HEARTBEAT, 0, b"");
    assert_bad_input_closes_only_that_connection(true, &frame);
}

#[test]
fn auth_token_that_is_not_json_closes_only_that_connection() {
    let frame = encode_frame(1, op::AUTH, 1, b"{not json");
    assert_bad_input_closes_only_that_connection(false, &frame);
}

#[test]
fn frame_body_of_exactly_4096_bytes_is_accepted() {
    let server = Server::start();
    let mut token = token_json(1, "big-token", "", &[1000]);
    // JSON allows trailing whitespace: pad the token to the body limit.
    token.resize(4096, b' ');
    let mut client = server.connect();
    client.send_frame(1, op::AUTH, 1, &token);
    assert_eq!(client.read_frame(), Frame { ver: 1, op: op::AUTH_REPLY, seq: 1, body: Vec::new() });
    server.push_keys(1000, &["big-token"], b"ok");
    client.expect_push(1000, b"ok");
}

#[test]
fn sigterm_exits_with_success_and_closes_client_connections() {
    let mut server = Server::start();
    let mut first = server.auth(1, "bye-1", "live://bye", &[]);
    let mut second = server.auth(2, "bye-2", "", &[]);
    let status = server.stop_and_wait();
    assert!(status.success(), "exit status {status:?}");
    first.expect_eof(Duration::from_secs(1));
    second.expect_eof(Duration::from_secs(1));
}

#[test]
fn a_second_server_on_a_port_in_use_refuses_to_start() {
    // A free port, then a first server on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
    let mut config = common::ServerConfig::default();
    config.set("tcp", "bind", format!("127.0.0.1:{port}"));
    let _first = Server::start_with(&config);
    let dir = common::ScratchDir::new("corecast-port-in-use");
    let path = dir.join("corecast.toml");
    std::fs::write(&path, config.to_toml()).expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run the second server");
    assert!(!output.status.success(), "the second server must not share the port");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "says why: {stderr}");
}
