//! The production kit, end to end: the CLI (`--version`, `--help`,
//! `--check-config`), `/healthz` and `/readyz` (also with a cluster bus
//! going down), JSON log lines, the /metrics exposition read by Python's
//! prometheus_client parser, the systemd unit under `systemd-analyze
//! verify`, and the Grafana dashboard's metrics against a real scrape.

mod common;

use common::cluster::{start_nodes, Nats};
use common::{poll_eq, Server, ServerConfig};
use simd_json::prelude::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corecast");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run corecast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_help_and_check_config() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let commit = out.trim().strip_prefix(&format!("corecast {} (commit ", env!("CARGO_PKG_VERSION"))).expect(&out);
    let commit = commit.strip_suffix(')').expect(&out);
    assert!(commit == "unknown" || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())), "{out}");
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in ["--config", "--check-config", "--version", "--help"] {
        assert!(help.contains(flag), "--help lists {flag}:\n{help}");
    }
    let (code, out, _) = run(&["--check-config", &format!("{ROOT}/configs/corecast.toml")]);
    assert_eq!(code, 0, "{out}");
    let dir = common::ScratchDir::new("corecast-check");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nframe_body_bytez_max = 1\n").expect("write");
    let (code, _, err) = run(&["--check-config", bad.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1);
    assert!(err.contains("frame_body_bytez_max"), "the message names the key: {err}");
    // Contradicting values: two listeners on one port (the kernel would
    // split that port's clients between them). Accepted before.
    let clash = dir.join("clash.toml");
    std::fs::write(&clash, "[tcp]\nbind = \"127.0.0.1:39101\"\n[ws]\nbind = \"0.0.0.0:39101\"\n").expect("write");
    let (code, _, err) = run(&["--check-config", clash.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tcp.bind") && err.contains("ws.bind"), "the message names both keys: {err}");
    // Settings that each pass alone but contradict another: all accepted
    // before (exit 0), each naming both keys now.
    let contradictions = [
        ("[auth]\njwt_secret = \"s\"\n", ["auth.jwt_secret", "auth.jwt_algorithm"]),
        ("[auth]\njwt_algorithm = \"HS256\"\njwt_secret = \"s\"\njwt_public_key_path = \"/k.pem\"\n", ["auth.jwt_public_key_path", "HS256"]),
        ("[demo]\nenabled = true\n[ws]\nbind = \"\"\n", ["demo.enabled", "ws.bind"]),
        ("[cluster]\nnode_id = \"a\"\n", ["cluster.node_id", "cluster.nats_urls"]),
        (
            "[limits]\nrequest_body_bytes_max = 2097152\nmesh_pending_bytes_max = 4194304\n[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\"]\nbus_outbound_bytes_max = 1048576\n",
            ["cluster.bus_outbound_bytes_max", "limits.request_body_bytes_max"],
        ),
    ];
    for (i, (text, keys)) in contradictions.iter().enumerate() {
        let path = dir.join(format!("contradiction-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let (code, _, err) = run(&["--check-config", path.to_str().expect("utf-8 path")]);
        assert_eq!(code, 1, "{text}: {err}");
        assert!(keys.iter().all(|key| err.contains(key)), "{text}: the message names {keys:?}: {err}");
    }
    let (code, _, err) = run(&["--bogus"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn healthz_and_readyz_answer_off_the_goim_paths() {
    let server = Server::start();
    let health = server.http("GET", "/healthz", b"");
    assert_eq!((health.status, health.body_str().as_str()), (200, "ok\n"));
    let ready = server.http("GET", "/readyz", b"");
    assert_eq!((ready.status, ready.body_str().as_str()), (200, "ready\n"));
}

#[test]
fn readyz_is_503_while_a_cluster_node_has_no_bus() {
    let mut nats = Nats::start();
    let nodes = start_nodes(&nats, 1, 2);
    poll_eq("readyz", Duration::from_secs(5), 200, || nodes[0].http("GET", "/readyz", b"").status);
    nats.stop();
    poll_eq("readyz without a bus", Duration::from_secs(5), (503, "cluster bus down\n".to_string()), || {
        let reply = nodes[0].http("GET", "/readyz", b"");
        (reply.status, reply.body_str())
    });
    assert_eq!(nodes[0].http("GET", "/healthz", b"").status, 200, "alive all the same");
    nats.restart();
    poll_eq("readyz with the bus back", Duration::from_secs(10), 200, || nodes[0].http("GET", "/readyz", b"").status);
}

#[test]
fn json_log_lines_carry_ts_level_shard_message_and_fields() {
    let mut config = ServerConfig::default();
    config.set("server", "log_format", "json").set("server", "log_level", "info");
    let mut server = Server::start_with(&config);
    server.push_room(1000, "live", "1", b"x");
    assert!(server.stop_and_wait().success());
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "info lines at start and stop:\n{stderr}");
    let mut shards_seen = 0;
    for line in lines {
        let mut bytes = line.as_bytes().to_vec();
        let value = simd_json::to_owned_value(&mut bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get_f64("ts").is_some() || value.get_u64("ts").is_some(), "ts in {line}");
        assert!(matches!(value.get_str("level"), Some("error" | "warn" | "info" | "debug")), "level in {line}");
        assert!(value.get_str("message").is_some_and(|m| !m.is_empty()), "message in {line}");
        assert!(value.get("fields").and_then(|f| f.get_str("site")).is_some(), "fields.site in {line}");
        let shard = value.get("shard").expect("a shard key, null off the shards");
        if shard.as_u64().is_some() {
            shards_seen += 1;
        }
    }
    assert!(shards_seen > 0, "lines from the shards name their shard:\n{stderr}");
}

/// Families Python's prometheus_client text parser finds in `text`
/// (it raises on anything that is not the exposition format).
fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
                  for f in parse(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";
    let mut child = Command::new(common::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (prometheus_client is installed by scripts/install-test-deps.sh)");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "prometheus_client refused the exposition: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// A server that has done a bit of everything, and its scrape.
fn busy_scrape() -> (Server, String) {
    let server = Server::start();
    let mut client = server.auth(1, "k1", "live://1", &[1000]);
    server.push_room(1000, "live", "1", b"room");
    server.push_keys(1000, &["k1"], b"keys");
    client.expect_push(1000, b"room");
    client.expect_push(1000, b"keys");
    let _ = server.get_data("/goim/online/total");
    let _ = server.http("GET", "/nope", b"");
    // Other shards' counters arrive with their next sync.
    std::thread::sleep(Duration::from_millis(300));
    let text = server.http("GET", "/metrics", b"").body_str();
    (server, text)
}

#[test]
fn metrics_parse_with_prometheus_client_and_name_the_documented_families() {
    let (_server, text) = busy_scrape();
    let families = parse_with_prometheus_client(&text);
    let has = |name: &str, kind: &str| families.iter().any(|f| f.starts_with(&format!("{name} {kind} ")));
    for (name, kind) in [
        ("corecast_api_requests", "counter"),
        ("corecast_api_request_duration_seconds", "summary"),
        ("corecast_push_delivery_seconds", "summary"),
        ("corecast_pushes", "counter"),
        ("corecast_deliveries", "counter"),
        ("corecast_written_bytes", "counter"),
        ("corecast_connections_closed", "counter"),
        ("corecast_shard_connections", "gauge"),
        ("corecast_shard_outbox_bytes", "gauge"),
    ] {
        assert!(has(name, kind), "{name} ({kind}) in {families:?}");
    }
    assert!(text.contains("corecast_api_requests_total{endpoint=\"push_room\",code=\"0\"} 1"), "{text}");
    assert!(text.contains("corecast_api_requests_total{endpoint=\"other\",code=\"404\"} 1"), "{text}");
    assert!(text.contains("corecast_pushes_total{kind=\"keys\"} 1"), "{text}");
    assert!(text.contains("corecast_deliveries_total{transport=\"tcp\"} 2"), "{text}");
    for reason in ["handshake_timeout", "idle_timeout", "bad_frame", "slow_consumer"] {
        assert!(text.contains(&format!("corecast_connections_closed_total{{reason=\"{reason}\"}}")), "{reason}");
    }
    let count_line = text.lines().find(|l| l.starts_with("corecast_push_delivery_seconds_count")).expect("count");
    let count: u64 = count_line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(count >= 2, "both pushes were timed: {count_line}");
}

#[test]
fn the_dashboard_queries_only_metrics_a_real_scrape_has() {
    let (_server, text) = busy_scrape();
    let dashboard =
        std::fs::read_to_string(format!("{ROOT}/deploy/grafana/corecast-dashboard.json")).expect("dashboard");
    let mut bytes = dashboard.into_bytes();
    let json = simd_json::to_owned_value(&mut bytes).expect("the dashboard is JSON");
    let panels = json.get_array("panels").expect("panels");
    assert!(panels.len() >= 8);
    let mut names = Vec::new();
    for panel in panels {
        for target in panel.get_array("targets").expect("targets") {
            let expr = target.get_str("expr").expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("corecast_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    for name in names {
        let present = text
            .lines()
            .any(|line| line.strip_prefix(&name).is_some_and(|after| after.starts_with('{') || after.starts_with(' ')));
        assert!(present, "the dashboard queries {name}, which /metrics does not have");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(format!("{ROOT}/deploy/systemd/corecast.service")).expect("unit");
    for needed in [
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.contains(needed), "the unit sets {needed}");
    }
    let stop_s: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec");
    let grace_ms = ServerConfigDefaults::shutdown_grace_ms();
    assert!(stop_s * 1000 > grace_ms, "the stop timeout outlasts shutdown_grace_ms");
    // Verify a copy whose binary path exists on this machine.
    let dir = common::ScratchDir::new("corecast-unit");
    let path = dir.join("corecast.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/corecast", BIN)).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("corecast.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify: {stderr}");
}

/// Defaults the unit must agree with, read from the shipped config.
struct ServerConfigDefaults;

impl ServerConfigDefaults {
    fn shutdown_grace_ms() -> u64 {
        let text = std::fs::read_to_string(format!("{ROOT}/configs/corecast.toml")).expect("config");
        text.lines()
            .find_map(|l| l.strip_prefix("shutdown_grace_ms = "))
            .and_then(|v| v.trim().parse().ok())
            .expect("shutdown_grace_ms in configs/corecast.toml")
    }
}

#[test]
fn every_sysctl_setting_exists_here_and_says_why() {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/sysctl/99-corecast.conf")).expect("sysctl file");
    let lines: Vec<&str> = text.lines().collect();
    let mut settings = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("key = value: {line}"));
        let key = key.trim();
        assert!(!value.trim().is_empty(), "{key} has a value");
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        assert!(std::path::Path::new(&path).exists(), "{key} is a kernel setting ({path})");
        // The line right above each setting says why.
        assert!(i > 0 && lines[i - 1].trim().starts_with('#'), "{key} has a comment saying why");
        settings += 1;
    }
    for needed in [
        "fs.file-max",
        "fs.nr_open",
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_mem",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ] {
        assert!(text.contains(&format!("{needed} =")), "{needed} is set");
    }
    assert!(settings >= 10);
}
