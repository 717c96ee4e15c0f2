//! The safety invariants of SCENARIOS.md section D, checked incrementally
//! after every simulated event.
//!
//! Nothing here rescans whole logs per event. The checker keeps, per node, a
//! shadow of the in-memory log's terms (fed by the `Persist` actions, which
//! carry every log change), and globally: one record per `(index, term)` ever
//! appended (log matching), the committed prefix (state machine safety,
//! leader completeness), and the leader of each term (election safety).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use raft_core::{Entry, Index, Membership, Node, NodeId, Payload, Persist, Role, SnapshotMeta, Term};

use crate::disk::Disk;

/// A property of section D (plus the end-of-run checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Property {
    /// At most one leader per term.
    ElectionSafety,
    /// Same index and term: same entry and same prefix.
    LogMatching,
    /// A leader holds every entry committed before its term.
    LeaderCompleteness,
    /// A committed entry is on a quorum of disks, and never removed.
    CommittedDurable,
    /// A granted vote goes to a candidate whose log is at least as up to
    /// date as the voter's (5.4.1), so a candidate sharing the voter's last
    /// term holds the voter's committed entries.
    VoteImpliesCommitted,
    /// No two nodes commit or apply different entries at one index.
    StateMachineSafety,
    /// A node's commit index never decreases (within one lifetime).
    CommitMonotonic,
    /// A node applies each index once, in increasing order.
    ApplyOrder,
    /// The client history is linearizable.
    Linearizability,
    /// After healing, pending operations complete and nodes converge.
    Liveness,
    /// Snapshots keep every node's in-memory log within a bound.
    LogBounded,
}

/// The first broken property and what broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// The evidence.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.property, self.detail)
    }
}

/// A cheap content hash of an entry's payload (FNV-1a).
pub fn payload_hash(p: &Payload) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    match p {
        Payload::Noop => eat(b"noop"),
        Payload::Command(c) => eat(c),
        Payload::Membership(m) => eat(format!("{m:?}").as_bytes()),
    }
    h
}

#[derive(Clone, Debug, Default)]
struct NodeView {
    /// Terms of the in-memory log, index 1 first.
    log: Vec<Term>,
    /// The commit index counted as decided (see [`Checker::after_step`]).
    commit: Index,
    /// The node's own commit index, as last seen.
    commit_seen: Index,
    applied: Index,
    role: Option<Role>,
    term: Term,
}

/// Incremental checker of the section D invariants.
#[derive(Clone, Debug)]
pub struct Checker {
    majority: usize,
    nodes: Vec<NodeView>,
    /// `leaders[term]`: the leader of that term (0: none seen).
    leaders: Vec<NodeId>,
    /// Per index (index 1 first): every `(term, prev_term, payload hash)` seen.
    appended: Vec<Vec<(Term, Term, u64)>>,
    /// Terms of the committed prefix, index 1 first.
    committed: Vec<Term>,
    /// Per committed index: the term in which it was first seen committed
    /// (made non-decreasing: committing an index commits its prefix).
    committed_in: Vec<Term>,
    /// Highest index any node has applied.
    applied_max: Index,
    /// Per index (index 1 first): hash of the state machine right after
    /// applying it, as the first node to reach it had it (0: unknown).
    kv_at: Vec<u64>,
    /// Every membership entry ever appended: index -> (term, configuration).
    configs: BTreeMap<Index, Vec<(Term, Membership)>>,
    /// The configuration before any membership entry (from the disks).
    initial_config: Membership,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Checks performed, for statistics.
    pub checks: u64,
}

impl Checker {
    /// A checker for nodes whose durable state is `disks` (node 1 first).
    pub fn new(disks: &[&Disk]) -> Self {
        let n = disks.len();
        let base = disks.iter().map(|d| d.snapshot()).max_by_key(|m| m.index).cloned().unwrap_or_default();
        let mut c = Checker {
            majority: n / 2 + 1,
            nodes: Vec::new(),
            leaders: Vec::new(),
            appended: Vec::new(),
            committed: vec![base.term; base.index as usize],
            committed_in: vec![base.term; base.index as usize],
            applied_max: base.index,
            kv_at: Vec::new(),
            configs: BTreeMap::new(),
            initial_config: base.membership.clone(),
            violation: None,
            checks: 0,
        };
        for disk in disks {
            let mut log = c.prefix(disk.snapshot());
            for e in disk.entries() {
                c.note_config(e);
                let prev = log.last().copied().unwrap_or(0);
                c.record_append(e.index as usize - 1, e.term, prev, payload_hash(&e.payload));
                log.push(e.term);
            }
            let (commit, applied) = (disk.snapshot().index, disk.snapshot().index);
            c.nodes.push(NodeView { log, commit, commit_seen: commit, applied, ..NodeView::default() });
        }
        c
    }

    /// Terms of indexes `1..=meta.index` as committed (a snapshot holds
    /// committed entries only); `meta.term` where the checker never saw them.
    fn prefix(&self, meta: &SnapshotMeta) -> Vec<Term> {
        let k = meta.index as usize;
        let mut log: Vec<Term> = self.committed.iter().take(k).copied().collect();
        log.resize(k, meta.term);
        log
    }

    fn note_config(&mut self, e: &Entry) {
        if let Payload::Membership(m) = &e.payload {
            let slot = self.configs.entry(e.index).or_default();
            if !slot.iter().any(|(t, _)| *t == e.term) {
                slot.push((e.term, (**m).clone()));
            }
        }
    }

    /// The configuration in force at `index` of the committed log: the
    /// last committed membership entry at or before it.
    pub fn committed_config_at(&self, index: Index) -> &Membership {
        for (&i, list) in self.configs.range(..=index).rev() {
            let Some(&t) = self.committed.get(i as usize - 1) else { continue };
            if let Some((_, m)) = list.iter().find(|(term, _)| *term == t) {
                return m;
            }
        }
        &self.initial_config
    }

    /// The configuration of the committed log's last membership entry.
    pub fn committed_config(&self) -> &Membership {
        self.committed_config_at(self.committed_index())
    }

    /// Whether `holders` contain a majority of `m`'s voters (of both
    /// majorities when joint). An empty configuration (a cluster that
    /// started from scripted logs only) uses the checker's node count.
    fn is_quorum(&self, m: &Membership, holders: &BTreeSet<NodeId>) -> bool {
        if m.voters.is_empty() {
            return holders.len() >= self.majority;
        }
        let majority = |voters: &BTreeMap<NodeId, String>| {
            voters.keys().filter(|id| holders.contains(id)).count() > voters.len() / 2
        };
        majority(&m.voters) && m.old_voters.as_ref().is_none_or(majority)
    }

    /// Records a failure (the first one wins).
    pub fn report(&mut self, property: Property, detail: String) {
        self.fail(property, detail);
    }

    /// A new node (id `len + 1`) joins the simulation with an empty disk.
    pub fn add_node(&mut self) {
        self.nodes.push(NodeView::default());
    }

    /// Node `node`'s state machine after applying (or snapshotting, or
    /// restoring) through `index` hashes to `hash`: every node must have
    /// had the same state at that index.
    pub fn on_state(&mut self, node: usize, index: Index, hash: u64, what: &str) {
        self.checks += 1;
        if index == 0 {
            return;
        }
        let at = index as usize - 1;
        if self.kv_at.len() <= at {
            self.kv_at.resize(at + 1, 0);
        }
        match self.kv_at[at] {
            0 => self.kv_at[at] = hash,
            h if h != hash => {
                let detail = format!(
                    "node {} {what} at index {index}: state machine {hash:x}, but another node had {h:x} there",
                    node + 1
                );
                self.fail(Property::StateMachineSafety, detail);
            }
            _ => {}
        }
    }

    /// Node `node` installed the snapshot `meta` (the log shadow is now the
    /// committed prefix plus whatever suffix it kept); call before
    /// [`Checker::after_step`]. A kept suffix must follow the snapshot's
    /// last entry (figure 13, rule 6).
    pub fn on_restore_log(&mut self, node: usize, meta: &SnapshotMeta, n: &Node) {
        self.checks += 1;
        let id = node + 1;
        let k = meta.index as usize;
        if let Some(&t) = self.committed.get(k.wrapping_sub(1)) {
            if t != meta.term {
                let detail = format!(
                    "node {id} installs a snapshot at {}/{} but term {t} is committed there",
                    meta.index, meta.term
                );
                self.fail(Property::StateMachineSafety, detail);
            }
        } else if k > 0 {
            let detail = format!("node {id} installs a snapshot at {} beyond every commit index", meta.index);
            self.fail(Property::StateMachineSafety, detail);
        }
        let mut log = self.prefix(meta);
        for i in meta.index + 1..=n.last_index() {
            log.push(n.term_at(i).unwrap_or(0));
        }
        if let Some(&next) = log.get(k) {
            let recorded =
                self.appended.get(k).and_then(|s| s.iter().find(|(t, _, _)| *t == next)).map(|s| s.1);
            if let Some(p) = recorded.filter(|&p| p != meta.term) {
                let detail = format!(
                    "node {id} keeps entry {}/{next} after installing snapshot {}/{}, but that entry follows term {p}",
                    k + 1,
                    meta.index,
                    meta.term,
                );
                self.fail(Property::LogMatching, detail);
            }
        }
        self.nodes[node].log = log;
    }

    /// The driver restored node `node`'s state machine from a snapshot at
    /// `index`: applying resumes after it.
    pub fn on_restore_applied(&mut self, node: usize, index: Index) {
        let view = &mut self.nodes[node];
        view.applied = view.applied.max(index);
    }

    fn fail(&mut self, property: Property, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { property, detail });
        }
    }

    /// The committed prefix's length (the highest index known committed).
    pub fn committed_index(&self) -> Index {
        self.committed.len() as Index
    }

    /// The leader recorded for `term`, if any.
    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leaders.get(term as usize).copied().filter(|&l| l != 0)
    }

    /// Returns false (and records a violation) when `(index, term)` was
    /// seen before with different content or a different predecessor.
    fn record_append(&mut self, at: usize, term: Term, prev_term: Term, hash: u64) -> bool {
        if self.appended.len() <= at {
            self.appended.resize_with(at + 1, Vec::new);
        }
        let slot = &mut self.appended[at];
        match slot.iter().find(|(t, _, _)| *t == term) {
            None => {
                slot.push((term, prev_term, hash));
                true
            }
            Some(&(_, p, h)) => {
                // Hash 0 stands for "set up by the scenario, content unknown".
                if p != prev_term || (h != hash && h != 0 && hash != 0) {
                    let detail = format!(
                        "two entries at index {} term {term}: prev term {p} vs {prev_term}, content {h:x} vs {hash:x}",
                        at + 1
                    );
                    self.fail(Property::LogMatching, detail);
                    return false;
                }
                if h == 0 {
                    slot.iter_mut().find(|(t, _, _)| *t == term).expect("found above").2 = hash;
                }
                true
            }
        }
    }

    /// A node stepped and its log changed as `p` says (in memory; the disk
    /// may lag). Call before [`Checker::after_step`].
    ///
    /// `term` is the node's term after the step: the term of the leader
    /// whose AppendEntries caused any truncation. A stale leader (of a term
    /// no later than the one in which an entry was committed) may overwrite
    /// that entry on a follower outside the committing quorum; a later
    /// leader may not.
    pub fn on_log_change(&mut self, node: usize, p: &Persist, term: Term) {
        self.checks += 1;
        if let Some(from) = p.truncate_from {
            let view = &self.nodes[node];
            let k = (view.log.len()).min(self.committed.len());
            if from as usize <= k
                && k > 0
                && view.log[k - 1] == self.committed[k - 1]
                && term > self.committed_in[from as usize - 1]
            {
                let detail = format!(
                    "node {} truncates its log from {from}, dropping committed entry {k} (term {})",
                    node + 1,
                    self.committed[k - 1]
                );
                self.fail(Property::CommittedDurable, detail);
            }
            self.nodes[node].log.truncate((from as usize).saturating_sub(1));
        }
        for e in &p.entries {
            let at = e.index as usize - 1;
            self.note_config(e);
            self.nodes[node].log.truncate(at);
            let view = &self.nodes[node];
            let prev = if at == 0 { 0 } else { view.log[at - 1] };
            if !self.record_append(at, e.term, prev, payload_hash(&e.payload)) {
                let detail = format!("{} (node {})", self.violation_detail(), node + 1);
                if let Some(v) = self.violation.as_mut() {
                    v.detail = detail;
                }
            }
            self.nodes[node].log.push(e.term);
        }
    }

    fn violation_detail(&self) -> String {
        self.violation.as_ref().map(|v| v.detail.clone()).unwrap_or_default()
    }

    /// After a node stepped: roles, terms, commit index. With `commit_cap`,
    /// only the commit index up to it counts as decided: a leader that
    /// replicates while it writes counts its own copy before that copy is
    /// durable, which is safe only because nothing reveals such a commit
    /// until it is (the cap is its durable last index).
    pub fn after_step(&mut self, node: usize, n: &Node, commit_cap: Option<Index>) {
        self.checks += 1;
        let id = node as NodeId + 1;
        let (role, term) = (n.role(), n.term());
        let view = &self.nodes[node];
        if view.role != Some(role) || view.term != term {
            if role == Role::Leader {
                self.on_new_leader(node, term);
            }
            let view = &mut self.nodes[node];
            view.role = Some(role);
            view.term = term;
        }
        let seen = n.commit_index();
        let view = &mut self.nodes[node];
        if seen < view.commit_seen {
            let detail = format!("node {id} commit went from {} to {seen}", view.commit_seen);
            self.fail(Property::CommitMonotonic, detail);
            return;
        }
        view.commit_seen = seen;
        let commit = commit_cap.map_or(seen, |cap| seen.min(cap));
        if commit > view.commit {
            let from = view.commit;
            for i in from + 1..=commit {
                let at = i as usize - 1;
                let Some(&t) = self.nodes[node].log.get(at) else {
                    self.fail(Property::StateMachineSafety, format!("node {id} commits {i} beyond its log"));
                    return;
                };
                if at < self.committed.len() {
                    if self.committed[at] != t {
                        let detail = format!(
                            "node {id} commits index {i} with term {t}, but term {} was committed there",
                            self.committed[at]
                        );
                        self.fail(Property::StateMachineSafety, detail);
                        return;
                    }
                } else {
                    self.committed.push(t);
                    let floor = self.committed_in.last().copied().unwrap_or(0);
                    self.committed_in.push(n.term().max(floor));
                }
            }
            self.nodes[node].commit = commit;
        }
    }

    fn on_new_leader(&mut self, node: usize, term: Term) {
        let id = node as NodeId + 1;
        let t = term as usize;
        if self.leaders.len() <= t {
            self.leaders.resize(t + 1, 0);
        }
        if self.leaders[t] != 0 && self.leaders[t] != id {
            let detail = format!("nodes {} and {id} both lead term {term}", self.leaders[t]);
            self.fail(Property::ElectionSafety, detail);
            return;
        }
        self.leaders[t] = id;
        // Leader completeness: the leader of `term` holds every entry
        // committed in an earlier term. By log matching, holding the last
        // such entry means holding the whole prefix.
        let k = self.committed_in.partition_point(|&t| t < term);
        let log = &self.nodes[node].log;
        if k > 0 && (log.len() < k || log[k - 1] != self.committed[k - 1]) {
            let detail = format!(
                "node {id} leads term {term} without committed entry {k} (term {}); its log has {} entries",
                self.committed[k - 1],
                log.len()
            );
            self.fail(Property::LeaderCompleteness, detail);
        }
    }

    /// The driver applies `e` on `node`; `disks` are every node's disk.
    pub fn on_apply(&mut self, node: usize, e: &Entry, disks: &[&Disk]) {
        self.checks += 1;
        let id = node + 1;
        let view = &mut self.nodes[node];
        if e.index != view.applied + 1 {
            let detail = format!("node {id} applies {} after {}", e.index, view.applied);
            self.fail(Property::ApplyOrder, detail);
            return;
        }
        view.applied = e.index;
        let at = e.index as usize - 1;
        match self.committed.get(at) {
            Some(&t) if t == e.term => {}
            Some(&t) => {
                let detail =
                    format!("node {id} applies {}/{} but {}/{t} is committed", e.index, e.term, e.index);
                self.fail(Property::StateMachineSafety, detail);
                return;
            }
            None => {
                let detail = format!("node {id} applies {} beyond every commit index", e.index);
                self.fail(Property::StateMachineSafety, detail);
                return;
            }
        }
        if e.index > self.applied_max {
            self.applied_max = e.index;
            // Durable on a quorum of the configuration in force at the
            // entry (a later C_old,new needs both majorities, which include
            // one of it; a snapshot covering the entry holds it).
            let holders: BTreeSet<NodeId> = disks
                .iter()
                .enumerate()
                .filter(|(_, d)| d.term_at(e.index) == Some(e.term) || d.snapshot().index >= e.index)
                .map(|(k, _)| k as NodeId + 1)
                .collect();
            // Restricted during changes: a configuration appended after the
            // entry may already be in force at the leader that commits it
            // (it takes effect when appended), so a quorum of any later
            // configuration also counts.
            let config = self.committed_config_at(e.index);
            let later = self.configs.range(e.index + 1..).flat_map(|(_, l)| l.iter().map(|(_, m)| m));
            if !self.is_quorum(config, &holders) && !later.clone().any(|m| self.is_quorum(m, &holders)) {
                let detail = format!(
                    "entry {}/{} applied on node {id} but durable only on {holders:?}, not a quorum of {config:?}",
                    e.index, e.term
                );
                self.fail(Property::CommittedDurable, detail);
            }
        }
    }

    /// `voter` (whose committed prefix ends at `voter_commit`) grants its
    /// vote to `candidate`, which is campaigning in `term`.
    pub fn on_vote_granted(&mut self, voter: usize, candidate: &Node, term: Term) {
        self.checks += 1;
        if candidate.role() != Role::Candidate || candidate.term() != term {
            return;
        }
        // A candidate's log cannot change during its own candidacy, so its
        // log now is the log its RequestVote described.
        let log = &self.nodes[voter].log;
        let (v_index, v_term) = (log.len() as Index, log.last().copied().unwrap_or(0));
        let c_index = candidate.last_index();
        let c_term = candidate.term_at(c_index).unwrap_or(0);
        if c_term < v_term || (c_term == v_term && c_index < v_index) {
            let c = self.nodes[voter].commit;
            let detail = format!(
                "node {} (log {v_index}/{v_term}, commit {c}) grants its vote in term {term} to node {} whose log {c_index}/{c_term} is behind",
                voter + 1,
                candidate.id()
            );
            self.fail(Property::VoteImpliesCommitted, detail);
        }
    }

    /// A node restarted from `disk`: its memory is the disk's content.
    pub fn on_restart(&mut self, node: usize, disk: &Disk) {
        let mut log = self.prefix(disk.snapshot());
        log.extend(disk.entries().iter().map(|e| e.term));
        let (commit, applied) = (disk.snapshot().index, disk.snapshot().index);
        self.nodes[node] = NodeView { log, commit, commit_seen: commit, applied, ..NodeView::default() };
    }

    /// Feeds a fabricated observation: `node` claims to lead `term`. For
    /// tests that show the checker has teeth.
    pub fn observe_leader(&mut self, node: usize, term: Term) {
        self.on_new_leader(node, term);
    }

    /// The last term of each node's in-memory log (by the shadow).
    pub fn log_len(&self, node: usize) -> usize {
        self.nodes[node].log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabricated_two_leaders_in_one_term_are_caught() {
        let d = Disk::default();
        let mut c = Checker::new(&[&d, &d, &d]);
        c.observe_leader(0, 2);
        assert!(c.violation.is_none());
        c.observe_leader(1, 2);
        assert_eq!(c.violation.as_ref().map(|v| v.property), Some(Property::ElectionSafety));
    }

    #[test]
    fn conflicting_entries_at_one_index_and_term_are_caught() {
        let d = Disk::default();
        let mut c = Checker::new(&[&d, &d]);
        let e =
            |payload: &'static [u8]| Entry { index: 1, term: 1, payload: Payload::Command(payload.into()) };
        c.on_log_change(0, &Persist { entries: vec![e(b"a")], ..Persist::default() }, 1);
        c.on_log_change(1, &Persist { entries: vec![e(b"b")], ..Persist::default() }, 1);
        assert_eq!(c.violation.as_ref().map(|v| v.property), Some(Property::LogMatching));
    }
}
