//! Verified auth tokens (`[auth]`), end to end: a goim token
//! carrying `"token": "<JWT>"` signed by the business (HS256 or ES256),
//! whose claims bind mid, key, room and accepts. Forged, expired,
//! wrong-mid, wrong-room and missing tokens are closed and counted; room
//! changes stay inside the grant.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::time::Duration;

const SECRET: &str = "business-secret";

fn later() -> u64 {
    jsonwebtoken::get_current_timestamp() + 600
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
}

/// The goim token JSON with `jwt` in its `token` field.
fn goim_token(mid: i64, key: &str, room: &str, jwt: &str) -> Vec<u8> {
    format!(
        r#"{{"mid":{mid},"key":"{key}","room_id":"{room}","platform":"web","accepts":[1000,1001],"token":"{jwt}"}}"#
    )
    .into_bytes()
}

fn refused(server: &Server) -> u64 {
    common::cluster::metric(
        &server.http("GET", "/metrics", b"").body_str(),
        "corecast_connections_closed_total{reason=\"token_refused\"}",
    )
    .unwrap_or(0)
}

fn hs256_server() -> Server {
    let mut config = ServerConfig::default();
    config.set("auth", "jwt_algorithm", "HS256").set("auth", "jwt_secret", SECRET).set("protocol", "heartbeat_s", 60);
    Server::start_with(&config)
}

/// Authenticates with `body`, asserting the op-8 reply.
fn auth_ok(server: &Server, body: &[u8]) -> Client {
    let mut client = Client::connect(server.tcp);
    client.send_frame(1, op::AUTH, 1, body);
    assert_eq!(client.read_frame().op, op::AUTH_REPLY, "the token is taken");
    client
}

/// Whether the server closes a connection that authenticates with `body`
/// without answering it.
fn auth_refused(server: &Server, body: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.tcp).expect("connect");
    stream.write_all(&encode_frame(1, op::AUTH, 1, body)).expect("auth");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_signed_token_is_taken_and_its_claims_bind_the_connection() {
    let server = hs256_server();
    let jwt = hs256(
        serde_json::json!({"mid": 7, "key": "k7", "room_id": "live://1", "rooms": ["live://2"], "accepts": [1000], "exp": later()}),
        SECRET,
    );
    let mut client = auth_ok(&server, &goim_token(7, "k7", "live://1", &jwt));
    // The signed accepts ([1000]) replace the asked-for ones ([1000, 1001]).
    server.push_keys(1001, &["k7"], b"not accepted");
    server.push_keys(1000, &["k7"], b"accepted");
    client.expect_push(1000, b"accepted");
    // Room changes inside the grant are fine; outside it, the connection ends.
    client.change_room("live://2");
    server.push_room(1000, "live", "2", b"in room 2");
    client.expect_push(1000, b"in room 2");
    client.send_frame(1, op::CHANGE_ROOM, 9, b"live://3");
    assert!(client.closed_within(Duration::from_secs(5)), "a room outside the grant is refused");
    poll_eq("refusals counted", Duration::from_secs(5), 1, || refused(&server));
}

#[test]
fn forged_expired_wrong_mid_wrong_room_and_missing_tokens_are_refused_and_counted() {
    let server = hs256_server();
    let claims = |mid: i64, room: &str, exp: u64| serde_json::json!({"mid": mid, "room_id": room, "exp": exp});
    let cases = [
        ("forged", goim_token(7, "a", "live://1", &hs256(claims(7, "live://1", later()), "guessed-secret"))),
        ("expired", goim_token(7, "b", "live://1", &hs256(claims(7, "live://1", 1_000_000), SECRET))),
        ("wrong mid", goim_token(8, "c", "live://1", &hs256(claims(7, "live://1", later()), SECRET))),
        ("wrong room", goim_token(7, "d", "live://2", &hs256(claims(7, "live://1", later()), SECRET))),
        ("missing", br#"{"mid":7,"key":"e","room_id":"live://1","accepts":[1000]}"#.to_vec()),
        ("garbage", goim_token(7, "f", "live://1", "not.a.jwt")),
    ];
    for (what, body) in &cases {
        assert!(auth_refused(&server, body), "{what}: refused");
    }
    poll_eq("refusals counted", Duration::from_secs(5), cases.len() as u64, || refused(&server));
    // A good one still gets in.
    let good = goim_token(7, "g", "live://1", &hs256(claims(7, "live://1", later()), SECRET));
    auth_ok(&server, &good);
}

#[test]
fn es256_tokens_verify_with_the_public_key_and_hs256_with_it_as_a_secret_does_not() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let dir = ScratchDir::new("corecast-es256");
    let public_path = dir.join("public.pem");
    std::fs::write(&public_path, key.public_key_pem()).expect("write key");
    let mut config = ServerConfig::default();
    config
        .set("auth", "jwt_algorithm", "ES256")
        .set("auth", "jwt_public_key_path", public_path.display().to_string())
        .set("protocol", "heartbeat_s", 60);
    let server = Server::start_with(&config);
    let claims = serde_json::json!({"mid": 3, "room_id": "live://1", "exp": later()});
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("signing key");
    let jwt = encode(&Header::new(Algorithm::ES256), &claims, &signing).expect("sign");
    auth_ok(&server, &goim_token(3, "es", "live://1", &jwt));
    // The classic confusion: HS256 "signed" with the public key's text.
    let confused = hs256(claims, &key.public_key_pem());
    assert!(auth_refused(&server, &goim_token(3, "es2", "live://1", &confused)), "algorithm pinned");
    poll_eq("refusals counted", Duration::from_secs(5), 1, || refused(&server));
}
