//! Who may push: the push API's bearer token and network
//! allow-list, end to end. Off by default (every other suite pushes without
//! either); refusals are goim envelopes with HTTP 401 / 403, and counted.

mod common;

use common::*;

const PUSH: &str = "/goim/push/room?operation=1000&type=live&room=gated";

fn push_with(server: &Server, headers: &[&str]) -> HttpResponse {
    let mut conn = HttpConn::connect(server.http);
    conn.write(&build_request("POST", PUSH, headers, b"gated push"));
    conn.read_response()
}

fn counted(server: &Server, code: &str) -> u64 {
    let text = server.http("GET", "/metrics", b"").body_str();
    let series = format!("corecast_api_requests_total{{endpoint=\"push_room\",code=\"{code}\"}}");
    text.lines().find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn with_a_bearer_token_only_pushes_that_carry_it_are_taken() {
    let mut config = ServerConfig::default();
    config.set("http", "push_bearer_token", "s3cret-token");
    let server = Server::start_with(&config);
    let mut member = Client::auth(server.tcp, 0, "gated", "live://gated", &[1000]);
    for headers in [&[][..], &["Authorization: Bearer wrong-token"], &["Authorization: Basic czNjcmV0LXRva2Vu"]] {
        let reply = push_with(&server, headers);
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.body_str(), r#"{"code":-401,"message":"missing or wrong bearer token"}"#);
    }
    member.expect_nothing();
    let reply = push_with(&server, &["Authorization: Bearer s3cret-token"]);
    assert_eq!((reply.status, reply.body_str()), (200, r#"{"code":0,"message":""}"#.to_string()));
    member.expect_push(1000, b"gated push");
    // Reads stay open: clients and monitoring need them.
    let online = server.http("GET", "/goim/online/total", b"");
    assert!(online.status == 200 && online.body_str().starts_with("{\"code\":0"), "{}", online.body_str());
    poll_eq("refusals counted", std::time::Duration::from_secs(5), 3, || counted(&server, "-401"));
}

#[test]
fn with_an_allow_list_only_listed_networks_may_push() {
    let mut outside = ServerConfig::default();
    outside.set("http", "push_allowed_networks", vec!["10.0.0.0/8", "2001:db8::/32"]);
    let server = Server::start_with(&outside);
    let mut member = Client::auth(server.tcp, 0, "listed", "live://gated", &[1000]);
    let reply = push_with(&server, &[]);
    assert_eq!(
        (reply.status, reply.body_str()),
        (403, r#"{"code":-403,"message":"this network may not push"}"#.into())
    );
    member.expect_nothing();
    poll_eq("refusals counted", std::time::Duration::from_secs(5), 1, || counted(&server, "-403"));

    let mut inside = ServerConfig::default();
    inside.set("http", "push_allowed_networks", vec!["127.0.0.0/8"]).set("http", "push_bearer_token", "t");
    let server = Server::start_with(&inside);
    let mut member = Client::auth(server.tcp, 0, "listed", "live://gated", &[1000]);
    assert_eq!(push_with(&server, &[]).status, 401, "the network is listed; the token is still needed");
    assert_eq!(push_with(&server, &["Authorization: Bearer t"]).status, 200);
    member.expect_push(1000, b"gated push");
}

#[test]
fn a_bad_network_in_the_config_refuses_to_start_and_names_the_key() {
    let dir = ScratchDir::new("corecast-access");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[http]\npush_allowed_networks = [\"10.0.0.0/33\"]\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .expect("run corecast");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("http.push_allowed_networks"), "{output:?}");
}

#[test]
fn new_connections_past_the_per_ip_rate_are_refused_and_counted() {
    let mut config = ServerConfig::default();
    config.set("limits", "connections_per_ip_per_s_max", 4).set("protocol", "heartbeat_s", 60);
    let server = Server::start_with(&config);
    let started = std::time::Instant::now();
    let mut admitted = 0;
    for i in 0..20 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.tcp).expect("connect");
        let _ = stream.write_all(&encode_frame(1, op::AUTH, 1, &token_json(0, &format!("rate-{i}"), "live://1", &[])));
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
        let mut reply = [0u8; HEADER_LEN];
        if stream.read_exact(&mut reply).is_ok() && reply[8..12] == op::AUTH_REPLY.to_be_bytes() {
            admitted += 1;
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    // Each of the shards admits its share (4 / shards, rounded up) per second.
    assert!(admitted >= 1 && admitted <= 4 * seconds, "{admitted} admitted in {seconds} s");
    let refused = || {
        common::cluster::metric(
            &server.http("GET", "/metrics", b"").body_str(),
            "corecast_connections_rate_limited_total",
        )
        .unwrap_or(0)
    };
    poll_eq("refusals counted", std::time::Duration::from_secs(5), 20 - admitted, refused);
    // The next second admits again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut later = Client::auth(server.tcp, 0, "rate-later", "live://1", &[]);
    assert!(later.heartbeat() >= 1);
}

#[test]
fn a_connection_past_the_upstream_frame_rate_is_closed_and_counted() {
    let mut config = ServerConfig::default();
    config.set("limits", "upstream_frames_per_s_max", 50).set("protocol", "heartbeat_s", 60);
    let server = Server::start_with(&config);
    let mut calm = Client::auth(server.tcp, 0, "calm", "live://1", &[]);
    for _ in 0..10 {
        calm.heartbeat();
    }
    let mut flood = Client::auth(server.tcp, 0, "flood", "live://1", &[]);
    let mut burst = Vec::new();
    for seq in 0..200 {
        burst.extend(encode_frame(1, op::HEARTBEAT, seq, b""));
    }
    flood.send_raw(&burst);
    assert!(flood.closed_within(std::time::Duration::from_secs(5)), "the flood is closed");
    poll_eq("closes counted", std::time::Duration::from_secs(5), Some(1), || {
        common::cluster::metric(
            &server.http("GET", "/metrics", b"").body_str(),
            "corecast_connections_closed_total{reason=\"upstream_rate\"}",
        )
    });
    assert!(calm.heartbeat() >= 1, "a client within the rate is served");
}
