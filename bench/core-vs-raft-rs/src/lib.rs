//! raft-core and tikv's raft-rs 0.7 driven through the same replication
//! round, so their costs can be compared in one run (see README.md).
//!
//! A round, for every implementation: 3 voters in one thread, node 1
//! already elected leader; B commands of 16 bytes are proposed on the
//! leader; messages are delivered by hand from one FIFO queue, each to its
//! node, and the node's output is handled at once; the round ends when the
//! queue is empty, by which time all 3 nodes have applied every command.
//! Each cluster compacts its log once 10,000 entries were applied since the
//! last compaction, keeping the last 1,000, so the log stays bounded.
//!
//! The raft-core cluster is `raft-core/benches/replication.rs`'s, unchanged.

use std::collections::VecDeque;

/// Bytes in every command.
pub const COMMAND_BYTES: usize = 16;
static COMMAND: [u8; COMMAND_BYTES] = [7u8; COMMAND_BYTES];

/// Compact once this many entries were applied since the last compaction...
pub const COMPACT_EVERY: u64 = 10_000;
/// ...keeping this many applied entries in the log.
pub const KEEP_ENTRIES: u64 = 1_000;

/// One of the implementations under comparison, as a 3-node cluster whose
/// node 1 is the elected leader.
pub trait Cluster {
    /// Builds the cluster and elects node 1.
    fn new() -> Self
    where
        Self: Sized;
    /// Proposes `batch` commands on the leader and delivers messages until
    /// no message is left (every node has applied them).
    fn round(&mut self, batch: usize);
    /// The leader's last log index and each node's applied index.
    fn indexes(&self) -> (u64, [u64; 3]);
    /// Messages delivered so far.
    fn delivered(&self) -> u64;
    /// Panics unless every node applied the leader's whole log.
    fn check(&self) {
        let (last, applied) = self.indexes();
        assert!(applied.iter().all(|&a| a == last), "applied {applied:?}, leader's last index {last}");
    }
}

/// The implementations, by the name the `rounds` binary and the README use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// raft-core: one `Input::Propose` with the B commands.
    Core,
    /// raft-rs: one `MsgPropose` carrying the B entries, stepped into the
    /// leader's `RawNode` (what `RawNode::propose` does for one entry).
    RaftRs,
    /// raft-rs: `RawNode::propose` called B times (one entry each), the
    /// appends to each follower merged by `batch_append`.
    RaftRsEach,
}

impl Impl {
    /// All of them, in table order.
    pub const ALL: [Impl; 3] = [Impl::Core, Impl::RaftRs, Impl::RaftRsEach];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Core => "raft-core",
            Impl::RaftRs => "raft-rs",
            Impl::RaftRsEach => "raft-rs-each",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == s)
    }
}

/// raft-core's cluster: `raft-core/benches/replication.rs`.
pub mod core {
    use super::*;
    use bytes::Bytes;
    use raft_core::{Action, Config, Input, Membership, Message, Node, Restored, Role};

    /// Three raft-core nodes.
    pub struct CoreCluster {
        nodes: Vec<Node>,
        queue: VecDeque<Message>,
        actions: Vec<Action>,
        applied: [u64; 3],
        delivered: u64,
    }

    impl CoreCluster {
        fn step(&mut self, i: usize, input: Input) {
            self.actions.clear();
            self.nodes[i].step_into(input, &mut self.actions);
            let mut snapshot = None;
            for a in self.actions.drain(..) {
                match a {
                    Action::Send(m) => self.queue.push_back(m),
                    Action::SnapshotNeeded { meta } => snapshot = Some(meta.index),
                    Action::Apply(entries) => {
                        if let Some(e) = entries.last() {
                            self.applied[i] = e.index;
                        }
                    }
                    _ => {}
                }
            }
            // The trivial state machine has nothing to save: the snapshot is
            // taken at once and the core compacts its log.
            if let Some(index) = snapshot {
                self.nodes[i].step_into(Input::SnapshotTaken { index }, &mut self.actions);
                self.actions.clear();
            }
        }

        fn deliver_all(&mut self) {
            while let Some(m) = self.queue.pop_front() {
                self.delivered += 1;
                let to = (m.to - 1) as usize;
                self.step(to, Input::Message(m));
            }
        }
    }

    impl Cluster for CoreCluster {
        fn new() -> Self {
            let membership = Membership::with_voters([(1, "a"), (2, "b"), (3, "c")]);
            let nodes = (1..=3)
                .map(|id| {
                    let mut config = Config::new(id);
                    config.entries_per_message_max = 4096;
                    config.inflight_messages_max = 256;
                    config.snapshot_entries_max = COMPACT_EVERY;
                    config.log_tail_entries = KEEP_ENTRIES;
                    Node::new(config, Restored::new_cluster(membership.clone())).unwrap()
                })
                .collect();
            let mut c = CoreCluster {
                nodes,
                queue: VecDeque::new(),
                actions: Vec::new(),
                applied: [0; 3],
                delivered: 0,
            };
            while c.nodes[0].role() != Role::Leader {
                c.step(0, Input::Tick);
                c.deliver_all();
            }
            c
        }

        #[inline]
        fn round(&mut self, batch: usize) {
            let command = Bytes::from_static(&COMMAND);
            self.step(0, Input::Propose(vec![command; batch]));
            self.deliver_all();
        }

        fn indexes(&self) -> (u64, [u64; 3]) {
            (self.nodes[0].last_index(), self.applied)
        }

        fn delivered(&self) -> u64 {
            self.delivered
        }
    }
}

/// raft-rs's cluster: `RawNode<MemStorage>` driven as in raft-rs's
/// `examples/five_mem_node`.
pub mod rs {
    use super::*;
    use bytes::Bytes;
    use raft::prelude::{ConfState, Entry, Message, MessageType};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};

    /// The raft-rs configuration the README explains: raft-core's values
    /// where raft-rs has the same knob.
    ///
    /// `each`: the configuration of [`Impl::RaftRsEach`], which differs in
    /// `max_inflight_msgs` only (see there).
    pub fn config(id: u64, each: bool) -> Config {
        Config {
            id,
            // Randomized timeouts in [15, 30) ticks, heartbeats every 3:
            // raft-core's defaults (no tick is given during rounds anyway).
            election_tick: 15,
            heartbeat_tick: 3,
            // raft-core's bytes_per_message_max; raft-rs has no entry-count
            // limit (raft-core: entries_per_message_max 4096). 1000 entries
            // of 16 bytes are ~30 KB, so one message carries a whole round.
            max_size_per_msg: 1 << 20,
            // raft-core's inflight_messages_max. With batch_append, raft-rs
            // counts every merged `propose` as one more message in flight,
            // so proposing 1000 commands one by one would stall at 256:
            // `Impl::RaftRsEach` gets room for a B = 1000 round.
            max_inflight_msgs: if each { 1024 } else { 256 },
            // raft-core's defaults.
            check_quorum: true,
            pre_vote: true,
            // Only matters for `Impl::RaftRsEach`: merge the B one-entry
            // appends of a step into one message per follower.
            batch_append: true,
            ..Config::default()
        }
    }

    /// Three raft-rs nodes.
    pub struct RsCluster {
        nodes: Vec<RawNode<MemStorage>>,
        queue: VecDeque<Message>,
        applied: [u64; 3],
        /// Applied index at each node's last compaction.
        compacted: [u64; 3],
        /// Propose with `RawNode::propose` once per command.
        each: bool,
        delivered: u64,
    }

    impl RsCluster {
        /// A cluster whose rounds propose one command per `RawNode::propose`.
        pub fn new_each() -> Self {
            Self::build(true)
        }

        fn build(each: bool) -> Self {
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let nodes = (1..=3)
                .map(|id| {
                    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
                    RawNode::new(&config(id, each), storage, &logger).unwrap()
                })
                .collect();
            let mut c = RsCluster {
                nodes,
                queue: VecDeque::new(),
                applied: [0; 3],
                compacted: [0; 3],
                each,
                delivered: 0,
            };
            c.nodes[0].campaign().unwrap();
            c.on_ready(0);
            c.deliver_all();
            assert_eq!(c.nodes[0].raft.state, StateRole::Leader);
            c.check();
            c
        }

        /// Entries in node `i`'s MemStorage.
        pub fn log_entries(&self, i: usize) -> usize {
            use raft::Storage;
            let store = self.nodes[i].store();
            (store.last_index().unwrap() + 1 - store.first_index().unwrap()) as usize
        }

        fn on_ready(&mut self, i: usize) {
            let RsCluster { nodes, queue, applied, compacted, .. } = self;
            let node = &mut nodes[i];
            if !node.has_ready() {
                return;
            }
            let mut ready = node.ready();
            // Messages that need no persistence (a leader's appends).
            if !ready.messages().is_empty() {
                queue.extend(ready.take_messages());
            }
            if !ready.snapshot().is_empty() {
                // Never in these rounds (followers are never that far behind).
                node.store().wl().apply_snapshot(ready.snapshot().clone()).unwrap();
            }
            apply(&mut applied[i], ready.take_committed_entries());
            // "Persist": MemStorage is raft-rs's log.
            if !ready.entries().is_empty() {
                node.store().wl().append(ready.entries()).unwrap();
            }
            if let Some(hs) = ready.hs() {
                node.store().wl().set_hardstate(hs.clone());
            }
            // Messages sent after persisting (a follower's acks, votes).
            if !ready.persisted_messages().is_empty() {
                queue.extend(ready.take_persisted_messages());
            }
            let mut light = node.advance(ready);
            if let Some(commit) = light.commit_index() {
                node.store().wl().mut_hard_state().set_commit(commit);
            }
            queue.extend(light.take_messages());
            apply(&mut applied[i], light.take_committed_entries());
            node.advance_apply();
            // raft-core's schedule: snapshot (here, compact) once
            // COMPACT_EVERY entries were applied since the last one, keeping
            // KEEP_ENTRIES. MemStorage::compact(i) drops entries below i.
            if applied[i] - compacted[i] >= COMPACT_EVERY {
                node.store().wl().compact(applied[i] + 1 - KEEP_ENTRIES).unwrap();
                compacted[i] = applied[i];
            }
        }

        fn deliver_all(&mut self) {
            while let Some(m) = self.queue.pop_front() {
                self.delivered += 1;
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).expect("step");
                self.on_ready(to);
            }
        }
    }

    /// The trivial state machine: remembers the last applied index.
    #[inline]
    fn apply(applied: &mut u64, entries: Vec<Entry>) {
        if let Some(e) = entries.last() {
            *applied = e.index;
        }
    }

    impl Cluster for RsCluster {
        fn new() -> Self {
            Self::build(false)
        }

        #[inline]
        fn round(&mut self, batch: usize) {
            if self.each {
                for _ in 0..batch {
                    // The API takes the command as a Vec<u8>.
                    self.nodes[0].propose(Vec::new(), COMMAND.to_vec()).expect("propose");
                }
            } else {
                let command = Bytes::from_static(&COMMAND);
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgPropose);
                m.from = 1;
                m.set_entries(
                    (0..batch)
                        .map(|_| Entry { data: command.clone(), ..Entry::default() })
                        .collect::<Vec<_>>()
                        .into(),
                );
                self.nodes[0].step(m).expect("propose");
            }
            self.on_ready(0);
            self.deliver_all();
        }

        fn indexes(&self) -> (u64, [u64; 3]) {
            (self.nodes[0].raft.raft_log.last_index(), self.applied)
        }

        fn delivered(&self) -> u64 {
            self.delivered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds<C: Cluster>(mut c: C, batch: usize, n: usize) -> C {
        let (before, _) = c.indexes();
        for _ in 0..n {
            c.round(batch);
            c.check();
        }
        let (after, _) = c.indexes();
        assert_eq!(after - before, (batch * n) as u64);
        c
    }

    #[test]
    fn every_round_applies_everywhere_and_logs_stay_bounded() {
        for batch in [1, 10, 1000] {
            let n = 25_000 / batch;
            rounds(core::CoreCluster::new(), batch, n);
            for c in [rs::RsCluster::new(), rs::RsCluster::new_each()] {
                let c = rounds(c, batch, n);
                let (last, _) = c.indexes();
                for node in 0..3 {
                    let entries = c.log_entries(node);
                    assert!(
                        entries <= (COMPACT_EVERY + KEEP_ENTRIES) as usize,
                        "{entries} entries at {last}"
                    );
                }
            }
        }
    }
}
