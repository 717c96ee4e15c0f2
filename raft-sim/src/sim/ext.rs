//! The driver's side of snapshots (paper section 7) and membership changes
//! (section 6): saving and restoring the key-value state machine, streaming
//! snapshot chunks over the simulated network, adding and retiring nodes,
//! and random membership changes for randomized runs.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{
    crc32c, Body, ConfigChangeError, Index, Input, Membership, Message, Node, NodeId, Restored, SnapshotMeta,
    Term, Topology, TransferError,
};
use rand::Rng;

use super::{Sim, SimNode};
use crate::checker::Property;
use crate::client::Reply;
use crate::disk::Disk;
use crate::kv::Kv;

/// What a leader said about a configuration change or a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigEvent {
    /// `Action::ConfigChangeCompleted`.
    Completed(Index),
    /// `Action::ConfigChangeFailed`.
    Failed(ConfigChangeError),
    /// `Action::TransferFailed`.
    TransferFailed(TransferError),
}

/// Snapshot and membership state of the simulation (driver side).
#[derive(Clone, Debug, Default)]
pub struct Ext {
    /// Per node index: the snapshot being received (memory only).
    incoming: BTreeMap<usize, Vec<u8>>,
    /// Per node index: CRC32C of its current snapshot, by snapshot index.
    crc: BTreeMap<usize, (Index, u32)>,
    /// Leaders' reports about configuration changes and transfers.
    pub config_events: Vec<(NodeId, ConfigEvent)>,
    /// Snapshots taken (SnapshotNeeded served).
    pub snapshots_taken: u64,
    /// Snapshot chunks sent.
    pub chunks_sent: u64,
    /// Snapshots installed (RestoreSnapshot served).
    pub snapshots_installed: u64,
    /// Bound on every node's in-memory log (`Property::LogBounded`).
    pub log_bound: Option<usize>,
    /// Longest in-memory log seen on any node.
    pub log_max: usize,
    /// Membership changes requested by the random driver.
    pub changes_requested: u64,
    /// ... and completed.
    pub changes_completed: u64,
    /// The random membership driver adds nodes up to this many in all.
    pub max_nodes: usize,
}

impl Ext {
    /// For a run with `opts`: with periodic snapshots, the in-memory log is
    /// bounded by the snapshot interval, the tail kept after a snapshot,
    /// and what a leader may hold uncommitted (plus a few messages' worth).
    pub fn new(opts: &super::SimOptions) -> Ext {
        let c = &opts.config;
        let log_bound = opts.plan.snapshot_entries_max.map(|_| {
            let uncommitted = c.uncommitted_bytes_max / crate::kv::ENCODED_LEN;
            (c.snapshot_entries_max + c.log_tail_entries) as usize
                + uncommitted
                + 2 * c.entries_per_message_max
        });
        Ext { log_bound, max_nodes: opts.nodes * 2, ..Ext::default() }
    }
}

/// A topology of the given voters and learners (addresses `n{id}`).
pub fn topology(voters: &[NodeId], learners: &[NodeId]) -> Topology {
    Topology {
        voters: voters.iter().map(|&id| (id, format!("n{id}"))).collect(),
        learners: learners.iter().map(|&id| (id, format!("n{id}"))).collect(),
    }
}

impl Sim {
    // ----- snapshots -----

    /// `SnapshotNeeded`: serialize the state machine (applied through
    /// `meta.index`), save it durably with `meta`, report `SnapshotTaken`.
    pub(super) fn take_snapshot(&mut self, i: usize, meta: SnapshotMeta) {
        let sn = &mut self.nodes[i];
        if sn.applied != meta.index {
            let detail =
                format!("node {} asked for a snapshot at {} but applied {}", i + 1, meta.index, sn.applied);
            self.checker.report(Property::ApplyOrder, detail);
            return;
        }
        let data = sn.kv.to_snapshot();
        let hash = sn.kv.state_hash();
        sn.disk.save_snapshot(&meta, data);
        self.checker.on_state(i, meta.index, hash, "snapshots");
        self.ext.snapshots_taken += 1;
        let index = meta.index;
        self.trace.record(self.now, 0x5a ^ index, || format!("{} snapshot at {index}", i + 1));
        self.step(i, Input::SnapshotTaken { index }, None);
    }

    /// `SendSnapshotChunk`: read the chunk from the saved snapshot and send it.
    pub(super) fn send_snapshot_chunk(
        &mut self,
        i: usize,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
    ) {
        let disk = &self.nodes[i].disk;
        if disk.snapshot().index != meta.index {
            return; // replaced by a newer one; the core restarts the transfer
        }
        let data = disk.snapshot_data().clone();
        let checksum = match self.ext.crc.get(&i) {
            Some(&(index, c)) if index == meta.index => c,
            _ => {
                let c = crc32c(0, &data);
                self.ext.crc.insert(i, (meta.index, c));
                c
            }
        };
        let start = (offset as usize).min(data.len());
        let end = (start + self.opts.config.bytes_per_message_max).min(data.len());
        let done = end == data.len();
        self.ext.chunks_sent += 1;
        let from = self.nodes[i].id;
        let body = Body::InstallSnapshot {
            meta: Box::new(meta),
            offset,
            data: data.slice(start..end),
            done,
            checksum,
        };
        self.send(Message { from, to, term, body });
    }

    /// `SnapshotChunk`: keep the bytes (in memory until restored).
    pub(super) fn snapshot_chunk(&mut self, i: usize, offset: u64, data: Bytes) {
        let buf = self.ext.incoming.entry(i).or_default();
        if offset == 0 {
            buf.clear();
        }
        buf.truncate(offset as usize);
        buf.extend_from_slice(&data);
    }

    /// `RestoreSnapshot`: replace the state machine and save the snapshot.
    pub(super) fn restore_snapshot(&mut self, i: usize, meta: SnapshotMeta) {
        let data = self.ext.incoming.remove(&i).unwrap_or_default();
        let kv = if data.is_empty() { Some(Kv::default()) } else { Kv::from_snapshot(&data) };
        let Some(kv) = kv else {
            let detail = format!("node {} got an unreadable snapshot at {}", i + 1, meta.index);
            return self.checker.report(Property::StateMachineSafety, detail);
        };
        self.checker.on_state(i, meta.index, kv.state_hash(), "restores a snapshot");
        self.checker.on_restore_applied(i, meta.index);
        self.ext.snapshots_installed += 1;
        let index = meta.index;
        self.trace.record(self.now, 0x5b ^ index, || format!("{} restores snapshot at {index}", i + 1));
        let sn = &mut self.nodes[i];
        sn.kv = kv;
        sn.applied = meta.index;
        sn.disk.save_snapshot(&meta, Bytes::from(data));
        let gone: Vec<Index> = sn.waiting.range(..=meta.index).map(|(&k, _)| k).collect();
        for k in gone {
            if let Some((client, serial, _)) = self.nodes[i].waiting.remove(&k) {
                self.reply(client, serial, Reply::Lost);
            }
        }
    }

    /// After a step: the log-length bound.
    pub(super) fn check_log_bound(&mut self, i: usize) {
        let Some(len) = self.nodes[i].node.as_ref().map(Node::log_entries) else { return };
        self.ext.log_max = self.ext.log_max.max(len);
        if let Some(bound) = self.ext.log_bound {
            if len > bound {
                let detail = format!("node {} holds {len} log entries (bound {bound})", i + 1);
                self.checker.report(Property::LogBounded, detail);
            }
        }
    }

    // ----- membership -----

    /// Snapshot and membership counters and reports.
    pub fn ext(&self) -> &Ext {
        &self.ext
    }

    /// Sets the bound of `Property::LogBounded`.
    pub fn set_log_bound(&mut self, bound: Option<usize>) {
        self.ext.log_bound = bound;
    }

    /// Starts a new, empty node (`Restored::joining()`) with the next id and
    /// connects it to everyone; returns its id.
    pub fn add_node(&mut self) -> NodeId {
        let id = self.nodes.len() as NodeId + 1;
        self.nodes.push(SimNode {
            id,
            tick_us: self.opts.tick_ms * 1000,
            disk: Disk::from_restored(&Restored::joining()),
            ..SimNode::default()
        });
        self.net.grow(self.nodes.len());
        self.checker.add_node();
        self.trace.record(self.now, 0xa0 ^ id, || format!("add node {id}"));
        self.boot(id as usize - 1);
        id
    }

    /// Stops node `id` for good (it left the cluster).
    pub fn retire(&mut self, id: NodeId) {
        self.crash(id);
        self.nodes[id as usize - 1].retired = true;
        self.trace.record(self.now, 0xa1 ^ id, || format!("retire {id}"));
    }

    /// Whether node `id` was retired.
    pub fn is_retired(&self, id: NodeId) -> bool {
        self.nodes[id as usize - 1].retired
    }

    /// Asks node `id` to move to `target` (`Input::SetConfiguration`).
    pub fn set_configuration(&mut self, id: NodeId, target: Topology) {
        self.step(id as usize - 1, Input::SetConfiguration(target), None);
    }

    /// Asks node `id` to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, id: NodeId, to: NodeId) {
        self.step(id as usize - 1, Input::TransferLeadership { to }, None);
    }

    pub(super) fn config_event(&mut self, i: usize, e: ConfigEvent) {
        let id = i as NodeId + 1;
        self.trace.record(self.now, 0xa2 ^ id, || format!("{id} config: {e:?}"));
        if matches!(e, ConfigEvent::Completed(_)) {
            self.ext.changes_completed += 1;
        }
        self.ext.config_events.push((id, e));
    }

    /// After healing: every running node is a member of the committed
    /// configuration, and it is the one each of them has in force.
    pub(super) fn membership_settled(&self) -> bool {
        let m = self.checker.committed_config();
        if m.voters.is_empty() {
            return true; // scripted logs without a configuration
        }
        self.nodes
            .iter()
            .filter(|s| !s.retired)
            .all(|s| m.contains(s.id) && s.node.as_ref().is_some_and(|n| n.membership() == m))
    }

    /// The configuration of the highest committed membership entry.
    pub fn committed_membership(&self) -> Membership {
        self.checker.committed_config().clone()
    }

    /// Retires the running nodes that are not members of the committed
    /// configuration, when no change is in flight (every running member's
    /// configuration is the committed one).
    pub(super) fn settle_membership(&mut self) {
        let m = self.committed_membership();
        if m.voters.is_empty() || m.is_joint() {
            return;
        }
        let stable = self
            .nodes
            .iter()
            .filter(|s| m.contains(s.id))
            .all(|s| s.node.as_ref().is_none_or(|n| n.membership() == &m));
        if !stable {
            return;
        }
        let gone: Vec<NodeId> =
            self.nodes.iter().filter(|s| !s.retired && !m.contains(s.id)).map(|s| s.id).collect();
        for id in gone {
            self.retire(id);
        }
    }

    /// The random membership driver: one change, drawn from the seed, on
    /// the current leader (add, remove, replace, promote a learner, add a
    /// learner, replace the leader, or transfer leadership).
    pub(super) fn random_membership(&mut self) {
        self.settle_membership();
        let Some(leader) = self.leader() else { return };
        let m = self.node(leader).membership().clone();
        if m.is_joint() {
            return;
        }
        let mut voters: Vec<NodeId> = m.voters.keys().copied().collect();
        let mut learners: Vec<NodeId> = m.learners.keys().copied().collect();
        let original = self.opts.nodes as NodeId;
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, v: &[NodeId]| v[rng.gen_range(0..v.len())];
        let kind = self.rng.gen_range(0..7);
        // Keep 3..=7 voters, and at least one original id (the clients
        // only know those).
        let can_add = voters.len() < 7 && self.nodes.len() < self.ext.max_nodes;
        match kind {
            0 | 1 if can_add => voters.push(self.add_node()),
            2 if voters.len() > 3 => {
                let v = pick(&mut self.rng, &voters);
                voters.retain(|&x| x != v);
            }
            3 if can_add => {
                let v = pick(&mut self.rng, &voters);
                voters.retain(|&x| x != v);
                voters.push(self.add_node());
            }
            4 if !learners.is_empty() => {
                let l = pick(&mut self.rng, &learners);
                learners.retain(|&x| x != l);
                voters.push(l);
            }
            4 if can_add && learners.is_empty() => learners.push(self.add_node()),
            5 if can_add => {
                voters.retain(|&x| x != leader);
                voters.push(self.add_node());
            }
            6 => {
                let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader).collect();
                if !others.is_empty() {
                    let to = pick(&mut self.rng, &others);
                    self.transfer_leadership(leader, to);
                }
                return;
            }
            _ => return,
        }
        if !voters.iter().any(|&v| v <= original) {
            return;
        }
        voters.sort_unstable();
        learners.retain(|l| !voters.contains(l));
        self.ext.changes_requested += 1;
        let target = topology(&voters, &learners);
        self.trace.record(self.now, 0xa3, || format!("{leader}: set configuration {target:?}"));
        self.set_configuration(leader, target);
    }
}

/// A node's durable state whose snapshot is at `index`/`term` with
/// configuration `membership`, and no log after it (its state machine bytes
/// are loaded with [`Sim::load_snapshot_state`]).
pub fn restored_with_snapshot(index: Index, term: Term, membership: Membership) -> Restored {
    let mut r = Restored::new_cluster(membership);
    r.snapshot.index = index;
    r.snapshot.term = term;
    r.hard_state.term = term;
    r
}

impl Sim {
    /// Before anything ran: node `id`'s disk snapshot holds `kv` (and so
    /// does its state machine). For scenarios that start from a snapshot.
    pub fn load_snapshot_state(&mut self, id: NodeId, kv: &Kv) {
        let i = id as usize - 1;
        let sn = &mut self.nodes[i];
        let r = sn.disk.restored();
        sn.disk = Disk::with_snapshot_data(&r, kv.to_snapshot());
        sn.kv = kv.clone();
        let index = r.snapshot.index;
        self.checker.on_state(i, index, kv.state_hash(), "starts");
    }
}

impl Sim {
    /// Steps a hand-made message into its recipient (stale, duplicated or
    /// forged messages in scenarios).
    pub fn inject(&mut self, m: Message) {
        self.step(m.to as usize - 1, Input::Message(m), None);
    }

    /// Node `from`'s saved snapshot as one InstallSnapshot message to `to`
    /// in `term` (a copy a scenario can deliver late).
    pub fn snapshot_message(&self, from: NodeId, to: NodeId, term: Term) -> Message {
        let disk = &self.nodes[from as usize - 1].disk;
        let data = disk.snapshot_data().clone();
        let checksum = crc32c(0, &data);
        let body = Body::InstallSnapshot {
            meta: Box::new(disk.snapshot().clone()),
            offset: 0,
            data,
            done: true,
            checksum,
        };
        Message { from, to, term, body }
    }
}
