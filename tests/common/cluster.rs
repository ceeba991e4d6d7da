//! Cluster harness: a real `nats-server` on a free loopback port (started
//! and stopped by its process id) and corecast nodes pointed at it.

use super::{Server, ServerConfig};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long nats-server may take to accept connections.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A nats-server process. Killed by its pid when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Nats {
    pub fn start() -> Nats {
        let mut nats = Nats { child: None, port: free_port() };
        nats.spawn();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server (installed by .ci/run; apt-get install nats-server)");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {addr}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nats_server_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

/// A node's config: the test defaults, `shards`, and the cluster section.
pub fn node_config(nats: &Nats, node_id: &str, shards: i64) -> ServerConfig {
    let mut config = ServerConfig::default();
    config
        .set("server", "shards", shards)
        .set("cluster", "nats_urls", vec![nats.url()])
        .set("cluster", "node_id", node_id)
        .set("cluster", "report_ms", 200)
        .set("cluster", "node_timeout_ms", 1500)
        .set("node", "hostname", node_id)
        .set("node", "addr", format!("10.0.0.{}", node_id.bytes().last().unwrap_or(b'0') - b'0'));
    config
}

/// Starts `count` nodes (node1, node2, ...) with `shards` shards each and
/// waits until every node sees all of them live.
pub fn start_nodes(nats: &Nats, count: usize, shards: i64) -> Vec<Server> {
    let nodes: Vec<Server> =
        (1..=count).map(|i| Server::start_with(&node_config(nats, &format!("node{i}"), shards))).collect();
    for node in &nodes {
        wait_for_nodes(node, count);
    }
    nodes
}

/// Waits until `node`'s metrics say `count` nodes are live and every shard
/// is connected to the bus.
pub fn wait_for_nodes(node: &Server, count: usize) {
    let ok = super::wait_until(Duration::from_secs(10), || {
        let text = node.http("GET", "/metrics", b"").body_str();
        let live = metric(&text, "corecast_cluster_nodes_live");
        let connected = metric(&text, "corecast_cluster_bus_connected_shards");
        let shards = metric(&text, "corecast_shards");
        live == Some(count as u64) && connected == shards
    });
    assert!(
        ok,
        "node at {} did not see {count} live nodes:\n{}",
        node.http,
        node.http("GET", "/metrics", b"").body_str()
    );
}

/// The value of an unlabelled metric in a Prometheus text scrape.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Server {
    /// Kills the process with SIGKILL (no drain, no goodbye on the bus).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
