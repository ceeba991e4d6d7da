//! WSS: the WebSocket port over TLS (rustls), with a certificate the test
//! makes itself, checked with an independent client (Python `websockets`
//! over Python's ssl), plus refusals of plain text on the TLS port.

mod common;

use common::ws::{python_conformance, python_deflate};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

struct Generated {
    cert: rcgen::Certificate,
    signing_key: rcgen::KeyPair,
}

struct Certificate {
    cert_path: String,
    key_path: String,
    /// Holds the files; removed with the certificate.
    _dir: ScratchDir,
}

fn make_certificate(name: &str) -> Certificate {
    make_certificate_for(name, &["localhost", "127.0.0.1"])
}

fn make_certificate_for(name: &str, hosts: &[&str]) -> Certificate {
    let dir = ScratchDir::new(&format!("corecast-wss-{name}"));
    // A distinct subject per certificate, so a CA bundle of several tells them apart.
    let mut params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("corecast test {name}"));
    let signing_key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&signing_key).expect("self-sign");
    let generated = Generated { cert, signing_key };
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).expect("write cert");
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).expect("write key");
    Certificate { cert_path: cert_path.display().to_string(), key_path: key_path.display().to_string(), _dir: dir }
}

fn wss_server(certificate: &Certificate) -> Server {
    let mut config = ServerConfig::default();
    config.set("wss", "bind", "127.0.0.1:0").set("wss", "cert_path", certificate.cert_path.as_str()).set(
        "wss",
        "key_path",
        certificate.key_path.as_str(),
    );
    Server::start_with(&config)
}

#[test]
fn an_independent_client_speaks_goim_over_wss() {
    let certificate = make_certificate("conformance");
    let server = wss_server(&certificate);
    let wss = server.wss.expect("the server reports its WSS port");
    python_conformance(&format!("wss://{wss}/sub"), server.http, Some(&certificate.cert_path));
}

#[test]
fn permessage_deflate_works_over_wss_as_over_ws() {
    let certificate = make_certificate("deflate");
    let server = wss_server(&certificate);
    let wss = server.wss.expect("the server reports its WSS port");
    python_deflate(&format!("wss://{wss}/sub"), server.http, Some(&certificate.cert_path));
    let compressed = wait_until(std::time::Duration::from_secs(5), || {
        let text = server.http("GET", "/metrics", b"").body_str();
        common::cluster::metric(&text, "corecast_ws_compressed_messages_total").unwrap_or(0) >= 1
            && common::cluster::metric(&text, "corecast_ws_inflated_messages_total").unwrap_or(0) >= 2
    });
    assert!(compressed, "the WSS push went out compressed and the client's messages were inflated");
}

#[test]
fn a_tls_handshake_trickled_byte_by_byte_is_closed_at_the_handshake_timeout() {
    let certificate = make_certificate("trickle");
    let mut config = ServerConfig::default();
    config
        .set("wss", "bind", "127.0.0.1:0")
        .set("wss", "cert_path", certificate.cert_path.as_str())
        .set("wss", "key_path", certificate.key_path.as_str())
        .set("protocol", "handshake_timeout_ms", 800)
        .set("protocol", "heartbeat_s", 60);
    let server = Server::start_with(&config);
    let mut member = Client::auth(server.tcp, 1, "m", "live://1", &[]);
    let started = std::time::Instant::now();
    let mut tricklers: Vec<TcpStream> =
        (0..5).map(|_| TcpStream::connect(server.wss.expect("wss port")).expect("connect")).collect();
    // A TLS handshake record header announcing 512 bytes, then one byte per 100 ms.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    hello.resize(517, 0x2a);
    let mut closed = vec![false; tricklers.len()];
    for byte in hello.iter().take(60) {
        for (stream, done) in tricklers.iter_mut().zip(closed.iter_mut()) {
            if !*done && stream.write_all(&[*byte]).is_err() {
                *done = true;
            }
            stream.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
            let mut buf = [0u8; 64];
            match stream.read(&mut buf) {
                Ok(0) => *done = true,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                    *done = true
                }
                _ => {}
            }
        }
        if closed.iter().all(|c| *c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed.iter().all(|c| *c), "every trickled TLS handshake was closed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "at the handshake deadline, not later: {:?}",
        started.elapsed()
    );
    poll_eq("handshake timeouts", Duration::from_secs(5), Some(5), || {
        common::cluster::metric(
            &server.http("GET", "/metrics", b"").body_str(),
            "corecast_connections_closed_total{reason=\"handshake_timeout\"}",
        )
    });
    assert!(member.heartbeat() >= 1, "others are served meanwhile");
}

#[test]
fn tls_handshakes_past_the_per_shard_cap_are_refused_at_once_and_counted() {
    let certificate = make_certificate("cap");
    let mut config = ServerConfig::default();
    config
        .set("server", "shards", 1)
        .set("wss", "bind", "127.0.0.1:0")
        .set("wss", "cert_path", certificate.cert_path.as_str())
        .set("wss", "key_path", certificate.key_path.as_str())
        .set("wss", "handshakes_per_shard_max", 2);
    let server = Server::start_with(&config);
    let wss = server.wss.expect("wss port");
    // Two handshakes that never progress hold the shard's two places.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(wss).expect("connect")).collect();
    let refused = || {
        common::cluster::metric(
            &server.http("GET", "/metrics", b"").body_str(),
            "corecast_wss_handshakes_refused_total",
        )
    };
    // Accepted once the server has seen both: the online count is not for
    // TLS, so wait on the accept counter.
    poll_eq("both accepted", Duration::from_secs(5), Some(2), || {
        common::cluster::metric(&server.http("GET", "/metrics", b"").body_str(), "corecast_connections_accepted_total")
    });
    let mut third = TcpStream::connect(wss).expect("connect");
    third.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)), "the third is closed at once");
    poll_eq("refusals counted", Duration::from_secs(5), Some(1), refused);
    // Once they go, a whole handshake gets through.
    drop(held);
    poll_eq("places given back", Duration::from_secs(5), Some(0), || {
        common::cluster::metric(&server.http("GET", "/metrics", b"").body_str(), "corecast_connections")
    });
    python_conformance(&format!("wss://{wss}/sub"), server.http, Some(&certificate.cert_path));
}

#[test]
fn plain_http_on_the_tls_port_is_closed_and_others_are_unaffected() {
    let certificate = make_certificate("plain");
    let server = wss_server(&certificate);
    let mut member = Client::auth(server.tcp, 1, "m", "live://1", &[]);
    let mut plain = TcpStream::connect(server.wss.expect("wss port")).expect("connect");
    plain.write_all(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    plain.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = [0u8; 256];
    // Whatever TLS answers (an alert or nothing), the connection ends.
    let mut ended = false;
    for _ in 0..4 {
        match plain.read(&mut buf) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(ended, "plain text on the TLS port must be closed");
    server.push_room(1000, "live", "1", b"still fine");
    member.expect_push(1000, b"still fine");
}

#[test]
fn a_wss_bind_without_a_certificate_refuses_to_start() {
    let mut config = ServerConfig::default();
    config.set("wss", "bind", "127.0.0.1:0");
    let dir = ScratchDir::new("corecast-wss-nocert");
    let path = dir.join("corecast.toml");
    std::fs::write(&path, config.to_toml()).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_corecast")).arg("--config").arg(&path).output().expect("run");
    assert!(!output.status.success(), "must refuse to start");
    assert!(String::from_utf8_lossy(&output.stderr).contains("wss.cert_path"), "says why");
}

#[test]
fn the_certificate_is_chosen_by_the_server_name_the_client_asks_for() {
    let a = make_certificate_for("sni-a", &["a.test"]);
    let b = make_certificate_for("sni-b", &["b.test"]);
    let mut config = ServerConfig::default();
    let mut entry = toml::Table::new();
    entry.insert("server_name".into(), "b.test".into());
    entry.insert("cert_path".into(), b.cert_path.as_str().into());
    entry.insert("key_path".into(), b.key_path.as_str().into());
    config
        .set("wss", "bind", "127.0.0.1:0")
        .set("wss", "cert_path", a.cert_path.as_str())
        .set("wss", "key_path", a.key_path.as_str())
        .set("wss", "sni", toml::Value::Array(vec![toml::Value::Table(entry)]));
    let server = Server::start_with(&config);
    let wss = server.wss.expect("wss port");
    let scratch = ScratchDir::new("corecast-wss-bundle");
    let bundle = scratch.join("bundle.pem");
    let both = std::fs::read_to_string(&a.cert_path).expect("a") + &std::fs::read_to_string(&b.cert_path).expect("b");
    std::fs::write(&bundle, both).expect("bundle");
    // Python's ssl verifies the host name: a handshake succeeds only when the
    // server presents the certificate for the name asked for.
    let script = r#"
import socket, ssl, sys
host, port, bundle = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def check(name):
    context = ssl.create_default_context(cafile=bundle)
    with socket.create_connection((host, port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=name):
                return "ok"
        except ssl.SSLCertVerificationError:
            return "mismatch"
print(check("a.test"), check("b.test"), check("c.test"))
"#;
    let output = Command::new(common::python())
        .arg("-c")
        .arg(script)
        .arg(wss.ip().to_string())
        .arg(wss.port().to_string())
        .arg(&bundle)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "ok ok mismatch",
        "a.test and b.test get their own certificates, c.test the default (a.test's); stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
