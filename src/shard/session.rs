//! One goim client connection over TCP, from accept to close:
//! handshake (auth frame under a deadline) → registration (local tables,
//! then the directory, before the auth reply may leave) → the established
//! loop (read frames, answer them, write when the flusher could not) →
//! unregistration.
//!
//! Owns: the socket of one connection. Must never: hold a buffer while the
//! connection is idle (reads go through the shard's scratch buffer; only a
//! partial frame is kept, in a buffer sized to it), or panic on bytes from
//! the network (every bad frame ends in a `CloseReason`).

use super::close::CloseReason;
use super::conns::{ConnRef, Session};
use super::directory::owner_of;
use super::mesh::ShardMsg;
use super::outbox::Outbox;
use super::Shard;
use crate::protocol::{auth, frame, op};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Reads handled in one poll before the task yields to the others.
const READS_PER_POLL_MAX: usize = 16;

/// Serves one accepted client connection to its end.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let reason = match handshake(&shard, &mut stream).await {
        Ok((auth_frame, pending)) => match register(&shard, &stream, peer.ip(), auth_frame).await {
            Ok(conn) => {
                let reason = established(&shard, &mut stream, conn, pending).await;
                unregister(&shard, conn);
                reason
            }
            Err(reason) => reason,
        },
        Err(reason) => reason,
    };
    crate::log_debug!(
        "shard {}: connection from {peer} closed: {}",
        shard.id,
        reason.name()
    );
    shard.stats.borrow_mut().closed[reason.index()] += 1;
}

/// The auth frame's fields that outlive the read buffer.
struct AuthFrame {
    ver: i16,
    seq: i32,
    body: Vec<u8>,
}

/// Reads until the first op-7 frame (earlier frames are ignored, as goim
/// does) or the handshake deadline. Returns the frame and any bytes after it.
async fn handshake(
    shard: &Shard,
    stream: &mut TcpStream,
) -> Result<(AuthFrame, Vec<u8>), CloseReason> {
    let deadline = Duration::from_millis(shard.config.protocol.handshake_timeout_ms);
    let read_auth = async {
        let mut pending = Vec::new();
        loop {
            if read_into(shard, stream, &mut pending).await? == 0 {
                return Err(CloseReason::ClientClosed);
            }
            let mut used = 0;
            loop {
                match frame::decode(&pending[used..], shard.config.limits.frame_body_bytes_max) {
                    Err(_) => return Err(CloseReason::BadFrame),
                    Ok(None) => break,
                    Ok(Some((f, len))) if f.op == op::AUTH => {
                        let auth = AuthFrame {
                            ver: f.ver,
                            seq: f.seq,
                            body: f.body.to_vec(),
                        };
                        return Ok((auth, pending[used + len..].to_vec()));
                    }
                    Ok(Some((_, len))) => used += len,
                }
            }
            pending.drain(..used);
        }
    };
    let timeout = async {
        glommio::timer::sleep(deadline).await;
        Err(CloseReason::HandshakeTimeout)
    };
    futures_lite::future::or(read_auth, timeout).await
}

/// Reads once through the shard's scratch buffer, appending what arrived.
pub(crate) async fn read_into(
    shard: &Shard,
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<usize, CloseReason> {
    poll_fn(|cx| match poll_read_scratch(shard, stream, cx, pending) {
        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
        Poll::Ready(Err(_)) => Poll::Ready(Err(CloseReason::IoError)),
        Poll::Pending => Poll::Pending,
    })
    .await
}

fn poll_read_scratch(
    shard: &Shard,
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    pending: &mut Vec<u8>,
) -> Poll<std::io::Result<usize>> {
    let mut scratch = shard.read_scratch.borrow_mut();
    match Pin::new(stream).poll_read(cx, &mut scratch[..]) {
        Poll::Ready(Ok(n)) => {
            pending.extend_from_slice(&scratch[..n]);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}

/// Registers the session locally (room, accepts, auth reply queued but
/// held), then in the directory; the auth reply leaves only after the
/// directory confirmed, so a push sent after the client read the reply
/// finds it.
async fn register(
    shard: &Rc<Shard>,
    stream: &TcpStream,
    ip: IpAddr,
    auth_frame: AuthFrame,
) -> Result<ConnRef, CloseReason> {
    let token = {
        let mut scratch = shard.json_scratch.borrow_mut();
        auth::parse(&auth_frame.body, &mut scratch).map_err(|e| {
            crate::log_debug!("shard {}: {e}", shard.id);
            CloseReason::BadToken
        })?
    };
    let key = if token.key.is_empty() {
        shard.new_key()
    } else {
        token.key
    };
    let mid = token.mid;
    let conn = {
        let mut state = shard.state.borrow_mut();
        let state = &mut *state;
        let deadline_s = shard.now_s() + (shard.config.idle_deadline_ms() / 1000) as u32;
        let conn = state.conns.insert(Session {
            fd: stream.as_raw_fd(),
            key: key.as_str().into(),
            mid,
            ip,
            room: None,
            room_index: 0,
            accepts: token.accepts,
            outbox: Outbox::default(),
            dirty: false,
            write_blocked: false,
            held: true,
            close_reason: None,
            waker: None,
            deadline_s,
        });
        if !token.room_id.is_empty() {
            let (room, index) = Shard::join_room(state, conn.slot, &token.room_id);
            let session = state.conns.get_mut(conn).expect("inserted above");
            session.room = Some(room);
            session.room_index = index;
        }
        let reply = frame::encode(auth_frame.ver, op::AUTH_REPLY, auth_frame.seq, b"");
        shard.enqueue(state, conn, Rc::new(reply));
        state.wheel.insert(conn, deadline_s);
        conn
    };
    shard.send(owner_of(&ip, shard.shards), ShardMsg::Ip { ip, delta: 1 });
    let key_owner = owner_of(key.as_str(), shard.shards);
    let mid_owner = (mid != 0).then(|| owner_of(&mid, shard.shards));
    let separate_mid = mid_owner.is_some_and(|owner| owner != key_owner);
    let (ack_id, ack) = shard.new_ack(1 + separate_mid as u32);
    let mid_with_key = if separate_mid {
        None
    } else {
        mid_owner.map(|_| mid)
    };
    shard.send(
        key_owner,
        ShardMsg::Register {
            key: Some(key),
            mid: mid_with_key,
            conn,
            ack_id,
        },
    );
    if let (true, Some(owner)) = (separate_mid, mid_owner) {
        shard.send(
            owner,
            ShardMsg::Register {
                key: None,
                mid: Some(mid),
                conn,
                ack_id,
            },
        );
    }
    let deadline = Duration::from_millis(shard.config.protocol.handshake_timeout_ms);
    let confirmed = futures_lite::future::or(
        async {
            ack.wait().await;
            true
        },
        async {
            glommio::timer::sleep(deadline).await;
            false
        },
    )
    .await;
    if !confirmed {
        shard.forget_ack(ack_id);
        unregister(shard, conn);
        return Err(CloseReason::HandshakeTimeout);
    }
    release(shard, conn);
    Ok(conn)
}

/// Lets the flusher write the held auth reply (and anything queued since).
fn release(shard: &Shard, conn: ConnRef) {
    let mut state = shard.state.borrow_mut();
    let state = &mut *state;
    let Some(session) = state.conns.get_mut(conn) else {
        return;
    };
    session.held = false;
    if !session.outbox.is_empty() && !session.dirty {
        session.dirty = true;
        state.dirty.push(conn);
        shard.flush.raise();
    }
}

/// Removes the session from this shard and from the directory.
fn unregister(shard: &Shard, conn: ConnRef) {
    let session = {
        let mut state = shard.state.borrow_mut();
        Shard::leave_room(&mut state, conn);
        state.conns.remove(conn)
    };
    let Some(session) = session else { return };
    let key_owner = owner_of(&*session.key, shard.shards);
    let mid_owner = (session.mid != 0).then(|| owner_of(&session.mid, shard.shards));
    let key = Some(session.key.into_string());
    if mid_owner == Some(key_owner) {
        shard.send(
            key_owner,
            ShardMsg::Unregister {
                key,
                mid: Some(session.mid),
                conn,
            },
        );
    } else {
        shard.send(
            key_owner,
            ShardMsg::Unregister {
                key,
                mid: None,
                conn,
            },
        );
        if let Some(owner) = mid_owner {
            shard.send(
                owner,
                ShardMsg::Unregister {
                    key: None,
                    mid: Some(session.mid),
                    conn,
                },
            );
        }
    }
    shard.send(
        owner_of(&session.ip, shard.shards),
        ShardMsg::Ip {
            ip: session.ip,
            delta: -1,
        },
    );
}

/// The established loop: frames in, replies queued; ends with the reason.
async fn established(
    shard: &Shard,
    stream: &mut TcpStream,
    conn: ConnRef,
    mut pending: Vec<u8>,
) -> CloseReason {
    if !pending.is_empty() {
        if let Err(reason) = process(shard, conn, &mut pending) {
            return reason;
        }
    }
    poll_fn(|cx| {
        if let Some(reason) = poll_session(shard, stream, conn, cx) {
            return Poll::Ready(reason);
        }
        for _ in 0..READS_PER_POLL_MAX {
            match poll_read_scratch(shard, stream, cx, &mut pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(CloseReason::ClientClosed),
                Poll::Ready(Ok(_)) => {
                    if let Err(reason) = process(shard, conn, &mut pending) {
                        return Poll::Ready(reason);
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(CloseReason::ClientClosed),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Plenty read in one go: let the other connections have the core.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Checks the close reason, keeps the waker current and, while the kernel
/// refuses bytes, drains the outbox through the stream.
fn poll_session(
    shard: &Shard,
    stream: &mut TcpStream,
    conn: ConnRef,
    cx: &mut Context<'_>,
) -> Option<CloseReason> {
    let mut state = shard.state.borrow_mut();
    let Some(session) = state.conns.get_mut(conn) else {
        return Some(CloseReason::Shutdown);
    };
    if let Some(reason) = session.close_reason {
        return Some(reason);
    }
    if !session
        .waker
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        session.waker = Some(cx.waker().clone());
    }
    while session.write_blocked {
        let Some(front) = session.outbox.front() else {
            session.write_blocked = false;
            break;
        };
        match Pin::new(&mut *stream).poll_write(cx, front) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(CloseReason::IoError),
            Poll::Ready(Ok(written)) => session.outbox.consume(written),
            Poll::Pending => break,
        }
    }
    None
}

/// Handles every complete frame in `pending`, keeping a partial tail.
fn process(shard: &Shard, conn: ConnRef, pending: &mut Vec<u8>) -> Result<(), CloseReason> {
    let mut used = 0;
    while let Some((f, len)) =
        frame::decode(&pending[used..], shard.config.limits.frame_body_bytes_max)
            .map_err(|_| CloseReason::BadFrame)?
    {
        handle_frame(shard, conn, f);
        used += len;
    }
    if used == pending.len() {
        // Nothing partial: give the buffer back.
        *pending = Vec::new();
    } else {
        pending.drain(..used);
    }
    Ok(())
}

/// Answers one client frame (goim's Operate): heartbeat, change room,
/// sub/unsub; any other operation is answered with the same op, no body.
fn handle_frame(shard: &Shard, conn: ConnRef, f: frame::Frame<'_>) {
    let mut state = shard.state.borrow_mut();
    let state = &mut *state;
    let reply = match f.op {
        op::HEARTBEAT => {
            let idle_s = (shard.config.idle_deadline_ms() / 1000) as u32;
            let Some(session) = state.conns.get_mut(conn) else {
                return;
            };
            session.deadline_s = shard.now_s() + idle_s;
            let count = session
                .room
                .as_ref()
                .map_or(0, |room| state.online.room(room));
            let count = count.min(i32::MAX as u64) as i32;
            frame::encode(f.ver, op::HEARTBEAT_REPLY, f.seq, &count.to_be_bytes())
        }
        op::CHANGE_ROOM => {
            Shard::leave_room(state, conn);
            let room = String::from_utf8_lossy(f.body);
            if !room.is_empty() {
                let (room, index) = Shard::join_room(state, conn.slot, &room);
                if let Some(session) = state.conns.get_mut(conn) {
                    session.room = Some(room);
                    session.room_index = index;
                }
            }
            frame::encode(f.ver, op::CHANGE_ROOM_REPLY, f.seq, f.body)
        }
        op::SUB | op::UNSUB => {
            if let (Some(ops), Some(session)) =
                (auth::parse_op_list(f.body), state.conns.get_mut(conn))
            {
                if f.op == op::SUB {
                    session.accepts.extend_from_slice(&ops);
                    session.accepts.sort_unstable();
                    session.accepts.dedup();
                    session.accepts.truncate(auth::ACCEPTS_MAX);
                } else {
                    session.accepts.retain(|a| !ops.contains(a));
                }
            }
            let reply_op = if f.op == op::SUB {
                op::SUB_REPLY
            } else {
                op::UNSUB_REPLY
            };
            frame::encode(f.ver, reply_op, f.seq, f.body)
        }
        other => frame::encode(f.ver, other, f.seq, b""),
    };
    shard.enqueue(state, conn, Rc::new(reply));
}
