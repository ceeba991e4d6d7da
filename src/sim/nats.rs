//! A simulated nats-server for the cluster runs: it reads what each shard's
//! bus queued (the real client protocol bytes: CONNECT, SUB, UNSUB, PUB,
//! PING), processes one connection's next operation at a time in an order
//! the seed picks, and queues MSG and PONG for each subscriber, handed to
//! the shard through the link's own handler when the seed says so.
//!
//! What it keeps of a real server, and the contract relies on: it processes
//! each connection's operations in the order they were written, and appends
//! to each subscriber's stream in the order it processed the publishes. It
//! loses and repeats nothing (core NATS does neither on a live connection).
//!
//! Must never: reorder one connection's input or one subscriber's output.

use crate::proto::nats::ServerOp;
use crate::shard::Shard;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

enum Out {
    Msg { subject: String, sid: u64, reply: Option<String>, payload: Vec<u8> },
    Pong,
}

#[derive(Default)]
pub struct NatsSim {
    /// Per connection (a shard's global index): bytes written, unprocessed.
    inbound: Vec<Vec<u8>>,
    /// Per connection: what the server sent, not yet read by the shard.
    outbound: Vec<VecDeque<Out>>,
    /// subject -> (connection, sid).
    subs: HashMap<String, Vec<(usize, u64)>>,
    /// Per connection: sid -> subject.
    sids: Vec<HashMap<u64, String>>,
    scratch: Vec<u8>,
}

impl NatsSim {
    pub fn new(connections: usize) -> NatsSim {
        NatsSim {
            inbound: vec![Vec::new(); connections],
            outbound: (0..connections).map(|_| VecDeque::new()).collect(),
            sids: vec![HashMap::new(); connections],
            ..NatsSim::default()
        }
    }

    /// Takes what `shard`'s bus queued (its write loop's turn).
    pub fn collect(&mut self, conn: usize, shard: &Shard) {
        let Some(bus) = &shard.bus else { return };
        bus.take_output(shard.now_ms(), false, &mut self.scratch);
        self.inbound[conn].extend_from_slice(&self.scratch);
    }

    /// Bytes a connection wrote outside its bus buffer (the handshake).
    pub fn push_raw(&mut self, conn: usize, bytes: &[u8]) {
        self.inbound[conn].extend_from_slice(bytes);
    }

    /// Connections with input to process / output to deliver.
    pub fn busy(&self) -> (Vec<usize>, Vec<usize>) {
        let input = (0..self.inbound.len()).filter(|c| !self.inbound[*c].is_empty()).collect();
        let output = (0..self.outbound.len()).filter(|c| !self.outbound[*c].is_empty()).collect();
        (input, output)
    }

    /// Processes the next operation `conn` wrote. Err: bytes no client
    /// of ours should write.
    pub fn process_one(&mut self, conn: usize) -> Result<(), String> {
        let input = &self.inbound[conn];
        let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") else {
            return Err(format!("connection {conn}: an operation without its line end"));
        };
        let line = String::from_utf8_lossy(&input[..line_end]).into_owned();
        let mut used = line_end + 2;
        let words: Vec<&str> = line.split(' ').collect();
        match words[0] {
            "CONNECT" | "PONG" => {}
            "PING" => self.outbound[conn].push_back(Out::Pong),
            "SUB" if words.len() == 3 => {
                let sid: u64 = words[2].parse().map_err(|_| format!("SUB with sid {:?}", words[2]))?;
                self.subs.entry(words[1].to_string()).or_default().push((conn, sid));
                self.sids[conn].insert(sid, words[1].to_string());
            }
            "UNSUB" if words.len() == 2 => {
                let sid: u64 = words[1].parse().map_err(|_| format!("UNSUB with sid {:?}", words[1]))?;
                if let Some(subject) = self.sids[conn].remove(&sid) {
                    if let Some(list) = self.subs.get_mut(&subject) {
                        list.retain(|entry| *entry != (conn, sid));
                    }
                }
            }
            "PUB" if words.len() == 3 || words.len() == 4 => {
                let len: usize = words[words.len() - 1].parse().map_err(|_| format!("PUB length in {line:?}"))?;
                let payload = input.get(used..used + len).ok_or("a PUB without its whole payload")?.to_vec();
                used += len + 2;
                let reply = (words.len() == 4).then(|| words[2].to_string());
                for (to, sid) in self.subs.get(words[1]).cloned().unwrap_or_default() {
                    let msg =
                        Out::Msg { subject: words[1].to_string(), sid, reply: reply.clone(), payload: payload.clone() };
                    self.outbound[to].push_back(msg);
                }
            }
            _ => return Err(format!("connection {conn}: unexpected operation {line:?}")),
        }
        let used = used.min(self.inbound[conn].len());
        self.inbound[conn].drain(..used);
        Ok(())
    }

    /// Hands `conn`'s next server operation to its shard (the link's read
    /// loop: `server::link::handle`).
    pub fn deliver_one(&mut self, conn: usize, shard: &Rc<Shard>) {
        let Some(out) = self.outbound[conn].pop_front() else { return };
        let op = match &out {
            Out::Msg { subject, sid, reply, payload } => ServerOp::Msg {
                subject: subject.as_bytes(),
                sid: *sid,
                reply: reply.as_deref().map(str::as_bytes),
                payload,
            },
            Out::Pong => ServerOp::Pong,
        };
        crate::server::link::handle(shard, op);
    }
}
