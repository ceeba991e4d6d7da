//! `corecast-bench report`: turns the JSON lines collected by
//! scripts/bench.sh (one per run, each with "section", "label", "shards" and
//! "server_config" added) plus a metadata file (`key<TAB>value` lines) into
//! docs/benchmarks.md: machine, config, bars, one table per scenario, and
//! every figure of every run in an appendix.

use crate::report::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

type Row = BTreeMap<String, Value>;

/// Parses one flat JSON object (string / number / bool / null values).
fn parse_line(line: &str) -> Result<(Vec<String>, Row), String> {
    let b = line.trim().as_bytes();
    let mut i = 0;
    let mut order = Vec::new();
    let mut row = Row::new();
    let ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] as char).is_ascii_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        if b.get(*i) != Some(&b'"') {
            return Err(format!("expected a string at {}", *i));
        }
        *i += 1;
        let mut out = Vec::new();
        while *i < b.len() && b[*i] != b'"' {
            if b[*i] == b'\\' && *i + 1 < b.len() {
                *i += 1;
                match b[*i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'u' if *i + 4 < b.len() => {
                        let hex = std::str::from_utf8(&b[*i + 1..*i + 5]).unwrap_or("3f");
                        let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32).unwrap_or('?');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        *i += 4;
                    }
                    c => out.push(c),
                }
            } else {
                out.push(b[*i]);
            }
            *i += 1;
        }
        *i += 1;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    i += 1;
    loop {
        ws(&mut i);
        match b.get(i) {
            Some(b'}') => break,
            Some(b',') => {
                i += 1;
                continue;
            }
            None => return Err("unterminated object".into()),
            _ => {}
        }
        let key = string(&mut i)?;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return Err(format!("expected ':' after {key}"));
        }
        i += 1;
        ws(&mut i);
        let value = match b.get(i) {
            Some(b'"') => Value::Str(string(&mut i)?),
            Some(b't') if b[i..].starts_with(b"true") => {
                i += 4;
                Value::Bool(true)
            }
            Some(b'f') if b[i..].starts_with(b"false") => {
                i += 5;
                Value::Bool(false)
            }
            Some(b'n') if b[i..].starts_with(b"null") => {
                i += 4;
                Value::Null
            }
            _ => {
                let start = i;
                while i < b.len() && !matches!(b[i], b',' | b'}') && !(b[i] as char).is_ascii_whitespace() {
                    i += 1;
                }
                let text = std::str::from_utf8(&b[start..i]).unwrap_or("");
                match text.parse::<f64>() {
                    Ok(n) => Value::Num(n),
                    Err(_) => return Err(format!("bad value for {key}: {text:?}")),
                }
            }
        };
        order.push(key.clone());
        row.insert(key, value);
    }
    Ok((order, row))
}

fn num(r: &Row, k: &str) -> Option<f64> {
    match r.get(k)? {
        Value::Num(n) => Some(*n),
        Value::Int(n) => Some(*n as f64),
        _ => None,
    }
}

fn text(r: &Row, k: &str) -> String {
    match r.get(k) {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Num(n)) => fmt(*n),
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        _ => "–".into(),
    }
}

/// Thousands separators for big numbers, a few significant digits for small.
fn fmt(n: f64) -> String {
    if !n.is_finite() {
        return "–".into();
    }
    let a = n.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 || n == n.trunc() {
        format!("{n:.0}")
    } else if a >= 10.0 {
        format!("{n:.1}")
    } else if a >= 0.1 {
        format!("{n:.2}")
    } else {
        format!("{n:.3}")
    }
}

/// One column: header and how to render it from a row.
struct Col {
    head: &'static str,
    cell: fn(&Row) -> String,
}

macro_rules! col {
    ($h:expr, $k:expr) => {
        Col { head: $h, cell: |r| text(r, $k) }
    };
    ($h:expr, ms $k:expr) => {
        Col { head: $h, cell: |r| num(r, $k).map_or("–".into(), |v| fmt(v / 1000.0)) }
    };
}

fn table(out: &mut String, rows: &[&Row], cols: &[Col]) {
    let _ = writeln!(out, "| {} |", cols.iter().map(|c| c.head).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|{}", cols.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        if let Some(Value::Str(why)) = r.get("failed") {
            let _ = writeln!(out, "| {} | **run failed:** {} |", text(r, "label"), why.replace('|', "/"));
            continue;
        }
        let cells: Vec<String> = cols.iter().map(|c| (c.cell)(r).replace('|', "/")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn push_cols() -> Vec<Col> {
    vec![
        col!("run", "label"),
        col!("shards", "shards"),
        col!("members", "members"),
        col!("rooms", "rooms"),
        Col {
            head: "publishers × pipeline", cell: |r| format!("{} × {}", text(r, "publishers"), text(r, "pipeline"))
        },
        Col {
            head: "target rate /s",
            cell: |r| num(r, "rate_target").map_or("–".into(), |v| if v == 0.0 { "saturate".into() } else { fmt(v) }),
        },
        col!("pushes /s", "requests_per_s"),
        col!("delivered /s", "delivered_per_s"),
        col!("server CPU s", "server_cpu_s"),
        col!("server CPU %", "server_cpu_pct"),
        col!("deliveries / server CPU-s", "deliveries_per_server_cpu_s"),
        col!("missing", "missing"),
        col!("out of order", "out_of_order"),
        col!("members closed", "members_closed"),
        col!("push errors", "request_errors"),
        col!("p50 ms", ms "lat_p50_us"),
        col!("p99 ms", ms "lat_p99_us"),
        col!("p99.9 ms", ms "lat_p999_us"),
        col!("max ms", ms "lat_max_us"),
        col!("gen CPU %", "gen_cpu_pct"),
        col!("gen limited", "gen_limited"),
        col!("server / gen runqueue wait s", "runq"),
    ]
}

/// What makes a run's figures less trustworthy: loss, a starved generator.
fn caveats(r: &Row) -> String {
    let mut c: Vec<String> = Vec::new();
    if r.contains_key("failed") {
        return "run failed".into();
    }
    let missing = num(r, "missing").unwrap_or(0.0);
    if missing > 0.0 {
        c.push(format!("{} deliveries missing", fmt(missing)));
    }
    let closed = num(r, "members_closed").unwrap_or(0.0) + num(r, "closed_by_server").unwrap_or(0.0);
    if closed > 0.0 {
        c.push(format!("{} connections closed by the server", fmt(closed)));
    }
    if let (Some(w), Some(win)) = (num(r, "gen_runq_wait_s"), num(r, "cpu_window_s")) {
        if win > 0.0 && w / win > 0.2 {
            c.push(format!("generator waited {:.0} % of the window for a CPU (machine busy)", 100.0 * w / win));
        }
    }
    if let (Some(w), Some(win)) = (num(r, "server_runq_wait_s"), num(r, "cpu_window_s")) {
        if win > 0.0 && w / win > 0.1 {
            c.push(format!("server waited {:.0} % of the window for a CPU", 100.0 * w / win));
        }
    }
    if matches!(r.get("gen_limited"), Some(Value::Bool(true))) {
        c.push("generator at its CPU limit".into());
    }
    c.join("; ")
}

pub fn render(results: &str, meta: &str) -> Result<String, String> {
    let mut rows: Vec<Row> = Vec::new();
    for (n, line) in results.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (_, mut row) = parse_line(line).map_err(|e| format!("results line {}: {e}", n + 1))?;
        // Combined column for contention.
        let runq = match (num(&row, "server_runq_wait_s"), num(&row, "gen_runq_wait_s")) {
            (Some(a), Some(b)) => format!("{} / {}", fmt(a), fmt(b)),
            _ => "–".into(),
        };
        row.insert("runq".into(), Value::Str(runq));
        rows.push(row);
    }
    let meta: Vec<(String, String)> =
        meta.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let m = |k: &str| meta.iter().find(|(n, _)| n == k).map_or("–".to_string(), |(_, v)| v.clone());
    let section = |s: &str| -> Vec<&Row> {
        rows.iter().filter(|r| matches!(r.get("section"), Some(Value::Str(x)) if x == s)).collect()
    };
    let by_label = |l: &str| -> Option<&Row> {
        rows.iter().find(|r| matches!(r.get("label"), Some(Value::Str(x)) if x == l) && !r.contains_key("failed"))
    };

    let mut o = String::new();
    let _ = writeln!(o, "# corecast benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `scripts/bench.sh{}` with the `corecast-bench` load generator (bench/). \
         Server and generator run on the same machine over loopback; with one server shard the \
         server's shard is pinned to CPU 0 by the server and the generator runs under `taskset -c 1`; \
         with two shards the generator is not pinned and shares both CPUs with the server.\n",
        if m("mode") == "quick" { " --quick" } else { "" }
    );
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    for k in ["date", "mode", "elapsed", "uname", "cpu", "cpus", "memory", "rustc", "commit", "load_before", "nofile"] {
        let _ = writeln!(o, "| {k} | {} |", m(k).replace('|', "/"));
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "CPU figures: server CPU = utime + stime of the server process from /proc/PID/stat over the \
         measuring window (clock ticks); generator CPU = getrusage of the generator (plus its \
         children for `--procs`). \"runqueue wait\" is the time the threads were runnable but \
         waiting for their CPU (/proc/PID/task/*/schedstat) over the window: large values mean the \
         machine was busy with something else (the machine is shared) and the rates are understated. \
         \"gen limited\" = the generator used ≥ 90 % of the CPU it could get, so its own speed may \
         have capped the figures; deliveries per server CPU-second does not depend on it.\n"
    );

    // Bars.
    let _ = writeln!(o, "## Bars\n");
    let _ = writeln!(o, "| bar | run | figure | met | caveats |\n|---|---|---|---|---|");
    let mut bar = |name: &str, run: Option<&Row>, fig: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| {
        let (f, met) = match fig {
            Some(v) => (format!("{} {unit}", fmt(v)).trim().to_string(), if ok(v) { "yes" } else { "**no**" }),
            None => ("not measured".into(), "–"),
        };
        let label = run.map_or("–".into(), |r| text(r, "label"));
        let caveats = run.map_or(String::new(), caveats);
        let _ = writeln!(o, "| {name} | {label} | {f} | {met} | {caveats} |");
    };
    let idle = section("idle");
    let worst_idle = idle
        .iter()
        .filter(|r| num(r, "conns").unwrap_or(0.0) >= 5000.0 && num(r, "rss_per_conn_bytes").is_some())
        .max_by(|a, b| num(a, "rss_per_conn_bytes").partial_cmp(&num(b, "rss_per_conn_bytes")).unwrap());
    bar(
        "idle: server RSS ≤ 1 KiB per connection (worst of N ≥ 5,000)",
        worst_idle.copied(),
        worst_idle.and_then(|r| num(r, "rss_per_conn_bytes")),
        "B",
        &|v| v <= 1024.0,
    );
    for (l, name, min) in [
        ("fanout-c1000", "fan-out C = 1,000, shards = 1: ≥ 7.5 M deliveries per server CPU-second", 7.5e6),
        ("fanout-c10000", "fan-out C = 10,000, shards = 1: ≥ 5.5 M deliveries per server CPU-second", 5.5e6),
    ] {
        let r = by_label(l);
        bar(name, r, r.and_then(|r| num(r, "deliveries_per_server_cpu_s")), "", &|v| v >= min);
    }
    for (l, name, max) in [
        ("latency-c1000-r100", "latency C = 1,000 at 100 pushes/s: p99 < 10 ms", 10.0),
        ("latency-c100-r1000", "latency C = 100 at 1,000 pushes/s: p99 < 5 ms", 5.0),
    ] {
        let r = by_label(l);
        bar(name, r, r.and_then(|r| num(r, "lat_p99_us")).map(|v| v / 1000.0), "ms", &|v| v < max);
    }
    for ep in ["keys", "mids", "room"] {
        let r = by_label(&format!("api-{ep}-8x16"));
        bar(
            &format!("push API {ep}, 8 × 16 pipelined: ≥ 100,000 requests per server CPU-second"),
            r,
            r.and_then(|r| num(r, "requests_per_server_cpu_s")),
            "",
            &|v| v >= 1e5,
        );
    }
    o.push('\n');

    // Scenario tables.
    let server_cfg = |rows: &[&Row]| -> String {
        let mut seen: Vec<String> = Vec::new();
        for r in rows.iter().filter(|r| r.contains_key("server_config")) {
            let c = text(r, "server_config");
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        seen.join("; ")
    };
    let heading = |o: &mut String, title: &str, rows: &[&Row], what: &str| {
        let _ = writeln!(o, "## {title}\n\n{what}\n");
        if !rows.is_empty() {
            let _ = writeln!(o, "Server config: `{}`\n", server_cfg(rows));
        }
    };

    let rows1 = section("idle");
    heading(
        &mut o,
        "1. Idle connections",
        &rows1,
        "N authenticated TCP connections in 1,000 rooms (`live://1`..`live://1000`), each heartbeating \
         (first heartbeat right after auth, then every heartbeat_s). A fresh server per N. \
         RSS per connection = (server VmRSS after the hold − VmRSS before connecting) / N. \
         Connect rate = connections accepted and authenticated per second (connect window 1,000).",
    );
    table(
        &mut o,
        &rows1,
        &[
            col!("run", "label"),
            col!("N", "conns"),
            col!("procs", "procs"),
            col!("authed", "authed"),
            col!("failed", "connect_failed"),
            col!("connects /s", "connects_per_s"),
            col!("server CPU µs / connect", "server_cpu_us_per_connect"),
            col!("RSS before KiB", "rss_before_kib"),
            col!("RSS connected KiB", "rss_connected_kib"),
            col!("RSS after hold KiB", "rss_held_kib"),
            col!("RSS / conn B", "rss_per_conn_bytes"),
            col!("hold s", "hold_s"),
            col!("heartbeats sent", "heartbeats_sent"),
            col!("replies", "heartbeat_replies"),
            col!("closed by server", "closed_by_server"),
            col!("gen CPU s", "gen_cpu_s"),
        ],
    );

    for (sec, title, what) in [
        (
            "fanout",
            "2. Room fan-out at saturation",
            "C members in room 1; 64-byte pushes to `push/room` from 8 keep-alive publishers, 16 \
             requests in flight each (sliding window), for the window; every member must get every \
             push of every publisher, in order. Latency = receive time − send timestamp in the body \
             (CLOCK_MONOTONIC); at saturation it is mostly queueing.",
        ),
        (
            "latency",
            "3. Latency at a steady rate",
            "One publisher at a fixed rate (periodic timerfd), pipeline up to 16.",
        ),
        (
            "rooms",
            "4. Many rooms",
            "Pushes spread round robin over the rooms by each of 8 publishers (16 in flight each).",
        ),
    ] {
        let rs = section(sec);
        heading(&mut o, title, &rs, what);
        table(&mut o, &rs, &push_cols());
    }

    let rows5 = section("api");
    heading(
        &mut o,
        "5. Push API",
        &rows5,
        "Keep-alive HTTP/1.1, 64-byte body. `64 × 1`: 64 connections, one request at a time; \
         `8 × 16`: 8 connections writing 16 requests in one write, reading the 16 responses, repeat. \
         One member (mid 1, key `bench-key-1`, room 1) receives every push and is checked for loss.",
    );
    table(
        &mut o,
        &rows5,
        &[
            col!("run", "label"),
            col!("shards", "shards"),
            col!("endpoint", "endpoint"),
            Col {
                head: "conns × pipeline", cell: |r| format!("{} × {}", text(r, "publishers"), text(r, "pipeline"))
            },
            col!("requests /s", "requests_per_s"),
            col!("server CPU %", "server_cpu_pct"),
            col!("requests / server CPU-s", "requests_per_server_cpu_s"),
            col!("errors", "request_errors"),
            col!("missing", "missing"),
            col!("out of order", "out_of_order"),
            col!("HTTP p50 ms", ms "http_rtt_p50_us"),
            col!("HTTP p99 ms", ms "http_rtt_p99_us"),
            col!("push→recv p99 ms", ms "lat_p99_us"),
            col!("gen CPU %", "gen_cpu_pct"),
            col!("gen limited", "gen_limited"),
            col!("server / gen runqueue wait s", "runq"),
        ],
    );

    let rows6 = section("broadcast");
    heading(
        &mut o,
        "6. Broadcast",
        &rows6,
        "One `push/all?operation=1000` to N connections (accepts [1000], spread over 1,000 rooms). \
         First / last = time from the push being written to the first / last connection receiving it. \
         Speed ratio = last / (N / speed): about 1 when the speed is honoured.",
    );
    table(
        &mut o,
        &rows6,
        &[
            col!("run", "label"),
            col!("N", "members"),
            col!("speed", "speed"),
            col!("delivered", "delivered"),
            col!("missing", "missing"),
            col!("first ms", "first_recv_ms"),
            col!("p50 ms", ms "lat_p50_us"),
            col!("p99 ms", ms "lat_p99_us"),
            col!("last ms", "last_recv_ms"),
            col!("expected s", "speed_expected_s"),
            col!("speed ratio", "speed_ratio"),
            col!("server CPU s", "server_cpu_s"),
            col!("connects /s", "connects_per_s"),
        ],
    );

    let rows7 = section("scaling");
    heading(
        &mut o,
        "7. Scaling: shards = 1 vs 2",
        &rows7,
        "The same runs with two server shards (generator unpinned). Ratio = shards 2 / shards 1. \
         On a 2-CPU machine the generator competes with the second shard for CPU, so the ratio of \
         rates understates what a second core gives; compare the per-CPU-second figures too.",
    );
    let _ = writeln!(o, "| run | figure | shards = 1 | shards = 2 | ratio |\n|---|---|---|---|---|");
    for r2 in &rows7 {
        if r2.contains_key("failed") {
            let _ = writeln!(o, "| {} | run failed: {} | | | |", text(r2, "label"), text(r2, "failed"));
            continue;
        }
        let l2 = text(r2, "label");
        let base = l2.trim_end_matches("-s2");
        let Some(r1) = by_label(base) else { continue };
        let figs: &[(&str, &str)] = if text(r2, "endpoint") == "room" && num(r2, "members").unwrap_or(0.0) > 1.0 {
            &[
                ("delivered /s", "delivered_per_s"),
                ("deliveries / server CPU-s", "deliveries_per_server_cpu_s"),
                ("server CPU %", "server_cpu_pct"),
                ("p99 ms", "lat_p99_us"),
                ("missing", "missing"),
                ("members closed", "members_closed"),
            ]
        } else {
            &[
                ("requests /s", "requests_per_s"),
                ("requests / server CPU-s", "requests_per_server_cpu_s"),
                ("server CPU %", "server_cpu_pct"),
                ("missing", "missing"),
                ("members closed", "members_closed"),
            ]
        };
        for (name, k) in figs {
            let scale = if k.ends_with("_us") { 1000.0 } else { 1.0 };
            let (a, b) = (num(r1, k).map(|v| v / scale), num(r2, k).map(|v| v / scale));
            let ratio = a.zip(b).filter(|(a, _)| *a > 0.0).map_or("–".into(), |(a, b)| format!("{:.2}", b / a));
            let f = |v: Option<f64>| v.map_or("–".into(), fmt);
            let _ = writeln!(o, "| {base} | {name} | {} | {} | {ratio} |", f(a), f(b));
        }
    }
    o.push('\n');

    let rows8 = section("sequential");
    heading(
        &mut o,
        "8. Sequential pushes, a new connection per request",
        &rows8,
        "What a simple back end does: one publisher, one request at a time, each on a new connection \
         (`POST /goim/push/room`, 64-byte body, `Connection: close`; full reply read and checked for HTTP \
         200 and `\"code\":0`). Reply latency: connect start to full reply. Server CPU per request: first \
         request until the members got every push. Inversions: pushes a member got after a later one.",
    );
    table(
        &mut o,
        &rows8,
        &[
            col!("run", "label"),
            col!("shards", "shards"),
            col!("members", "members"),
            col!("requests /s", "requests_per_s"),
            col!("reply p50 µs", "reply_p50_us"),
            col!("p90 µs", "reply_p90_us"),
            col!("p99 µs", "reply_p99_us"),
            col!("max µs", "reply_max_us"),
            col!("server CPU µs / request", "server_cpu_us_per_request"),
            col!("server CPU %", "server_cpu_pct"),
            col!("errors", "errors_total"),
            col!("missing", "missing"),
            col!("inversions", "inversions"),
            col!("push→recv p99 ms", ms "lat_p99_us"),
            col!("gen limited", "gen_limited"),
            col!("server / gen runqueue wait s", "runq"),
        ],
    );

    let notes = m("notes");
    if notes != "–" && !notes.is_empty() {
        let _ = writeln!(o, "## Notes from the run\n");
        for n in notes.split(" ;; ") {
            let _ = writeln!(o, "- {n}");
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Every figure\n\nOne JSON object per run, as printed by `corecast-bench --json` (plus section, label, shards, server_config).\n");
    let _ = writeln!(o, "```");
    for line in results.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(o, "{}", line.trim());
    }
    let _ = writeln!(o, "```");
    Ok(o)
}

#[cfg(test)]
mod tests;
