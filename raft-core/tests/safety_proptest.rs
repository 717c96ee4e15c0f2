//! Random interleavings of ticks, proposals, message loss, duplication and
//! reordering, and crashes (restart from the persisted state only, possibly
//! in the middle of executing a step's actions), among 3 and 5 nodes. The
//! safety invariants of SCENARIOS.md section D are checked after every step.
//! Most runs snapshot every few entries, so compaction and InstallSnapshot
//! (chunks lost, duplicated and reordered like any message) are in the mix.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use raft_core::{Config, Entry, Index, Input, Node, NodeId, Restored, Role, Term};

#[derive(Clone, Debug)]
enum Op {
    /// One tick on one node.
    Tick(u16),
    /// One tick on every running node.
    TickAll,
    /// A proposal to the newest leader, if there is one.
    Propose,
    /// Deliver the message at this position of the queue (so: reordering).
    Deliver(u16),
    Drop(u16),
    Duplicate(u16),
    /// Stop a node; messages to it are lost while it is down.
    Crash(u16),
    /// Step a node (its next message, or a tick), execute only the first
    /// `cut` actions, then crash and restart it at once.
    CrashDuring(u16, u16),
    /// Restart a stopped node from its disk.
    Restart(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => any::<u16>().prop_map(Op::Tick),
        4 => Just(Op::TickAll),
        8 => Just(Op::Propose),
        40 => any::<u16>().prop_map(Op::Deliver),
        4 => any::<u16>().prop_map(Op::Drop),
        3 => any::<u16>().prop_map(Op::Duplicate),
        1 => any::<u16>().prop_map(Op::Crash),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(n, c)| Op::CrashDuring(n, c)),
        3 => any::<u16>().prop_map(Op::Restart),
    ]
}

/// Safety bookkeeping across the whole run, including crashed incarnations.
#[derive(Debug, Default)]
struct Checker {
    /// Every (term, leader) ever observed.
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry anyone applied, by index, with the applier's term then.
    applied: BTreeMap<Index, (Entry, Term)>,
    /// How much of each node's `Net::applied` has been checked, per
    /// generation of the list (it restarts on a restart or snapshot restore).
    applied_seen: BTreeMap<NodeId, (u64, usize)>,
    /// Commit index of each node's current incarnation.
    commit: BTreeMap<NodeId, Index>,
}

impl Checker {
    fn check(&mut self, net: &Net, n: u64) {
        for (&id, node) in &net.nodes {
            node.invariants().unwrap_or_else(|e| panic!("node {id}: {e}"));

            // Election safety.
            if node.role() == Role::Leader {
                let leader = *self.leaders.entry(node.term()).or_insert(id);
                assert_eq!(leader, id, "two leaders in term {}", node.term());
            }

            // Commit never goes back within an incarnation.
            let commit = self.commit.entry(id).or_default();
            assert!(node.commit_index() >= *commit, "node {id} commit went back");
            *commit = node.commit_index();

            // The persistence contract: after a step, disk == memory (the
            // disk's log starts after its snapshot; memory may keep a tail).
            let disk = &net.disks[&id];
            assert_eq!(disk.hard_state, node.hard_state(), "node {id} hard state not persisted");
            assert!(node.first_index() <= disk.snapshot.index + 1, "node {id} compacted beyond its snapshot");
            let in_memory = log_entries_from(node, disk.snapshot.index + 1);
            assert_eq!(disk.entries, in_memory, "node {id} log not persisted");
        }
        self.scan_applied(net);

        // Leader completeness: whatever was applied by term t is in every leader of term >= t.
        for node in net.nodes.values().filter(|n| n.role() == Role::Leader) {
            for (&i, (e, t)) in &self.applied {
                // Compacted entries are covered by the leader's snapshot.
                if *t <= node.term() && i >= node.first_index() {
                    assert_eq!(
                        node.entry(i),
                        Some(e),
                        "leader {} of term {} lacks {i}",
                        node.id(),
                        node.term()
                    );
                }
            }
        }

        // Committed entries stay on a majority of disks, whoever is down.
        for (&i, (e, _)) in &self.applied {
            let holds = |d: &&common::Disk| {
                let base = d.snapshot.index;
                i <= base || d.entries.get((i - base - 1) as usize) == Some(e)
            };
            let holders = net.disks.values().filter(holds).count();
            assert!(holders as u64 > n / 2, "applied entry {i} only on {holders} disks");
        }

        // Log matching.
        let nodes: Vec<&Node> = net.nodes.values().collect();
        for (k, a) in nodes.iter().enumerate() {
            for b in &nodes[k + 1..] {
                let common = a.last_index().min(b.last_index());
                let first = a.first_index().max(b.first_index());
                let Some(m) = (first..=common).rev().find(|&i| a.term_at(i) == b.term_at(i)) else {
                    continue;
                };
                for i in first..=m {
                    assert_eq!(
                        a.entry(i),
                        b.entry(i),
                        "nodes {} and {} agree at {m}, not at {i}",
                        a.id(),
                        b.id()
                    );
                }
            }
        }
    }

    /// State machine safety and apply order, over entries applied since the last look.
    fn scan_applied(&mut self, net: &Net) {
        for (&id, applied) in &net.applied {
            let (base, generation) = net.applied_base.get(&id).copied().unwrap_or_default();
            let (seen_generation, seen) = self.applied_seen.entry(id).or_default();
            if *seen_generation != generation {
                (*seen_generation, *seen) = (generation, 0);
            }
            for (k, e) in applied.iter().enumerate().skip(*seen) {
                assert_eq!(e.index, base + k as Index + 1, "node {id} applies out of order");
                let term = net.nodes.get(&id).map_or(0, |n| n.term());
                let (first, _) = self.applied.entry(e.index).or_insert((e.clone(), term));
                assert_eq!(first, e, "node {id} applied a different entry at {}", e.index);
            }
            *seen = applied.len();
        }
    }

    fn restarted(&mut self, id: NodeId) {
        self.commit.insert(id, 0);
    }
}

struct Run {
    net: Net,
    checker: Checker,
    n: u64,
    proposals: u64,
}

impl Run {
    fn new(n: u64, seed: u64) -> Run {
        let members = (1..=n)
            .map(|id| {
                let config = Config {
                    heartbeat_ticks: 2,
                    election_ticks_min: 5,
                    election_ticks_max: 10,
                    entries_per_message_max: 4,
                    inflight_messages_max: 4,
                    seed,
                    // Half the runs with PreVote and CheckQuorum (the
                    // defaults), half with the paper's section 5 alone.
                    pre_vote: seed.is_multiple_of(2),
                    check_quorum: seed % 4 < 2,
                    // Three runs in four snapshot every 2..9 entries and keep
                    // a tail of 0..2 entries; the rest never snapshot.
                    snapshot_entries_max: if seed % 8 < 6 { 2 + (seed >> 8) % 8 } else { u64::MAX },
                    log_tail_entries: (seed >> 16) % 3,
                    ..Config::new(id)
                };
                (config, Restored::new_cluster(membership(n)))
            })
            .collect();
        let mut net = Net::from_restored(members);
        net.snapshots = true;
        Run { net, checker: Checker::default(), n, proposals: 0 }
    }

    fn id(&self, x: u16) -> NodeId {
        u64::from(x) % self.n + 1
    }

    fn queue_pos(&self, x: u16) -> Option<usize> {
        (!self.net.queue.is_empty()).then(|| usize::from(x) % self.net.queue.len())
    }

    fn restart(&mut self, id: NodeId) {
        self.checker.scan_applied(&self.net);
        self.net.restart(id);
        self.checker.restarted(id);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Tick(x) => {
                let id = self.id(x);
                if self.net.nodes.contains_key(&id) {
                    self.net.tick(id);
                }
            }
            Op::TickAll => {
                let ids: Vec<NodeId> = self.net.nodes.keys().copied().collect();
                for id in ids {
                    self.net.tick(id);
                    self.checker.check(&self.net, self.n);
                }
            }
            Op::Propose => {
                let nodes = self.net.nodes.values();
                let leader =
                    nodes.filter(|n| n.role() == Role::Leader).max_by_key(|n| n.term()).map(|n| n.id());
                if let Some(id) = leader {
                    self.proposals += 1;
                    let command = Bytes::from(format!("c{}", self.proposals));
                    self.net.step(id, Input::Propose(vec![command]));
                }
            }
            Op::Deliver(x) => {
                if let Some(at) = self.queue_pos(x) {
                    let m = self.net.queue.remove(at).expect("in range");
                    if self.net.nodes.contains_key(&m.to) {
                        self.net.inject(m);
                    }
                }
            }
            Op::Drop(x) => {
                if let Some(at) = self.queue_pos(x) {
                    self.net.queue.remove(at);
                }
            }
            Op::Duplicate(x) => {
                if let Some(at) = self.queue_pos(x) {
                    let m = self.net.queue[at].clone();
                    self.net.queue.push_back(m);
                }
            }
            Op::Crash(x) => {
                let id = self.id(x);
                // Keep a majority up, or nothing happens for the rest of the run.
                if self.net.nodes.len() as u64 > self.n / 2 + 1 {
                    self.checker.scan_applied(&self.net);
                    self.net.nodes.remove(&id);
                }
            }
            Op::CrashDuring(x, cut) => {
                let id = self.id(x);
                if !self.net.nodes.contains_key(&id) {
                    return;
                }
                let input = match self.net.queue.iter().position(|m| m.to == id) {
                    Some(at) => Input::Message(self.net.queue.remove(at).expect("in range")),
                    None => Input::Tick,
                };
                let actions = self.net.nodes.get_mut(&id).expect("running").step(input);
                let cut = usize::from(cut) % (actions.len() + 1);
                self.net.execute(id, &actions[..cut]);
                self.restart(id);
            }
            Op::Restart(x) => {
                let id = self.id(x);
                if !self.net.nodes.contains_key(&id) {
                    self.restart(id);
                }
            }
        }
        // An unbounded backlog only slows the run down; old messages go first.
        while self.net.queue.len() > 200 {
            self.net.queue.pop_front();
        }
        self.checker.check(&self.net, self.n);
    }

    fn committed(&self) -> usize {
        self.checker.applied.len()
    }
}

fn scenario() -> impl Strategy<Value = (u64, u64, Vec<Op>)> {
    (prop::sample::select(vec![3u64, 5]), any::<u64>(), prop::collection::vec(op(), 100..500))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Election safety, log matching, leader completeness and state machine
    /// safety hold after every step of any interleaving (SCENARIOS.md D).
    // Paper 5.2, 5.3, 5.4; figure 3
    #[test]
    fn safety_holds_under_random_faults((n, seed, ops) in scenario()) {
        let mut run = Run::new(n, seed);
        for op in &ops {
            run.apply(op);
        }
    }
}

/// The random runs are not vacuous: elections happen and entries commit.
#[test]
fn random_runs_make_progress() {
    let mut runner = TestRunner::deterministic();
    let (mut committed, mut runs_with_commits) = (0, 0);
    let (mut compacted, mut chunks) = (0, 0);
    for _ in 0..20 {
        let (n, seed, ops) = scenario().new_tree(&mut runner).unwrap().current();
        let mut run = Run::new(n, seed);
        for op in &ops {
            run.apply(op);
        }
        committed += run.committed();
        runs_with_commits += usize::from(run.committed() > 1);
        compacted += run.net.nodes.values().filter(|n| n.first_index() > 1).count();
        chunks +=
            run.net.sent.iter().filter(|m| matches!(m.body, raft_core::Body::InstallSnapshot { .. })).count();
    }
    assert!(compacted >= 10, "only {compacted} nodes compacted their log in 20 runs");
    assert!(chunks >= 5, "only {chunks} snapshot chunks sent in 20 runs");
    eprintln!("20 runs: {committed} entries committed, {compacted} compacted logs, {chunks} snapshot chunks");
    assert!(runs_with_commits >= 10, "only {runs_with_commits} of 20 runs committed past the first no-op");
    assert!(committed >= 100, "only {committed} entries committed in 20 runs");
}
