//! Simulated business back ends: each is one API connection on one shard.
//! A sequential publisher sends its next push only once the reply to the
//! last one has come; a pipelined one sends many, started as the API's
//! connection loop starts them: requests of one class together, a request
//! of another class only once every one in flight was answered
//! (`api::endpoints::Request::class`, the rule the real loop applies).

use super::oracle::Oracle;
use crate::api::endpoints::{Class, Request};
use crate::order::tickets::{Answer, Wait};
use crate::shard::Shard;
use std::collections::VecDeque;
use std::rc::Rc;

/// Requests one pipelined connection has in flight at most (the API's own
/// bound is larger; a small one makes class changes and waits frequent).
const IN_FLIGHT_MAX: usize = 8;

#[derive(Debug, Clone)]
pub enum Kind {
    Room(String),
    Keys(Vec<String>),
    Mids(Vec<i64>),
    All,
    /// Not a push: a history read (`GET /goim/room/history`), checked
    /// against the offsets clients saw.
    History(String),
}

impl Kind {
    fn request(&self) -> Request {
        match self {
            Kind::Room(room) => Request::Room { room: room.clone(), op: super::OP },
            Kind::Keys(keys) => Request::Keys { keys: keys.clone(), op: super::OP },
            Kind::Mids(mids) => Request::Mids { mids: mids.clone(), op: super::OP },
            Kind::All => Request::All { op: super::OP, speed: 0 },
            Kind::History(room) => Request::History { room: room.clone(), since: 0, limit: 100 },
        }
    }
}

pub struct Publisher {
    pub index: usize,
    pub pipelined: bool,
    /// The shard its API connection reached.
    shard: usize,
    planned: VecDeque<Kind>,
    /// (push id, or the room of a history read; its ticket) in request order.
    in_flight: VecDeque<(InFlight, Wait)>,
    class: Option<Class>,
}

impl Publisher {
    pub fn new(index: usize, pipelined: bool, shard: usize) -> Publisher {
        Publisher { index, pipelined, shard, planned: VecDeque::new(), in_flight: VecDeque::new(), class: None }
    }

    /// Wants to send `kind` next (a sequential publisher plans one at a time).
    pub fn plan(&mut self, kind: Kind) {
        if self.pipelined || (self.planned.is_empty() && self.in_flight.is_empty()) {
            self.planned.push_back(kind);
        }
    }

    pub fn busy(&self) -> bool {
        !self.planned.is_empty() || !self.in_flight.is_empty()
    }

    /// Starts the planned pushes the rules allow now.
    pub fn start_what_it_may(&mut self, shards: &[Rc<Shard>], oracle: &mut Oracle, step: u64) {
        let shard = &shards[self.shard];
        while let Some(kind) = self.planned.front() {
            let request = kind.request();
            let class = request.class(shard);
            let allowed = if self.pipelined {
                self.in_flight.is_empty() || (self.class == Some(class) && self.in_flight.len() < IN_FLIGHT_MAX)
            } else {
                self.in_flight.is_empty()
            };
            if !allowed {
                return;
            }
            let Some(kind) = self.planned.pop_front() else { return };
            self.class = Some(class);
            let (ack, wait) = Shard::open_ticket(shard);
            if let Kind::History(room) = &kind {
                shard.query_history(room, 0, 100, ack);
                self.in_flight.push_back((InFlight::History(room.clone()), wait));
                continue;
            }
            let pipeline = self.pipelined.then_some(self.index);
            let id = oracle.sent(kind.clone(), step, pipeline);
            // `p<id>`, padded to 1-2,400 bytes so that a stalled reader fills
            // its socket and then its outbox within a few dozen pushes.
            let mut body = format!("p{id} ");
            body.extend(std::iter::repeat_n('.', (id * 7919 % 2400) as usize));
            match &kind {
                Kind::Room(room) => shard.push_room(room, super::OP, body.as_bytes(), ack),
                Kind::Keys(keys) => shard.push_keys(keys.clone(), super::OP, body.as_bytes(), ack),
                Kind::Mids(mids) => shard.push_mids(mids.clone(), super::OP, body.as_bytes(), ack),
                Kind::All => shard.push_all(super::OP, body.as_bytes(), 0, ack),
                Kind::History(_) => {}
            }
            self.in_flight.push_back((InFlight::Push(id), wait));
        }
    }

    /// Takes the answers that came (the real loop awaits them in order; an
    /// answer that came counts from the step it came in).
    pub fn settle(&mut self, oracle: &mut Oracle, step: u64) {
        for (what, wait) in &mut self.in_flight {
            match what {
                InFlight::Push(id) if !oracle.is_acked(*id) => match wait.ready() {
                    Some(Answer::Done) => oracle.acked(*id, step),
                    Some(other) => oracle.fail(format!("push {id} answered {:?}", answer_name(&other))),
                    None => {}
                },
                InFlight::History(room) => match wait.ready() {
                    Some(Answer::History(page)) => {
                        oracle.history(room, &page);
                        *what = InFlight::Answered;
                    }
                    Some(other) => oracle.fail(format!("history of {room} answered {:?}", answer_name(&other))),
                    None => {}
                },
                _ => {}
            }
        }
        let done = |what: &InFlight| match what {
            InFlight::Push(id) => oracle.is_acked(*id),
            InFlight::History(_) => false,
            InFlight::Answered => true,
        };
        while self.in_flight.front().is_some_and(|(what, _)| done(what)) {
            self.in_flight.pop_front();
        }
    }
}

/// What a request in flight was.
enum InFlight {
    Push(u64),
    History(String),
    /// A history read whose page came (and was checked).
    Answered,
}

fn answer_name(answer: &Answer) -> &'static str {
    match answer {
        Answer::Done => "done",
        Answer::History(_) => "a history page",
        Answer::Failed(why) => why,
    }
}
