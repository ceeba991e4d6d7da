//! A corecast cluster over a real nats-server: three nodes with two shards
//! each on loopback. Every push kind crossing nodes exactly once, order
//! through different nodes, one epoch and offset sequence per room with
//! recovery on another node, cluster-wide counts, same-key replacement
//! across nodes, the nodes API, and the faults: a node killed with SIGKILL,
//! a nats-server restart, a push during a bus outage.

mod common;

use common::positions::{position_of, Position};

use common::cluster::{metric, start_nodes, wait_for_nodes, Nats};
use common::{op, poll_eq, wait_until, Client, Frame, Server};
use simd_json::prelude::*;
use std::time::Duration;

const OP: i32 = 1000;
/// Node timeout in the test config (cluster.node_timeout_ms) plus slack.
const NODE_GONE_WITHIN: Duration = Duration::from_millis(1500 + 2500);

/// Bodies of the next pushes until (and without) the one whose body is `marker`.
fn bodies_until(client: &mut Client, marker: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let frame = client.read_frame();
        assert_eq!(frame.op, OP, "a push: {frame:?}");
        let body = String::from_utf8_lossy(&frame.body).into_owned();
        if body == marker {
            return bodies;
        }
        bodies.push(body);
    }
}

fn code_of(node: &Server, path_and_query: &str, body: &[u8]) -> i64 {
    let response = node.http("POST", path_and_query, body);
    assert_eq!(response.status, 200, "{}", response.body_str());
    response.json().get_i64("code").unwrap_or_else(|| panic!("code in {}", response.body_str()))
}

#[test]
fn every_push_kind_crosses_nodes_exactly_once() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let mut c1 = nodes[0].auth(1, "k1", "live://1", &[OP]);
    let mut c2 = nodes[1].auth(2, "k2", "live://1", &[OP]);
    let mut c3 = nodes[2].auth(1, "k3", "live://2", &[OP]);
    let via = &nodes[1];
    via.push_keys(OP, &["k1", "k3"], b"keys");
    via.push_mids(OP, &[1], b"mids");
    via.push_room(OP, "live", "1", b"room");
    via.push_all(OP, b"all");
    via.push_keys(OP, &["k1", "k2", "k3"], b"end");
    assert_eq!(bodies_until(&mut c1, "end"), ["keys", "mids", "room", "all"]);
    assert_eq!(bodies_until(&mut c2, "end"), ["room", "all"]);
    assert_eq!(bodies_until(&mut c3, "end"), ["keys", "mids", "all"]);
    for client in [&mut c1, &mut c2, &mut c3] {
        client.expect_nothing();
    }
    // Pushes that crossed the bus are timed on the node that delivered them.
    assert!(
        wait_until(Duration::from_secs(3), || {
            metric(&nodes[0].http("GET", "/metrics", b"").body_str(), "corecast_push_delivery_seconds_count") >= Some(5)
        }),
        "node 1 timed its 5 deliveries"
    );
}

#[test]
fn sequential_pushes_through_different_nodes_arrive_in_reply_order() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let mut members: Vec<(Client, String, i64)> = (0..6)
        .map(|i| {
            let key = format!("order{i}");
            let mid = 100 + i as i64;
            (nodes[i % 3].auth(mid, &key, "live://order", &[OP]), key, mid)
        })
        .collect();
    let keys: Vec<&str> = members.iter().map(|(_, key, _)| key.as_str()).collect();
    let mids: Vec<i64> = members.iter().map(|(_, _, mid)| *mid).collect();
    let count = 48;
    for n in 0..count {
        let via = &nodes[n % 3];
        let body = format!("p{n}");
        match (n / 3) % 4 {
            0 => via.push_room(OP, "live", "order", body.as_bytes()),
            1 => via.push_keys(OP, &keys, body.as_bytes()),
            2 => via.push_mids(OP, &mids, body.as_bytes()),
            _ => via.push_all(OP, body.as_bytes()),
        }
    }
    nodes[0].push_all(OP, b"end");
    let expected: Vec<String> = (0..count).map(|n| format!("p{n}")).collect();
    for (client, key, _) in &mut members {
        assert_eq!(bodies_until(client, "end"), expected, "member {key}");
    }
}

/// Authenticates with positions (and `extra` token fields); returns the
/// client and its op-20 frame.
fn join(node: &Server, key: &str, room: &str, extra: &str) -> (Client, Position) {
    let mut client = node.connect();
    let token = format!(r#"{{"mid":1,"key":"{key}","room_id":"{room}","accepts":[{OP}],"positions":true{extra}}}"#);
    client.send_frame(1, op::AUTH, 1, token.as_bytes());
    assert_eq!(client.read_frame(), Frame { ver: 1, op: op::AUTH_REPLY, seq: 1, body: Vec::new() });
    let position = position_of(&client.read_frame());
    (client, position)
}

/// The next room push: (offset, body).
fn next_push(client: &mut Client) -> (u32, String) {
    let frame = client.read_frame();
    assert_eq!(frame.op, OP, "a room push: {frame:?}");
    (frame.seq as u32, String::from_utf8_lossy(&frame.body).into_owned())
}

fn numbered(from: u32, to: u32) -> Vec<(u32, String)> {
    (from..=to).map(|n| (n, format!("r{n}"))).collect()
}

#[test]
fn one_epoch_and_offset_sequence_across_nodes_and_recovery_on_another_node() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let (mut a, at_a) = join(&nodes[0], "pa", "live://pos", "");
    let (mut b, at_b) = join(&nodes[1], "pb", "live://pos", "");
    assert_eq!(at_a, at_b, "one epoch and offset, whichever node a member joins");
    assert_eq!((at_a.offset, at_a.recovered), (0, false));
    for n in 1..=5 {
        nodes[n as usize % 3].push_room(OP, "live", "pos", format!("r{n}").as_bytes());
    }
    let five: Vec<(u32, String)> = (0..5).map(|_| next_push(&mut a)).collect();
    assert_eq!(five, numbered(1, 5));
    assert_eq!((0..5).map(|_| next_push(&mut b)).collect::<Vec<_>>(), numbered(1, 5));
    a.close();
    for n in 6..=8 {
        nodes[0].push_room(OP, "live", "pos", format!("r{n}").as_bytes());
    }
    assert_eq!((0..3).map(|_| next_push(&mut b)).collect::<Vec<_>>(), numbered(6, 8));
    // Back on another node, from offset 5 of the epoch.
    let extra = format!(r#","recover":{{"epoch":"{}","offset":5}}"#, at_a.epoch);
    let (mut a, again) = join(&nodes[2], "pa", "live://pos", &extra);
    assert_eq!(
        again,
        Position { room: "live://pos".into(), epoch: at_a.epoch.clone(), offset: 8, recovered: true, missed: 3 }
    );
    assert_eq!((0..3).map(|_| next_push(&mut a)).collect::<Vec<_>>(), numbered(6, 8));
    nodes[1].push_room(OP, "live", "pos", b"r9");
    assert_eq!(next_push(&mut a), (9, "r9".to_string()));
    assert_eq!(next_push(&mut b), (9, "r9".to_string()));
    // The history API answers the same on every node.
    for node in &nodes {
        let data = node.get_data("/goim/room/history?type=live&room=pos&since=6");
        assert_eq!(data.get_str("epoch"), Some(at_a.epoch.as_str()));
        assert_eq!(data.get_u64("offset"), Some(9));
        let offsets: Vec<u64> =
            data.get_array("messages").expect("messages").iter().filter_map(|m| m.get_u64("offset")).collect();
        assert_eq!(offsets, [7, 8, 9]);
    }
}

fn online_room(node: &Server) -> String {
    node.get_data("/goim/online/room?type=live&rooms=c&rooms=d").encode()
}

#[test]
fn online_counts_are_cluster_wide_in_all_four_places() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let _c = [nodes[0].auth(1, "c1", "live://c", &[OP]), nodes[0].auth(2, "c2", "live://c", &[OP])];
    let mut on_two = nodes[1].auth(3, "c3", "live://c", &[OP]);
    let mut on_three = nodes[2].auth(4, "d1", "live://d", &[OP]);
    for node in &nodes {
        poll_eq("online/room", Duration::from_secs(5), r#"{"c":3,"d":1}"#.to_string(), || online_room(node));
        poll_eq(
            "online/top",
            Duration::from_secs(5),
            r#"[{"room_id":"c","count":3},{"room_id":"d","count":1}]"#.to_string(),
            || node.get_data("/goim/online/top?type=live&limit=10").encode(),
        );
        poll_eq("online/total", Duration::from_secs(5), (4, 3), || node.online_total());
    }
    on_two.heartbeat_until(3);
    on_three.heartbeat_until(1);
}

#[test]
fn a_newer_connection_with_a_key_closes_the_older_one_on_another_node() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let mut old = nodes[0].auth(1, "same", "live://x", &[OP]);
    let mut new = nodes[2].auth(1, "same", "live://x", &[OP]);
    old.expect_eof(Duration::from_secs(3));
    nodes[1].push_keys(OP, &["same"], b"to the newer");
    new.expect_push(OP, b"to the newer");
}

#[test]
fn instances_and_the_weighted_list_cover_every_live_node() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    // goim's balancer is coarse: 6, 2 and 0 connections give weights 10, 12 and 13.
    let _busy: Vec<Client> =
        (0..8).map(|i| nodes[(i >= 6) as usize].auth(i as i64, &format!("w{i}"), "", &[OP])).collect();
    for node in &nodes {
        poll_eq(
            "instances",
            Duration::from_secs(5),
            vec![("node1".to_string(), "6".to_string()), ("node2".into(), "2".into()), ("node3".into(), "0".into())],
            || {
                let data = node.get_data("/goim/nodes/instances");
                let mut seen: Vec<(String, String)> = data
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|i| {
                        let count = i.get("metadata").and_then(|m| m.get_str("conn_count")).unwrap_or("?");
                        (i.get_str("hostname").unwrap_or("?").to_string(), count.to_string())
                    })
                    .collect();
                seen.sort();
                seen
            },
        );
        let weighted = node.get_data("/goim/nodes/weighted?platform=android");
        let addrs: Vec<String> =
            weighted.get_array("nodes").expect("nodes").iter().filter_map(|n| n.as_str().map(String::from)).collect();
        assert_eq!(addrs, ["10.0.0.3", "10.0.0.2", "10.0.0.1"], "the emptiest node first");
    }
}

/// The tests' copy of the server's rendezvous score (cluster::nodes).
fn score(node: &str, room: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0xff]).chain(room.bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// A room whose sequencer is `node` among `live` nodes.
fn room_sequenced_by(node: &str, live: &[&str]) -> String {
    (0..)
        .map(|i| format!("seq{i}"))
        .find(|id| {
            let room = format!("live://{id}");
            live.iter().max_by_key(|n| (score(n, &room), n.to_string())) == Some(&node)
        })
        .expect("some room")
}

#[test]
fn a_node_killed_with_sigkill_disappears_and_its_rooms_start_a_new_epoch() {
    let nats = Nats::start();
    let mut nodes = start_nodes(&nats, 3, 2);
    let id = room_sequenced_by("node3", &["node1", "node2", "node3"]);
    let room = format!("live://{id}");
    let (mut member, at) = join(&nodes[1], "survivor", &room, "");
    let _doomed = nodes[2].auth(9, "doomed", &room, &[OP]);
    poll_eq("online/total", Duration::from_secs(5), (2, 2), || nodes[0].online_total());
    nodes[0].push_room(OP, "live", &id, b"r1");
    assert_eq!(next_push(&mut member), (1, "r1".to_string()));
    nodes[2].kill9();
    poll_eq("instances after the kill", NODE_GONE_WITHIN, 2, || {
        nodes[0].get_data("/goim/nodes/instances").as_array().map_or(0, |list| list.len())
    });
    poll_eq("online/total after the kill", NODE_GONE_WITHIN, (1, 1), || nodes[0].online_total());
    wait_for_nodes(&nodes[1], 2);
    // The room's sequencer moved: a new epoch, told as not recovered, from offset 0.
    nodes[0].push_room(OP, "live", &id, b"after");
    let told = position_of(&member.read_frame());
    assert_ne!(told.epoch, at.epoch);
    assert_eq!((told.offset, told.recovered, told.missed), (0, false, 0));
    assert_eq!(next_push(&mut member), (1, "after".to_string()));
}

#[test]
fn a_push_during_a_bus_outage_is_answered_500_and_pushes_resume_after_a_nats_restart() {
    let mut nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let mut local = nodes[0].auth(1, "here", "live://o", &[OP]);
    let mut remote = nodes[2].auth(2, "there", "live://o", &[OP]);
    nats.stop();
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric(&nodes[0].http("GET", "/metrics", b"").body_str(), "corecast_cluster_bus_connected_shards")
                == Some(0)
        }),
        "node1 noticed the bus is down"
    );
    assert_eq!(code_of(&nodes[0], "/goim/push/keys?operation=1000&keys=here&keys=there", b"outage"), -500);
    local.expect_push(OP, b"outage");
    assert_eq!(code_of(&nodes[0], "/goim/push/room?operation=1000&type=live&room=o", b"room"), -500);
    // Both refusals are counted (other shards' counters arrive within online_sync_ms).
    poll_eq("pushes failed", Duration::from_secs(3), Some(2), || {
        metric(&nodes[0].http("GET", "/metrics", b"").body_str(), "corecast_cluster_pushes_failed_total")
    });
    nats.restart();
    for node in &nodes {
        wait_for_nodes(node, 3);
    }
    nodes[0].push_keys(OP, &["there"], b"back");
    remote.expect_push(OP, b"back");
    nodes[1].push_room(OP, "live", "o", b"room again");
    local.expect_push(OP, b"room again");
    remote.expect_push(OP, b"room again");
    poll_eq("reconnects", Duration::from_secs(3), Some(2), || {
        metric(&nodes[0].http("GET", "/metrics", b"").body_str(), "corecast_cluster_bus_reconnects_total")
    });
}

#[test]
fn a_throttled_broadcast_shares_its_speed_over_the_whole_cluster() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let mut clients: Vec<Client> = (0..12).map(|i| nodes[i % 3].auth(i as i64, &format!("b{i}"), "", &[OP])).collect();
    poll_eq("online/total", Duration::from_secs(5), 12, || nodes[0].online_total().0);
    let started = std::time::Instant::now();
    nodes[1].push("/goim/push/all?operation=1000&speed=6", b"slow");
    for client in &mut clients {
        let frame = client.try_read_frame(Duration::from_secs(10)).expect("the broadcast reaches every node");
        assert_eq!(frame.body, b"slow");
    }
    // 12 connections on 6 shards at about 6 a second in all: a shard walks
    // its share at about 1 a second, its first connection at once, so the
    // last frame leaves after about 1 s when the kernel spread them evenly
    // (2 a shard), later when not. Each shard walking at the full speed
    // would be done in about 1/6 s.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(700), "throttled cluster-wide, took {elapsed:?}");
}

/// Publishes `payload` on `subject` as a plain NATS client (the test acting
/// as a broken bus: a push lost or repeated on the way).
fn publish_raw(nats: &Nats, subject: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", nats.port)).expect("connect to nats-server");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut info = String::new();
    reader.read_line(&mut info).expect("INFO");
    let mut out = b"CONNECT {\"verbose\":false}\r\n".to_vec();
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\nPING\r\n");
    (&stream).write_all(&out).expect("publish");
    let mut pong = String::new();
    reader.read_line(&mut pong).expect("PONG");
    assert_eq!(pong, "PONG\r\n");
}

/// A numbered room push as corecast nodes encode it on the bus (cluster::wire).
fn room_message(epoch: &str, offset: u32, body: &[u8]) -> Vec<u8> {
    let frame = common::encode_frame(1, OP, 0, body);
    let mut out = vec![b'r'];
    out.extend_from_slice(&(epoch.len() as u32).to_be_bytes());
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // not stamped (no delivery latency)
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(&frame);
    out
}

#[test]
fn pushes_lost_or_repeated_on_the_bus_are_caught_counted_and_never_shown_as_a_gap() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, 3, 2);
    let (mut positioned, at) = join(&nodes[1], "gap-p", "live://gap", "");
    let mut plain = nodes[1].auth(2, "gap-plain", "live://gap", &[OP]);
    nodes[0].push_room(OP, "live", "gap", b"r1");
    assert_eq!(next_push(&mut positioned), (1, "r1".to_string()));
    plain.expect_push(OP, b"r1");
    // Offset 1 again: a duplicate, dropped.
    publish_raw(&nats, "corecast.room.live_3a_2f_2fgap", &room_message(&at.epoch, 1, b"again"));
    // Offset 5 after 1: pushes 2 to 4 were lost on the way.
    publish_raw(&nats, "corecast.room.live_3a_2f_2fgap", &room_message(&at.epoch, 5, b"r5"));
    plain.expect_push(OP, b"r5");
    positioned.expect_eof(Duration::from_secs(3));
    poll_eq("missed", Duration::from_secs(3), (Some(3), Some(1)), || {
        let text = nodes[1].http("GET", "/metrics", b"").body_str();
        (
            metric(&text, "corecast_cluster_room_pushes_missed_total"),
            metric(&text, "corecast_cluster_room_pushes_duplicate_total"),
        )
    });
    // Reconnecting with recovery gets what the history really holds.
    let extra = format!(r#","recover":{{"epoch":"{}","offset":1}}"#, at.epoch);
    let (_again, position) = join(&nodes[2], "gap-p", "live://gap", &extra);
    assert_eq!((position.offset, position.recovered), (1, true), "the sequencer's own offsets have no gap");
}
