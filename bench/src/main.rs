//! corecast-bench: load generator for corecast (goim protocol over TCP, push
//! API over HTTP/1.1). Plain threads and epoll; percentiles from hdrhistogram.

mod args;
mod fanout;
mod idle;
mod markdown;
mod members;
mod publishers;
mod report;
mod sequential;
mod sys;

use args::Args;
use publishers::{Endpoint, PubConfig};
use report::Report;
use std::process::ExitCode;

const USAGE: &str = "\
usage: corecast-bench <idle|fanout|api|broadcast|sequential|report> [flags]

common flags:
  --tcp ADDR            goim TCP address (default 127.0.0.1:3101)
  --http ADDR           push API address (default 127.0.0.1:3111)
  --server-pid PID      read the server's CPU (/proc/PID/stat) and RSS (/proc/PID/status)
  --json                print one JSON line with every figure on stdout
  --label NAME          scenario name in the output
  --heartbeat-s S       member heartbeat interval (default 30)
  --connect-window N    connects+auths in flight (default 1000)
  --connect-timeout-s S (default 120)

idle        hold N authenticated, heartbeating connections (scenario 1)
  --conns N (2000)  --rooms R (1000)  --procs K (1)  --hold-s S (5)  --settle-ms MS (1000)
  --websocket (goim over WebSocket; --tcp is then the WebSocket address)  --deflate (offer permessage-deflate)

fanout      room pushes to members (scenarios 2, 3, 4)
  --members-per-room C (1000)  --rooms R (1)  --rate PUSHES_PER_S (0 = saturate)
  --publishers P (8)  --pipeline N (16)  --batch  --duration-s S (10)  --body-bytes B (64)
  --websocket  --deflate (as for idle)  --body-json (chat-like JSON after the 20-byte header)
  --recv-threads T (1)  --wait-s S (5)  --settle-ms MS (300)  --rcvbuf BYTES (0 = kernel)  --busy-poll
  --also-tcp A,B (members spread over --tcp and these: cluster nodes)
  --also-server-pids P,Q (their CPU, and nats-server's, counted as the server's)

api         push API request rate with one member receiving (scenario 5)
  --endpoint keys|mids|room (room)  --conns N (64)  --pipeline N (1; N requests per write)
  --duration-s S (10)  --body-bytes B (64)

broadcast   one push/all to N connections (scenario 6)
  --conns N (19000)  --speed S (0)  --rooms R (1000)  --wait-s S (max(10, 3 N/speed))

sequential  one publisher, one push/room at a time, a new connection per request
            (Connection: close), members in the room check every push arrives in order
  --duration-s S (10)  --body-bytes B (64)  --members N (1; 0 = none)  --room ID (1)
  --timeout-s S (5; per request)  --wait-s S (5)  --settle-ms MS (300)

report      write the Markdown report from collected JSON lines (used by scripts/bench.sh)
  --results FILE  --meta FILE (key<TAB>value lines)  --out FILE
";

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = raw.first().cloned() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "--help" || cmd == "-h" || cmd == "help" {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(&raw[1..]) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    let result = match cmd.as_str() {
        "idle" => cmd_idle(&args),
        "fanout" => cmd_fanout(&args),
        "api" => cmd_api(&args),
        "broadcast" => cmd_broadcast(&args),
        "sequential" => cmd_sequential(&args),
        "report" => cmd_report(&args),
        other => return usage_error(&format!("unknown subcommand {other:?}")),
    };
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some((report, json))) => {
            eprint!("{}", report.human());
            if json {
                println!("{}", report.json());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corecast-bench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("corecast-bench: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

type Outcome = Result<Option<(Report, bool)>, String>;

struct Common {
    tcp: std::net::SocketAddrV4,
    http: std::net::SocketAddrV4,
    server_pid: Option<u32>,
    json: bool,
    label: Option<String>,
    heartbeat_s: u64,
    window: usize,
    connect_timeout_s: u64,
}

fn common(a: &Args) -> Result<Common, String> {
    Ok(Common {
        tcp: a.addr("tcp", "127.0.0.1:3101")?,
        http: a.addr("http", "127.0.0.1:3111")?,
        server_pid: a.opt("server-pid")?,
        json: a.flag("json"),
        label: a.opt("label")?,
        heartbeat_s: a.get("heartbeat-s", 30)?,
        window: a.get("connect-window", 1000)?,
        connect_timeout_s: a.get("connect-timeout-s", 120)?,
    })
}

fn cmd_idle(a: &Args) -> Outcome {
    let c = common(a)?;
    let opts = idle::IdleOpts {
        tcp: c.tcp,
        conns: a.get("conns", 2000)?,
        procs: a.get("procs", 1)?,
        rooms: a.get("rooms", 1000)?,
        heartbeat_s: c.heartbeat_s,
        hold_s: a.get("hold-s", 5.0)?,
        settle_ms: a.get("settle-ms", 1000)?,
        window: c.window,
        server_pid: c.server_pid,
        connect_timeout_s: c.connect_timeout_s,
        websocket: a.flag("websocket"),
        deflate: a.flag("deflate"),
    };
    let child = a.flag("child");
    let offset: usize = a.get("offset", 0)?;
    a.finish()?;
    if child {
        idle::child(&opts, offset)?;
        return Ok(None);
    }
    let r = idle::run(&opts)?;
    Ok(Some((labelled(r, &c), c.json)))
}

#[allow(clippy::too_many_arguments)]
fn plan(
    c: &Common,
    a: &Args,
    scenario: &str,
    members: usize,
    rooms: usize,
    key_of: fn(usize) -> String,
    pubs: PubConfig,
    default_wait_s: f64,
) -> Result<fanout::Plan, String> {
    Ok(fanout::Plan {
        scenario: scenario.to_string(),
        tcp: c.tcp,
        members,
        rooms,
        key_of,
        pubs,
        recv_threads: a.get("recv-threads", 1)?,
        heartbeat_s: c.heartbeat_s,
        window: c.window,
        rcvbuf: a.get("rcvbuf", 0)?,
        busy_poll: a.flag("busy-poll"),
        websocket: a.flag("websocket"),
        deflate: a.flag("deflate"),
        wait_ns: (a.get("wait-s", default_wait_s)? * 1e9) as u64,
        settle_ms: a.get("settle-ms", 300)?,
        server_pid: c.server_pid,
        tcp_more: a.get::<AddrList>("also-tcp", AddrList::default())?.0,
        extra_pids: a.get::<PidList>("also-server-pids", PidList::default())?.0,
        connect_timeout_s: c.connect_timeout_s,
    })
}

/// `A,B,...` socket addresses (`--also-tcp`).
#[derive(Default)]
struct AddrList(Vec<std::net::SocketAddrV4>);

impl std::str::FromStr for AddrList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| format!("bad address {t:?}")))
            .collect::<Result<_, _>>()
            .map(AddrList)
    }
}

/// `P,Q,...` process ids (`--also-server-pids`).
#[derive(Default)]
struct PidList(Vec<u32>);

impl std::str::FromStr for PidList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| format!("bad pid {t:?}")))
            .collect::<Result<_, _>>()
            .map(PidList)
    }
}

fn body_bytes(a: &Args) -> Result<usize, String> {
    let b: usize = a.get("body-bytes", 64)?;
    if b < 20 {
        return Err("--body-bytes must be at least 20 (sequence, publisher id, timestamp)".into());
    }
    Ok(b)
}

fn cmd_fanout(a: &Args) -> Outcome {
    let c = common(a)?;
    let per_room: usize = a.get("members-per-room", 1000)?;
    let rooms: usize = a.get("rooms", 1)?;
    let rate: f64 = a.get("rate", 0.0)?;
    let pubs = PubConfig {
        http: c.http,
        conns: a.get("publishers", 8)?,
        pipeline: a.get::<usize>("pipeline", 16)?.max(1),
        batch: a.flag("batch"),
        endpoint: Endpoint::Room,
        targets: rooms.max(1),
        rate,
        duration_ns: (a.get("duration-s", 10.0)? * 1e9) as u64,
        max_pushes: a.get("max-pushes", 0)?,
        body_bytes: body_bytes(a)?,
        body_json: a.flag("body-json"),
        op: a.get("op", 1000)?,
        drain_ns: 5_000_000_000,
    };
    let name = if rate > 0.0 { "latency" } else { "fanout" };
    let p = plan(&c, a, name, per_room * rooms.max(1), rooms.max(1), |_| String::new(), pubs, 5.0)?;
    a.finish()?;
    Ok(Some((labelled(fanout::run(p)?, &c), c.json)))
}

fn cmd_api(a: &Args) -> Outcome {
    let c = common(a)?;
    let endpoint = match a.get("endpoint", "room".to_string())?.as_str() {
        "keys" => Endpoint::Keys("bench-key-1".into()),
        "mids" => Endpoint::Mids(1),
        "room" => Endpoint::Room,
        other => return Err(format!("--endpoint: keys, mids or room, not {other:?}")),
    };
    let pubs = PubConfig {
        http: c.http,
        conns: a.get("conns", 64)?,
        pipeline: a.get::<usize>("pipeline", 1)?.max(1),
        batch: true,
        endpoint,
        targets: 1,
        rate: 0.0,
        duration_ns: (a.get("duration-s", 10.0)? * 1e9) as u64,
        max_pushes: 0,
        body_bytes: body_bytes(a)?,
        body_json: false,
        op: 1000,
        drain_ns: 5_000_000_000,
    };
    // One member (mid 1, key bench-key-1, room live://1) receives every push.
    let p = plan(&c, a, "api", 1, 1, |_| "bench-key-1".to_string(), pubs, 5.0)?;
    a.finish()?;
    Ok(Some((labelled(fanout::run(p)?, &c), c.json)))
}

fn cmd_broadcast(a: &Args) -> Outcome {
    let c = common(a)?;
    let conns: usize = a.get("conns", 19000)?;
    let speed: u32 = a.get("speed", 0)?;
    let rooms: usize = a.get("rooms", 1000)?;
    let expected_s = if speed > 0 { conns as f64 / speed as f64 } else { 0.0 };
    let pubs = PubConfig {
        http: c.http,
        conns: 1,
        pipeline: 1,
        batch: false,
        endpoint: Endpoint::All(speed),
        targets: 1,
        rate: 0.0,
        duration_ns: 60_000_000_000,
        max_pushes: 1,
        body_bytes: body_bytes(a)?,
        body_json: false,
        op: 1000,
        drain_ns: 60_000_000_000,
    };
    let p = plan(&c, a, "broadcast", conns, rooms, |_| String::new(), pubs, (3.0 * expected_s).max(10.0))?;
    a.finish()?;
    let mut r = fanout::run(p)?;
    r.int("speed", speed);
    if speed > 0 {
        r.num("speed_expected_s", expected_s);
        // Time from the push to the last delivery over the expected walk time.
        let last_s = r.get_num("last_recv_ms").map(|ms| ms / 1000.0);
        r.opt_num("speed_ratio", last_s.map(|s| s / expected_s));
    }
    Ok(Some((labelled(r, &c), c.json)))
}

fn cmd_sequential(a: &Args) -> Outcome {
    let c = common(a)?;
    let room: u32 = a.get("room", 1)?;
    if room == 0 {
        return Err("--room must be at least 1".into());
    }
    let opts = sequential::SeqOpts {
        tcp: c.tcp,
        http: c.http,
        members: a.get("members", 1)?,
        room,
        body_bytes: body_bytes(a)?,
        duration_ns: (a.get("duration-s", 10.0)? * 1e9) as u64,
        timeout_ns: (a.get("timeout-s", 5.0)? * 1e9) as u64,
        heartbeat_s: c.heartbeat_s,
        window: c.window,
        wait_ns: (a.get("wait-s", 5.0)? * 1e9) as u64,
        settle_ms: a.get("settle-ms", 300)?,
        server_pid: c.server_pid,
        connect_timeout_s: c.connect_timeout_s,
    };
    a.finish()?;
    Ok(Some((labelled(sequential::run(&opts)?, &c), c.json)))
}

fn labelled(mut r: Report, c: &Common) -> Report {
    if let Some(l) = &c.label {
        r.str("label", l.clone());
    }
    r
}

fn cmd_report(a: &Args) -> Outcome {
    let results: String = a.get("results", String::new())?;
    let meta: String = a.get("meta", String::new())?;
    let out: String = a.get("out", "docs/benchmarks.md".to_string())?;
    a.finish()?;
    let results = std::fs::read_to_string(&results).map_err(|e| format!("{results}: {e}"))?;
    let meta = if meta.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(&meta).map_err(|e| format!("{meta}: {e}"))?
    };
    let md = markdown::render(&results, &meta)?;
    std::fs::write(&out, md).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("wrote {out}");
    Ok(None)
}
