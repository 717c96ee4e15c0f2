//! Arbitrary, malformed and hostile messages fed to a node in each role:
//! unknown or impossible senders, stale and future terms, indexes beyond the
//! log, non-contiguous entries, entry terms above the message's term, a wrong
//! recipient. The node must not panic (debug builds check its invariants after
//! every step), must keep its invariants and its committed log, and must
//! answer a stale-term request with its own term and a refusal.

mod common;

use common::*;
use proptest::prelude::*;
use raft_core::{
    AppendResult, Body, ConflictHint, Entry, Index, Input, Message, Node, NodeId, Payload, Role, Term,
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
    term_offset: i64,
    body: BadBody,
}

#[derive(Clone, Debug)]
enum BadBody {
    RequestVote { last_index: Index, last_term_offset: i64 },
    VoteResponse(bool),
    Append { prev: Index, prev_term_offset: i64, entries: Entries, commit: Index },
    Success(Index),
    Reject { rejected_prev: Index, hint_term_offset: i64, hint_index: Index },
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
    prop_oneof![8 => 0u64..12, 1 => Just(u64::MAX), 1 => any::<u64>()]
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
    ];
    let from = prop_oneof![1 => Just(0u64), 6 => 1u64..=5, 1 => Just(99)];
    (from, prop::bool::weighted(0.9), offset(), body)
        .prop_map(|(from, to_target, term_offset, body)| BadMessage { from, to_target, term_offset, body })
}

fn shift(term: Term, offset: i64) -> Term {
    term.saturating_add_signed(offset)
}

impl BadMessage {
    fn build(&self, target: &Node) -> Message {
        let term = shift(target.term(), self.term_offset);
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
                                t += u64::from(*step);
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
        };
        Message { from: self.from, to, term, body }
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
            let committed: Vec<Entry> =
                (1..=before.commit_index).map(|i| net.node(id).entry(i).unwrap().clone()).collect();

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
            for e in &committed {
                prop_assert_eq!(node.entry(e.index), Some(e), "committed entry {} changed", e.index);
            }
            for peer in 1..=5 {
                if let Some(p) = node.progress(peer) {
                    // Beyond last + 1 the leader has nothing to send from: the follower would starve.
                    prop_assert!(p.next_index <= node.last_index() + 1, "progress of {}: {:?}", peer, p);
                }
            }
            for out in sends(&actions) {
                prop_assert_eq!(out.from, id);
                prop_assert!(out.term == node.term(), "sent {} at term {}", out, node.term());
            }
            let Some(m) = m else { continue };
            let addressed = m.to == id && m.from != 0 && m.from != id;
            if !addressed {
                prop_assert!(actions.is_empty(), "{} not for this node, yet {:?}", m, actions);
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
                    _ => prop_assert!(replies.is_empty(), "reply to stale response {}", m),
                }
            }
        }
    }
}
