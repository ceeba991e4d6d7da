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

use crate::conn::conns::ConnRef;
use crate::order::sequencer::HistoryPage;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// The weight of a fresh ticket. Each split divides it; a push splits at
/// most twice (API shard → directory or sequencer → member shards) over at
/// most 256 shards, so a share never falls below 2^46.
pub const FULL_WEIGHT: u64 = 1 << 62;

/// The id no ticket has (ids start at 1): an `Ack` for nothing.
const NO_TICKET: u64 = 0;

/// A share of a ticket, carried by a push message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The node holding the ticket: `None` for this one (the share comes
    /// back over the mesh), else its name (over the bus).
    pub node: Option<Arc<str>>,
    /// The shard holding the ticket.
    pub shard: u16,
    pub id: u64,
    pub weight: u64,
    /// When the API request was whole (`latency::now_us`): the shards that
    /// deliver the push time it from here.
    pub started_us: u64,
}

impl Ack {
    /// No ticket to return to: a push that reached this shard over the bus,
    /// whose sender learns it was delivered another way (the server's PONG,
    /// or the sequencer's reply). Confirming it does nothing.
    pub fn none(started_us: u64) -> Ack {
        Ack { node: None, shard: 0, id: NO_TICKET, weight: 0, started_us }
    }

    pub fn is_none(&self) -> bool {
        self.id == NO_TICKET
    }

    /// Splits this share into `parts` shares whose weights add up to it.
    pub fn split(self, parts: usize) -> impl Iterator<Item = Ack> {
        assert!(parts >= 1, "an ack split into no parts would be lost");
        assert!(
            self.is_none() || self.weight >= parts as u64,
            "ack weight {} too small for {parts} parts",
            self.weight
        );
        let share = self.weight / parts as u64; // 0 for no ticket: every part is none
        let first = self.weight - share * (parts as u64 - 1);
        (0..parts).map(move |i| Ack { weight: if i == 0 { first } else { share }, ..self.clone() })
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

/// Who a ticket answers when all its weight is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// An API request, waiting in `Wait`.
    Reply,
    /// A connection's registration: the directory shards (and, clustered,
    /// the bus server) confirmed its key and mid, so its held auth reply
    /// may leave (`Tickets::take_released`).
    Release(ConnRef),
}

struct Ticket {
    weight_left: u64,
    page: Option<Box<HistoryPage>>,
    failed: Option<&'static str>,
    waker: Option<Waker>,
    settle: Settle,
    /// Waits for an answer from another node (`expect_remote`).
    remote: bool,
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
    /// Connections whose registration ticket completed, to be released by
    /// the shard once no borrow of the tickets is held.
    released: Vec<ConnRef>,
}

impl Tickets {
    /// Opens a ticket for an API request; returns its id.
    pub fn open(&mut self) -> u64 {
        self.open_for(Settle::Reply)
    }

    /// Opens a ticket for `conn`'s registration: once its weight is back
    /// (or it failed: the bus went down, and then nothing waits for it),
    /// `conn` is in `take_released`.
    pub fn open_release(&mut self, conn: ConnRef) -> u64 {
        self.open_for(Settle::Release(conn))
    }

    fn open_for(&mut self, settle: Settle) -> u64 {
        if self.open.is_empty() {
            self.base += 1;
        }
        let id = self.base + self.open.len() as u64;
        let ticket = Ticket { weight_left: FULL_WEIGHT, page: None, failed: None, waker: None, settle, remote: false };
        self.open.push_back(Some(ticket));
        self.live += 1;
        id
    }

    /// The connections whose registration completed since the last call.
    pub fn take_released(&mut self) -> Vec<ConnRef> {
        std::mem::take(&mut self.released)
    }

    /// A registration ticket that is done ends here (nobody polls it).
    fn settle_if_done(&mut self, id: u64) {
        let release = match self.get_mut(id) {
            Some(ticket) if ticket.done() => match ticket.settle {
                Settle::Release(conn) => Some(conn),
                Settle::Reply => {
                    ticket.wake();
                    None
                }
            },
            _ => None,
        };
        if let Some(conn) = release {
            self.remove(id);
            self.released.push(conn);
        }
    }

    /// Ticket `id` waits for a reply from another node (a sequencer's
    /// `Confirms`, `Page` or `Failed`): only such a ticket takes one
    /// (`answered_remotely`), and a lost bus fails it (`take_remote`).
    pub fn expect_remote(&mut self, id: u64) {
        if let Some(ticket) = self.get_mut(id) {
            ticket.remote = true;
        }
    }

    /// A reply from another node names ticket `id`: whether the ticket
    /// waits for one, taken once (a reply nobody expects, or a second one,
    /// is refused, so the bus cannot complete a ticket that waits on this
    /// node's shards).
    pub fn answered_remotely(&mut self, id: u64) -> bool {
        self.get_mut(id).is_some_and(|ticket| std::mem::replace(&mut ticket.remote, false))
    }

    /// The bus is gone: the tickets waiting for another node, no longer
    /// waiting (the caller fails them).
    pub fn take_remote(&mut self) -> Vec<u64> {
        let base = self.base;
        let mut waiting = Vec::new();
        for (index, ticket) in self.open.iter_mut().enumerate() {
            if let Some(ticket) = ticket.as_mut().filter(|t| t.remote) {
                ticket.remote = false;
                waiting.push(base + index as u64);
            }
        }
        waiting
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
        // More than it lent can only come from another node (the mesh
        // returns exactly what it was given): a confused or hostile peer,
        // whose confirmation is dropped.
        if weight > ticket.weight_left {
            crate::log_warn!("ticket {id}: a confirmation for more than it lent was dropped");
            return;
        }
        ticket.weight_left -= weight;
        if page.is_some() {
            ticket.page = page;
        }
        self.settle_if_done(id);
    }

    /// Ends ticket `id` with a failure: its reply says `why` (code -500).
    /// Credits that arrive later are applied to nothing harmful. Returns
    /// true when it was a registration (released, not a failed request).
    pub fn fail(&mut self, id: u64, why: &'static str) -> bool {
        let Some(ticket) = self.get_mut(id) else { return false };
        ticket.failed.get_or_insert(why);
        let registration = ticket.settle != Settle::Reply;
        self.settle_if_done(id);
        registration
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
        let root = Ack { node: None, shard: 0, id: 1, weight: FULL_WEIGHT, started_us: 0 };
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
        let parts: Vec<Ack> = Ack { node: None, shard: 0, id, weight: FULL_WEIGHT, started_us: 0 }.split(2).collect();
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
    fn a_registration_is_released_once_every_share_is_back_or_it_failed() {
        let mut tickets = Tickets::default();
        let conn = ConnRef { shard: 0, slot: 3, generation: 1 };
        let id = tickets.open_release(conn);
        let shares: Vec<Ack> = Ack { node: None, shard: 0, id, weight: FULL_WEIGHT, started_us: 0 }.split(3).collect();
        tickets.credit(id, shares[0].weight, None);
        tickets.credit(id, shares[1].weight, None);
        assert!(tickets.take_released().is_empty(), "one share is still out");
        tickets.credit(id, shares[2].weight, None);
        assert_eq!(tickets.take_released(), vec![conn]);
        assert!(tickets.is_empty(), "a released registration holds no ticket");
        let other = ConnRef { shard: 0, slot: 4, generation: 1 };
        let id = tickets.open_release(other);
        assert!(tickets.fail(id, "bus down"), "a failed registration says so");
        assert_eq!(tickets.take_released(), vec![other], "and is released: its connection goes on");
    }

    #[test]
    fn only_a_ticket_waiting_for_another_node_takes_its_reply_once() {
        let mut tickets = Tickets::default();
        let local = tickets.open();
        assert!(!tickets.answered_remotely(local), "a reply nobody asked for does nothing");
        let remote = tickets.open();
        tickets.expect_remote(remote);
        assert_eq!(tickets.take_remote(), vec![remote]);
        assert!(!tickets.answered_remotely(remote), "taken for failing: no longer waits");
        let again = tickets.open();
        tickets.expect_remote(again);
        assert!(tickets.answered_remotely(again));
        tickets.credit(again, FULL_WEIGHT, None);
        assert!(!tickets.answered_remotely(again), "a second reply does nothing");
        assert!(matches!(tickets.take_if_done(again), Some(Answer::Done)));
        assert!(tickets.take_if_done(local).is_none());
    }

    #[test]
    fn a_failed_or_completed_ticket_ends_at_once_and_ignores_late_credits() {
        let mut tickets = Tickets::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let failed = tickets.open();
        let half: Vec<Ack> =
            Ack { node: None, shard: 0, id: failed, weight: FULL_WEIGHT, started_us: 0 }.split(2).collect();
        tickets.credit(failed, half[0].weight, None);
        tickets.fail(failed, "bus down");
        tickets.credit(failed, half[1].weight, None);
        assert!(matches!(tickets.poll(failed, &mut cx), Poll::Ready(Answer::Failed("bus down"))));
        let remote = tickets.open();
        tickets.credit(remote, FULL_WEIGHT, None);
        // A duplicate completion from the network cannot trip the weight invariant.
        tickets.credit(remote, FULL_WEIGHT, None);
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
