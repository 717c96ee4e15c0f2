//! Structure-aware: arbitrary sequences of `raft_core::Input` (ticks,
//! proposals, reads, messages of every `Body` kind with terms and indexes
//! near the node's own and near `u64::MAX`, set-configuration, leadership
//! transfer, snapshot-taken) fed to a node brought into the follower,
//! candidate or leader role of a three-node cluster, interleaved with the
//! honest cluster's own traffic. After every step of every node its
//! invariants must hold (`Cluster::step` checks), and nothing may panic.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raft_core::{
    AppendResult, Body, ConflictHint, Entry, Input, Membership, Message, Node, NodeId, Payload, ReadPolicy,
    SnapshotMeta, Topology,
};
use raft_fuzz::{Cluster, Target};

#[derive(Arbitrary, Debug)]
struct Case {
    target: Target,
    pre_vote: bool,
    check_quorum: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Tick(u8),
    Propose(Vec<Vec<u8>>),
    Read {
        id: u64,
        lease: bool,
    },
    Message(FMessage),
    SetConfiguration {
        voters: Vec<(Id, u8)>,
        learners: Vec<(Id, u8)>,
    },
    TransferLeadership(Id),
    SnapshotTaken(Num),
    /// Lets the honest cluster deliver this many queued messages.
    Deliver(u8),
    /// Drops every queued message (a partition that heals at once).
    DropQueue,
    /// Ticks another node of the cluster.
    TickOther(u8),
}

/// A node id: mostly cluster members, sometimes nobody or nonsense.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Id {
    Member(u8),
    Zero,
    Max,
    Any(u64),
}

impl Id {
    fn get(self) -> NodeId {
        match self {
            Id::Member(k) => u64::from(k % 5) + 1,
            Id::Zero => 0,
            Id::Max => u64::MAX,
            Id::Any(v) => v,
        }
    }
}

/// A term or an index, relative to the node's current one or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Same,
    Plus(u8),
    Minus(u8),
    Small(u8),
    NearMax(u8),
    Any(u64),
}

impl Num {
    fn get(self, base: u64) -> u64 {
        match self {
            Num::Same => base,
            Num::Plus(d) => base.saturating_add(u64::from(d % 4)),
            Num::Minus(d) => base.saturating_sub(u64::from(d % 4)),
            Num::Small(v) => u64::from(v % 16),
            Num::NearMax(d) => u64::MAX - u64::from(d % 4),
            Num::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FMessage {
    from: Id,
    to_target: bool,
    term: Num,
    body: FBody,
}

#[derive(Arbitrary, Debug)]
enum FBody {
    RequestVote {
        last_index: Num,
        last_term: Num,
        transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
    },
    AppendEntries {
        prev_index: Num,
        prev_term: Num,
        entries: Vec<FEntry>,
        contiguous: bool,
        commit: Num,
    },
    Success {
        match_index: Num,
    },
    Reject {
        rejected_prev: Num,
        hint_term: Num,
        hint_index: Num,
    },
    PreVote {
        last_index: Num,
        last_term: Num,
    },
    PreVoteResponse {
        granted: bool,
    },
    ReadConfirm {
        round: Num,
    },
    ReadConfirmResponse {
        round: Num,
    },
    InstallSnapshot {
        index: Num,
        term: Num,
        voters: Vec<Id>,
        offset: Num,
        data: Vec<u8>,
        done: bool,
        good_crc: bool,
    },
    InstallSnapshotResponse {
        index: Num,
        next_offset: Num,
    },
    TimeoutNow,
    ReadIndexRequest {
        id: u64,
        lease: bool,
    },
    ReadIndexResponse {
        id: u64,
        index: Option<Num>,
    },
}

#[derive(Arbitrary, Debug)]
struct FEntry {
    index: Num,
    term: Num,
    payload: FPayload,
}

#[derive(Arbitrary, Debug)]
enum FPayload {
    Noop,
    Command(Vec<u8>),
    Membership(Vec<Id>, Vec<Id>, Option<Vec<Id>>),
}

fn members(ids: &[Id]) -> BTreeMap<NodeId, String> {
    ids.iter().map(|id| (id.get(), format!("n{}", id.get()))).collect()
}

impl FMessage {
    fn build(&self, node: &Node) -> Message {
        let term = self.term.get(node.term());
        let last = node.last_index();
        let to = if self.to_target { node.id() } else { node.id() % 3 + 1 };
        let body = match &self.body {
            FBody::RequestVote { last_index, last_term, transfer } => Body::RequestVote {
                last_log_index: last_index.get(last),
                last_log_term: last_term.get(term),
                transfer: *transfer,
            },
            FBody::RequestVoteResponse { granted } => Body::RequestVoteResponse { granted: *granted },
            FBody::AppendEntries { prev_index, prev_term, entries, contiguous, commit } => {
                let prev = prev_index.get(last);
                let entries = entries
                    .iter()
                    .take(8)
                    .enumerate()
                    .map(|(k, e)| Entry {
                        index: if *contiguous { prev.wrapping_add(k as u64 + 1) } else { e.index.get(last) },
                        term: e.term.get(term),
                        payload: match &e.payload {
                            FPayload::Noop => Payload::Noop,
                            FPayload::Command(c) => Payload::Command(Bytes::copy_from_slice(c)),
                            FPayload::Membership(voters, learners, old) => {
                                Payload::Membership(Box::new(Membership {
                                    voters: members(voters),
                                    learners: members(learners),
                                    old_voters: old.as_deref().map(members),
                                }))
                            }
                        },
                    })
                    .collect();
                Body::AppendEntries {
                    prev_index: prev,
                    prev_term: prev_term.get(term),
                    entries,
                    commit: commit.get(last),
                }
            }
            FBody::Success { match_index } => {
                Body::AppendEntriesResponse(AppendResult::Success { match_index: match_index.get(last) })
            }
            FBody::Reject { rejected_prev, hint_term, hint_index } => {
                Body::AppendEntriesResponse(AppendResult::Reject {
                    rejected_prev: rejected_prev.get(last),
                    hint: ConflictHint { term: hint_term.get(term), index: hint_index.get(last) },
                })
            }
            FBody::PreVote { last_index, last_term } => {
                Body::PreVote { last_log_index: last_index.get(last), last_log_term: last_term.get(term) }
            }
            FBody::PreVoteResponse { granted } => Body::PreVoteResponse { granted: *granted },
            FBody::ReadConfirm { round } => Body::ReadConfirm { round: round.get(0) },
            FBody::ReadConfirmResponse { round } => Body::ReadConfirmResponse { round: round.get(0) },
            FBody::InstallSnapshot { index, term: snap_term, voters, offset, data, done, good_crc } => {
                let voters = if voters.is_empty() { raft_fuzz::membership().voters } else { members(voters) };
                let meta = SnapshotMeta {
                    index: index.get(last),
                    term: snap_term.get(term),
                    membership: Membership { voters, ..Membership::default() },
                };
                let checksum = if *good_crc { raft_core::crc32c(0, data) } else { 0 };
                Body::InstallSnapshot {
                    meta: Box::new(meta),
                    offset: offset.get(0),
                    data: Bytes::copy_from_slice(data),
                    done: *done,
                    checksum,
                }
            }
            FBody::InstallSnapshotResponse { index, next_offset } => {
                Body::InstallSnapshotResponse { index: index.get(last), next_offset: next_offset.get(0) }
            }
            FBody::TimeoutNow => Body::TimeoutNow,
            FBody::ReadIndexRequest { id, lease } => Body::ReadIndexRequest { id: *id, lease: *lease },
            FBody::ReadIndexResponse { id, index } => {
                Body::ReadIndexResponse { id: *id, index: index.map(|i| i.get(node.commit_index())) }
            }
        };
        Message { from: self.from.get(), to, term, body }
    }
}

fuzz_target!(|case: Case| {
    let (mut cluster, id) = Cluster::with_target(case.target, case.pre_vote, case.check_quorum);
    for step in case.steps.iter().take(64) {
        let node = &cluster.nodes[&id];
        match step {
            Step::Tick(n) => {
                for _ in 0..n % 8 {
                    cluster.step(id, Input::Tick);
                }
            }
            Step::Propose(commands) => {
                let commands = commands.iter().take(4).map(|c| Bytes::copy_from_slice(c)).collect();
                cluster.step(id, Input::Propose(commands));
            }
            Step::Read { id: read, lease } => {
                let policy = if *lease { ReadPolicy::Lease } else { ReadPolicy::Linearizable };
                cluster.step(id, Input::Read { id: *read, policy });
            }
            Step::Message(m) => {
                let m = m.build(node);
                cluster.receive(m);
            }
            Step::SetConfiguration { voters, learners } => {
                let named =
                    |ids: &[(Id, u8)]| ids.iter().map(|(id, a)| (id.get(), format!("n{a}"))).collect();
                let topology = Topology { voters: named(voters), learners: named(learners) };
                cluster.step(id, Input::SetConfiguration(topology));
            }
            Step::TransferLeadership(to) => cluster.step(id, Input::TransferLeadership { to: to.get() }),
            Step::SnapshotTaken(index) => {
                let index = index.get(node.applied_index());
                cluster.step(id, Input::SnapshotTaken { index });
            }
            Step::Deliver(n) => cluster.deliver(usize::from(*n)),
            Step::DropQueue => cluster.queue.clear(),
            Step::TickOther(k) => {
                let other = u64::from(k % 3) + 1;
                cluster.step(other, Input::Tick);
            }
        }
    }
});
