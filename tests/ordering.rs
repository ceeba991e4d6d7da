//! docs/positions.md section 1, end to end: sequential publishers' pushes arrive in
//! reply order across push kinds, shards and API connections; pipelined
//! requests on one connection take effect in request order; every member of
//! a room sees the room's pushes in one order under concurrent publishers.
//! Each runs with 2 shards and with 3 (three exercise the two-hop key path:
//! API shard → directory shard → connection shard).

mod common;

use common::{http_pipelined, Client, Server, ServerConfig};
use std::collections::HashSet;

const OP: i32 = 1000;

fn server(shards: i64) -> Server {
    let mut config = ServerConfig::default();
    config.set("server", "shards", shards);
    Server::start_with(&config)
}

/// `count` members of `room`, each with its own key and mid, spread over
/// the shards (the kernel spreads connections; enough of them land on each).
fn members(server: &Server, room: &str, count: usize, tag: &str) -> Vec<(Client, String, i64)> {
    (0..count)
        .map(|i| {
            let key = format!("{tag}-{i}");
            let mid = 7000 + i as i64;
            (server.auth(mid, &key, room, &[OP]), key, mid)
        })
        .collect()
}

/// Reads `count` pushes and returns their bodies.
fn bodies(client: &mut Client, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let frame = client.read_frame();
            assert_eq!(frame.op, OP, "a push: {frame:?}");
            String::from_utf8_lossy(&frame.body).into_owned()
        })
        .collect()
}

fn sequential_pushes_of_every_kind_arrive_in_reply_order(shards: i64) {
    let server = server(shards);
    let mut members = members(&server, "live://order", 8, "seq");
    let keys: Vec<&str> = members.iter().map(|(_, key, _)| key.as_str()).collect();
    let mids: Vec<i64> = members.iter().map(|(_, _, mid)| *mid).collect();
    let pushes = 80;
    for i in 0..pushes {
        // Each on a new connection, each after the previous reply.
        let body = format!("m{i}");
        match i % 4 {
            0 => server.push_room(OP, "live", "order", body.as_bytes()),
            1 => server.push_keys(OP, &keys, body.as_bytes()),
            2 => server.push_mids(OP, &mids, body.as_bytes()),
            _ => server.push_all(OP, body.as_bytes()),
        }
    }
    let expected: Vec<String> = (0..pushes).map(|i| format!("m{i}")).collect();
    for (client, key, _) in members.iter_mut() {
        assert_eq!(bodies(client, pushes), expected, "member {key} with {shards} shards");
    }
}

#[test]
fn sequential_pushes_of_every_kind_arrive_in_reply_order_2_shards() {
    sequential_pushes_of_every_kind_arrive_in_reply_order(2);
}

#[test]
fn sequential_pushes_of_every_kind_arrive_in_reply_order_3_shards() {
    sequential_pushes_of_every_kind_arrive_in_reply_order(3);
}

fn pipelined_room_and_keys_take_effect_in_request_order(shards: i64) {
    let server = server(shards);
    let mut members = members(&server, "live://pipe", 6, "pipe");
    let mut requests = Vec::new();
    let rounds = 40;
    for i in 0..rounds {
        requests.push(("/goim/push/room?operation=1000&type=live&room=pipe".to_string(), format!("r{i}")));
        for (_, key, _) in &members {
            requests.push((format!("/goim/push/keys?operation=1000&keys={key}"), format!("k{i}")));
        }
    }
    // One connection, every request in one write.
    let replies = http_pipelined(server.http, &requests);
    assert_eq!(replies.len(), requests.len());
    for reply in &replies {
        common::assert_push_ok(reply, "pipelined push");
    }
    let expected: Vec<String> = (0..rounds).flat_map(|i| [format!("r{i}"), format!("k{i}")]).collect();
    for (client, key, _) in members.iter_mut() {
        assert_eq!(bodies(client, 2 * rounds), expected, "member {key} with {shards} shards");
    }
}

#[test]
fn pipelined_room_and_keys_take_effect_in_request_order_2_shards() {
    pipelined_room_and_keys_take_effect_in_request_order(2);
}

#[test]
fn pipelined_room_and_keys_take_effect_in_request_order_3_shards() {
    pipelined_room_and_keys_take_effect_in_request_order(3);
}

fn concurrent_publishers_to_one_room_give_every_member_one_order(shards: i64) {
    let server = server(shards);
    let mut members = members(&server, "live://many", 6, "many");
    let per_publisher = 50;
    let publishers = 4;
    std::thread::scope(|scope| {
        for p in 0..publishers {
            let server = &server;
            scope.spawn(move || {
                for i in 0..per_publisher {
                    server.push_room(OP, "live", "many", format!("p{p}-{i}").as_bytes());
                }
            });
        }
    });
    let total = per_publisher * publishers;
    let first = bodies(&mut members[0].0, total);
    let distinct: HashSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), total, "every push once");
    for p in 0..publishers {
        let own: Vec<&String> = first.iter().filter(|b| b.starts_with(&format!("p{p}-"))).collect();
        let expected: Vec<String> = (0..per_publisher).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>(), "publisher {p}'s pushes in its order");
    }
    for (client, key, _) in members.iter_mut().skip(1) {
        assert_eq!(bodies(client, total), first, "member {key} sees the order member 0 saw ({shards} shards)");
    }
}

#[test]
fn concurrent_publishers_to_one_room_give_every_member_one_order_2_shards() {
    concurrent_publishers_to_one_room_give_every_member_one_order(2);
}

#[test]
fn concurrent_publishers_to_one_room_give_every_member_one_order_3_shards() {
    concurrent_publishers_to_one_room_give_every_member_one_order(3);
}

#[test]
fn a_push_to_nobody_is_still_answered() {
    let server = server(3);
    server.push_keys(OP, &["nobody-here"], b"x");
    server.push_mids(OP, &[424242], b"x");
    server.push_room(OP, "live", "empty", b"x");
    server.push_all(OP, b"x");
    // And the server still delivers afterwards.
    let mut member = server.auth(1, "after-nobody", "live://after", &[OP]);
    server.push_keys(OP, &["after-nobody"], b"y");
    member.expect_push(OP, b"y");
}

/// A `100 Continue` for a request whose body has not arrived goes after the
/// replies to the pushes pipelined before it (it answers that request only).
#[test]
fn a_100_continue_never_overtakes_the_reply_to_an_earlier_pipelined_push() {
    let server = server(2);
    let mut member = server.auth(1, "cont", "live://cont", &[OP]);
    let mut conn = common::HttpConn::connect(server.http);
    let mut bytes = common::build_request("POST", "/goim/push/room?operation=1000&type=live&room=cont", &[], b"one");
    bytes.extend_from_slice(
        b"POST /goim/push/room?operation=1000&type=live&room=cont HTTP/1.1\r\n\
          Host: 127.0.0.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    conn.write(&bytes);
    let first = conn.read_response();
    assert_eq!(first.status, 200, "the first push's reply comes first, not a 100: {first:?}");
    common::assert_push_ok(&first, "first push");
    assert_eq!(conn.read_response().status, 100, "then the 100 Continue for the second");
    conn.write(b"two");
    common::assert_push_ok(&conn.read_response(), "second push");
    assert_eq!(bodies(&mut member, 2), vec!["one".to_string(), "two".to_string()]);
}
