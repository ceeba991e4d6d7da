//! The one way a command leaves a shard, whichever transport carries it,
//! and the one way a ticket's share goes home.
//!
//! `send_to` takes a `Dest` from `route::placement`: a shard of this node
//! (applied at once when it is this one, else queued on the mesh), a shard
//! of another node (published on its subject), or a subject (published).
//! `send_planned` sends one push's parts with shares of its ticket: a part
//! for a shard carries its share; the parts published on subjects carry
//! none, and one share for all of them comes back once the bus server has
//! read them (`settle_after_bus`), so the reply is the ordering point on
//! both transports (docs/positions.md section 1).
//!
//! Must never: drop a share of a ticket: what cannot be sent fails its
//! ticket (the API answers -500) instead of leaving it to time out.

use crate::order::sequencer::HistoryPage;
use crate::order::tickets::Ack;
use crate::route::bus::BusError;
use crate::route::command::{Command, Dest};
use crate::route::placement::Plan;
use crate::shard::Shard;

impl Shard {
    /// Sends `command` to shard `peer` of this node; a command to this shard
    /// is applied at once. Callers must not hold a borrow of `state`.
    pub fn send(&self, peer: usize, command: Command) {
        if peer == self.id {
            self.apply(command);
        } else {
            self.outgoing.send(peer, command);
        }
    }

    /// Sends `command` to `dest`. On the bus it may fail (down, buffer
    /// full, past max_payload): the command is dropped and the caller
    /// decides what that means for the share it carried. A request to a
    /// shard of another node marks its ticket as waiting on the bus, so a
    /// lost bus fails it (`on_bus_disconnected`).
    pub fn send_to(&self, dest: Dest, command: Command) -> Result<(), BusError> {
        let subject = match dest {
            Dest::Shard { node: None, shard } => {
                self.send(shard, command);
                return Ok(());
            }
            Dest::Shard { node: Some(node), shard } => {
                let Some(bus) = &self.bus else { return Err(BusError::Down) };
                bus.subjects.shard(&node, shard)
            }
            Dest::Subject(subject) => subject,
        };
        let Some(bus) = &self.bus else { return Err(BusError::Down) };
        bus.publish(&subject, &command)?;
        if let Some(ack) = command.ack().filter(|ack| ack.node.is_none() && ack.shard as usize == self.id) {
            self.tickets.borrow_mut().expect_remote(ack.id);
        }
        Ok(())
    }

    /// Sends a request that carries its ticket's share (to a room's
    /// sequencer): a request the bus cannot take fails its ticket.
    pub fn send_request(&self, dest: Dest, command: Command) {
        let share = command.ack().cloned();
        if let (Err(error), Some(share)) = (self.send_to(dest, command), share) {
            self.fail_share(share, error);
        }
    }

    /// Sends each part of `plan` built by `build` with a share of `ack`
    /// (see the module doc); answers -500 when the plan could not reach
    /// every node, or a part could not be sent.
    pub fn send_planned<T>(&self, plan: Plan<T>, ack: Ack, build: impl Fn(T, Ack) -> Command) {
        let Plan { sends, unreachable } = plan;
        if let Some(error) = unreachable {
            // Still applied on this node (local delivery goes on); the
            // reply says the other nodes did not get it.
            self.fail_share(ack.clone(), error);
        }
        let subjects = sends.iter().filter(|(dest, _)| matches!(dest, Dest::Subject(_))).count();
        let published = subjects > 0;
        let parts = sends.len() - subjects + published as usize;
        if parts == 0 {
            return self.confirm(ack);
        }
        let started_us = ack.started_us;
        let mut shares = ack.split(parts);
        let bus_share = published.then(|| shares.next()).flatten();
        let mut failed = None;
        for (dest, part) in sends {
            match dest {
                // The mesh takes every command: no share to keep for a failure.
                Dest::Shard { node: None, shard } => {
                    let share = shares.next().expect("one share per part sent to a shard");
                    self.send(shard, build(part, share));
                }
                Dest::Subject(_) if failed.is_some() => {}
                Dest::Subject(_) => {
                    if let Err(error) = self.send_to(dest, build(part, Ack::none(started_us))) {
                        failed = Some(error);
                    }
                }
                remote => {
                    let share = shares.next().expect("one share per part sent to a shard");
                    self.send_request(remote, build(part, share));
                }
            }
        }
        match (bus_share, failed) {
            (Some(share), Some(error)) => self.fail_share(share, error),
            (Some(share), None) => self.settle_after_bus(share),
            (None, _) => {}
        }
    }

    /// Returns `share` once what this shard published before it is in the
    /// bus server's order: after the next PONG when its ticket is on this
    /// node; published behind it (on this shard's one socket) when the
    /// ticket is on another node.
    pub fn settle_after_bus(&self, share: Ack) {
        if share.node.is_some() {
            return self.confirm(share);
        }
        let result = match &self.bus {
            Some(bus) => bus.flush(share.clone()),
            None => Err(BusError::Down),
        };
        if let Err(error) = result {
            self.fail_share(share, error);
        }
    }

    /// Returns `ack` to its ticket: at once when it is this shard's, else
    /// with the next batch to its shard, or on the bus to its node.
    pub fn confirm(&self, ack: Ack) {
        self.confirm_with(ack, None);
    }

    pub fn confirm_with(&self, ack: Ack, page: Option<Box<HistoryPage>>) {
        if ack.is_none() {
            return;
        }
        let command = match (ack.node.clone(), page) {
            (None, page) if ack.shard as usize == self.id => {
                self.tickets.borrow_mut().credit(ack.id, ack.weight, page);
                return self.release_registered();
            }
            (None, None) => return self.outgoing.confirm(ack.shard as usize, ack.id, ack.weight),
            (_, Some(page)) => Command::Page { id: ack.id, weight: ack.weight, page },
            (Some(_), None) => Command::Confirms(vec![(ack.id, ack.weight)]),
        };
        let dest = Dest::Shard { node: ack.node, shard: ack.shard as usize };
        if let Err(error) = self.send_to(dest, command) {
            // The asker's ticket on the other node fails when its bus does,
            // or times out.
            crate::log_warn!("shard {}: an answer to another node was not sent: {}", self.id, error.reason());
        }
    }

    /// Fails ticket `id` of this shard with `error`, counted as a push the
    /// bus did not take. (A registration's ticket is only released: its
    /// connection goes on.)
    pub fn bus_refused(&self, id: u64, error: BusError) {
        let registration = self.tickets.borrow_mut().fail(id, error.reason());
        if registration {
            self.release_registered();
            return;
        }
        self.stats.borrow_mut().bus_pushes_failed += 1;
        crate::log_warn!("shard {}: push answered -500: {}", self.id, error.reason());
    }

    /// Fails the ticket `ack` is a share of, wherever it is.
    pub fn fail_share(&self, ack: Ack, error: BusError) {
        if ack.is_none() {
            return;
        }
        if ack.node.is_none() && ack.shard as usize == self.id {
            return self.bus_refused(ack.id, error);
        }
        self.stats.borrow_mut().bus_pushes_failed += 1;
        let dest = Dest::Shard { node: ack.node, shard: ack.shard as usize };
        if let Err(error) = self.send_to(dest, Command::Failed { id: ack.id, error }) {
            crate::log_warn!("shard {}: a failure for another node was not sent: {}", self.id, error.reason());
        }
    }

    /// A `Failed` for ticket `id` of this shard arrived.
    pub(crate) fn on_failed(&self, id: u64, error: BusError) {
        if self.tickets.borrow_mut().fail(id, error.reason()) {
            self.release_registered();
        }
    }
}
