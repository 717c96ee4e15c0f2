//! A small in-memory network for driving [`Node`]s by hand in tests: a set of
//! nodes, one queue of pending messages, and a model of each node's disk fed
//! by the `Persist` actions. Every test file uses a different subset of it.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft_core::{
    Action, AppendResult, Body, Config, Entry, HardState, Index, Input, Membership, Message, Node, NodeId,
    Payload, Persist, Restored, Role, SnapshotMeta, Term,
};

/// The config of the paper's section 5: no PreVote, no CheckQuorum (those
/// are tested on their own in `reads_and_disruption.rs`).
pub fn classic_config(id: NodeId) -> Config {
    Config { pre_vote: false, check_quorum: false, ..Config::new(id) }
}

/// Voters `1..=n`, each with a made-up address.
pub fn membership(n: u64) -> Membership {
    Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))))
}

/// The entry a test log holds at `index` in `term`. The payload names both,
/// so two logs agree on an entry exactly when they agree on its term.
pub fn entry(index: Index, term: Term) -> Entry {
    Entry { term, index, payload: Payload::Command(Bytes::from(format!("{index}@{term}"))) }
}

/// A log written as the term of each entry, index 1 first.
pub fn entries(terms: &[Term]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(i as Index + 1, t)).collect()
}

/// Entries `first..` with the given terms.
pub fn entries_from(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(first + i as Index, t)).collect()
}

/// Durable state of a member of the `n`-voter cluster with this term, vote and log.
pub fn restored(n: u64, term: Term, vote: Option<NodeId>, log: &[Term]) -> Restored {
    Restored {
        hard_state: HardState { term, vote },
        snapshot: SnapshotMeta { index: 0, term: 0, membership: membership(n) },
        entries: entries(log),
    }
}

pub fn msg(from: NodeId, to: NodeId, term: Term, body: Body) -> Message {
    Message { from, to, term, body }
}

pub fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
    commit: Index,
) -> Message {
    msg(from, to, term, Body::AppendEntries { prev_index: prev.0, prev_term: prev.1, entries, commit })
}

pub fn vote_response(from: NodeId, to: NodeId, term: Term, granted: bool) -> Message {
    msg(from, to, term, Body::RequestVoteResponse { granted })
}

pub fn ack(from: NodeId, to: NodeId, term: Term, match_index: Index) -> Message {
    msg(from, to, term, Body::AppendEntriesResponse(AppendResult::Success { match_index }))
}

pub fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

pub fn persists(actions: &[Action]) -> Vec<&Persist> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        })
        .collect()
}

pub fn applies(actions: &[Action]) -> Vec<Entry> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply(e) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn is_append(m: &Message) -> bool {
    matches!(m.body, Body::AppendEntries { .. })
}

pub fn is_reject(m: &Message) -> bool {
    matches!(m.body, Body::AppendEntriesResponse(AppendResult::Reject { .. }))
}

/// The terms of `node`'s log, index 1 first.
pub fn log_terms(node: &Node) -> Vec<Term> {
    (1..=node.last_index()).map(|i| node.term_at(i).expect("no snapshots in these tests")).collect()
}

pub fn log_entries(node: &Node) -> Vec<Entry> {
    log_entries_from(node, 1)
}

/// The entries of `node`'s log from `first` on (all in memory).
pub fn log_entries_from(node: &Node, first: Index) -> Vec<Entry> {
    (first..=node.last_index()).map(|i| node.entry(i).expect("entry compacted").clone()).collect()
}

/// The index a node restarted from this disk has applied through.
pub fn restored_index(disk: &Disk) -> Index {
    disk.snapshot.index
}

/// A node's durable state, kept the way the persistence contract says a
/// driver must: apply each `Persist` in field order.
#[derive(Clone, Debug)]
pub struct Disk {
    pub hard_state: HardState,
    /// Entries after `snapshot.index`, contiguous.
    pub entries: Vec<Entry>,
    pub snapshot: SnapshotMeta,
}

impl Disk {
    pub fn from_restored(r: &Restored) -> Disk {
        Disk { hard_state: r.hard_state, entries: r.entries.clone(), snapshot: r.snapshot.clone() }
    }

    pub fn apply(&mut self, p: &Persist) {
        let base = self.snapshot.index;
        if let Some(from) = p.truncate_from {
            assert!(from > base, "truncation into the snapshot");
            self.entries.truncate((from - base - 1) as usize);
        }
        for e in &p.entries {
            assert_eq!(e.index, base + self.entries.len() as Index + 1, "persisted entries not contiguous");
            self.entries.push(e.clone());
        }
        if let Some(hs) = p.hard_state {
            self.hard_state = hs;
        }
    }

    /// A snapshot saved by the driver: entries after it are kept if the log
    /// matches it there, otherwise the whole log goes (paper figure 13).
    pub fn save_snapshot(&mut self, meta: &SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        let at = (meta.index - self.snapshot.index) as usize;
        let matches = self.entries.get(at.wrapping_sub(1)).is_some_and(|e| e.term == meta.term);
        if matches {
            self.entries.drain(..at);
        } else {
            self.entries.clear();
        }
        self.snapshot = meta.clone();
    }

    /// What a restart reads back: the durable state and nothing else.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// Nodes, a queue of messages in flight, and what each node persisted and applied.
#[derive(Debug)]
pub struct Net {
    pub nodes: BTreeMap<NodeId, Node>,
    pub configs: BTreeMap<NodeId, Config>,
    pub disks: BTreeMap<NodeId, Disk>,
    pub queue: VecDeque<Message>,
    /// Entries each node applied, in order, since its last (re)start.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Nodes whose messages, both ways, are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// Every message any node sent, in order, whether delivered or not.
    pub sent: Vec<Message>,
    /// The index each node's `applied` list starts after (its snapshot's),
    /// and how many times the list was reset (restart or snapshot restore).
    pub applied_base: BTreeMap<NodeId, (Index, u64)>,
    /// Act as a snapshotting driver: save a snapshot when asked, stream
    /// chunks of `SNAPSHOT_CHUNK` bytes, restore when told.
    pub snapshots: bool,
}

/// Chunk size of the test driver's snapshot transfers.
pub const SNAPSHOT_CHUNK: usize = 8;

/// The test driver's snapshot bytes for `meta`: derived from it, so any node
/// can produce the same bytes for the same snapshot.
pub fn snapshot_bytes(meta: &SnapshotMeta) -> Vec<u8> {
    let mut b = meta.index.to_le_bytes().to_vec();
    b.extend_from_slice(&meta.term.to_le_bytes());
    b.extend_from_slice(b"state");
    b
}

impl Net {
    /// A brand-new cluster of `n` voters with default configs.
    pub fn new(n: u64) -> Net {
        Net::from_restored(
            (1..=n).map(|id| (classic_config(id), Restored::new_cluster(membership(n)))).collect(),
        )
    }

    /// A brand-new cluster of `n` voters whose configs `tune` adjusts.
    pub fn with_config(n: u64, tune: impl Fn(&mut Config)) -> Net {
        Net::from_restored(
            (1..=n)
                .map(|id| {
                    let mut config = Config::new(id);
                    tune(&mut config);
                    (config, Restored::new_cluster(membership(n)))
                })
                .collect(),
        )
    }

    /// An `n`-voter cluster where node `i + 1` starts with term `logs[i].0`
    /// (no vote) and the log `logs[i].1`.
    pub fn with_logs(logs: &[(Term, &[Term])]) -> Net {
        let n = logs.len() as u64;
        Net::from_restored(
            logs.iter()
                .enumerate()
                .map(|(i, (term, log))| {
                    let id = i as NodeId + 1;
                    (classic_config(id), restored(n, *term, None, log))
                })
                .collect(),
        )
    }

    pub fn from_restored(members: Vec<(Config, Restored)>) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: VecDeque::new(),
            applied: BTreeMap::new(),
            isolated: BTreeSet::new(),
            sent: Vec::new(),
            applied_base: BTreeMap::new(),
            snapshots: false,
        };
        for (config, restored) in members {
            let id = config.id;
            net.disks.insert(id, Disk::from_restored(&restored));
            net.nodes.insert(id, Node::new(config.clone(), restored).expect("valid node"));
            net.configs.insert(id, config);
            net.applied.insert(id, Vec::new());
            net.applied_base.insert(id, (restored_index(&net.disks[&id]), 0));
        }
        net
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Steps `id` and executes every resulting action; returns them.
    pub fn step(&mut self, id: NodeId, input: Input) -> Vec<Action> {
        let actions = self.nodes.get_mut(&id).expect("known node").step(input);
        self.execute(id, &actions);
        actions
    }

    /// Executes `actions` of node `id` in order, as a driver would.
    pub fn execute(&mut self, id: NodeId, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Persist(p) => self.disks.get_mut(&id).expect("known node").apply(p),
                Action::Send(m) => {
                    self.sent.push(m.clone());
                    if !self.isolated.contains(&m.from) && !self.isolated.contains(&m.to) {
                        self.queue.push_back(m.clone());
                    }
                }
                Action::Apply(entries) => self.applied.entry(id).or_default().extend(entries.iter().cloned()),
                Action::RestoreSnapshot { meta } => {
                    self.disks.get_mut(&id).expect("known node").save_snapshot(meta);
                    self.reset_applied(id, meta.index);
                }
                Action::SnapshotNeeded { meta } if self.snapshots => {
                    self.disks.get_mut(&id).expect("known node").save_snapshot(meta);
                    let more = self
                        .nodes
                        .get_mut(&id)
                        .expect("known node")
                        .step(Input::SnapshotTaken { index: meta.index });
                    self.execute(id, &more);
                }
                Action::SendSnapshotChunk { to, term, meta, offset } if self.snapshots => {
                    let data = snapshot_bytes(meta);
                    let start = (*offset as usize).min(data.len());
                    let end = (start + SNAPSHOT_CHUNK).min(data.len());
                    let body = Body::InstallSnapshot {
                        meta: meta.clone(),
                        offset: *offset,
                        data: Bytes::copy_from_slice(&data[start..end]),
                        done: end == data.len(),
                        checksum: raft_core::crc32c(0, &data),
                    };
                    let m = Message { from: id, to: *to, term: *term, body };
                    self.sent.push(m.clone());
                    if !self.isolated.contains(&m.from) && !self.isolated.contains(&m.to) {
                        self.queue.push_back(m);
                    }
                }
                _ => {}
            }
        }
    }

    /// Rebuilds `id` from its disk alone, as after a crash.
    pub fn restart(&mut self, id: NodeId) {
        let restored = self.disks[&id].restored();
        let node = Node::new(self.configs[&id].clone(), restored).expect("disk state restores");
        self.nodes.insert(id, node);
        self.reset_applied(id, restored_index(&self.disks[&id]));
    }

    fn reset_applied(&mut self, id: NodeId, base: Index) {
        self.applied.insert(id, Vec::new());
        let generation = self.applied_base.get(&id).map_or(0, |b| b.1) + 1;
        self.applied_base.insert(id, (base, generation));
    }

    pub fn tick(&mut self, id: NodeId) -> Vec<Action> {
        self.step(id, Input::Tick)
    }

    /// Ticks `id` until `done` holds; returns how many ticks it took.
    pub fn tick_until(&mut self, id: NodeId, done: impl Fn(&Node) -> bool) -> u32 {
        for n in 0..10_000 {
            if done(self.node(id)) {
                return n;
            }
            self.tick(id);
        }
        panic!("node {id} never reached the expected state");
    }

    pub fn propose(&mut self, id: NodeId, commands: &[&str]) -> Vec<Action> {
        let commands = commands.iter().map(|c| Bytes::from(c.to_string())).collect();
        self.step(id, Input::Propose(commands))
    }

    /// Delivers a hand-made message to its recipient, bypassing the queue.
    pub fn inject(&mut self, m: Message) -> Vec<Action> {
        self.step(m.to, Input::Message(m))
    }

    /// Delivers the oldest message in flight, if any, unless an end is isolated.
    pub fn deliver_one(&mut self) -> Option<Vec<Action>> {
        let m = self.queue.pop_front()?;
        if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) || !self.nodes.contains_key(&m.to)
        {
            return Some(Vec::new());
        }
        Some(self.inject(m))
    }

    /// Delivers the oldest message matching `pred`; panics if there is none.
    pub fn deliver_where(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Action> {
        let at = self.queue.iter().position(pred).expect("a matching message in flight");
        let m = self.queue.remove(at).expect("in range");
        self.inject(m)
    }

    /// Delivers until nothing is in flight.
    pub fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            if self.deliver_one().is_none() {
                return;
            }
        }
        panic!("messages never stopped flowing");
    }

    /// Drops every message in flight matching `pred`; returns how many.
    pub fn drop_where(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|m| !pred(m));
        before - self.queue.len()
    }

    /// Cuts `id` off: its messages in flight and all future ones are dropped.
    pub fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
        self.drop_where(|m| m.from == id || m.to == id);
    }

    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    /// Times `id` out and delivers everything until it has won.
    pub fn elect(&mut self, id: NodeId) {
        self.tick_until(id, |n| n.role() != Role::Follower);
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} should have won");
    }
}
