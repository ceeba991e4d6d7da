//! One goim client connection's protocol, from accept to close:
//! handshake (auth frame under a deadline) → registration (local tables,
//! then the directory; the auth reply is held until the directory
//! confirmed, so a push sent after the client read the reply finds it) →
//! established (frames answered) → unregistration.
//!
//! Owns: what the bytes of a connection mean. The poller hands it bytes;
//! it never touches a socket except to close it when reaped. Must never:
//! keep a read buffer for a connection without a partial frame, or panic
//! on bytes from the network (every bad frame ends in a `CloseReason`).

use super::{Shard, State};
use crate::conn::close::CloseReason;
use crate::conn::conns::{ConnRef, Partial, Phase};
use crate::proto::goim::{auth, frame, op};
use crate::route::command::Command;

/// Handles bytes read from `conn`: everything complete in the session's
/// partial tail followed by `input` (goim frames on TCP; the upgrade and
/// WebSocket frames on the WebSocket port). Keeps a new partial tail, if any.
pub fn on_bytes(shard: &Shard, conn: ConnRef, input: &mut [u8]) {
    let (partial, ws) = {
        let mut state = shard.state.borrow_mut();
        let Some(session) = state.conns.get_mut(conn) else {
            return;
        };
        (session.partial.take(), session.ws.is_some())
    };
    let consume = |input: &mut [u8]| {
        if ws {
            crate::shard::websocket::consume(shard, conn, input)
        } else {
            handle_frames(shard, conn, input)
        }
    };
    let result = match partial {
        None => consume(input).map(|used| (used, None)),
        Some(mut tail) => {
            tail.0.extend_from_slice(input);
            consume(&mut tail.0).map(|used| (used, Some(tail)))
        }
    };
    match result {
        Ok((used, tail)) => keep_tail(shard, conn, input, used, tail),
        Err(reason) => shard.state.borrow_mut().close(conn, reason),
    }
}

/// Stores what is left after `used` bytes as the session's partial frame.
fn keep_tail(shard: &Shard, conn: ConnRef, input: &[u8], used: usize, tail: Option<Box<Partial>>) {
    let mut state = shard.state.borrow_mut();
    let Some(session) = state.conns.get_mut(conn) else {
        return;
    };
    session.partial = match tail {
        Some(mut tail) if used < tail.0.len() => {
            tail.0.drain(..used);
            Some(tail)
        }
        Some(_) => None,
        None if used < input.len() => Some(Box::new(Partial(input[used..].to_vec()))),
        None => None,
    };
}

/// Decodes and handles frames; returns the bytes used (the rest is partial).
pub(crate) fn handle_frames(shard: &Shard, conn: ConnRef, input: &[u8]) -> Result<usize, CloseReason> {
    let body_max = shard.config.limits.frame_body_bytes_max;
    let frames_per_s_max = shard.config.limits.upstream_frames_per_s_max;
    let now_s = (shard.coarse_ms() / 1000) as u32;
    let mut used = 0;
    while let Some((f, len)) = frame::decode(&input[used..], body_max).map_err(|_| CloseReason::BadFrame)? {
        used += len;
        let phase = match shard.state.borrow_mut().conns.get_mut(conn) {
            Some(session) if session.close_reason.is_none() => {
                if frames_per_s_max > 0
                    && !crate::conn::rate::frame_admitted(&mut session.upstream_window, now_s, frames_per_s_max)
                {
                    crate::log_info!(
                        "shard {}: {} sends more than {frames_per_s_max} frames/s, closing",
                        shard.id,
                        session.key
                    );
                    return Err(CloseReason::UpstreamRate);
                }
                session.phase
            }
            _ => return Ok(used),
        };
        match phase {
            // goim ignores frames before the auth frame.
            Phase::Handshake if f.op != op::AUTH => {}
            Phase::Handshake => authenticate(shard, conn, f)?,
            Phase::Checking => return unread_while_checking(input, used - len, body_max),
            Phase::Attaching | Phase::Registering | Phase::Established => handle_frame(shard, conn, f),
        }
    }
    Ok(used)
}

/// Frames after the auth frame while `[auth] url` is asked: left unread
/// (the session's partial tail, handled once the client is admitted), at
/// most one frame's worth; a client that sends more is closed.
fn unread_while_checking(input: &[u8], used: usize, body_max: usize) -> Result<usize, CloseReason> {
    if input.len() - used > body_max + frame::HEADER_BYTES {
        return Err(CloseReason::BadFrame);
    }
    Ok(used)
}

/// The auth frame: the token parsed and, with `[auth]` on, verified (JWT)
/// and/or put to the business URL (`auth_call`: the client waits in
/// `Phase::Checking` for its answer); then `admit`.
fn authenticate(shard: &Shard, conn: ConnRef, f: frame::Frame<'_>) -> Result<(), CloseReason> {
    let mut token = {
        let mut scratch = shard.json_scratch.borrow_mut();
        auth::parse(f.body, &mut scratch).map_err(|e| {
            crate::log_debug!("shard {}: {e}", shard.id);
            CloseReason::BadToken
        })?
    };
    let grant = match &shard.jwt {
        Ok(None) => None,
        Ok(Some(verifier)) => match verifier.verify(&mut token) {
            Ok(grant) => Some(Box::new(grant)),
            Err(refusal) => {
                crate::log_debug!("shard {}: auth token refused: {refusal:?}", shard.id);
                return Err(CloseReason::TokenRefused);
            }
        },
        Err(e) => {
            crate::log_warn!("shard {}: auth token refused: the verifier could not be built: {e}", shard.id);
            return Err(CloseReason::TokenRefused);
        }
    };
    let admission = Admission { token, grant, ver: f.ver, seq: f.seq };
    match &shard.auth_url {
        Ok(None) => {
            admit(shard, conn, admission);
            Ok(())
        }
        Ok(Some(url)) => shard.ask_auth_url(conn, url, f.body, admission),
        Err(e) => {
            crate::log_warn!("shard {}: client refused: the auth URL is unusable: {e}", shard.id);
            Err(CloseReason::AuthUnavailable)
        }
    }
}

/// What admitting a client needs from its auth frame.
pub struct Admission {
    pub token: auth::Token,
    pub grant: Option<Box<crate::proto::jwt::Grant>>,
    pub ver: i16,
    pub seq: i32,
}

/// Registers the session locally (key, mid, room, accepts; auth reply
/// queued but held), then asks the directory shards to record it. A
/// connection with positions and a room first asks the room's sequencer
/// where it joins (`positions`); the directory is told once that is known.
pub fn admit(shard: &Shard, conn: ConnRef, admission: Admission) {
    let Admission { token, grant, ver, seq } = admission;
    let positions = token.wants_positions();
    let key = if token.key.is_empty() { shard.new_key() } else { token.key };
    let (ip, attach_to) = {
        let mut state = shard.state.borrow_mut();
        let state = &mut *state;
        let Some(session) = state.conns.get_mut(conn) else {
            return;
        };
        session.phase = Phase::Registering;
        session.grant = grant;
        session.key = key.as_str().into();
        session.mid = token.mid;
        session.accepts = token.accepts;
        session.positions = positions;
        let ip = session.ip;
        let mut attach_to = None;
        if !token.room_id.is_empty() {
            if positions {
                session.phase = Phase::Attaching;
                attach_to = Some(token.room_id);
            } else {
                join(state, conn, &token.room_id);
            }
        }
        let reply = frame::encode(ver, op::AUTH_REPLY, seq, b"");
        shard.enqueue_reply(state, conn, reply);
        (ip, attach_to)
    };
    shard.send(shard.placement().shard_of(&ip), Command::Ip { ip, delta: 1 });
    match attach_to {
        Some(room) => {
            let recover = token.recover.map(|r| (r.epoch.into_boxed_str(), r.offset));
            shard.request_attach(conn, &room, 0, recover);
        }
        None => register(shard, conn),
    }
}

/// Asks the directory shards to record the session's key and mid; the held
/// auth reply is released when they confirmed.
pub(super) fn register(shard: &Shard, conn: ConnRef) {
    let (key, mid) = {
        let state = shard.state.borrow();
        let Some(session) = state.conns.get(conn) else { return };
        (session.key.to_string(), session.mid)
    };
    let key_owner = shard.placement().shard_of(key.as_str());
    let mid_owner = (mid != 0).then(|| shard.placement().shard_of(&mid));
    let separate_mid = mid_owner.is_some_and(|owner| owner != key_owner);
    let clustered = shard.bus.is_some();
    // One ticket, a share for each directory shard and, clustered, one for
    // the bus server's PONG.
    let mut shares = shard.registration_ack(conn).split(1 + separate_mid as usize + clustered as usize);
    let key_share = shares.next().expect("split into at least one share");
    // Clustered: the key's and mid's subscriptions (and the room's) must be
    // in the bus server's tables before the auth reply leaves.
    if let Some(bus_share) = clustered.then(|| shares.next()).flatten() {
        if !shard.bus_register(conn, &key, mid, bus_share.clone()) {
            shard.confirm(bus_share);
        }
    }
    let mid_with_key = if separate_mid { None } else { mid_owner.map(|_| mid) };
    shard.send(key_owner, Command::Register { key: Some(key), mid: mid_with_key, conn, ack: key_share });
    if let (Some(mid_share), Some(owner)) = (separate_mid.then(|| shares.next()).flatten(), mid_owner) {
        shard.send(owner, Command::Register { key: None, mid: Some(mid), conn, ack: mid_share });
    }
}

/// The directory confirmed: the held auth reply (and anything queued after
/// it) may go out, and the idle deadline starts.
pub fn release(shard: &Shard, conn: ConnRef) {
    let deadline_tick = shard.tick_after_ms(shard.config.idle_deadline_ms());
    let mut state = shard.state.borrow_mut();
    let state = &mut *state;
    let Some(session) = state.conns.get_mut(conn) else {
        return;
    };
    session.held = false;
    session.phase = Phase::Established;
    session.deadline_tick = deadline_tick;
    if !session.outbox.is_empty() && !session.dirty {
        session.dirty = true;
        state.dirty.push(conn);
        shard.flush.raise();
    }
}

/// Removes the session from this shard and from the directory, and closes
/// its socket. Called only by `Shard::reap`.
pub fn unregister(shard: &Shard, conn: ConnRef) {
    let (session, detach) = {
        let mut state = shard.state.borrow_mut();
        let detach = Shard::leave_room(&mut state, conn);
        (state.conns.remove(conn), detach)
    };
    if let Some(room) = detach {
        shard.send_detach(room);
    }
    let Some(session) = session else {
        shard.sync_interest();
        return;
    };
    if session.tls.as_ref().is_some_and(|tls| tls.is_handshaking()) {
        shard.tls_handshakes.set(shard.tls_handshakes.get().saturating_sub(1));
    }
    // The session owned the socket and has just been removed: nothing else closes it.
    shard.io.close(session.fd);
    let reason = session.close_reason.unwrap_or(CloseReason::ClientClosed);
    shard.stats.borrow_mut().closed[reason.index()] += 1;
    crate::log_debug!("shard {}: connection {} closed: {}", shard.id, session.key, reason.name());
    if matches!(session.phase, Phase::Handshake | Phase::Checking) {
        shard.sync_interest();
        return;
    }
    shard.bus_unregister(conn, &session.key, session.mid);
    let key_owner = shard.placement().shard_of(&*session.key);
    let mid_owner = (session.mid != 0).then(|| shard.placement().shard_of(&session.mid));
    let key = Some(session.key.into_string());
    if mid_owner == Some(key_owner) {
        shard.send(key_owner, Command::Unregister { key, mid: Some(session.mid), conn });
    } else {
        shard.send(key_owner, Command::Unregister { key, mid: None, conn });
        if let Some(owner) = mid_owner {
            shard.send(owner, Command::Unregister { key: None, mid: Some(session.mid), conn });
        }
    }
    shard.send(shard.placement().shard_of(&session.ip), Command::Ip { ip: session.ip, delta: -1 });
}

/// Puts `conn` in `room`'s member list on this shard.
pub(super) fn join(state: &mut State, conn: ConnRef, room: &str) {
    let (room, index) = Shard::join_room(state, conn.slot, room);
    if let Some(session) = state.conns.get_mut(conn) {
        session.room = Some(room);
        session.room_index = index;
    }
}

/// Answers one client frame (goim's Operate): heartbeat, change room,
/// sub/unsub; any other operation is answered with the same op, no body.
fn handle_frame(shard: &Shard, conn: ConnRef, f: frame::Frame<'_>) {
    let idle_deadline_tick = shard.tick_after_ms(shard.config.idle_deadline_ms());
    let mut after = RoomChange::default();
    {
        let mut state = shard.state.borrow_mut();
        let state = &mut *state;
        let reply = match f.op {
            op::HEARTBEAT => {
                let Some(session) = state.conns.get_mut(conn) else {
                    return;
                };
                let bytes_max = shard.config.limits.outbound_bytes_per_connection_max;
                if session.phase == Phase::Established && !crate::shard::queue::is_behind(session, bytes_max) {
                    session.deadline_tick = idle_deadline_tick;
                }
                let count =
                    session.room.as_ref().map_or(0, |room| state.online.room(room) + shard.remote_room_count(room));
                let count = count.min(i32::MAX as u64) as i32;
                frame::encode(f.ver, op::HEARTBEAT_REPLY, f.seq, &count.to_be_bytes())
            }
            op::CHANGE_ROOM => {
                let room = String::from_utf8_lossy(f.body);
                let granted = state
                    .conns
                    .get(conn)
                    .and_then(|s| s.grant.as_ref())
                    .is_none_or(|g| room.is_empty() || g.allows(&room));
                if !granted {
                    crate::log_debug!("shard {}: room change outside the token's grant refused", shard.id);
                    state.close(conn, CloseReason::TokenRefused);
                    shard.flush.raise();
                    return;
                }
                after = change_room(state, conn, f.body);
                frame::encode(f.ver, op::CHANGE_ROOM_REPLY, f.seq, f.body)
            }
            op::SUB | op::UNSUB => {
                if let (Some(ops), Some(session)) = (auth::parse_op_list(f.body), state.conns.get_mut(conn)) {
                    if f.op == op::SUB {
                        session.accepts.extend_from_slice(&ops);
                        session.accepts.sort_unstable();
                        session.accepts.dedup();
                        session.accepts.truncate(auth::ACCEPTS_MAX);
                    } else {
                        session.accepts.retain(|a| !ops.contains(a));
                    }
                }
                let reply_op = if f.op == op::SUB { op::SUB_REPLY } else { op::UNSUB_REPLY };
                frame::encode(f.ver, reply_op, f.seq, f.body)
            }
            other => frame::encode(f.ver, other, f.seq, b""),
        };
        shard.enqueue_reply(state, conn, reply);
    }
    // The reply (op 13) is queued first: the op-20 frame follows it.
    if let Some(room) = after.detach {
        shard.send_detach(room);
    }
    shard.sync_interest();
    if let Some((room, attach_seq)) = after.attach {
        shard.request_attach(conn, &room, attach_seq, None);
    }
}

/// What a room change leaves to do once `state` is no longer borrowed.
#[derive(Default)]
struct RoomChange {
    /// The sequencer of the room left is owed a `Detach`.
    detach: Option<std::sync::Arc<str>>,
    /// Ask the new room's sequencer where to join (positions).
    attach: Option<(String, u32)>,
}

/// Op 12: leaves the current room and joins `body` (empty: none). A
/// connection with positions joins through the new room's sequencer.
fn change_room(state: &mut State, conn: ConnRef, body: &[u8]) -> RoomChange {
    let mut change = RoomChange { detach: Shard::leave_room(state, conn), attach: None };
    let room = String::from_utf8_lossy(body);
    let Some(session) = state.conns.get_mut(conn) else { return change };
    if session.positions {
        session.attach_seq = session.attach_seq.wrapping_add(1);
        if !room.is_empty() {
            change.attach = Some((room.into_owned(), session.attach_seq));
        }
    } else if !room.is_empty() {
        join(state, conn, &room);
    }
    change
}
