//! Arbitrary, malformed and hostile messages of every kind fed to a node in
//! each role: unknown or impossible senders, stale and future terms (also
//! terms and indexes next to `u64::MAX`), indexes beyond the log,
//! non-contiguous entries, entry terms above the message's term, snapshots
//! whose term is above the message's, chunks out of order or with a wrong
//! checksum, a wrong recipient. The node must not panic (debug builds check
//! its invariants after every step), must keep its invariants and its
//! committed log, must still restart from what it persisted, must change
//! nothing for a malformed message, and must answer a stale-term request with
//! its own term and a refusal.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use raft_core::{
    AppendResult, Body, ConflictHint, Entry, Index, Input, Membership, Message, Node, NodeId, Payload, Role,
    SnapshotMeta, Term,
};

/// Which node to attack, after bringing it into a role.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Node 2, following node 1 of a 3-node cluster with a few entries committed.
    Follower,
    /// Node 1, a candidate with the log `1 1 2`.
    Candidate,
    /// Node 1, leading a 3-node cluster with a few entries committed.
    Leader,
}

fn setup(target: Target) -> (Net, NodeId) {
    match target {
        Target::Follower | Target::Leader => {
            let mut net = Net::new(3);
            net.elect(1);
            net.propose(1, &["a", "b"]);
            net.deliver_all();
            net.propose(1, &["c"]);
            let id = if matches!(target, Target::Leader) { 1 } else { 2 };
            assert_eq!(net.node(id).commit_index(), 3);
            (net, id)
        }
        Target::Candidate => {
            let mut net = Net::with_logs(&[(2, &[1, 1, 2]), (2, &[1]), (2, &[])]);
            net.tick_until(1, |n| n.role() == Role::Candidate);
            (net, 1)
        }
    }
}

fn role_of(target: Target) -> Role {
    match target {
        Target::Follower => Role::Follower,
        Target::Candidate => Role::Candidate,
        Target::Leader => Role::Leader,
    }
}

/// A message, with terms relative to the target's term at delivery time.
#[derive(Clone, Debug)]
struct BadMessage {
    from: NodeId,
    to_target: bool,
    term: TermAt,
    body: BadBody,
}

/// The message's term: relative to the target's, or an absolute one (used
/// for terms next to `u64::MAX`).
#[derive(Clone, Copy, Debug)]
enum TermAt {
    Relative(i64),
    Absolute(Term),
}

#[derive(Clone, Debug)]
enum BadBody {
    RequestVote { last_index: Index, last_term_offset: i64 },
    VoteResponse(bool),
    Append { prev: Index, prev_term_offset: i64, entries: Entries, commit: Index },
    Success(Index),
    Reject { rejected_prev: Index, hint_term_offset: i64, hint_index: Index },
    PreVote { last_index: Index, last_term_offset: i64 },
    PreVoteResponse(bool),
    ReadConfirm(u64),
    ReadConfirmResponse(u64),
    Snapshot(BadSnapshot),
    SnapshotResponse { index: Index, next_offset: u64 },
    TimeoutNow,
    ReadIndexRequest { id: u64, lease: bool },
    ReadIndexResponse { id: u64, index: Option<Index> },
}

/// One InstallSnapshot chunk.
#[derive(Clone, Debug)]
struct BadSnapshot {
    index: Index,
    /// The snapshot's term relative to the message's (positive: above it, malformed).
    term_offset: i64,
    offset: u64,
    data: Vec<u8>,
    done: bool,
    /// Whether `checksum` is the CRC32C of `data` (right for a one-chunk snapshot).
    checksum_right: bool,
    /// A configuration with no voters instead of the cluster's.
    no_voters: bool,
}

#[derive(Clone, Debug)]
enum Entries {
    /// Contiguous from prev + 1, with these term increments (may pass the message's term).
    Contiguous(Vec<u8>),
    /// Any (index, term offset) pairs.
    Arbitrary(Vec<(Index, i64)>),
}

/// Mostly small indexes, sometimes huge ones.
fn index() -> impl Strategy<Value = Index> {
    prop_oneof![8 => 0u64..12, 1 => u64::MAX - 2..=u64::MAX, 1 => any::<u64>()]
}

/// Mostly the target's term, sometimes one next to `u64::MAX`.
fn term_at() -> impl Strategy<Value = TermAt> {
    prop_oneof![9 => offset().prop_map(TermAt::Relative), 1 => (u64::MAX - 2..=u64::MAX).prop_map(TermAt::Absolute)]
}

fn bad_snapshot() -> impl Strategy<Value = BadSnapshot> {
    (
        index(),
        prop_oneof![3 => Just(0i64), 1 => -2i64..=0, 2 => 1i64..=9],
        prop_oneof![3 => Just(0u64), 1 => 0u64..16, 1 => Just(u64::MAX)],
        prop::collection::vec(any::<u8>(), 0..12),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(index, term_offset, offset, data, done, checksum_right, no_voters)| BadSnapshot {
            index,
            term_offset,
            offset,
            data,
            done,
            checksum_right,
            no_voters,
        })
}

/// Mostly the current term, so that messages get past the term check.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![2 => Just(0i64), 1 => -3i64..=3]
}

fn bad_message() -> impl Strategy<Value = BadMessage> {
    let entries = prop_oneof![
        prop::collection::vec(0u8..2, 0..5).prop_map(Entries::Contiguous),
        prop::collection::vec((index(), offset()), 0..5).prop_map(Entries::Arbitrary),
    ];
    let body = prop_oneof![
        (index(), offset())
            .prop_map(|(last_index, last_term_offset)| BadBody::RequestVote { last_index, last_term_offset }),
        any::<bool>().prop_map(BadBody::VoteResponse),
        (index(), offset(), entries, index()).prop_map(|(prev, prev_term_offset, entries, commit)| {
            BadBody::Append { prev, prev_term_offset, entries, commit }
        }),
        index().prop_map(BadBody::Success),
        (index(), offset(), index()).prop_map(|(rejected_prev, hint_term_offset, hint_index)| {
            BadBody::Reject { rejected_prev, hint_term_offset, hint_index }
        }),
        (index(), offset())
            .prop_map(|(last_index, last_term_offset)| BadBody::PreVote { last_index, last_term_offset }),
        any::<bool>().prop_map(BadBody::PreVoteResponse),
        index().prop_map(BadBody::ReadConfirm),
        index().prop_map(BadBody::ReadConfirmResponse),
        bad_snapshot().prop_map(BadBody::Snapshot),
        (index(), prop_oneof![Just(0u64), 0u64..16, Just(u64::MAX)])
            .prop_map(|(index, next_offset)| BadBody::SnapshotResponse { index, next_offset }),
        Just(BadBody::TimeoutNow),
        (index(), any::<bool>()).prop_map(|(id, lease)| BadBody::ReadIndexRequest { id, lease }),
        (index(), prop::option::of(index())).prop_map(|(id, index)| BadBody::ReadIndexResponse { id, index }),
    ];
    let from = prop_oneof![1 => Just(0u64), 6 => 1u64..=5, 1 => Just(99)];
    (from, prop::bool::weighted(0.9), term_at(), body).prop_map(|(from, to_target, term, body)| BadMessage {
        from,
        to_target,
        term,
        body,
    })
}

fn shift(term: Term, offset: i64) -> Term {
    term.saturating_add_signed(offset)
}

impl BadMessage {
    fn build(&self, target: &Node) -> Message {
        let term = match self.term {
            TermAt::Relative(offset) => shift(target.term(), offset),
            TermAt::Absolute(term) => term,
        };
        let to = if self.to_target { target.id() } else { target.id() % 5 + 1 };
        let body = match &self.body {
            BadBody::RequestVote { last_index, last_term_offset } => Body::RequestVote {
                last_log_index: *last_index,
                last_log_term: shift(term, *last_term_offset),
                transfer: *last_index % 3 == 0,
            },
            BadBody::VoteResponse(granted) => Body::RequestVoteResponse { granted: *granted },
            BadBody::Append { prev, prev_term_offset, entries, commit } => {
                let prev_term = shift(term, *prev_term_offset);
                let entries = match entries {
                    Entries::Contiguous(steps) => {
                        let mut t = prev_term;
                        steps
                            .iter()
                            .enumerate()
                            .map(|(k, step)| {
                                t = t.saturating_add(u64::from(*step));
                                let index = prev.wrapping_add(k as u64 + 1);
                                Entry { term: t, index, payload: Payload::Command(format!("{index}").into()) }
                            })
                            .collect()
                    }
                    Entries::Arbitrary(pairs) => pairs
                        .iter()
                        .map(|&(index, o)| Entry { term: shift(term, o), index, payload: Payload::Noop })
                        .collect(),
                };
                Body::AppendEntries { prev_index: *prev, prev_term, entries, commit: *commit }
            }
            BadBody::Success(match_index) => {
                Body::AppendEntriesResponse(AppendResult::Success { match_index: *match_index })
            }
            BadBody::Reject { rejected_prev, hint_term_offset, hint_index } => {
                Body::AppendEntriesResponse(AppendResult::Reject {
                    rejected_prev: *rejected_prev,
                    hint: ConflictHint { term: shift(term, *hint_term_offset), index: *hint_index },
                })
            }
            BadBody::PreVote { last_index, last_term_offset } => {
                Body::PreVote { last_log_index: *last_index, last_log_term: shift(term, *last_term_offset) }
            }
            BadBody::PreVoteResponse(granted) => Body::PreVoteResponse { granted: *granted },
            BadBody::ReadConfirm(round) => Body::ReadConfirm { round: *round },
            BadBody::ReadConfirmResponse(round) => Body::ReadConfirmResponse { round: *round },
            BadBody::Snapshot(s) => {
                let membership =
                    if s.no_voters { Membership::default() } else { target.membership().clone() };
                let meta = SnapshotMeta { index: s.index, term: shift(term, s.term_offset), membership };
                let checksum = raft_core::crc32c(0, &s.data) ^ u32::from(!s.checksum_right);
                Body::InstallSnapshot {
                    meta: Box::new(meta),
                    offset: s.offset,
                    data: Bytes::from(s.data.clone()),
                    done: s.done,
                    checksum,
                }
            }
            BadBody::SnapshotResponse { index, next_offset } => {
                Body::InstallSnapshotResponse { index: *index, next_offset: *next_offset }
            }
            BadBody::TimeoutNow => Body::TimeoutNow,
            BadBody::ReadIndexRequest { id, lease } => Body::ReadIndexRequest { id: *id, lease: *lease },
            BadBody::ReadIndexResponse { id, index } => Body::ReadIndexResponse { id: *id, index: *index },
        };
        Message { from: self.from, to, term, body }
    }
}

/// What the test knows to be impossible from a correct sender, whatever the
/// receiver's state: a term no node may reach, or a snapshot claiming a term
/// above the message's (its leader could not have had it).
fn malformed(m: &Message) -> bool {
    m.term == Term::MAX
        || match &m.body {
            Body::RequestVote { last_log_term, .. } | Body::PreVote { last_log_term, .. } => {
                *last_log_term > m.term
            }
            Body::AppendEntries { prev_index, prev_term, entries, .. } => {
                *prev_term > m.term
                    || entries.iter().enumerate().any(|(k, e)| {
                        e.term > m.term
                            || Some(e.index) != prev_index.checked_add(k as u64 + 1)
                            || e.term < entries.get(k.wrapping_sub(1)).map_or(*prev_term, |p| p.term)
                    })
            }
            Body::InstallSnapshot { meta, .. } => {
                meta.term > m.term
                    || meta.term == 0
                    || meta.index == 0
                    || meta.index == Index::MAX
                    || meta.membership.voters.is_empty()
            }
            _ => false,
        }
}

#[derive(Clone, Debug)]
enum Event {
    Bad(BadMessage),
    Tick,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![6 => bad_message().prop_map(Event::Bad), 1 => Just(Event::Tick)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Follower), Just(Target::Candidate), Just(Target::Leader)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No panic, invariants and committed entries kept, stale requests refused with the newer term.
    // Paper 5.1, figure 2
    #[test]
    fn bad_messages_are_survived((target, events) in (target(), prop::collection::vec(event(), 1..40))) {
        // setup
        let (mut net, id) = setup(target);
        prop_assert_eq!(net.node(id).role(), role_of(target));
        net.queue.clear();

        for event in &events {
            let before = net.node(id).status();
            // Committed entries still in the log (an installed snapshot compacts the rest).
            let committed: Vec<Entry> =
                (net.node(id).snapshot_meta().index + 1..=before.commit_index)
                    .filter_map(|i| net.node(id).entry(i).cloned())
                    .collect();

            // act
            let (m, actions) = match event {
                Event::Tick => (None, net.step(id, Input::Tick)),
                Event::Bad(bad) => {
                    let m = bad.build(net.node(id));
                    (Some(m.clone()), net.step(id, Input::Message(m)))
                }
            };

            // check
            let node = net.node(id);
            prop_assert_eq!(node.invariants(), Ok(()));
            prop_assert!(node.term() >= before.term, "term went back");
            prop_assert!(node.commit_index() >= before.commit_index, "commit went back");
            for e in committed.iter().filter(|e| e.index > node.snapshot_meta().index) {
                prop_assert_eq!(node.entry(e.index), Some(e), "committed entry {} changed", e.index);
            }
            let restarted = Node::new(net.configs[&id].clone(), net.disks[&id].restored());
            prop_assert!(restarted.is_ok(), "cannot restart from what it persisted: {:?}", restarted.err());
            for peer in 1..=5 {
                if let Some(p) = node.progress(peer) {
                    // Beyond last + 1 the leader has nothing to send from: the follower would starve.
                    prop_assert!(p.next_index <= node.last_index() + 1, "progress of {}: {:?}", peer, p);
                }
            }
            for out in sends(&actions) {
                prop_assert_eq!(out.from, id);
                // A granted pre-vote echoes the asked-for term (dissertation 9.6).
                let echo = matches!(out.body, Body::PreVoteResponse { granted: true });
                prop_assert!(echo || out.term == node.term(), "sent {} at term {}", out, node.term());
            }
            let Some(m) = m else { continue };
            let addressed = m.to == id && m.from != 0 && m.from != id;
            if !addressed || malformed(&m) {
                prop_assert!(actions.is_empty(), "{} not for this node or malformed, yet {:?}", m, actions);
                prop_assert_eq!(&node.status(), &before);
            } else if m.term < before.term {
                let replies = sends(&actions);
                prop_assert!(persists(&actions).is_empty(), "stale {} persisted", m);
                prop_assert_eq!(&node.status(), &before, "stale {} changed state", m);
                match m.body {
                    Body::RequestVote { .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(replies[0].to, m.from);
                        prop_assert_eq!(replies[0].term, before.term);
                        prop_assert_eq!(&replies[0].body, &Body::RequestVoteResponse { granted: false });
                    }
                    Body::AppendEntries { .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(replies[0].to, m.from);
                        prop_assert_eq!(replies[0].term, before.term);
                        prop_assert!(is_reject(replies[0]), "{}", replies[0]);
                    }
                    Body::PreVote { .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(replies[0].term, before.term);
                        prop_assert_eq!(&replies[0].body, &Body::PreVoteResponse { granted: false });
                    }
                    Body::InstallSnapshot { ref meta, .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(replies[0].term, before.term);
                        let refusal = Body::InstallSnapshotResponse { index: meta.index, next_offset: 0 };
                        prop_assert_eq!(&replies[0].body, &refusal);
                    }
                    Body::ReadConfirm { .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(&replies[0].body, &Body::ReadConfirmResponse { round: 0 });
                    }
                    Body::ReadIndexRequest { id, .. } => {
                        prop_assert_eq!(replies.len(), 1);
                        prop_assert_eq!(&replies[0].body, &Body::ReadIndexResponse { id, index: None });
                    }
                    _ => prop_assert!(replies.is_empty(), "reply to stale response {}", m),
                }
            }
        }
    }
}
