//! permessage-deflate (RFC 7692) end to end against the real server, with a
//! raw-socket client that checks the bytes: the extension answer, RSV1,
//! the compressed payload shared byte for byte by every member, today's
//! bytes for a member that offered nothing, compressed client messages, a
//! decompression bomb, and offers the server must decline.

mod common;

use common::cluster::metric;
use common::ws::*;
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::Duration;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";
const ANSWER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Chat-like JSON of about `bytes` bytes.
fn gifts(bytes: usize) -> Vec<u8> {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&format!("{{\"user\":\"viewer{i}\",\"gift\":\"rose\",\"count\":{i}}},"));
        i += 1;
    }
    text.push_str("{}]");
    text.into_bytes()
}

/// A permessage-deflate payload as a client sends one: raw deflate, sync
/// flush, tail stripped (written here with flate2, not the server's code).
fn deflate(message: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    compress.compress_vec(message, &mut out, FlushCompress::Sync).expect("deflate");
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut decompress = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    decompress.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("a valid deflate payload");
    assert_eq!(decompress.total_in() as usize, input.len(), "whole payload inflated");
    out
}

/// Upgrades offering `offer` (if any) and authenticates with an
/// uncompressed auth frame (a client may send plain messages either way).
fn member(server: &Server, offer: Option<&str>, key: &str, room: &str) -> (WsClient, String) {
    let ws = server.ws.expect("ws port");
    let (mut client, head) = WsClient::connect_with(ws, offer.as_slice());
    client.send_goim(1, 7, 1, &token_json(0, key, room, &[1000]));
    assert_eq!(client.read_frame(), Frame { ver: 1, op: 8, seq: 1, body: Vec::new() }, "auth reply");
    (client, head)
}

fn message(client: &mut WsClient) -> Message {
    client.read_message(READ_TIMEOUT).expect("a message")
}

/// The op-9 message a push of `body` is, as a member without the extension gets it.
fn op9(body: &[u8]) -> Vec<u8> {
    encode_frame(1, 9, 0, &encode_frame(1, 1000, 0, body))
}

fn counter(server: &Server, name: &str, at_least: u64) -> u64 {
    let mut value = 0;
    let seen = wait_until(Duration::from_secs(5), || {
        value = metric(&server.http("GET", "/metrics", b"").body_str(), name).unwrap_or(0);
        value >= at_least
    });
    assert!(seen, "{name} stayed at {value}, below {at_least}");
    value
}

#[test]
fn one_push_is_compressed_once_and_every_member_that_negotiated_gets_the_same_bytes() {
    // One shard: every member is on it, so "once per shard" is exactly once.
    let mut config = ServerConfig::default();
    config.set("server", "shards", 1);
    let server = Server::start_with(&config);
    let (mut a, head_a) = member(&server, Some(OFFER), "deflate-a", "live://deflate");
    let (mut b, head_b) = member(&server, Some(OFFER), "deflate-b", "live://deflate");
    let (mut plain, head_plain) = member(&server, None, "deflate-plain", "live://deflate");
    assert!(head_a.contains(ANSWER) && head_b.contains(ANSWER), "extension answer in {head_a:?}");
    assert!(!head_plain.contains("Sec-WebSocket-Extensions"), "nothing offered, nothing answered: {head_plain:?}");

    let body = gifts(600);
    server.push_room(1000, "live", "deflate", &body);
    let (from_a, from_b) = (message(&mut a), message(&mut b));
    assert_eq!(from_a.opcode, 0x42, "FIN, RSV1 and binary");
    assert_eq!(from_a, from_b, "byte-identical compressed payloads for one push");
    assert_eq!(inflate(&from_a.payload), op9(&body), "inflates to the op-9 message");
    assert!(from_a.payload.len() * 3 < op9(&body).len(), "{} bytes compressed", from_a.payload.len());
    let from_plain = message(&mut plain);
    assert_eq!(from_plain, Message { opcode: 0x02, payload: op9(&body) }, "today's bytes exactly");

    // A message past the 32 KiB window (a big push, or a batch of many) is
    // compressed too: these members allow the full window.
    let big = gifts(40 * 1024);
    server.push_room(1000, "live", "deflate", &big);
    let (big_a, big_b) = (message(&mut a), message(&mut b));
    assert_eq!((big_a.opcode, big_a == big_b), (0x42, true), "compressed and shared");
    assert_eq!(inflate(&big_a.payload), op9(&big));
    assert_eq!(message(&mut plain).payload, op9(&big));

    // Random bytes do not shrink: they go plain, counted as not paid.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..400)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    server.push_room(1000, "live", "deflate", &noise);
    assert_eq!(message(&mut a), Message { opcode: 0x02, payload: op9(&noise) });
    assert_eq!(message(&mut b).opcode, 0x02);
    assert_eq!(message(&mut plain).payload, op9(&noise));
    assert_eq!(counter(&server, "corecast_ws_compression_not_paid_total", 1), 1);

    // Below ws.compression_min_bytes (256) a push goes plain to everyone.
    server.push_room(1000, "live", "deflate", b"{\"small\":1}");
    assert_eq!(message(&mut a), Message { opcode: 0x02, payload: op9(b"{\"small\":1}") });

    // Two pushes compressed, once each for the two members.
    assert_eq!(counter(&server, "corecast_ws_compressed_messages_total", 2), 2);
    let text = server.http("GET", "/metrics", b"").body_str();
    let bytes_in = metric(&text, "corecast_ws_compression_in_bytes_total").expect("in bytes");
    let bytes_out = metric(&text, "corecast_ws_compression_out_bytes_total").expect("out bytes");
    assert_eq!(bytes_in, (op9(&body).len() + op9(&big).len()) as u64);
    assert_eq!(bytes_out, (from_a.payload.len() + big_a.payload.len()) as u64);
}

#[test]
fn compressed_client_messages_are_inflated_whole_or_fragmented() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    let (mut client, head) = WsClient::connect_with(ws, &[OFFER]);
    assert!(head.contains(ANSWER), "{head:?}");
    let auth = deflate(&encode_frame(1, 7, 1, &token_json(0, "inflated", "live://inflated", &[1000])));
    client.send_frame_first_byte(0xC2, &auth, true);
    assert_eq!(client.read_frame(), Frame { ver: 1, op: 8, seq: 1, body: Vec::new() }, "auth reply");
    // RSV1 on the first fragment only; the message is compressed whole.
    let heartbeat = deflate(&encode_frame(1, 2, 9, b""));
    let (first, rest) = heartbeat.split_at(heartbeat.len() / 2);
    client.send_frame_first_byte(0x42, first, true);
    client.send_frame_first_byte(0x80, rest, true);
    let reply = client.read_frame();
    assert_eq!((reply.op, reply.seq), (3, 9), "heartbeat reply");
    assert_eq!(counter(&server, "corecast_ws_inflated_messages_total", 2), 2);
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_and_rsv1_without_the_extension_with_1002() {
    let server = Server::start();
    let (mut bomber, _) = member(&server, Some(OFFER), "bomber", "live://bomb");
    // 1 MiB of zeros in about 1 KiB: a frame well within the 4 KiB limit
    // that inflates 256 times past it.
    let bomb = deflate(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 2048, "{}", bomb.len());
    bomber.send_frame_first_byte(0xC2, &bomb, true);
    let close = message(&mut bomber);
    assert_eq!(close.opcode, 0x08, "a close frame: {close:?}");
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1009);
    assert!(bomber.read_message(READ_TIMEOUT).is_none(), "then the connection ends");

    let (mut plain, _) = member(&server, None, "no-extension", "live://bomb");
    plain.send_frame_first_byte(0xC2, &deflate(&encode_frame(1, 2, 1, b"")), true);
    let close = message(&mut plain);
    assert_eq!((close.opcode, u16::from_be_bytes([close.payload[0], close.payload[1]])), (0x08, 1002));

    // Others on the server are unaffected.
    let (mut other, _) = member(&server, Some(OFFER), "bystander", "live://bomb");
    assert!(other.heartbeat() >= 1);
}

#[test]
fn offers_the_rfc_says_to_decline_upgrade_without_the_extension() {
    let server = Server::start();
    for (i, offer) in [
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=7",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=16",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits",
        "Sec-WebSocket-Extensions: permessage-deflate; no_such_parameter",
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "Sec-WebSocket-Extensions: x-webkit-deflate-frame",
    ]
    .into_iter()
    .enumerate()
    {
        let room = format!("live://declined{i}");
        let (mut client, head) = member(&server, Some(offer), &format!("declined-{i}"), &room);
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{offer}: declined, got {head:?}");
        let body = gifts(600);
        server.push_room(1000, "live", &format!("declined{i}"), &body);
        assert_eq!(message(&mut client), Message { opcode: 0x02, payload: op9(&body) }, "{offer}");
    }

    // A smaller server window is honoured: messages that fit it are
    // compressed, longer ones go plain.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9";
    let (mut client, head) = member(&server, Some(offer), "window-9", "live://window");
    assert!(head.contains("; server_max_window_bits=9\r\n"), "{head:?}");
    let fits = gifts(400);
    assert!(op9(&fits).len() <= 512);
    server.push_room(1000, "live", "window", &fits);
    let compressed = message(&mut client);
    assert_eq!((compressed.opcode, inflate(&compressed.payload)), (0x42, op9(&fits)));
    let long = gifts(900);
    server.push_room(1000, "live", "window", &long);
    assert_eq!(message(&mut client), Message { opcode: 0x02, payload: op9(&long) });
}

#[test]
fn with_compression_off_an_offer_gets_todays_upgrade() {
    let mut config = ServerConfig::default();
    config.set("ws", "compression", "off");
    let server = Server::start_with(&config);
    let (mut client, head) = member(&server, Some(OFFER), "off", "live://off");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head:?}");
    let body = gifts(600);
    server.push_room(1000, "live", "off", &body);
    assert_eq!(message(&mut client), Message { opcode: 0x02, payload: op9(&body) });
}

#[test]
fn an_independent_client_library_negotiates_and_uses_deflate() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    python_deflate(&format!("ws://{ws}/sub"), server.http, None);
    counter(&server, "corecast_ws_compressed_messages_total", 1);
    counter(&server, "corecast_ws_inflated_messages_total", 2);
}
