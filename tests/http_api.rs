//! The goim push / online / nodes HTTP API, end to end against the `corecast` binary:
//! delivery rules of each push endpoint, online counts across shards, node info,
//! parameter errors and the HTTP/1.1 edge cases (chunked, pipelined, 100-continue,
//! garbage, oversized bodies).

mod common;

use std::time::Duration;

use common::{
    assert_push_ok, assert_request_error, build_request, json, poll_eq, HttpConn, Server, ServerConfig, SYNC_TIMEOUT,
};
use simd_json::prelude::*;

// ---------------------------------------------------------------------------
// Push delivery
// ---------------------------------------------------------------------------

#[test]
fn push_keys_delivers_to_the_listed_keys_only() {
    let server = Server::start();
    let mut k1 = server.auth(1, "k1", "", &[1000]);
    let mut k2 = server.auth(2, "k2", "", &[1000]);
    let mut k3 = server.auth(3, "k3", "", &[1000]);

    server.push_keys(1000, &["k1", "k2", "offline-key"], b"to k1 and k2");
    k1.expect_push(1000, b"to k1 and k2");
    k2.expect_push(1000, b"to k1 and k2");

    server.push_keys(1000, &["k3"], b"to k3");
    k3.expect_push(1000, b"to k3");
}

#[test]
fn push_keys_skips_connections_whose_accepts_lack_the_operation() {
    let server = Server::start();
    let mut client = server.auth(1, "picky", "", &[1001]);
    server.push_keys(1000, &["picky"], b"not accepted");
    client.expect_nothing();
    server.push_keys(1001, &["picky"], b"accepted");
    client.expect_push(1001, b"accepted");
}

#[test]
fn push_body_is_delivered_as_exact_bytes() {
    let server = Server::start();
    let mut client = server.auth(1, "bytes", "", &[1000]);
    let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    server.push_keys(1000, &["bytes"], &binary);
    client.expect_push(1000, &binary);
    server.push_keys(1000, &["bytes"], b"");
    client.expect_push(1000, b"");
}

#[test]
fn push_mids_reaches_every_accepting_connection_of_each_mid() {
    let server = Server::start();
    // mid 7 on several sockets (they may land on different shards).
    let mut mid7_a = server.auth(7, "m7-a", "", &[1000]);
    let mut mid7_b = server.auth(7, "m7-b", "", &[1000]);
    let mut mid7_c = server.auth(7, "m7-c", "", &[1000]);
    let mut mid7_deaf = server.auth(7, "m7-deaf", "live://deaf", &[]);
    let mut mid8 = server.auth(8, "m8", "", &[1000]);
    let mut mid9 = server.auth(9, "m9", "", &[1000]);

    server.push_mids(1000, &[7, 8, 404], b"to 7 and 8");
    mid7_a.expect_push(1000, b"to 7 and 8");
    mid7_b.expect_push(1000, b"to 7 and 8");
    mid7_c.expect_push(1000, b"to 7 and 8");
    mid8.expect_push(1000, b"to 7 and 8");

    server.push_mids(1000, &[9], b"to 9");
    mid9.expect_push(1000, b"to 9");
    // The connection without 1000 in its accepts got nothing from the mid push.
    server.push_room(1000, "live", "deaf", b"room only");
    mid7_deaf.expect_push(1000, b"room only");
}

#[test]
fn push_room_reaches_every_member_regardless_of_accepts() {
    let server = Server::start();
    let mut accepting = server.auth(1, "r-accepting", "live://1000", &[1000]);
    let mut deaf = server.auth(2, "r-deaf", "live://1000", &[]);
    let more: Vec<_> = (0..4).map(|i| server.auth(3, &format!("r-more-{i}"), "live://1000", &[])).collect();
    let mut other_id = server.auth(4, "r-other-id", "live://1001", &[1000]);
    let mut other_type = server.auth(5, "r-other-type", "chat://1000", &[1000]);

    server.push_room(1000, "live", "1000", b"room 1000");
    accepting.expect_push(1000, b"room 1000");
    deaf.expect_push(1000, b"room 1000");
    for mut member in more {
        member.expect_push(1000, b"room 1000");
    }

    server.push_room(1000, "live", "1001", b"room 1001");
    other_id.expect_push(1000, b"room 1001");
    server.push_room(1000, "chat", "1000", b"chat room");
    other_type.expect_push(1000, b"chat room");
}

#[test]
fn push_all_reaches_every_connection_that_accepts_the_operation() {
    let server = Server::start();
    let mut in_room = server.auth(1, "all-1", "live://x", &[1000]);
    let mut roomless = server.auth(2, "all-2", "", &[1000, 1001]);
    let mut deaf = server.auth(3, "all-3", "live://deaf", &[1001]);

    server.push_all(1000, b"everyone");
    in_room.expect_push(1000, b"everyone");
    roomless.expect_push(1000, b"everyone");
    server.push_room(1000, "live", "deaf", b"deaf room");
    deaf.expect_push(1000, b"deaf room");

    server.push("/goim/push/all?operation=1001&speed=100", b"throttled");
    roomless.expect_push(1001, b"throttled");
    deaf.expect_push(1001, b"throttled");
    server.push_room(1000, "live", "x", b"x room");
    in_room.expect_push(1000, b"x room");
}

#[test]
fn key_with_a_comma_is_one_key() {
    let server = Server::start();
    let mut comma = server.auth(1, "a,b", "", &[1000]);
    let mut a = server.auth(2, "a", "", &[1000]);
    let mut b = server.auth(3, "b", "", &[1000]);

    server.push("/goim/push/keys?operation=1000&keys=a,b", b"literal comma");
    comma.expect_push(1000, b"literal comma");
    server.push("/goim/push/keys?operation=1000&keys=a%2Cb", b"encoded comma");
    comma.expect_push(1000, b"encoded comma");

    server.push_keys(1000, &["a", "b"], b"separate keys");
    a.expect_push(1000, b"separate keys");
    b.expect_push(1000, b"separate keys");
}

#[test]
fn query_values_are_percent_decoded() {
    let server = Server::start();
    let mut client = server.auth(1, "k 1/é", "", &[1000]);
    server.push("/goim/push/keys?operation=1000&keys=k%201%2F%C3%A9", b"decoded");
    client.expect_push(1000, b"decoded");
}

#[test]
fn push_requests_with_bad_parameters_get_code_400_and_push_nothing() {
    let server = Server::start();
    let mut client = server.auth(1, "k", "live://1", &[1000]);
    let bad = [
        "/goim/push/keys?operation=abc&keys=k",
        "/goim/push/keys?operation=99999999999&keys=k",
        "/goim/push/mids?operation=1000&mids=1,2",
        "/goim/push/mids?operation=1000&mids=x",
        "/goim/push/room?type=live&room=1",
        "/goim/push/room?operation=1000&room=1",
        "/goim/push/room?operation=1000&type=live",
        "/goim/push/room?operation=0&type=live&room=1",
        "/goim/push/room?operation=99999999999&type=live&room=1",
        "/goim/push/all",
        "/goim/push/all?operation=0",
    ];
    for path in bad {
        let response = server.http("POST", path, b"must not be pushed");
        assert_request_error(&response, path);
    }
    server.push_keys(1000, &["k"], b"the only push");
    client.expect_push(1000, b"the only push");
    client.expect_nothing();
}

// ---------------------------------------------------------------------------
// Online counts
// ---------------------------------------------------------------------------

#[test]
fn online_total_counts_connections_and_distinct_ips() {
    let server = Server::start();
    poll_eq("online total", SYNC_TIMEOUT, (0, 0), || server.online_total());

    let clients = [
        server.auth(1, "t-1", "live://1", &[]),
        server.auth(2, "t-2", "live://2", &[]),
        server.auth(3, "t-3", "", &[]),
    ];
    // Every test connects from 127.0.0.1.
    poll_eq("online total", SYNC_TIMEOUT, (3, 1), || server.online_total());

    let [first, second, third] = clients;
    first.close();
    poll_eq("online total", SYNC_TIMEOUT, (2, 1), || server.online_total());
    second.close();
    third.close();
    poll_eq("online total", SYNC_TIMEOUT, (0, 0), || server.online_total());
}

#[test]
fn online_room_reports_counts_per_room_with_zero_for_unknown_rooms() {
    let server = Server::start();
    let mut live = vec![server.auth(1, "or-1", "live://1000", &[]), server.auth(2, "or-2", "live://1000", &[])];
    let _chat = server.auth(3, "or-3", "chat://1000", &[]);

    let query = "/goim/online/room?type=live&rooms=1000&rooms=9999";
    poll_eq("online room", SYNC_TIMEOUT, json(r#"{"1000":2,"9999":0}"#), || server.get_data(query));
    poll_eq("online room chat", SYNC_TIMEOUT, json(r#"{"1000":1}"#), || {
        server.get_data("/goim/online/room?type=chat&rooms=1000")
    });

    live.pop().unwrap().close();
    poll_eq("online room", SYNC_TIMEOUT, json(r#"{"1000":1,"9999":0}"#), || server.get_data(query));
}

#[test]
fn online_top_lists_rooms_of_a_type_by_count_descending() {
    let server = Server::start();
    let mut top1: Vec<_> = (0..3).map(|i| server.auth(1, &format!("top1-{i}"), "live://top1", &[])).collect();
    let _top2 = server.auth(2, "top2", "live://top2", &[]);
    let _top3: Vec<_> = (0..2).map(|i| server.auth(3, &format!("top3-{i}"), "live://top3", &[])).collect();
    let _other_type: Vec<_> = (0..4).map(|i| server.auth(4, &format!("chat-{i}"), "chat://top9", &[])).collect();

    let expected = json(
        r#"[{"room_id":"top1","count":3},{"room_id":"top3","count":2},
            {"room_id":"top2","count":1}]"#,
    );
    poll_eq("online top", SYNC_TIMEOUT, expected, || server.get_data("/goim/online/top?type=live&limit=10"));
    assert_eq!(
        server.get_data("/goim/online/top?type=live&limit=2"),
        json(r#"[{"room_id":"top1","count":3},{"room_id":"top3","count":2}]"#)
    );

    for client in top1.drain(..) {
        client.close();
    }
    let expected = json(r#"[{"room_id":"top3","count":2},{"room_id":"top2","count":1}]"#);
    poll_eq("online top after leaving", SYNC_TIMEOUT, expected, || {
        server.get_data("/goim/online/top?type=live&limit=10")
    });
    assert_eq!(server.get_data("/goim/online/top?type=none&limit=10"), json("[]"));
}

#[test]
fn online_requests_with_bad_parameters_get_code_400() {
    let server = Server::start();
    let bad = [
        "/goim/online/top?limit=10",
        "/goim/online/top?type=live",
        "/goim/online/top?type=live&limit=abc",
        "/goim/online/top?type=live&limit=0",
        "/goim/online/room?rooms=1000",
        "/goim/online/room?type=live",
    ];
    for path in bad {
        let response = server.http("GET", path, b"");
        assert_request_error(&response, path);
    }
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// Config with a distinctive node identity, so the nodes API is checked against it.
fn node_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.set("node", "addr", "10.1.2.3").set("node", "hostname", "test-host");
    config
}

#[test]
fn nodes_weighted_reports_ports_heartbeat_and_backoff() {
    let server = Server::start_with(&node_config());
    let mut data = server.get_data("/goim/nodes/weighted?platform=web");
    let nodes =
        data.as_object_mut().unwrap_or_else(|| panic!("data is not an object")).remove("nodes").expect("nodes in data");
    let nodes = nodes.as_array().expect("nodes is an array");
    assert!(!nodes.is_empty(), "no nodes for web");
    assert!(nodes.iter().all(|node| node.is_str()), "nodes: {nodes:?}");
    assert_eq!(
        data,
        json(
            r#"{"domain":"conn.goim.io","tcp_port":3101,"ws_port":3102,"wss_port":3103,
                "heartbeat":2,"heartbeat_max":2,
                "backoff":{"max_delay":300,"base_delay":3,"factor":1.8,"jitter":0.3}}"#
        )
    );

    // Apps get IP addresses: this node's public address.
    let android = server.get_data("/goim/nodes/weighted?platform=android");
    assert_eq!(android.get("nodes"), Some(&json(r#"["10.1.2.3"]"#)));
}

#[test]
fn nodes_instances_describes_this_node_with_live_counts_on_both_paths() {
    let server = Server::start_with(&node_config());
    let _clients = [server.auth(1, "ni-1", "live://1", &[]), server.auth(2, "ni-2", "", &[])];
    for path in ["/goim/nodes/instances", "/nodes/instances"] {
        poll_eq(path, SYNC_TIMEOUT, (Some("2".to_string()), Some("1".to_string())), || {
            let data = server.get_data(path);
            let metadata = data.get_idx(0).and_then(|node| node.get("metadata"));
            (
                metadata.and_then(|m| m.get_str("conn_count")).map(String::from),
                metadata.and_then(|m| m.get_str("ip_count")).map(String::from),
            )
        });

        let data = server.get_data(path);
        let instances = data.as_array().expect("data is an array");
        assert_eq!(instances.len(), 1, "{path}: {data}");
        let node = &instances[0];
        assert_eq!(node.get_str("region"), Some("sh"), "{path}: {node}");
        assert_eq!(node.get_str("zone"), Some("sh001"), "{path}: {node}");
        assert_eq!(node.get_str("env"), Some("dev"), "{path}: {node}");
        assert_eq!(node.get_str("hostname"), Some("test-host"), "{path}: {node}");
        assert!(node.get_str("appid").is_some(), "{path}: appid in {node}");
        assert!(node.get_str("version").is_some(), "{path}: version in {node}");
        assert!(node.get("addrs").is_some_and(|a| a.is_array()), "{path}: {node}");
        assert!(
            node.get("latest_timestamp").is_some_and(|t| t.is_i64() || t.is_u64()),
            "{path}: latest_timestamp in {node}"
        );
        let metadata = node.get("metadata").expect("metadata");
        let metadata = metadata.as_object().expect("metadata is an object");
        let mut keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["addrs", "conn_count", "ip_count", "offline", "weight"], "{path}");
        assert!(metadata.values().all(|v| v.is_str()), "{path}: {node}");
        assert_eq!(metadata.get("addrs").and_then(|v| v.as_str()), Some("10.1.2.3"));
        assert_eq!(metadata.get("offline").and_then(|v| v.as_str()), Some("false"));
        assert_eq!(metadata.get("weight").and_then(|v| v.as_str()), Some("10"));
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 handling
// ---------------------------------------------------------------------------

#[test]
fn unknown_path_is_404() {
    let server = Server::start();
    assert_eq!(server.http("GET", "/goim/unknown", b"").status, 404);
    assert_eq!(server.http("POST", "/nope?operation=1000", b"x").status, 404);
}

#[test]
fn chunked_request_body_is_delivered_dechunked() {
    let server = Server::start();
    let mut client = server.auth(1, "chunked", "live://c1", &[]);
    let mut http = HttpConn::connect(server.http);
    http.write(
        b"POST /goim/push/room?operation=1000&type=live&room=c1 HTTP/1.1\r\n\
          Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n",
    );
    http.write(b"1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n");
    assert_push_ok(&http.read_response(), "chunked push");
    client.expect_push(1000, b"hello 0123456789");
}

#[test]
fn pipelined_requests_get_responses_and_pushes_in_order() {
    let server = Server::start();
    let mut client = server.auth(1, "piped", "live://pipe", &[]);
    let mut batch = Vec::new();
    for body in [&b"p1"[..], b"p2", b"p3"] {
        batch.extend(build_request("POST", "/goim/push/room?operation=1000&type=live&room=pipe", &[], body));
    }
    let mut http = HttpConn::connect(server.http);
    http.write(&batch);
    for i in 1..=3 {
        assert_push_ok(&http.read_response(), &format!("pipelined response {i}"));
    }
    client.expect_push(1000, b"p1");
    client.expect_push(1000, b"p2");
    client.expect_push(1000, b"p3");
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let server = Server::start();
    let mut client = server.auth(1, "patient", "", &[1000]);
    let mut http = HttpConn::connect(server.http);
    http.write(
        b"POST /goim/push/keys?operation=1000&keys=patient HTTP/1.1\r\n\
          Host: 127.0.0.1\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = http.read_response();
    assert_eq!(interim.status, 100, "interim response {interim:?}");
    http.write(b"waiting");
    assert_push_ok(&http.read_response(), "push after 100-continue");
    client.expect_push(1000, b"waiting");
}

#[test]
fn bytes_that_are_not_http_get_400_and_close() {
    let server = Server::start();
    let mut http = HttpConn::connect(server.http);
    http.write(b"\x00\x01hello\r\n\r\n");
    let response = http.read_response();
    assert_eq!(response.status, 400, "response {response:?}");
    http.expect_eof(Duration::from_secs(3));
}

#[test]
fn body_over_request_body_bytes_max_gets_413_and_close() {
    let mut config = ServerConfig::default();
    config.set("limits", "request_body_bytes_max", 1024);
    let server = Server::start_with(&config);
    let mut client = server.auth(1, "sized", "", &[1000]);

    let at_limit = vec![b'x'; 1024];
    server.push_keys(1000, &["sized"], &at_limit);
    client.expect_push(1000, &at_limit);

    // Only the head is sent: the length alone must be refused.
    let mut http = HttpConn::connect(server.http);
    http.write(
        b"POST /goim/push/keys?operation=1000&keys=sized HTTP/1.1\r\n\
          Host: 127.0.0.1\r\nContent-Length: 1025\r\n\r\n",
    );
    let response = http.read_response();
    assert_eq!(response.status, 413, "response {response:?}");
    http.expect_eof(Duration::from_secs(3));

    server.push_keys(1000, &["sized"], b"after 413");
    client.expect_push(1000, b"after 413");
}
