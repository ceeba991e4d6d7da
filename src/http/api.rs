//! The goim API endpoints: parameter rules, replies and the pushes they start.
//!
//! Owns: goim's exact API behaviour (goim-compat.md section 5): HTTP 200 with
//! `{"code","message","data"}`; -400 for bad parameters; parameters from the
//! query only; the body is the pushed message as bytes. Must never: await
//! (a request is answered from this shard's state and queues its pushes).

use super::parser::Method;
use super::query::Query;
use super::response::{self, envelope, push_string, OK, REQUEST_ERROR};
use crate::shard::Shard;
use std::fmt::Write;

/// A reply before it is framed as HTTP.
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn json(body: String) -> Reply {
        Reply { status: 200, reason: "OK", content_type: "application/json; charset=utf-8", body }
    }

    fn ok(data: Option<&str>) -> Reply {
        Reply::json(envelope(OK, "", data))
    }

    fn request_error(message: &str) -> Reply {
        Reply::json(envelope(REQUEST_ERROR, message, None))
    }

    fn not_found() -> Reply {
        Reply { status: 404, reason: "Not Found", content_type: "text/plain", body: "404 page not found".into() }
    }
}

type Outcome = Result<Reply, String>;

/// Answers one request. `target` is the raw request target (path and query).
pub fn handle(shard: &Shard, method: Method, target: &[u8], body: &[u8]) -> Reply {
    let (path, raw_query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let targets_max = shard.config.limits.request_targets_max;
    let query = match Query::parse(raw_query, targets_max + 16) {
        Ok(query) => query,
        Err(_) => return Reply::request_error("too many query parameters"),
    };
    let outcome = match (method, path) {
        (Method::Post, b"/goim/push/keys") => push_keys(shard, &query, body),
        (Method::Post, b"/goim/push/mids") => push_mids(shard, &query, body),
        (Method::Post, b"/goim/push/room") => push_room(shard, &query, body),
        (Method::Post, b"/goim/push/all") => push_all(shard, &query, body),
        (Method::Get, b"/goim/online/top") => online_top(shard, &query),
        (Method::Get, b"/goim/online/room") => online_room(shard, &query),
        (Method::Get, b"/goim/online/total") => Ok(online_total(shard)),
        (Method::Get, b"/goim/nodes/weighted") => Ok(nodes_weighted(shard, &query)),
        (Method::Get, b"/goim/nodes/instances" | b"/nodes/instances") => Ok(nodes_instances(shard)),
        (Method::Get, b"/metrics") => return metrics(shard),
        (Method::Get, _) if shard.config.demo.enabled && path.starts_with(b"/demo") => {
            return match super::demo::file(path) {
                Some((content_type, body)) => Reply { status: 200, reason: "OK", content_type, body: body.into() },
                None => Reply::not_found(),
            };
        }
        _ => return Reply::not_found(),
    };
    outcome.unwrap_or_else(|message| Reply::request_error(&message))
}

/// An optional integer: absent or empty is 0 (gin's binding); otherwise it
/// must parse into the type, as Go's strconv would.
fn int<T: std::str::FromStr + Default>(query: &Query, name: &str) -> Result<T, String> {
    match query.first(name) {
        None | Some("") => Ok(T::default()),
        Some(text) => text.parse::<T>().map_err(|_| format!("{name}: invalid integer {text:?}")),
    }
}

/// A required integer: present and non-zero.
fn required_int<T: std::str::FromStr + Default + PartialEq>(query: &Query, name: &str) -> Result<T, String> {
    let value = int::<T>(query, name)?;
    if value == T::default() {
        return Err(format!("{name} is required"));
    }
    Ok(value)
}

fn required_str<'a>(query: &'a Query, name: &str) -> Result<&'a str, String> {
    match query.first(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("{name} is required")),
    }
}

fn list<'a>(shard: &Shard, query: &'a Query, name: &'a str) -> Result<Vec<&'a str>, String> {
    let values: Vec<&str> = query.all(name).collect();
    let max = shard.config.limits.request_targets_max;
    if values.len() > max {
        return Err(format!("{name}: {} values, at most {max} allowed", values.len()));
    }
    Ok(values)
}

fn push_keys(shard: &Shard, query: &Query, body: &[u8]) -> Outcome {
    let op = int::<i32>(query, "operation")?;
    let keys = list(shard, query, "keys")?;
    shard.push_keys(keys.into_iter().map(String::from).collect(), op, body);
    Ok(Reply::ok(None))
}

fn push_mids(shard: &Shard, query: &Query, body: &[u8]) -> Outcome {
    let op = int::<i32>(query, "operation")?;
    let mids = list(shard, query, "mids")?
        .into_iter()
        .map(|text| text.parse::<i64>().map_err(|_| format!("mids: invalid integer {text:?}")))
        .collect::<Result<Vec<i64>, String>>()?;
    shard.push_mids(mids, op, body);
    Ok(Reply::ok(None))
}

fn push_room(shard: &Shard, query: &Query, body: &[u8]) -> Outcome {
    let op = required_int::<i32>(query, "operation")?;
    let room_type = required_str(query, "type")?;
    let room = required_str(query, "room")?;
    shard.push_room(&format!("{room_type}://{room}"), op, body);
    Ok(Reply::ok(None))
}

fn push_all(shard: &Shard, query: &Query, body: &[u8]) -> Outcome {
    let op = required_int::<i32>(query, "operation")?;
    let speed = int::<i32>(query, "speed")?;
    shard.push_all(op, body, speed.max(0) as u32);
    Ok(Reply::ok(None))
}

fn online_top(shard: &Shard, query: &Query) -> Outcome {
    let room_type = required_str(query, "type")?;
    let limit = required_int::<i64>(query, "limit")?;
    let limit = limit.clamp(0, shard.config.limits.request_targets_max as i64) as usize;
    let top = shard.state.borrow().online.top(room_type, limit);
    let mut data = String::from("[");
    for (i, (id, count)) in top.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str("{\"room_id\":");
        push_string(&mut data, id);
        let _ = write!(data, ",\"count\":{count}}}");
    }
    data.push(']');
    Ok(Reply::ok(Some(&data)))
}

fn online_room(shard: &Shard, query: &Query) -> Outcome {
    let room_type = required_str(query, "type")?;
    let rooms = list(shard, query, "rooms")?;
    if rooms.is_empty() {
        return Err("rooms is required".into());
    }
    let state = shard.state.borrow();
    let mut data = String::from("{");
    let mut seen = std::collections::HashSet::new();
    for room in rooms.into_iter().filter(|r| seen.insert(*r)) {
        if data.len() > 1 {
            data.push(',');
        }
        push_string(&mut data, room);
        let _ = write!(data, ":{}", state.online.room(&format!("{room_type}://{room}")));
    }
    data.push('}');
    Ok(Reply::ok(Some(&data)))
}

fn totals(shard: &Shard) -> (u64, u64) {
    let (conns, ips) = shard.local_counts();
    shard.state.borrow().online.totals(conns, ips)
}

fn online_total(shard: &Shard) -> Reply {
    let (conns, ips) = totals(shard);
    Reply::ok(Some(&format!("{{\"conn_count\":{conns},\"ip_count\":{ips}}}")))
}

fn nodes_weighted(shard: &Shard, query: &Query) -> Reply {
    let node = &shard.config.node;
    let backoff = &shard.config.backoff;
    // goim: host names for web clients, IP addresses for the apps.
    let address = if query.first("platform") == Some("web") { &node.domain } else { &node.addr };
    let mut data = String::from("{\"domain\":");
    push_string(&mut data, &node.domain);
    let _ = write!(
        data,
        ",\"tcp_port\":{},\"ws_port\":{},\"wss_port\":{},\"heartbeat\":{},\"heartbeat_max\":{},\"nodes\":[",
        node.tcp_port,
        node.ws_port,
        node.wss_port,
        shard.config.protocol.heartbeat_s,
        shard.config.protocol.heartbeat_max
    );
    push_string(&mut data, address);
    let _ = write!(
        data,
        "],\"backoff\":{{\"max_delay\":{},\"base_delay\":{},\"factor\":{},\"jitter\":{}}}}}",
        backoff.max_delay, backoff.base_delay, backoff.factor, backoff.jitter
    );
    Reply::ok(Some(&data))
}

fn nodes_instances(shard: &Shard) -> Reply {
    let node = &shard.config.node;
    let (conns, ips) = totals(shard);
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut data = String::from("[{\"region\":");
    push_string(&mut data, &node.region);
    data.push_str(",\"zone\":");
    push_string(&mut data, &node.zone);
    data.push_str(",\"env\":");
    push_string(&mut data, &node.env);
    data.push_str(",\"appid\":\"goim.comet\",\"hostname\":");
    push_string(&mut data, &node.hostname);
    data.push_str(",\"addrs\":[");
    push_string(&mut data, &format!("tcp://{}:{}", node.addr, node.tcp_port));
    let _ = write!(data, "],\"version\":\"\",\"latest_timestamp\":{now_ns},\"metadata\":{{\"addrs\":");
    push_string(&mut data, &node.addr);
    let _ = write!(
        data,
        ",\"conn_count\":\"{conns}\",\"ip_count\":\"{ips}\",\"offline\":\"false\",\"weight\":\"{}\"}}}}]",
        node.weight
    );
    Reply::ok(Some(&data))
}

/// GET /metrics: every shard's counters (others' as of their last report).
fn metrics(shard: &Shard) -> Reply {
    let mut stats = shard.stats.borrow().clone();
    for (peer, peer_stats) in shard.peer_stats.borrow().iter().enumerate() {
        if peer != shard.id {
            stats.add(peer_stats);
        }
    }
    let (connections, client_ips) = totals(shard);
    let rooms = shard.state.borrow().online.room_count() as u64;
    let gauges = crate::metrics::Gauges { connections, client_ips, rooms, shards: shard.shards as u64 };
    Reply {
        status: 200,
        reason: "OK",
        content_type: "text/plain; version=0.0.4",
        body: crate::metrics::render(&stats, &gauges),
    }
}

/// Frames `reply` as an HTTP response into `out`.
pub fn write_reply(out: &mut Vec<u8>, reply: &Reply, close: bool) {
    response::write(out, reply.status, reply.reason, reply.content_type, reply.body.as_bytes(), close);
}
