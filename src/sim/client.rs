//! A simulated goim client on its end of an in-memory pipe (`pipes`): it
//! writes its auth frame and room changes, reads what the shard wrote, and
//! reports every frame to the oracle, with what it knows of itself (its
//! room, whether it waits for a position frame, the offset it expects next).

use super::oracle::Oracle;
use super::pipes::SimIo;
use crate::conn::conns::ConnRef;
use crate::proto::goim::{frame, op};
use std::os::unix::io::RawFd;
use std::rc::Rc;

/// Where a client is in its room, as far as it can tell from what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Not authenticated yet, or in no room.
    None,
    /// Asked for positions in this room; the op-20 frame has not come.
    AwaitingPosition(String),
    /// In this room since `since` (the step it learnt so). With positions:
    /// the epoch and the offset the next room push must carry.
    In { room: String, since: u64, next: Option<(String, u32)> },
}

pub struct Client {
    pub id: usize,
    fd: RawFd,
    io: Rc<SimIo>,
    pub shard: usize,
    pub conn: ConnRef,
    pub key: String,
    pub mid: i64,
    pub positions: bool,
    pub stalled: bool,
    /// It closed its socket.
    pub left: bool,
    /// The shard closed the connection (end of stream read).
    pub closed: bool,
    /// The step its auth reply (op 8) arrived.
    pub authed_at: Option<u64>,
    pub membership: Membership,
    /// Room changes written and not answered yet (op 13), oldest first.
    changes_asked: Vec<String>,
    /// The recovery it asked for: (epoch, offset).
    pub recover: Option<(String, u32)>,
    /// Replayed pushes still to come after a recovered op-20 frame.
    pub replay_left: u32,
    /// Push ids in the order they arrived.
    pub received: Vec<u64>,
    /// The greatest send step of the pushes received so far.
    pub latest_sent_seen: u64,
    /// Per pipelined publisher, the greatest push id received from it.
    pub pipeline_seen: Vec<u64>,
    pub frames_read: u64,
    unread: Vec<u8>,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        id: usize,
        io: Rc<SimIo>,
        fd: RawFd,
        shard: usize,
        conn: ConnRef,
        key: String,
        mid: i64,
        room: String,
        positions: bool,
        recover: Option<(String, u32)>,
    ) -> Client {
        let mut token = format!("{{\"mid\":{mid},\"key\":\"{key}\",\"room_id\":\"{room}\",\"accepts\":[{}]", super::OP);
        if positions {
            token.push_str(",\"positions\":true");
        }
        if let Some((epoch, offset)) = &recover {
            token.push_str(&format!(",\"recover\":{{\"epoch\":\"{epoch}\",\"offset\":{offset}}}"));
        }
        token.push('}');
        let client = Client {
            id,
            fd,
            io,
            shard,
            conn,
            key,
            mid,
            positions,
            stalled: false,
            left: false,
            closed: false,
            authed_at: None,
            membership: if positions { Membership::AwaitingPosition(room.clone()) } else { Membership::None },
            changes_asked: vec![room],
            recover,
            replay_left: 0,
            received: Vec::new(),
            latest_sent_seen: 0,
            pipeline_seen: Vec::new(),
            frames_read: 0,
            unread: Vec::new(),
        };
        client.write(&frame::encode(1, op::AUTH, 1, token.as_bytes()));
        client
    }

    /// Its pipe's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn gone(&self) -> bool {
        self.left || self.closed
    }

    fn write(&self, bytes: &[u8]) {
        self.io.with(self.fd, |pipe| pipe.to_server.extend_from_slice(bytes));
    }

    /// Closes its side of the pipe.
    fn close(&self) {
        self.io.with(self.fd, |pipe| pipe.client_closed = true);
        self.io.forget_if_done(self.fd);
    }

    /// Op 12 to `room` ("" leaves the room).
    pub fn change_room(&mut self, room: &str) {
        if self.authed_at.is_none() {
            return;
        }
        self.changes_asked.push(room.to_string());
        self.write(&frame::encode(1, op::CHANGE_ROOM, 2, room.as_bytes()));
    }

    /// Closes the socket. Returns the position to recover from, if it had one.
    pub fn leave(&mut self) -> Option<(String, String, u32)> {
        self.left = true;
        self.close();
        match &self.membership {
            Membership::In { room, next: Some((epoch, next)), .. } if self.replay_left == 0 => {
                Some((room.clone(), epoch.clone(), next - 1))
            }
            _ => None,
        }
    }

    /// Reads everything the socket holds and hands each whole frame to the
    /// oracle. Returns the bytes read.
    pub fn read(&mut self, step: u64, oracle: &mut Oracle) -> Result<usize, String> {
        let (bytes, closed) = self
            .io
            .with(self.fd, |pipe| (std::mem::take(&mut pipe.to_client), pipe.server_closed))
            .unwrap_or((Vec::new(), true));
        let total = bytes.len();
        self.unread.extend_from_slice(&bytes);
        if closed {
            // Everything the shard wrote before closing is read: the end of the stream.
            self.closed = true;
            self.close();
        }
        let unread = std::mem::take(&mut self.unread);
        let mut at = 0;
        while let Some((f, used)) = frame::decode(&unread[at..], 1 << 20).map_err(|e| format!("bad frame: {e:?}"))? {
            self.frame(f.op, f.seq, f.body, step, oracle)?;
            at += used;
        }
        self.unread = unread[at..].to_vec();
        Ok(total)
    }

    fn frame(&mut self, op: i32, seq: i32, body: &[u8], step: u64, oracle: &mut Oracle) -> Result<(), String> {
        self.frames_read += 1;
        match op {
            op::AUTH_REPLY => {
                self.authed_at = Some(step);
                let room = self.changes_asked.remove(0);
                if !self.positions && !room.is_empty() {
                    self.membership = Membership::In { room, since: step, next: None };
                }
                Ok(())
            }
            op::CHANGE_ROOM_REPLY => {
                let asked = if self.changes_asked.is_empty() { String::new() } else { self.changes_asked.remove(0) };
                let answered = String::from_utf8_lossy(body).into_owned();
                if asked != answered {
                    return Err(format!("op 13 for {answered:?}, asked for {asked:?}"));
                }
                self.membership = match (answered.is_empty(), self.positions) {
                    (true, _) => Membership::None,
                    (false, true) => Membership::AwaitingPosition(answered),
                    (false, false) => Membership::In { room: answered, since: step, next: None },
                };
                Ok(())
            }
            op::POSITION => oracle.position(self, body, step),
            op::RAW => {
                let mut at = 0;
                while let Some((f, used)) = frame::decode(&body[at..], 1 << 20).map_err(|e| format!("{e:?}"))? {
                    self.frame(f.op, f.seq, f.body, step, oracle)?;
                    at += used;
                }
                Ok(())
            }
            super::OP => oracle.push(self, seq, body),
            other => Err(format!("unexpected op {other}")),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.gone() {
            self.close();
        }
    }
}
