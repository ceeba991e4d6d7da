//! Confirmations: how the shard that took an API request learns that its
//! push has been applied by every shard it had to reach.
//!
//! A request opens a ticket holding `FULL_WEIGHT`. Every push message
//! carries an `Ack` with a share of that weight; a shard that forwards the
//! push splits its share among the messages it sends on (keeping one part),
//! and returns its own part once it has applied the push to its local
//! order (a room's pending list or an outbox). The ticket completes when
//! all the weight has come back, whatever path and order the parts took:
//! no shard has to know in advance how many hops a push will make.
//!
//! A push that has been applied on a shard cannot be overtaken there by
//! one applied later (outboxes and room lists are FIFO, and the flusher
//! writes pending room pushes before anything queued after them), so the
//! HTTP reply, sent when the ticket completes, is the ordering point that
//! positions.md section 1 promises to sequential publishers.
//!
//! Owns: the ticket table of this shard. Must never: complete a ticket
//! before all its weight is back, or keep a ticket whose waiter is gone.

use super::sequencer::HistoryPage;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The weight of a fresh ticket. Each split divides it; a push splits at
/// most twice (API shard → directory or sequencer → member shards) over at
/// most 256 shards, so a share never falls below 2^46.
pub const FULL_WEIGHT: u64 = 1 << 62;

/// A share of a ticket, carried by a push message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The shard holding the ticket.
    pub shard: u16,
    pub id: u64,
    pub weight: u64,
}

impl Ack {
    /// Splits this share into `parts` shares whose weights add up to it.
    pub fn split(self, parts: usize) -> impl Iterator<Item = Ack> {
        assert!(parts >= 1, "an ack split into no parts would be lost");
        assert!(self.weight >= parts as u64, "ack weight {} too small for {parts} parts", self.weight);
        let share = self.weight / parts as u64;
        let first = self.weight - share * (parts as u64 - 1);
        (0..parts).map(move |i| Ack { weight: if i == 0 { first } else { share }, ..self })
    }
}

/// What a completed ticket carries besides "done".
#[derive(Debug)]
pub enum Answer {
    Done,
    History(Box<HistoryPage>),
}

struct Ticket {
    weight_left: u64,
    page: Option<Box<HistoryPage>>,
    waker: Option<Waker>,
}

/// Ticket ids are sequential numbers made here, not input: a multiply is
/// hash enough (SipHash would cost more than the rest of a lookup).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | *byte as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The tickets of one shard's API requests.
#[derive(Default)]
pub struct Tickets {
    open: HashMap<u64, Ticket, std::hash::BuildHasherDefault<IdHasher>>,
    next_id: u64,
}

impl Tickets {
    /// Opens a ticket; returns its id.
    pub fn open(&mut self) -> u64 {
        self.next_id += 1;
        self.open.insert(self.next_id, Ticket { weight_left: FULL_WEIGHT, page: None, waker: None });
        self.next_id
    }

    /// Returns `weight` to ticket `id` (and a history page, if any). A
    /// ticket whose waiter has gone is ignored.
    pub fn credit(&mut self, id: u64, weight: u64, page: Option<Box<HistoryPage>>) {
        let Some(ticket) = self.open.get_mut(&id) else { return };
        assert!(weight <= ticket.weight_left, "ticket {id} credited more than it lent");
        ticket.weight_left -= weight;
        if page.is_some() {
            ticket.page = page;
        }
        if ticket.weight_left == 0 {
            if let Some(waker) = ticket.waker.take() {
                waker.wake();
            }
        }
    }

    fn poll(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<Answer> {
        let Some(ticket) = self.open.get_mut(&id) else { return Poll::Ready(Answer::Done) };
        if ticket.weight_left > 0 {
            ticket.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let ticket = self.open.remove(&id).expect("present above");
        Poll::Ready(match ticket.page {
            Some(page) => Answer::History(page),
            None => Answer::Done,
        })
    }

    /// The answer of ticket `id` if all its weight is back, without waiting.
    fn take_if_done(&mut self, id: u64) -> Option<Answer> {
        if self.open.get(&id).is_some_and(|ticket| ticket.weight_left > 0) {
            return None;
        }
        let ticket = self.open.remove(&id)?;
        Some(match ticket.page {
            Some(page) => Answer::History(page),
            None => Answer::Done,
        })
    }

    fn forget(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Tickets waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Waits for one ticket of the current shard. Dropping it forgets the ticket.
pub struct Wait {
    pub(crate) shard: Rc<super::Shard>,
    pub(crate) id: u64,
}

impl Wait {
    /// The answer if the ticket is complete already (a push that stayed on
    /// this shard is): no timer, no task switch.
    pub fn ready(&self) -> Option<Answer> {
        self.shard.tickets.borrow_mut().take_if_done(self.id)
    }
}

impl Future for Wait {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        self.shard.tickets.borrow_mut().poll(self.id, cx)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.shard.tickets.borrow_mut().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_add_up_whatever_the_path() {
        let root = Ack { shard: 0, id: 1, weight: FULL_WEIGHT };
        let mut returned = 0u64;
        for first in root.split(3) {
            for second in first.split(7) {
                returned += second.weight;
            }
        }
        assert_eq!(returned, FULL_WEIGHT);
    }

    #[test]
    fn a_ticket_completes_only_when_all_weight_is_back() {
        let mut tickets = Tickets::default();
        let id = tickets.open();
        let parts: Vec<Ack> = Ack { shard: 0, id, weight: FULL_WEIGHT }.split(2).collect();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        tickets.credit(id, parts[1].weight, None);
        assert!(tickets.poll(id, &mut cx).is_pending());
        tickets.credit(id, parts[0].weight, None);
        assert!(matches!(tickets.poll(id, &mut cx), Poll::Ready(Answer::Done)));
        assert!(tickets.is_empty());
        // A late credit for a forgotten ticket is ignored.
        tickets.credit(id, 1, None);
    }
}
