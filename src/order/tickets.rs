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
//! docs/positions.md section 1 promises to sequential publishers.
//!
//! Owns: the ticket table of this shard. Must never: complete a ticket
//! before all its weight is back, or keep a ticket whose waiter is gone.

use crate::order::sequencer::HistoryPage;
use std::cell::RefCell;
use std::collections::VecDeque;
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
    /// When the API request was whole (`latency::now_us`): the shards that
    /// deliver the push time it from here.
    pub started_us: u64,
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
    /// The push could not be handed on (the cluster bus is down, say): why.
    Failed(&'static str),
}

struct Ticket {
    weight_left: u64,
    page: Option<Box<HistoryPage>>,
    failed: Option<&'static str>,
    waker: Option<Waker>,
}

impl Ticket {
    fn answer(self) -> Answer {
        match (self.failed, self.page) {
            (Some(why), _) => Answer::Failed(why),
            (None, Some(page)) => Answer::History(page),
            (None, None) => Answer::Done,
        }
    }

    fn done(&self) -> bool {
        self.weight_left == 0 || self.failed.is_some()
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The tickets of one shard's API requests: a window over sequential ids
/// (ids are made here, and tickets end roughly in the order they opened), so
/// a lookup is an index, not a hash.
#[derive(Default)]
pub struct Tickets {
    /// Tickets `base`, `base + 1`, ...; `None` once ended.
    open: VecDeque<Option<Ticket>>,
    base: u64,
    live: usize,
}

impl Tickets {
    /// Opens a ticket; returns its id.
    pub fn open(&mut self) -> u64 {
        if self.open.is_empty() {
            self.base += 1;
        }
        let id = self.base + self.open.len() as u64;
        self.open.push_back(Some(Ticket { weight_left: FULL_WEIGHT, page: None, failed: None, waker: None }));
        self.live += 1;
        id
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Ticket> {
        let index = id.checked_sub(self.base)?;
        self.open.get_mut(usize::try_from(index).ok()?)?.as_mut()
    }

    fn remove(&mut self, id: u64) -> Option<Ticket> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let ticket = self.open.get_mut(index)?.take()?;
        self.live -= 1;
        while matches!(self.open.front(), Some(None)) {
            self.open.pop_front();
            self.base += 1;
        }
        Some(ticket)
    }

    /// Returns `weight` to ticket `id` (and a history page, if any). A
    /// ticket whose waiter has gone is ignored.
    pub fn credit(&mut self, id: u64, weight: u64, page: Option<Box<HistoryPage>>) {
        let Some(ticket) = self.get_mut(id) else { return };
        if ticket.failed.is_some() {
            return;
        }
        assert!(weight <= ticket.weight_left, "ticket {id} credited more than it lent");
        ticket.weight_left -= weight;
        if page.is_some() {
            ticket.page = page;
        }
        if ticket.weight_left == 0 {
            ticket.wake();
        }
    }

    /// Completes ticket `id` whatever weight is out: its push was handed to
    /// the cluster bus whole (a reply from another node, or the server's
    /// PONG). Idempotent, so a duplicate from the network cannot trip the
    /// weight invariant of `credit`.
    pub fn complete(&mut self, id: u64) {
        self.complete_with(id, None);
    }

    pub fn complete_with(&mut self, id: u64, page: Option<Box<HistoryPage>>) {
        let Some(ticket) = self.get_mut(id) else { return };
        ticket.weight_left = 0;
        if page.is_some() {
            ticket.page = page;
        }
        ticket.wake();
    }

    /// Ends ticket `id` with a failure: its reply says `why` (code -500).
    /// Credits that arrive later are applied to nothing harmful.
    pub fn fail(&mut self, id: u64, why: &'static str) {
        let Some(ticket) = self.get_mut(id) else { return };
        ticket.failed.get_or_insert(why);
        ticket.wake();
    }

    fn poll(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<Answer> {
        let Some(ticket) = self.get_mut(id) else { return Poll::Ready(Answer::Done) };
        if !ticket.done() {
            ticket.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(self.remove(id).expect("present above").answer())
    }

    /// The answer of ticket `id` if all its weight is back, without waiting.
    fn take_if_done(&mut self, id: u64) -> Option<Answer> {
        if self.get_mut(id).is_some_and(|ticket| !ticket.done()) {
            return None;
        }
        self.remove(id).map(Ticket::answer)
    }

    fn forget(&mut self, id: u64) {
        self.remove(id);
    }

    /// Tickets waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// Waits for one ticket of the current shard. Dropping it forgets the ticket.
pub struct Wait {
    pub(crate) tickets: Rc<RefCell<Tickets>>,
    pub(crate) id: u64,
}

impl Wait {
    /// The answer if the ticket is complete already (a push that stayed on
    /// this shard is): no timer, no task switch.
    pub fn ready(&self) -> Option<Answer> {
        self.tickets.borrow_mut().take_if_done(self.id)
    }
}

impl Future for Wait {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        self.tickets.borrow_mut().poll(self.id, cx)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.tickets.borrow_mut().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_add_up_whatever_the_path() {
        let root = Ack { shard: 0, id: 1, weight: FULL_WEIGHT, started_us: 0 };
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
        let parts: Vec<Ack> = Ack { shard: 0, id, weight: FULL_WEIGHT, started_us: 0 }.split(2).collect();
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

    #[test]
    fn a_failed_or_completed_ticket_ends_at_once_and_ignores_late_credits() {
        let mut tickets = Tickets::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let failed = tickets.open();
        let half: Vec<Ack> = Ack { shard: 0, id: failed, weight: FULL_WEIGHT, started_us: 0 }.split(2).collect();
        tickets.credit(failed, half[0].weight, None);
        tickets.fail(failed, "bus down");
        tickets.credit(failed, half[1].weight, None);
        assert!(matches!(tickets.poll(failed, &mut cx), Poll::Ready(Answer::Failed("bus down"))));
        let remote = tickets.open();
        tickets.complete(remote);
        // A duplicate completion from the network cannot trip the weight invariant.
        tickets.complete(remote);
        assert!(matches!(tickets.take_if_done(remote), Some(Answer::Done)));
        assert!(tickets.is_empty());
    }

    #[test]
    fn tickets_ending_out_of_order_keep_their_ids() {
        let mut tickets = Tickets::default();
        let ids: Vec<u64> = (0..4).map(|_| tickets.open()).collect();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        tickets.credit(ids[2], FULL_WEIGHT, None);
        assert!(matches!(tickets.poll(ids[2], &mut cx), Poll::Ready(Answer::Done)));
        tickets.forget(ids[0]);
        assert!(tickets.poll(ids[1], &mut cx).is_pending(), "ticket 1 is still open");
        tickets.credit(ids[1], FULL_WEIGHT, None);
        tickets.credit(ids[3], FULL_WEIGHT - 1, None);
        assert!(matches!(tickets.take_if_done(ids[1]), Some(Answer::Done)));
        assert!(tickets.take_if_done(ids[3]).is_none());
        assert_eq!(tickets.len(), 1);
        tickets.credit(ids[3], 1, None);
        assert!(tickets.take_if_done(ids[3]).is_some());
        assert!(tickets.is_empty());
        let next = tickets.open();
        assert!(next > ids[3], "ids are never reused");
    }
}
