//! The goim API endpoints: parameter rules, replies and the pushes they start.
//!
//! Owns: goim's exact API behaviour (docs/goim-compat.md section 5): HTTP 200 with
//! `{"code","message","data"}`; -400 for bad parameters; parameters from the
//! query only; the body is the pushed message as bytes; and corecast's
//! history API (docs/positions.md section 5). A request is `parse`d first (its
//! `Class` tells the connection loop whether it may start before the ones
//! in flight are applied), then `start`ed: answered from this shard's state,
//! or its pushes sent with a ticket whose `Later` reply the loop awaits.
//! Must never: await, or read state in `parse` (a read must see every push
//! pipelined before it, so it is answered in `start`).

use crate::order::sequencer::HistoryPage;
use crate::order::tickets::{Answer, Wait};
use crate::proto::http::parser::Method;
use crate::proto::http::query::Query;
use crate::proto::http::response::{self, envelope, push_string, OK, REQUEST_ERROR, SERVER_ERROR};
use crate::route::placement::Placement;
use crate::shard::Shard;
use base64::Engine;
use std::fmt::Write;
use std::rc::Rc;

/// How long a reply waits for every shard to confirm its push before it
/// answers -500 (a shard that far behind is a fault, not load).
pub const CONFIRM_TIMEOUT_MS: u64 = 10_000;

/// What a request does to the order of pushes: requests of one class on one
/// connection may be in flight together (their paths through the mesh keep
/// their order); a request of another class waits until they are applied
/// (docs/positions.md section 1: pipelined requests take effect in request order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Through the room's sequencer shard (this one): pushes to rooms of
    /// one sequencer travel the same FIFO channels, whatever the room.
    Room(usize),
    /// Through each key's directory shard (one key, one connection).
    Keys,
    /// Through each mid's directory shard.
    Mids,
    /// Straight to every shard.
    All,
    /// Clustered: keys, mids and broadcasts leave on this shard's bus
    /// connection, in order, whatever their kind.
    Bus,
    /// Reads and everything else: they see every push before them.
    Read,
}

/// A parsed request, before it starts anything (`parse`, then `start`).
pub enum Request {
    Keys {
        keys: Vec<String>,
        op: i32,
    },
    Mids {
        mids: Vec<i64>,
        op: i32,
    },
    Room {
        room: String,
        op: i32,
    },
    All {
        op: i32,
        speed: u32,
    },
    History {
        room: String,
        since: u32,
        limit: u32,
    },
    /// Answered from this shard's state when it starts (online counts,
    /// nodes, metrics, the demo page, 404).
    Local,
    /// A request error (code -400).
    Refused(String),
    /// A push the access rules refuse (`access`: 401 / 403).
    Denied(crate::api::access::Denial),
}

impl Request {
    pub fn class(&self, shard: &Shard) -> Class {
        self.class_in(&shard.placement())
    }

    /// The class where names are placed as `placement` says.
    pub fn class_in(&self, placement: &Placement<'_>) -> Class {
        let clustered = placement.clustered();
        match self {
            // Rooms of one sequencer shard (of one node) share its FIFO path.
            Request::Room { room, .. } => Class::Room(placement.room_class(room)),
            // Clustered, these leave on this shard's bus connection, in order.
            Request::Keys { .. } | Request::Mids { .. } | Request::All { .. } if clustered => Class::Bus,
            Request::Keys { .. } => Class::Keys,
            Request::Mids { .. } => Class::Mids,
            Request::All { .. } => Class::All,
            Request::History { .. } | Request::Local | Request::Refused(_) | Request::Denied(_) => Class::Read,
        }
    }

    /// A push (the requests `access` may refuse).
    pub fn is_push(&self) -> bool {
        matches!(self, Request::Keys { .. } | Request::Mids { .. } | Request::Room { .. } | Request::All { .. })
    }
}

/// A request handled now, or one whose reply waits for other shards.
pub enum Handled {
    Now(Reply),
    Later(Wait),
}

/// The reply to a request that waited: `{"code":0}` once every shard
/// applied its push (or the history page); -500 when it was not confirmed
/// within `CONFIRM_TIMEOUT_MS` (`None`).
pub fn reply_to(answer: Option<Answer>) -> Reply {
    match answer {
        Some(Answer::Done) => Reply::ok(None),
        Some(Answer::History(page)) => Reply::ok(Some(&history_json(&page))),
        Some(Answer::Failed(why)) => Reply::json(envelope(SERVER_ERROR, why, None)),
        None => {
            crate::log_warn!("a push was not confirmed by every shard within {CONFIRM_TIMEOUT_MS} ms");
            Reply::json(envelope(SERVER_ERROR, "not confirmed by every shard in time", None))
        }
    }
}

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

    pub(super) fn ok(data: Option<&str>) -> Reply {
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
type Parsed = Result<Request, String>;

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    }
}

/// Reads a request's parameters. `target` is the raw request target (path
/// and query).
pub fn parse(shard: &Shard, method: Method, target: &[u8]) -> Request {
    let (path, raw_query) = split_target(target);
    let read: fn(&Shard, &Query) -> Parsed = match (method, path) {
        (Method::Post, b"/goim/push/keys") => push_keys,
        (Method::Post, b"/goim/push/mids") => push_mids,
        (Method::Post, b"/goim/push/room") => push_room,
        (Method::Post, b"/goim/push/all") => push_all,
        (Method::Get, b"/goim/room/history") => room_history,
        // Answered in `start`, which reads the query then.
        _ => return Request::Local,
    };
    query_of(shard, raw_query).and_then(|query| read(shard, &query)).unwrap_or_else(Request::Refused)
}

/// The query string's parameters, at most `request_targets_max` + 16 of them.
fn query_of(shard: &Shard, raw_query: &[u8]) -> Result<Query, String> {
    Query::parse(raw_query, shard.config.limits.request_targets_max + 16)
        .map_err(|_| "too many query parameters".into())
}

/// Starts what `request` asks for: pushes leave with a ticket (`Later`),
/// local reads are answered from this shard's state now.
pub fn start(shard: &Rc<Shard>, request: Request, method: Method, target: &[u8], body: &[u8]) -> Handled {
    let ticket = || Shard::open_ticket(shard);
    let kind = match &request {
        Request::Keys { .. } => Some(0),
        Request::Mids { .. } => Some(1),
        Request::Room { .. } => Some(2),
        Request::All { .. } => Some(3),
        _ => None,
    };
    if let Some(kind) = kind {
        shard.stats.borrow_mut().pushes[kind] += 1;
    }
    match request {
        Request::Keys { keys, op } => {
            let (ack, wait) = ticket();
            shard.push_keys(keys, op, body, ack);
            Handled::Later(wait)
        }
        Request::Mids { mids, op } => {
            let (ack, wait) = ticket();
            shard.push_mids(mids, op, body, ack);
            Handled::Later(wait)
        }
        Request::Room { room, op } => {
            let (ack, wait) = ticket();
            shard.push_room(&room, op, body, ack);
            Handled::Later(wait)
        }
        Request::All { op, speed } => {
            let (ack, wait) = ticket();
            shard.push_all(op, body, speed, ack);
            Handled::Later(wait)
        }
        Request::History { room, since, limit } => {
            let (ack, wait) = ticket();
            shard.query_history(&room, since, limit, ack);
            Handled::Later(wait)
        }
        Request::Refused(message) => Handled::Now(Reply::request_error(&message)),
        Request::Denied(denial) => Handled::Now(Reply {
            status: denial.status,
            reason: denial.reason,
            content_type: "application/json; charset=utf-8",
            body: envelope(denial.code, denial.message, None),
        }),
        Request::Local => {
            let (path, raw_query) = split_target(target);
            match query_of(shard, raw_query) {
                Ok(query) => Handled::Now(answer(shard, method, path, &query)),
                Err(message) => Handled::Now(Reply::request_error(&message)),
            }
        }
    }
}

/// Requests answered from this shard's state alone.
fn answer(shard: &Shard, method: Method, path: &[u8], query: &Query) -> Reply {
    let outcome = match (method, path) {
        (Method::Get, b"/goim/online/top") => online_top(shard, query),
        (Method::Get, b"/goim/online/room") => online_room(shard, query),
        (Method::Get, b"/goim/online/total") => Ok(online_total(shard)),
        (Method::Get, b"/goim/nodes/weighted") => Ok(crate::api::nodes::weighted(shard, query)),
        (Method::Get, b"/goim/nodes/instances" | b"/nodes/instances") => Ok(crate::api::nodes::instances(shard)),
        (Method::Get, b"/metrics") => return metrics(shard),
        (Method::Get, b"/healthz") => return text(200, "OK", "ok\n"),
        (Method::Get, b"/readyz") => return readiness(shard),
        (Method::Get, _) if shard.config.demo.enabled && path.starts_with(b"/demo") => {
            return match crate::api::demo::file(path) {
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

fn push_keys(shard: &Shard, query: &Query) -> Parsed {
    let op = int::<i32>(query, "operation")?;
    let keys = list(shard, query, "keys")?;
    Ok(Request::Keys { keys: keys.into_iter().map(String::from).collect(), op })
}

fn push_mids(shard: &Shard, query: &Query) -> Parsed {
    let op = int::<i32>(query, "operation")?;
    let mids = list(shard, query, "mids")?
        .into_iter()
        .map(|text| text.parse::<i64>().map_err(|_| format!("mids: invalid integer {text:?}")))
        .collect::<Result<Vec<i64>, String>>()?;
    Ok(Request::Mids { mids, op })
}

fn push_room(_shard: &Shard, query: &Query) -> Parsed {
    let op = required_int::<i32>(query, "operation")?;
    let room_type = required_str(query, "type")?;
    let room = required_str(query, "room")?;
    Ok(Request::Room { room: format!("{room_type}://{room}"), op })
}

fn push_all(_shard: &Shard, query: &Query) -> Parsed {
    let op = required_int::<i32>(query, "operation")?;
    let speed = int::<i32>(query, "speed")?;
    Ok(Request::All { op, speed: speed.max(0) as u32 })
}

/// GET /goim/room/history?type=&room=&since=&limit= (docs/positions.md section 5).
fn room_history(shard: &Shard, query: &Query) -> Parsed {
    let room_type = required_str(query, "type")?;
    let room = required_str(query, "room")?;
    let since = int::<u32>(query, "since")?;
    let limit_max = shard.config.history.api_limit_max;
    let limit = match int::<u32>(query, "limit")? {
        0 => limit_max,
        limit => limit.min(limit_max),
    };
    Ok(Request::History { room: format!("{room_type}://{room}"), since, limit })
}

/// The `data` of a history reply.
fn history_json(page: &HistoryPage) -> String {
    let body_bytes: usize = page.messages.iter().map(|(_, frame)| frame.len()).sum();
    let mut data = String::with_capacity(96 + page.messages.len() * 48 + body_bytes * 4 / 3);
    data.push_str("{\"epoch\":");
    push_string(&mut data, &page.epoch);
    let _ = write!(data, ",\"offset\":{},\"complete\":{},\"messages\":[", page.offset, page.complete);
    for (i, (offset, frame)) in page.messages.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        let header = crate::proto::goim::frame::HEADER_BYTES;
        let op = frame.get(8..12).map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let _ = write!(data, "{{\"offset\":{offset},\"op\":{op},\"body\":\"");
        base64::engine::general_purpose::STANDARD.encode_string(frame.get(header..).unwrap_or_default(), &mut data);
        data.push_str("\"}");
    }
    data.push_str("]}");
    data
}

fn online_top(shard: &Shard, query: &Query) -> Outcome {
    let room_type = required_str(query, "type")?;
    let limit = required_int::<i64>(query, "limit")?;
    let limit = limit.clamp(0, shard.config.limits.request_targets_max as i64) as usize;
    let top = match &shard.bus {
        None => shard.state.borrow().online.top(room_type, limit),
        Some(bus) => {
            let nodes = bus.nodes.borrow();
            let mut rooms = nodes.rooms();
            let state = shard.state.borrow();
            for (room, count) in state.online.rooms() {
                *rooms.entry(room).or_default() += count;
            }
            top_of(rooms.into_iter(), room_type, limit)
        }
    };
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

/// Rooms of `room_type`, biggest first, at most `limit`: (id part, count).
fn top_of<'a>(rooms: impl Iterator<Item = (&'a str, u64)>, room_type: &str, limit: usize) -> Vec<(String, u64)> {
    let prefix = format!("{room_type}://");
    let mut top: Vec<(String, u64)> = rooms
        .filter(|(_, count)| *count > 0)
        .filter_map(|(room, count)| Some((room.strip_prefix(prefix.as_str())?.to_string(), count)))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(limit);
    top
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
        let room = format!("{room_type}://{room}");
        let _ = write!(data, ":{}", state.online.room(&room) + shard.remote_room_count(&room));
    }
    data.push('}');
    Ok(Reply::ok(Some(&data)))
}

fn totals(shard: &Shard) -> (u64, u64) {
    shard.cluster_totals()
}

fn online_total(shard: &Shard) -> Reply {
    let (conns, ips) = totals(shard);
    Reply::ok(Some(&format!("{{\"conn_count\":{conns},\"ip_count\":{ips}}}")))
}

fn text(status: u16, reason: &'static str, body: &str) -> Reply {
    Reply { status, reason, content_type: "text/plain; charset=utf-8", body: body.into() }
}

/// GET /readyz: 200 once every shard serves; 503 while the process drains
/// after SIGTERM, and, in a cluster, while any shard of this node has no
/// bus (its pushes would be answered -500). Off goim's paths.
fn readiness(shard: &Shard) -> Reply {
    use crate::lifecycle;
    let bus_down = shard.bus.is_some() && {
        let mut connected = shard.stats.borrow().bus_connected;
        for (peer, stats) in shard.peer_stats.borrow().iter().enumerate() {
            if peer != shard.id {
                connected += stats.bus_connected;
            }
        }
        connected < shard.shards as u64
    };
    if lifecycle::shutting_down() || shard.stopping.get() {
        text(503, "Service Unavailable", "draining\n")
    } else if !lifecycle::all_shards_serving() {
        text(503, "Service Unavailable", "starting\n")
    } else if bus_down {
        text(503, "Service Unavailable", "cluster bus down\n")
    } else {
        text(200, "OK", "ready\n")
    }
}

/// GET /metrics: every shard's counters (others' as of their last report).
fn metrics(shard: &Shard) -> Reply {
    shard.note_bus_stats();
    shard.note_shard_gauges();
    let mut stats = shard.stats.borrow().clone();
    let mut per_shard = shard.peer_stats.borrow().clone();
    per_shard[shard.id] = stats.clone();
    for (peer, peer_stats) in per_shard.iter().enumerate() {
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
        body: {
            let mut body = crate::metrics::render(&stats, &gauges);
            crate::metrics::render_per_shard(&mut body, &per_shard);
            body
        },
    }
}

/// Frames `reply` as an HTTP response into `out`.
pub fn write_reply(out: &mut Vec<u8>, reply: &Reply, close: bool) {
    response::write(out, reply.status, reply.reason, reply.content_type, reply.body.as_bytes(), close);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_pushes_share_a_class_only_through_one_sequencer() {
        let shards = 3;
        let room = |name: &str| Request::Room { room: name.into(), op: 1000 };
        let names = ["live://1", "live://2", "live://3", "live://4", "live://5", "live://6"];
        let owners: Vec<usize> = names.iter().map(|name| crate::route::placement::owner_of(*name, shards)).collect();
        assert!(owners.iter().any(|o| *o != owners[0]), "the sample spreads over sequencers");
        for (name, owner) in names.iter().zip(&owners) {
            assert_eq!(room(name).class_in(&Placement::new(shards, None)), Class::Room(*owner));
        }
        assert_eq!(Request::Local.class_in(&Placement::new(shards, None)), Class::Read);
        assert_ne!(
            Request::Keys { keys: vec![], op: 1 }.class_in(&Placement::new(shards, None)),
            Request::Mids { mids: vec![], op: 1 }.class_in(&Placement::new(shards, None))
        );
    }
}
