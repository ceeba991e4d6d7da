//! The clustered half of the simulation: the shards of every node join
//! the simulated nats-server (`nats`), the nodes learn of each other from
//! their reports, and a step may let the server process one operation or
//! hand one message to a shard.

use super::World;
use std::sync::Arc;

impl World {
    /// Clustered: every shard connects to the simulated server, and the
    /// nodes exchange reports until each knows all the others (as the
    /// cluster tests wait for before they push).
    pub(super) fn join_the_bus(&mut self) -> Result<(), String> {
        self.set_clocks();
        if self.nats.is_none() {
            return Ok(());
        }
        for (index, shard) in self.shards.iter().enumerate() {
            let Some(bus) = &shard.bus else { continue };
            let mut hello = Vec::new();
            bus.on_connect(&format!("sim shard {index}"), Some(1 << 20), shard.now_ms(), &mut hello);
            bus.set_connected(true);
            if let Some(nats) = &mut self.nats {
                nats.push_raw(index, &hello);
            }
            shard.on_bus_connected();
        }
        let nodes = self.first_of_node.len();
        for _ in 0..20 {
            self.settle_bus()?;
            let known = self
                .shards
                .iter()
                .all(|s| s.bus.as_ref().is_some_and(|b| b.nodes.borrow().others().count() + 1 == nodes));
            if known {
                return Ok(());
            }
            for first in self.first_of_node.clone() {
                self.shards[first].publish_report();
            }
        }
        Err(format!("the {nodes} nodes did not learn of each other from 20 rounds of reports"))
    }

    /// Runs the simulated server and the shards' bus reads to a standstill.
    pub(super) fn settle_bus(&mut self) -> Result<bool, String> {
        let mut moved = false;
        loop {
            self.collect_bus();
            let Some(nats) = &mut self.nats else { return Ok(moved) };
            let (input, output) = nats.busy();
            if input.is_empty() && output.is_empty() {
                return Ok(moved);
            }
            moved = true;
            for conn in input {
                while nats.busy().0.contains(&conn) {
                    nats.process_one(conn)?;
                }
            }
            for conn in output {
                while nats.busy().1.contains(&conn) {
                    nats.deliver_one(conn, &self.shards[conn]);
                }
            }
        }
    }

    /// Takes what every shard's bus queued (their write loops).
    fn collect_bus(&mut self) {
        let Some(nats) = &mut self.nats else { return };
        for (index, shard) in self.shards.iter().enumerate() {
            nats.collect(index, shard);
        }
    }

    /// The simulated server processes one operation of one connection, or
    /// hands one message to one shard.
    pub(super) fn bus_step(&mut self) -> Result<(), String> {
        self.collect_bus();
        let Some(nats) = &mut self.nats else { return Ok(()) };
        let (input, output) = nats.busy();
        let process = !input.is_empty() && (output.is_empty() || self.rng.next().is_multiple_of(2));
        if process {
            let conn = input[(self.rng.next() % input.len() as u64) as usize];
            nats.process_one(conn)
        } else if !output.is_empty() {
            let conn = output[(self.rng.next() % output.len() as u64) as usize];
            nats.deliver_one(conn, &self.shards[conn]);
            Ok(())
        } else {
            Ok(())
        }
    }

    /// The room's epoch and last offset at its sequencer, wherever that is.
    pub(super) fn room_position(&self, room: &str) -> Option<(Arc<str>, u32)> {
        let at = self.shards[0].placement().sequencer(room);
        let node = match (&at.node, self.node_of[0]) {
            (None, here) => here,
            (Some(name), _) => name.strip_prefix('n')?.parse().ok()?,
        };
        let shard = &self.shards[*self.first_of_node.get(node)? + at.shard];
        let position = shard.sequencer.borrow().position_of(room);
        position
    }
}
