//! docs/positions.md sections 2 to 6, end to end: offsets and epochs, the op-20
//! position frame, recovery after a reconnect (whole or refused), change room
//! with positions, the history API and the history bounds with their metrics,
//! over TCP and WebSocket, with 2 and 3 shards.

mod common;

use common::positions::{position_of, Position};

use common::ws::WsClient;
use common::{op, poll_eq, wait_until, Client, Frame, Server, ServerConfig};
use simd_json::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const OP: i32 = 1000;

fn token(key: &str, room: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"mid":1,"key":"{key}","room_id":"{room}","platform":"web","accepts":[{OP}]{extra}}}"#).into_bytes()
}

fn recover(position: &Position, offset: u32) -> String {
    format!(r#","recover":{{"epoch":"{}","offset":{offset}}}"#, position.epoch)
}

/// Authenticates over TCP with `extra` token fields; returns the client and
/// its op-20 frame (which must come right after the auth reply).
fn join(server: &Server, key: &str, room: &str, extra: &str) -> (Client, Position) {
    let mut client = server.connect();
    client.send_frame(1, op::AUTH, 1, &token(key, room, extra));
    assert_eq!(client.read_frame(), Frame { ver: 1, op: op::AUTH_REPLY, seq: 1, body: Vec::new() });
    let position = position_of(&client.read_frame());
    assert_eq!(position.room, room);
    (client, position)
}

/// The next room push: (offset from the sequence field, body).
fn next_push(client: &mut Client) -> (u32, String) {
    let frame = client.read_frame();
    assert_eq!((frame.ver, frame.op), (1, OP), "a room push: {frame:?}");
    (frame.seq as u32, String::from_utf8_lossy(&frame.body).into_owned())
}

fn server_with(shards: i64, history: &[(&str, i64)]) -> Server {
    let mut config = ServerConfig::default();
    config.set("server", "shards", shards);
    for (key, value) in history {
        config.set("history", key, *value);
    }
    Server::start_with(&config)
}

fn push(server: &Server, room: &str, body: &str) {
    server.push_room(OP, "live", room, body.as_bytes());
}

/// A metric's value summed over its label sets (0 when absent).
fn metric(server: &Server, name: &str, label: Option<&str>) -> u64 {
    let text = server.http("GET", "/metrics", b"").body_str();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(' '))
        .filter(|(series, _)| {
            *series == name || (series.starts_with(&format!("{name}{{")) && label.is_none_or(|l| series.contains(l)))
        })
        .map(|(_, value)| value.trim().parse::<u64>().unwrap_or_else(|_| panic!("metric value in {text}")))
        .sum()
}

fn history(server: &Server, query: &str) -> simd_json::OwnedValue {
    server.get_data(&format!("/goim/room/history?type=live&{query}"))
}

fn positions_from_the_join_point(shards: i64) {
    let server = server_with(shards, &[]);
    for i in 1..=3 {
        push(&server, "pos", &format!("before-{i}"));
    }
    let mut plain = server.auth(2, "plain", "live://pos", &[OP]);
    let (mut member, position) = join(&server, "pos-a", "live://pos", r#","positions":true"#);
    assert_eq!((position.offset, position.recovered, position.missed), (3, false, 0));
    assert!((1..=32).contains(&position.epoch.len()), "epoch {:?}", position.epoch);
    assert!(position.epoch.chars().all(|c| c.is_ascii_alphanumeric()), "epoch {:?}", position.epoch);
    for i in 4..=6 {
        push(&server, "pos", &format!("after-{i}"));
    }
    for i in 4..=6 {
        assert_eq!(next_push(&mut member), (i, format!("after-{i}")));
        // A goim client that did not ask sees goim's bytes: sequence 0.
        plain.expect_push(OP, format!("after-{i}").as_bytes());
    }
    // A second member joins at the new point, in the same epoch.
    let (_, later) = join(&server, "pos-b", "live://pos", r#","positions":true"#);
    assert_eq!((later.epoch, later.offset), (position.epoch, 6));
    // Keys pushes carry no offset.
    server.push_keys(OP, &["pos-a"], b"direct");
    assert_eq!(next_push(&mut member), (0, "direct".to_string()));
}

#[test]
fn positions_from_the_join_point_2_shards() {
    positions_from_the_join_point(2);
}

#[test]
fn positions_from_the_join_point_3_shards() {
    positions_from_the_join_point(3);
}

#[test]
fn recovery_replays_exactly_what_was_missed_then_live_pushes() {
    let server = server_with(2, &[]);
    let (mut member, position) = join(&server, "rec", "live://rec", r#","positions":true"#);
    push(&server, "rec", "one");
    assert_eq!(next_push(&mut member), (position.offset + 1, "one".into()));
    member.close();
    for body in ["two", "three", "four"] {
        push(&server, "rec", body);
    }
    let extra = recover(&position, position.offset + 1);
    let (mut member, again) = join(&server, "rec", "live://rec", &extra);
    assert_eq!(again.epoch, position.epoch);
    assert_eq!((again.offset, again.recovered, again.missed), (position.offset + 4, true, 3));
    for (i, body) in ["two", "three", "four"].iter().enumerate() {
        assert_eq!(next_push(&mut member), (position.offset + 2 + i as u32, body.to_string()));
    }
    push(&server, "rec", "five");
    assert_eq!(next_push(&mut member), (position.offset + 5, "five".into()));
    poll_eq("recoveries served", Duration::from_secs(3), 1, || {
        metric(&server, "corecast_recoveries_served_total", None)
    });
}

#[test]
fn recovery_with_a_wrong_epoch_or_from_before_the_history_is_refused_whole() {
    let server = server_with(2, &[("pushes_per_room_max", 5)]);
    let (mut member, position) = join(&server, "ref", "live://ref", r#","positions":true"#);
    for i in 1..=10 {
        push(&server, "ref", &format!("m{i}"));
    }
    for i in 1..=10 {
        assert_eq!(next_push(&mut member).0, i);
    }
    member.close();
    // Wrong epoch: refused, current epoch and offset, live pushes only.
    let wrong = r#","recover":{"epoch":"NotTheEpoch1","offset":9}"#;
    let (mut member, refused) = join(&server, "ref", "live://ref", wrong);
    assert_eq!(
        refused,
        Position { room: "live://ref".into(), epoch: position.epoch.clone(), offset: 10, recovered: false, missed: 0 }
    );
    push(&server, "ref", "m11");
    assert_eq!(next_push(&mut member), (11, "m11".into()));
    member.close();
    // From before the kept history (5 kept: 7..=11): refused, nothing replayed.
    let (mut member, gone) = join(&server, "ref", "live://ref", &recover(&position, 2));
    assert_eq!((gone.offset, gone.recovered, gone.missed), (11, false, 0));
    push(&server, "ref", "m12");
    assert_eq!(next_push(&mut member), (12, "m12".into()), "no replay before the live push");
    // From the oldest kept one: whole.
    let (mut member, ok) = join(&server, "ref2", "live://ref", &recover(&position, 7));
    assert_eq!((ok.offset, ok.recovered, ok.missed), (12, true, 5));
    for i in 8..=12 {
        assert_eq!(next_push(&mut member).0, i);
    }
    poll_eq("refusals", Duration::from_secs(3), (1, 1), || {
        (
            metric(&server, "corecast_recoveries_refused_total", Some("epoch_mismatch")),
            metric(&server, "corecast_recoveries_refused_total", Some("history_gone")),
        )
    });
}

/// A member reconnects with recovery again and again while a publisher
/// pushes flat out: every offset arrives exactly once, in order.
fn recovery_while_a_publisher_pushes_flat_out(shards: i64) {
    let server = server_with(shards, &[("pushes_per_room_max", 100_000)]);
    let (mut member, position) = join(&server, "flat", "live://flat", r#","positions":true"#);
    let stop = AtomicBool::new(false);
    let pushed = AtomicU32::new(0);
    let mut seen = vec![position.offset];
    let mut member = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut conn = common::HttpConn::connect(server.http);
            while !stop.load(Ordering::Relaxed) {
                // Pipelined batches of 20 on one keep-alive connection.
                let mut bytes = Vec::new();
                for _ in 0..20 {
                    let n = pushed.fetch_add(1, Ordering::Relaxed) + 1;
                    let path = "/goim/push/room?operation=1000&type=live&room=flat";
                    bytes.extend_from_slice(&common::build_request("POST", path, &[], format!("f{n}").as_bytes()));
                }
                conn.write(&bytes);
                for _ in 0..20 {
                    common::assert_push_ok(&conn.read_response(), "flat-out push");
                }
            }
        });
        for _round in 0..8 {
            for _ in 0..30 {
                seen.push(next_push(&mut member).0);
            }
            member.close();
            let last = *seen.last().expect("some offset");
            let (again, recovered) = join(&server, "flat", "live://flat", &recover(&position, last));
            assert!(recovered.recovered, "recovery refused: {recovered:?}");
            assert_eq!(recovered.offset, last + recovered.missed);
            member = again;
        }
        stop.store(true, Ordering::Relaxed);
        member
    });
    // What remains: everything up to the last push, then nothing more.
    let total = pushed.load(Ordering::Relaxed);
    while *seen.last().expect("offsets") < position.offset + total {
        seen.push(next_push(&mut member).0);
    }
    let expected: Vec<u32> = (position.offset..=position.offset + total).collect();
    assert_eq!(seen.len(), expected.len(), "no gap, no duplicate ({shards} shards)");
    assert_eq!(seen, expected, "in order ({shards} shards)");
}

#[test]
fn recovery_while_a_publisher_pushes_flat_out_2_shards() {
    recovery_while_a_publisher_pushes_flat_out(2);
}

#[test]
fn recovery_while_a_publisher_pushes_flat_out_3_shards() {
    recovery_while_a_publisher_pushes_flat_out(3);
}

#[test]
fn change_room_with_positions_sends_a_position_frame_after_the_reply() {
    let server = server_with(3, &[]);
    push(&server, "b", "b1");
    push(&server, "b", "b2");
    let (mut member, first) = join(&server, "chg", "live://a", r#","positions":true"#);
    assert_eq!(first.offset, 0);
    member.send_frame(1, op::CHANGE_ROOM, 12, b"live://b");
    assert_eq!(member.read_frame(), Frame { ver: 1, op: op::CHANGE_ROOM_REPLY, seq: 12, body: b"live://b".to_vec() });
    let second = position_of(&member.read_frame());
    assert_eq!((second.room.as_str(), second.offset, second.recovered), ("live://b", 2, false));
    push(&server, "a", "not for me");
    push(&server, "b", "b3");
    assert_eq!(next_push(&mut member), (3, "b3".into()));
    // Leaving sends no position frame.
    member.send_frame(1, op::CHANGE_ROOM, 13, b"");
    assert_eq!(member.read_frame().op, op::CHANGE_ROOM_REPLY);
    push(&server, "b", "b4");
    server.push_keys(OP, &["chg"], b"still here");
    assert_eq!(next_push(&mut member), (0, "still here".into()));
}

#[test]
fn positions_and_recovery_over_websocket() {
    let server = server_with(2, &[]);
    let ws = server.ws.expect("ws port");
    let mut member = WsClient::connect(ws);
    member.send_goim(1, op::AUTH, 1, &token("wsp", "live://ws", r#","positions":true"#));
    assert_eq!(member.read_frame().op, op::AUTH_REPLY);
    // The op-20 frame is a plain goim frame in its own binary message.
    let message = member.read_message(Duration::from_secs(3)).expect("op-20 message");
    let frames = common::ws::split_frames(&message.payload);
    assert_eq!(frames.len(), 1);
    let position = position_of(&frames[0]);
    push(&server, "ws", "w1");
    let frame = member.read_frame();
    assert_eq!((frame.op, frame.seq as u32, frame.body.as_slice()), (OP, position.offset + 1, &b"w1"[..]));
    drop(member);
    push(&server, "ws", "w2");
    push(&server, "ws", "w3");
    let mut member = WsClient::connect(ws);
    member.send_goim(1, op::AUTH, 1, &token("wsp", "live://ws", &recover(&position, position.offset + 1)));
    assert_eq!(member.read_frame().op, op::AUTH_REPLY);
    let again = position_of(&member.read_frame());
    assert_eq!((again.recovered, again.missed, again.offset), (true, 2, position.offset + 3));
    for (i, body) in ["w2", "w3"].iter().enumerate() {
        let frame = member.read_frame();
        assert_eq!((frame.seq as u32, frame.body.as_slice()), (position.offset + 2 + i as u32, body.as_bytes()));
    }
}

#[test]
fn history_api_serves_kept_pushes_with_since_limit_and_complete() {
    let server = server_with(2, &[("pushes_per_room_max", 4), ("api_limit_max", 3)]);
    for i in 1..=6 {
        server.push_room(1000 + i % 2, "live", "hist", format!("h{i}").as_bytes());
    }
    let data = history(&server, "room=hist");
    assert_eq!(data.get_u64("offset"), Some(6));
    assert_eq!(data.get_bool("complete"), Some(false), "offsets 1 and 2 are gone: {data}");
    let messages = data.get_array("messages").expect("messages");
    assert_eq!(messages.len(), 3, "limit defaults to api_limit_max: {data}");
    let first = &messages[0];
    assert_eq!((first.get_u64("offset"), first.get_i64("op")), (Some(3), Some(1001)));
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.decode(first.get_str("body").expect("body")).expect("base64");
    assert_eq!(body, b"h3");
    let data = history(&server, "room=hist&since=4&limit=1");
    assert_eq!(data.get_bool("complete"), Some(true));
    let offsets: Vec<u64> =
        data.get_array("messages").expect("messages").iter().filter_map(|m| m.get_u64("offset")).collect();
    assert_eq!(offsets, vec![5]);
    let data = history(&server, "room=hist&since=6");
    assert_eq!((data.get_bool("complete"), data.get_array("messages").map(|m| m.len())), (Some(true), Some(0)));
    // An unknown room: a fresh stream.
    let data = history(&server, "room=nobody");
    assert_eq!((data.get_u64("offset"), data.get_bool("complete")), (Some(0), Some(true)));
    assert!(!data.get_str("epoch").unwrap_or_default().is_empty());
    // The epoch is the one positions report.
    let (_, position) = join(&server, "h", "live://hist", r#","positions":true"#);
    assert_eq!(history(&server, "room=hist").get_str("epoch"), Some(position.epoch.as_str()));
    for bad in
        ["/goim/room/history?room=hist", "/goim/room/history?type=live", "/goim/room/history?type=live&room=x&since=-1"]
    {
        common::assert_request_error(&server.http("GET", bad, b""), bad);
    }
}

#[test]
fn history_byte_bound_drops_the_oldest_pushes_first_with_its_metrics() {
    // 2 shards: each holds at most 8 KiB of history.
    let server = server_with(2, &[("bytes_max", 16 * 1024)]);
    let body = "x".repeat(500);
    for room in 0..8 {
        for _ in 0..10 {
            push(&server, &format!("big{room}"), &body);
        }
    }
    // Counters of the other shard arrive with its next report.
    assert!(
        wait_until(Duration::from_secs(3), || metric(&server, "corecast_room_pushes_sequenced_total", None) == 80),
        "every push sequenced"
    );
    let bytes = metric(&server, "corecast_history_bytes", None);
    assert!(bytes > 0 && bytes <= 16 * 1024, "history bytes {bytes} within the bound");
    let kept = metric(&server, "corecast_history_pushes", None);
    assert!(kept > 0 && kept < 80, "{kept} pushes kept: the byte bound dropped some");
    // The oldest go first, whatever their room: the room pushed first lost
    // pushes, the room pushed last keeps all ten.
    assert_eq!(history(&server, "room=big0").get_bool("complete"), Some(false));
    let last = history(&server, "room=big7");
    assert_eq!((last.get_bool("complete"), last.get_array("messages").map(|m| m.len())), (Some(true), Some(10)));
}

#[test]
fn history_age_bound_empties_the_history_with_its_metrics() {
    let server = server_with(2, &[("age_max_s", 1)]);
    for i in 1..=5 {
        push(&server, "aged", &format!("a{i}"));
    }
    let kept = history(&server, "room=aged");
    assert_eq!(kept.get_array("messages").map(|m| m.len()), Some(5), "kept at first: {kept}");
    poll_eq("kept pushes of the room after the age bound", Duration::from_secs(5), Some(0), || {
        history(&server, "room=aged").get_array("messages").map(|m| m.len())
    });
    poll_eq("history gauges after the age bound", Duration::from_secs(5), (0, 0), || {
        (metric(&server, "corecast_history_pushes", None), metric(&server, "corecast_history_bytes", None))
    });
}

/// The sequencer checks a replay against the outbound bound alone; the
/// joining connection's outbox already holds its auth reply and op-20 frame
/// (long for a long room name). A replay that does not fit next to them is
/// refused whole (recovered false) instead of being dropped after "recovered".
#[test]
fn a_replay_that_does_not_fit_the_outbound_bound_is_refused_whole() {
    let mut config = ServerConfig::default();
    config.set("limits", "outbound_bytes_per_connection_max", 4096).set("limits", "slow_consumer_policy", "drop");
    let server = Server::start_with(&config);
    let id = "r".repeat(1500);
    let room = format!("live://{id}");
    let (member, position) = join(&server, "fit", &room, r#","positions":true"#);
    member.close();
    // 2,628 bytes of frames: under the sequencer's 3,072, over what is left
    // beside a 1.5 KB op-20 frame.
    for i in 0..4 {
        server.push_room(OP, "live", &id, format!("{i}{}", "x".repeat(640)).as_bytes());
    }
    let (mut member, answer) = join(&server, "fit", &room, &recover(&position, position.offset));
    assert_eq!((answer.recovered, answer.missed, answer.offset), (false, 0, position.offset + 4), "{answer:?}");
    server.push_room(OP, "live", &id, b"live");
    assert_eq!(next_push(&mut member), (position.offset + 5, "live".into()), "live pushes only");
    poll_eq("refused as too large", Duration::from_secs(3), 1, || {
        metric(&server, "corecast_recoveries_refused_total", Some("too_large"))
    });
}
