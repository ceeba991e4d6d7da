//! Limits and what happens at them: the outbound bound (close or drop), the
//! connection limit, the per-request target limit, and /metrics counting it all.

mod common;

use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const BODY_BYTES: usize = 4000;
const PUSHES: usize = 2000;

/// A client whose kernel receive buffer is tiny and that never reads: the
/// server's queue for it fills up.
fn stalled_client(addr: SocketAddr, key: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    use std::io::Write;
    stream.write_all(&encode_frame(1, op::AUTH, 1, &token_json(0, key, "live://slow", &[1000]))).expect("auth");
    let mut reply = [0u8; HEADER_LEN];
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    stream.read_exact(&mut reply).expect("auth reply");
    assert_eq!(&reply[8..12], &op::AUTH_REPLY.to_be_bytes(), "auth reply op");
    stream
}

/// Pushes `PUSHES` numbered room messages over one pipelined connection.
fn push_numbered(server: &Server) {
    let mut conn = HttpConn::connect(server.http);
    for batch in (0..PUSHES).collect::<Vec<_>>().chunks(50) {
        let mut bytes = Vec::new();
        for n in batch {
            let mut body = vec![b'.'; BODY_BYTES];
            body[..8].copy_from_slice(&(*n as u64).to_be_bytes());
            bytes.extend(build_request("POST", "/goim/push/room?operation=1000&type=live&room=slow", &[], &body));
        }
        conn.write(&bytes);
        for _ in batch {
            assert_push_ok(&conn.read_response(), "room push");
        }
    }
}

/// Reads frames until EOF or `quiet` without data; returns the message numbers.
fn drain(stream: &mut TcpStream, quiet: Duration) -> (Vec<u64>, bool) {
    stream.set_read_timeout(Some(quiet)).expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let eof = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut numbers = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= buf.len() {
        let len = i32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + len > buf.len() {
            break;
        }
        let op = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().unwrap());
        if op == 1000 {
            numbers.push(u64::from_be_bytes(buf[pos + 16..pos + 24].try_into().unwrap()));
        }
        pos += len;
    }
    (numbers, eof)
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = server.http("GET", "/metrics", b"").body_str();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
        .trim()
        .parse()
        .expect("metric value")
}

fn wait_metric(server: &Server, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let value = metric(server, name);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_slow_consumer_is_closed_and_counted_while_others_get_everything() {
    let mut config = ServerConfig::default();
    config.set("limits", "outbound_bytes_per_connection_max", 65536);
    let server = Server::start_with(&config);
    let mut slow = stalled_client(server.tcp, "slow");
    let mut fast = Client::auth(server.tcp, 0, "fast", "live://slow", &[1000]);
    let reader = thread::spawn(move || {
        let mut numbers = Vec::new();
        while numbers.len() < PUSHES {
            match fast.try_read_frame(Duration::from_secs(10)) {
                Some(frame) => numbers.push(u64::from_be_bytes(frame.body[..8].try_into().unwrap())),
                None => break,
            }
        }
        numbers
    });
    push_numbered(&server);
    let fast_numbers = reader.join().expect("reader thread");
    assert_eq!(fast_numbers, (0..PUSHES as u64).collect::<Vec<_>>(), "the fast member gets every push in order");
    let (slow_numbers, eof) = drain(&mut slow, Duration::from_secs(5));
    assert!(eof, "the slow consumer must be closed");
    assert!(slow_numbers.len() < PUSHES, "the slow consumer cannot have received everything");
    assert_eq!(slow_numbers, (0..slow_numbers.len() as u64).collect::<Vec<_>>(), "what it got is a prefix, in order");
    assert_eq!(wait_metric(&server, "corecast_connections_closed_total{reason=\"slow_consumer\"}", 1), 1);
}

#[test]
fn with_the_drop_policy_a_slow_consumer_stays_and_every_drop_is_counted() {
    let mut config = ServerConfig::default();
    config.set("limits", "outbound_bytes_per_connection_max", 65536);
    config.set("limits", "slow_consumer_policy", "drop");
    config.set("protocol", "heartbeat_s", 30);
    let server = Server::start_with(&config);
    let mut slow = stalled_client(server.tcp, "slow");
    push_numbered(&server);
    // Counters of other shards arrive every online_sync_ms: wait until the total settles.
    let mut dropped = wait_metric(&server, "corecast_messages_dropped_total", 1);
    loop {
        thread::sleep(Duration::from_millis(300));
        let again = metric(&server, "corecast_messages_dropped_total");
        if again == dropped {
            break;
        }
        dropped = again;
    }
    assert!(dropped > 0, "some messages must have been dropped");
    let (numbers, eof) = drain(&mut slow, Duration::from_secs(1));
    assert!(!eof, "the drop policy keeps the connection open");
    assert_eq!(
        numbers.len() as u64 + dropped,
        PUSHES as u64,
        "every push is either delivered or counted as dropped (got {} delivered, {dropped} dropped)",
        numbers.len()
    );
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "delivered messages stay in order");
    // The connection still works: a heartbeat gets its reply.
    use std::io::Write;
    slow.write_all(&encode_frame(1, op::HEARTBEAT, 9, b"")).expect("heartbeat");
    let mut reply = [0u8; HEADER_LEN + 4];
    slow.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    slow.read_exact(&mut reply).expect("heartbeat reply");
    assert_eq!(&reply[8..12], &op::HEARTBEAT_REPLY.to_be_bytes());
    assert_eq!(metric(&server, "corecast_connections_closed_total{reason=\"slow_consumer\"}"), 0);
}

#[test]
fn with_the_drop_policy_a_client_that_sends_heartbeats_but_never_reads_is_closed_at_its_deadline() {
    let mut config = ServerConfig::default();
    config.set("limits", "outbound_bytes_per_connection_max", 65536);
    config.set("limits", "slow_consumer_policy", "drop");
    config.set("protocol", "heartbeat_s", 1); // idle deadline 2 s
    let server = Server::start_with(&config);
    let mut slow = stalled_client(server.tcp, "beating");
    let mut beats = slow.try_clone().expect("clone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_beats = stop.clone();
    // Heartbeats every 300 ms, never a read.
    let beater = thread::spawn(move || {
        use std::io::Write;
        let mut seq = 0;
        while !stop_beats.load(std::sync::atomic::Ordering::Relaxed) {
            if beats.write_all(&encode_frame(1, op::HEARTBEAT, seq, b"")).is_err() {
                break;
            }
            seq += 1;
            thread::sleep(Duration::from_millis(300));
        }
    });
    push_numbered(&server);
    // Reading would make it a reader: watch the server's count instead.
    let closed = wait_metric(&server, "corecast_connections_closed_total{reason=\"slow_consumer\"}", 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beater.join().expect("beater");
    assert_eq!(closed, 1, "closed although its heartbeats kept coming (before: never closed)");
    let (_, eof) = drain(&mut slow, Duration::from_secs(5));
    assert!(eof, "its socket is closed");
}

#[test]
fn connections_past_the_shard_limit_are_refused_and_counted() {
    let mut config = ServerConfig::default();
    config.set("server", "shards", 1);
    config.set("limits", "connections_per_shard_max", 2);
    let server = Server::start_with(&config);
    let _first = Client::auth(server.tcp, 1, "a", "", &[]);
    let _second = Client::auth(server.tcp, 2, "b", "", &[]);
    let mut third = Client::connect(server.tcp);
    third.expect_eof(READ_TIMEOUT);
    assert_eq!(wait_metric(&server, "corecast_connections_refused_total", 1), 1);
    assert_eq!(metric(&server, "corecast_connections"), 2);
}

#[test]
fn too_many_targets_in_one_request_is_a_request_error() {
    let mut config = ServerConfig::default();
    config.set("limits", "request_targets_max", 3);
    let server = Server::start_with(&config);
    let ok = server.http("POST", "/goim/push/keys?operation=1000&keys=a&keys=b&keys=c", b"x");
    assert_push_ok(&ok, "three keys");
    let too_many = server.http("POST", "/goim/push/keys?operation=1000&keys=a&keys=b&keys=c&keys=d", b"x");
    assert_request_error(&too_many, "four keys");
    let too_many_mids = server.http("POST", "/goim/push/mids?operation=1000&mids=1&mids=2&mids=3&mids=4", b"x");
    assert_request_error(&too_many_mids, "four mids");
}

#[test]
fn metrics_count_connections_closes_and_queued_frames() {
    let server = Server::start();
    let mut member = Client::auth(server.tcp, 5, "m", "live://9", &[1000]);
    server.push_room(1000, "live", "9", b"hello");
    member.expect_push(1000, b"hello");
    let gone = Client::auth(server.tcp, 6, "g", "", &[]);
    gone.close();
    assert!(wait_metric(&server, "corecast_connections_closed_total{reason=\"client_closed\"}", 1) >= 1);
    assert!(wait_metric(&server, "corecast_frames_queued_total", 1) >= 1);
    assert!(wait_metric(&server, "corecast_connections_accepted_total", 2) >= 2);
    poll_eq("connections", SYNC_TIMEOUT, 1, || metric(&server, "corecast_connections"));
}

#[test]
fn api_connections_past_the_shard_limit_are_closed_at_once() {
    let mut config = ServerConfig::default();
    config.set("server", "shards", 1);
    config.set("limits", "api_connections_per_shard_max", 2);
    let server = Server::start_with(&config);
    let mut first = HttpConn::connect(server.http);
    let mut second = HttpConn::connect(server.http);
    for conn in [&mut first, &mut second] {
        conn.write(&build_request("GET", "/goim/online/total", &[], b""));
        assert_eq!(conn.read_response().status, 200);
    }
    let mut third = HttpConn::connect(server.http);
    third.expect_eof(READ_TIMEOUT);
    drop(first);
    // A slot frees up when a publisher leaves.
    assert!(
        wait_until(SYNC_TIMEOUT, || {
            // The server may close a refused connection before the request is
            // written: any panic of the client counts as "not served yet".
            std::panic::catch_unwind(|| {
                let mut again = HttpConn::connect(server.http);
                again.write(&build_request("GET", "/goim/online/total", &[], b""));
                again.read_response().status == 200
            })
            .unwrap_or(false)
        }),
        "a new API connection is served once another one closed"
    );
}

#[test]
fn publishers_waiting_for_a_congested_mesh_all_get_their_answers() {
    let mut config = ServerConfig::default();
    config.set("limits", "mesh_pending_messages_max", 16);
    let server = Server::start_with(&config);
    let publishers: Vec<_> = (0..6)
        .map(|p| {
            let http = server.http;
            thread::spawn(move || {
                let mut conn = HttpConn::connect(http);
                for round in 0..10 {
                    let mut bytes = Vec::new();
                    for n in 0..100 {
                        let path = format!("/goim/push/keys?operation=1000&keys=k{p}-{round}-{n}&keys=other-{n}");
                        bytes.extend(build_request("POST", &path, &[], b"x"));
                    }
                    conn.write(&bytes);
                    for _ in 0..100 {
                        assert_push_ok(&conn.read_response(), "key push under mesh congestion");
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("every publisher gets all of its answers");
    }
}

/// Slowloris: a client trickling its request a byte at a time restarted the
/// idle timer with every byte and held its connection for ever. A request now
/// has `request_timeout_ms` from its first byte (plus time for its bytes at
/// `request_body_bytes_per_s_min`): past it, 408 and close, while the API
/// goes on answering others.
#[test]
fn a_request_trickled_byte_by_byte_is_closed_at_its_deadline_while_others_are_served() {
    use std::io::Write;
    let mut config = ServerConfig::default();
    config.set("http", "request_timeout_ms", 1000).set("server", "shards", 1);
    let server = Server::start_with(&config);
    let mut member = server.auth(1, "loris-member", "live://loris", &[1000]);
    let request = build_request("POST", "/goim/push/room?operation=1000&type=live&room=loris", &[], b"slow");
    let mut slow = TcpStream::connect(server.http).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    for (i, byte) in request.iter().enumerate() {
        if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        if i == 3 {
            // Others are answered meanwhile.
            server.push_room(1000, "live", "loris", b"fast");
            member.expect_push(1000, b"fast");
        }
        let mut chunk = [0u8; 256];
        match slow.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "a 408 for the trickled request after {elapsed:?}, got {answer:?}");
    assert!(elapsed >= Duration::from_millis(900), "not before its deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "at its deadline: {elapsed:?}");
    member.expect_nothing();
}

/// Every refused connection logged a warning, unthrottled, through the one
/// stderr every shard shares: a client could make the server log as fast as
/// it connects. A call site now writes a few lines a second and counts the
/// rest (said in its next line and on /metrics).
#[test]
fn refused_connections_are_logged_a_few_times_a_second_and_the_rest_counted() {
    let mut config = ServerConfig::default();
    config.set("server", "shards", 1).set("limits", "api_connections_per_shard_max", 1);
    let server = Server::start_with(&config);
    let mut held = HttpConn::connect(server.http);
    held.write(&build_request("GET", "/goim/online/total", &[], b""));
    assert_eq!(held.read_response().status, 200);
    let started = Instant::now();
    for _ in 0..300 {
        let mut refused = HttpConn::connect(server.http);
        refused.expect_eof(READ_TIMEOUT);
    }
    let seconds = started.elapsed().as_secs() + 2;
    let lines = |stderr: &str| stderr.lines().filter(|l| l.contains("API connection limit")).count() as u64;
    // Suppressed lines are counted: all 300 refusals are accounted for.
    let metric = |held: &mut HttpConn| {
        held.write(&build_request("GET", "/metrics", &[], b""));
        let text = held.read_response().body_str();
        text.lines()
            .find_map(|l| l.strip_prefix("corecast_log_lines_suppressed_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no suppressed counter in {text}"))
    };
    let suppressed = metric(&mut held);
    let written = lines(&server.stderr());
    assert!(written <= 5 * seconds, "{written} warning lines in about {seconds} s:\n{}", server.stderr());
    assert!(written >= 1, "the first refusals are logged");
    assert_eq!(written + suppressed, 300, "every refusal is written or counted");
    // In a later second the site writes again and says what it held back.
    let said = wait_until(Duration::from_secs(4), || {
        let mut refused = HttpConn::connect(server.http);
        refused.expect_eof(READ_TIMEOUT);
        server.stderr().contains("more like this suppressed)")
    });
    assert!(said, "the next line counts the suppressed ones:\n{}", server.stderr());
}

/// CPU seconds the server process has used (/proc/PID/stat utime + stime).
fn server_cpu_s(server: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn a_chunked_body_of_tiny_chunks_trickled_in_costs_linear_work() {
    use std::io::Write;
    let server = Server::start();
    let mut member = server.auth(1, "chunks", "", &[1000]);
    // 384 KiB of body in 2-byte chunks (7 bytes of input each), written in
    // 1,400-byte pieces a millisecond apart: about 1,900 reads of a growing
    // partial body. Decoding from the start at every read is quadratic
    // (gigabytes scanned); resuming is linear.
    let chunks = 384 * 1024 / 2;
    let mut body = Vec::with_capacity(chunks * 7 + 5);
    for _ in 0..chunks {
        body.extend_from_slice(b"2\r\nxy\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head =
        "POST /goim/push/keys?operation=1000&keys=chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut api = TcpStream::connect(server.http).expect("connect api");
    api.set_nodelay(true).expect("nodelay");
    let cpu_before = server_cpu_s(&server);
    api.write_all(head.as_bytes()).expect("head");
    for piece in body.chunks(1400) {
        api.write_all(piece).expect("body piece");
        thread::sleep(Duration::from_millis(1));
    }
    let frame = member.try_read_frame(Duration::from_secs(30)).expect("the push arrives");
    assert_eq!(frame.body.len(), 384 * 1024);
    let cpu_used = server_cpu_s(&server) - cpu_before;
    // Linear decoding needs a few milliseconds here; quadratic, seconds.
    assert!(cpu_used < 1.0, "the server spent {cpu_used:.2} CPU-s decoding one chunked body");
}

/// A raw client with a 4 KiB receive buffer that authenticates and sends
/// `count` heartbeats, reading nothing.
fn heartbeat_spammer(server: &Server, key: &str, count: usize) -> TcpStream {
    use std::io::Write;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&server.tcp.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let mut burst = encode_frame(1, op::AUTH, 1, &token_json(1, key, "", &[1000]));
    for seq in 0..count {
        burst.extend_from_slice(&encode_frame(1, op::HEARTBEAT, seq as i32, b""));
    }
    stream.write_all(&burst).expect("auth and heartbeats");
    stream
}

#[test]
fn heartbeat_replies_count_their_real_memory_against_the_outbound_bound() {
    // The default 256 KiB outbound bound. 10,000 replies of 20 bytes are
    // 200 KB of payload (under the bound even before the kernel takes some)
    // but about 1.2 MB of heap, which is what the bound counts now.
    let server = Server::start();
    let _spammer = heartbeat_spammer(&server, "spam", 10_000);
    let closed = wait_metric(&server, "corecast_connections_closed_total{reason=\"slow_consumer\"}", 1);
    assert_eq!(closed, 1, "a client holding 1.2 MB of replies is closed as a slow consumer");
}

#[test]
fn pushes_that_reach_no_connection_are_counted_with_their_reason() {
    let server = Server::start();
    let mut member = server.auth(1, "picky", "", &[1000]);
    server.push_keys(1001, &["picky"], b"not for me");
    server.push_keys(1000, &["picky"], b"for me");
    member.expect_push(1000, b"for me");
    let not_accepted = wait_metric(&server, "corecast_messages_undelivered_total{reason=\"not_accepted\"}", 1);
    assert_eq!(not_accepted, 1, "the push its accepts refused is counted");
    assert_eq!(metric(&server, "corecast_messages_undelivered_total{reason=\"queue_full\"}"), 0);
}

/// One pass's room pushes never reach a member as one chunk larger than its
/// outbound bound: past half the bound the room's batch is fanned out and
/// written, and the next batch starts. Before, a room batch of any size (up
/// to 4 MiB) went whole into an empty outbox, so the bound did not hold for
/// the first chunk of a burst. A member reading as fast as it can gets every
/// push, in order, in writes of at most the bound.
#[test]
fn a_burst_of_room_pushes_reaches_a_member_in_chunks_within_its_bound() {
    const BOUND_BYTES: u64 = 8192;
    const BURST: usize = 200;
    let mut config = ServerConfig::default();
    config.set("server", "shards", 1);
    config.set("limits", "outbound_bytes_per_connection_max", BOUND_BYTES as i64);
    let server = Server::start_with(&config);
    let mut member = server.auth(1, "fast", "live://burst", &[1000]);
    let writes_before = metric(&server, "corecast_writes_total");
    let bytes_before = metric(&server, "corecast_written_bytes_total{transport=\"tcp\"}");
    let mut bytes = Vec::new();
    for n in 0..BURST {
        let mut body = vec![b'.'; 1000];
        body[..8].copy_from_slice(&(n as u64).to_be_bytes());
        bytes.extend(build_request("POST", "/goim/push/room?operation=1000&type=live&room=burst", &[], &body));
    }
    let mut conn = HttpConn::connect(server.http);
    conn.write(&bytes);
    for n in 0..BURST as u64 {
        let frame = member.read_frame();
        assert_eq!(frame.op, 1000);
        assert_eq!(u64::from_be_bytes(frame.body[..8].try_into().unwrap()), n, "in order");
    }
    for _ in 0..BURST {
        assert_push_ok(&conn.read_response(), "room push");
    }
    let writes = metric(&server, "corecast_writes_total") - writes_before;
    let written = metric(&server, "corecast_written_bytes_total{transport=\"tcp\"}") - bytes_before;
    assert!(written >= (BURST * 1016) as u64, "{written} bytes written");
    assert!(
        written <= writes * BOUND_BYTES,
        "{written} bytes in {writes} writes: a write carried more than the {BOUND_BYTES}-byte bound"
    );
    assert_eq!(
        metric(&server, "corecast_messages_undelivered_total{reason=\"queue_full\"}"),
        0,
        "a fast member loses nothing"
    );
}
