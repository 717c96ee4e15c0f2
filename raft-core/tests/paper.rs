//! The rules of Raft section 5, one test per scenario of SCENARIOS.md
//! section A, against the public API only.

mod common;

use std::collections::BTreeSet;

use common::*;
use raft_core::{
    Action, AppendResult, Body, Config, ConflictHint, HardState, Input, Node, Payload, Restored, Role, Term,
};

/// Votes and term changes a step persisted, in order.
fn persisted_hard_states(actions: &[Action]) -> Vec<HardState> {
    persists(actions).iter().filter_map(|p| p.hard_state).collect()
}

fn the_reply(actions: &[Action]) -> raft_core::Message {
    let s = sends(actions);
    assert_eq!(s.len(), 1, "exactly one reply expected, got {actions:?}");
    s[0].clone()
}

// ----- 5.1 -----

/// A newer term turns any role into a follower of that term.
// Paper 5.1
#[test]
fn a1_higher_term_append_makes_any_role_follower() {
    // setup: one node in each role, all at term 1
    let mut follower = Net::from_restored(vec![(classic_config(1), restored(3, 1, None, &[]))]);
    let mut candidate = Net::new(3);
    candidate.tick_until(1, |n| n.role() == Role::Candidate);
    let mut leader = Net::new(3);
    leader.elect(1);
    for (name, net) in [("follower", &mut follower), ("candidate", &mut candidate), ("leader", &mut leader)] {
        assert_eq!(net.node(1).term(), 1, "{name}");
        net.queue.clear();

        // act
        let actions = net.inject(append(2, 1, 2, (0, 0), vec![], 0));

        // check
        let n = net.node(1);
        assert_eq!((n.role(), n.term(), n.leader()), (Role::Follower, 2, Some(2)), "{name}");
        assert_eq!(persisted_hard_states(&actions), vec![HardState { term: 2, vote: None }], "{name}");
        assert_eq!(net.disks[&1].hard_state.term, 2, "{name}");
    }
}

/// A message from an older term changes nothing; requests are refused with the newer term.
// Paper 5.1
#[test]
fn a2_stale_term_message_is_ignored_or_rejected() {
    // setup: a follower and a leader at term 2
    let mut follower = Net::from_restored(vec![(classic_config(1), restored(3, 2, None, &[1, 2]))]);
    let mut leader = Net::with_logs(&[(1, &[]), (1, &[]), (1, &[])]);
    leader.elect(1);
    assert_eq!(leader.node(1).term(), 2);
    for (name, net) in [("follower", &mut follower), ("leader", &mut leader)] {
        let before = net.node(1).status();
        let stale = [
            msg(2, 1, 1, Body::RequestVote { last_log_index: 9, last_log_term: 1, transfer: false }),
            append(2, 1, 1, (0, 0), entries(&[1, 1, 1]), 3),
            vote_response(2, 1, 1, true),
            ack(2, 1, 1, 1),
        ];
        for m in stale {
            let kind = m.body.kind();
            // act
            let actions = net.inject(m);

            // check
            assert!(persists(&actions).is_empty(), "{name} {kind}: {actions:?}");
            assert_eq!(net.node(1).status(), before, "{name} {kind}");
            let replies = sends(&actions);
            match kind {
                "RequestVote" => {
                    assert_eq!(replies.len(), 1, "{name}");
                    assert_eq!(replies[0].term, 2);
                    assert_eq!(replies[0].body, Body::RequestVoteResponse { granted: false });
                }
                "AppendEntries" => {
                    assert_eq!(replies.len(), 1, "{name}");
                    assert_eq!(replies[0].term, 2);
                    assert!(is_reject(replies[0]), "{name}: {:?}", replies[0]);
                }
                _ => assert!(replies.is_empty(), "{name} {kind}: {actions:?}"),
            }
        }
    }
}

// ----- 5.2 -----

/// Every node starts as a follower, with the term and vote it restored.
// Paper 5.2
#[test]
fn a3_new_node_starts_as_follower() {
    // setup / act
    let fresh = Node::new(classic_config(1), Restored::new_cluster(membership(3))).unwrap();
    let restarted = Node::new(classic_config(2), restored(3, 5, Some(3), &[1, 4])).unwrap();

    // check
    assert_eq!((fresh.role(), fresh.term(), fresh.leader()), (Role::Follower, 0, None));
    assert_eq!(fresh.hard_state(), HardState { term: 0, vote: None });
    assert_eq!((restarted.role(), restarted.leader()), (Role::Follower, None));
    assert_eq!(restarted.hard_state(), HardState { term: 5, vote: Some(3) });
    assert_eq!(restarted.commit_index(), 0, "commit is not durable: relearned from a leader");
}

/// A leader sends an empty AppendEntries to every peer each heartbeat interval.
// Paper 5.2
#[test]
fn a4_leader_heartbeats_every_peer() {
    // setup: a 5-node leader with everything acknowledged
    let mut net = Net::new(5);
    net.elect(1);
    net.deliver_all();
    let heartbeat_ticks = classic_config(1).heartbeat_ticks;
    let (term, commit) = (net.node(1).term(), net.node(1).commit_index());
    assert_eq!(commit, 1, "the no-op committed");

    // act / check: nothing before the interval, then one heartbeat per peer
    for _ in 1..heartbeat_ticks {
        assert!(sends(&net.tick(1)).is_empty());
    }
    let actions = net.tick(1);
    let beats = sends(&actions);
    let to: BTreeSet<_> = beats.iter().map(|m| m.to).collect();
    assert_eq!(to, BTreeSet::from([2, 3, 4, 5]));
    assert_eq!(beats.len(), 4);
    for m in beats {
        let matched = net.node(1).progress(m.to).unwrap().match_index;
        assert_eq!(m.term, term);
        assert_eq!(
            m.body,
            Body::AppendEntries { prev_index: matched, prev_term: 1, entries: vec![], commit },
            "{m}"
        );
    }
}

/// On timeout: term+1, candidate, self vote persisted before any RequestVote leaves.
// Paper 5.2
#[test]
fn a5_timeout_starts_election_vote_persisted_first() {
    for start_as_candidate in [false, true] {
        // setup: a follower at term 2 with log `1 1 2`, optionally already a candidate
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 2, None, &[1, 1, 2]))]);
        if start_as_candidate {
            net.tick_until(1, |n| n.role() == Role::Candidate);
        }
        let term = net.node(1).term();

        // act: tick until the (next) timeout fires
        let mut actions = Vec::new();
        while actions.is_empty() {
            actions = net.tick(1);
        }

        // check
        let n = net.node(1);
        assert_eq!((n.role(), n.term()), (Role::Candidate, term + 1));
        assert_eq!(n.hard_state().vote, Some(1));
        let Action::Persist(first) = &actions[0] else { panic!("persist must come first: {actions:?}") };
        assert_eq!(first.hard_state, Some(HardState { term: term + 1, vote: Some(1) }));
        let requests = sends(&actions);
        assert_eq!(requests.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
        for m in requests {
            assert_eq!(m.term, term + 1);
            assert_eq!(m.body, Body::RequestVote { last_log_index: 3, last_log_term: 2, transfer: false });
        }
        assert_eq!(net.disks[&1].hard_state, HardState { term: term + 1, vote: Some(1) });
    }
}

/// A candidate leads iff grants (self included) are a majority, yields iff refusals are.
// Paper 5.2
#[test]
fn a6_election_outcome_follows_majorities() {
    // (cluster size, granted by, refused by, outcome), responses fed refusals first
    let cases: &[(u64, &[u64], &[u64], Role)] = &[
        (1, &[], &[], Role::Leader),
        (3, &[], &[], Role::Candidate),
        (3, &[2], &[], Role::Leader),
        (3, &[], &[2], Role::Candidate),
        (3, &[3], &[2], Role::Leader),
        (3, &[], &[2, 3], Role::Follower),
        (5, &[2], &[], Role::Candidate),
        (5, &[2, 3], &[], Role::Leader),
        (5, &[2], &[3], Role::Candidate),
        (5, &[], &[2, 3], Role::Candidate),
        (5, &[4, 5], &[2, 3], Role::Leader),
        (5, &[2], &[3, 4, 5], Role::Follower),
        (5, &[], &[2, 3, 4, 5], Role::Follower),
    ];
    for &(n, granted, refused, want) in cases {
        // setup
        let mut net = Net::new(n);
        net.tick_until(1, |node| node.role() != Role::Follower);
        let term = net.node(1).term();

        // act
        for &from in refused {
            net.inject(vote_response(from, 1, term, false));
        }
        for &from in granted {
            net.inject(vote_response(from, 1, term, true));
        }

        // check
        let node = net.node(1);
        assert_eq!(node.role(), want, "n={n} granted={granted:?} refused={refused:?}");
        assert_eq!(node.term(), term, "losing does not change the term");
    }
}

/// One vote per term, first come first served; the same candidate may ask again.
// Paper 5.2
#[test]
fn a7_one_vote_per_term() {
    // (vote already cast in term 1, candidate asking, granted)
    let cases = [(None, 2, true), (None, 3, true), (Some(2), 2, true), (Some(2), 3, false)];
    for (vote, candidate, want) in cases {
        // setup
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 1, vote, &[]))]);

        // act
        let actions = net.inject(msg(
            candidate,
            1,
            1,
            Body::RequestVote { last_log_index: 0, last_log_term: 0, transfer: false },
        ));

        // check
        let reply = the_reply(&actions);
        assert_eq!((reply.to, reply.term), (candidate, 1));
        assert_eq!(reply.body, Body::RequestVoteResponse { granted: want }, "vote={vote:?} from {candidate}");
        let expect_vote = if want { Some(candidate) } else { vote };
        assert_eq!(net.node(1).hard_state(), HardState { term: 1, vote: expect_vote });
        assert_eq!(net.disks[&1].hard_state.vote, expect_vote, "the vote is durable");
        if want && vote.is_none() {
            let persist_at = actions.iter().position(|a| matches!(a, Action::Persist(_))).unwrap();
            let send_at = actions.iter().position(|a| matches!(a, Action::Send(_))).unwrap();
            assert!(persist_at < send_at, "vote persisted before the grant leaves");
        }
    }

    // and in sequence: 2 first, then 3 is refused, then 2 again is granted
    let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 1, None, &[]))]);
    let ask =
        |from| msg(from, 1, 1, Body::RequestVote { last_log_index: 0, last_log_term: 0, transfer: false });
    let granted = |net: &mut Net, from| match the_reply(&net.inject(ask(from))).body {
        Body::RequestVoteResponse { granted } => granted,
        other => panic!("{other:?}"),
    };
    assert!(granted(&mut net, 2));
    assert!(!granted(&mut net, 3));
    assert!(granted(&mut net, 2));
    assert!(!granted(&mut net, 3));
}

/// A candidate hearing a leader of its term or newer becomes its follower.
// Paper 5.2
#[test]
fn a8_candidate_yields_to_leader() {
    for leader_term in [2, 3] {
        // setup: a candidate of term 2
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 1, None, &[]))]);
        net.tick_until(1, |n| n.role() == Role::Candidate);
        assert_eq!(net.node(1).term(), 2);

        // act
        let actions = net.inject(append(3, 1, leader_term, (0, 0), vec![], 0));

        // check
        let n = net.node(1);
        assert_eq!((n.role(), n.term(), n.leader()), (Role::Follower, leader_term, Some(3)));
        assert!(actions.contains(&Action::RoleChanged {
            role: Role::Follower,
            term: leader_term,
            leader: Some(3)
        }));
        let reply = the_reply(&actions);
        assert_eq!(reply.body, Body::AppendEntriesResponse(AppendResult::Success { match_index: 0 }));
    }
}

/// The ticks a lone voter of an (at least) 3-node cluster waits before each of `rounds` campaigns.
fn election_timeouts(config: Config, rounds: usize) -> Vec<u32> {
    let voters = config.id.max(3);
    let mut node = Node::new(config, Restored::new_cluster(membership(voters))).unwrap();
    let mut timeouts = Vec::with_capacity(rounds);
    let mut ticks = 0;
    while timeouts.len() < rounds {
        assert!(ticks < 1000, "node never campaigns");
        let term = node.term();
        node.step(Input::Tick);
        ticks += 1;
        if node.term() != term {
            timeouts.push(ticks);
            ticks = 0;
        }
    }
    timeouts
}

/// Election timeouts cover all of [min, max) and replay from the seed.
// Paper 5.2
#[test]
fn a9_election_timeouts_span_the_range_from_the_seed() {
    // setup
    let config = classic_config(1);
    let (min, max) = (config.election_ticks_min, config.election_ticks_max);

    // act
    let timeouts = election_timeouts(config.clone(), 1000);

    // check
    let seen: BTreeSet<u32> = timeouts.iter().copied().collect();
    assert_eq!(seen, (min..max).collect::<BTreeSet<_>>());
    assert_eq!(election_timeouts(config.clone(), 1000), timeouts, "same seed, same timeouts");
    let reseeded = Config { seed: 7, ..config };
    assert_ne!(election_timeouts(reseeded, 1000), timeouts, "the seed drives the draw");
}

/// With 5 nodes sharing a seed, two or more tie for the earliest timeout in <= 30% of rounds.
// Paper 5.2
#[test]
fn a10_simultaneous_timeouts_are_rare() {
    // setup: 5 nodes with distinct ids and one seed
    let rounds = 1000;
    let per_node: Vec<Vec<u32>> = (1..=5).map(|id| election_timeouts(classic_config(id), rounds)).collect();

    // act: a round is split when the earliest timeout is shared
    let split = (0..rounds)
        .filter(|&r| {
            let first = per_node.iter().map(|t| t[r]).min().unwrap();
            per_node.iter().filter(|t| t[r] == first).count() > 1
        })
        .count();

    // check
    assert!(split * 100 <= rounds * 30, "{split} of {rounds} rounds had simultaneous timeouts");
    assert_ne!(per_node[0], per_node[1], "ids decorrelate a shared seed");
}

// ----- 5.3 -----

/// A proposal is appended at last+1 in the current term, persisted, sent with the right prev; not committed.
// Paper 5.3
#[test]
fn a11_leader_appends_proposal() {
    // setup: a leader whose no-op committed
    let mut net = Net::new(3);
    net.elect(1);
    net.deliver_all();
    let (term, last, commit) = (net.node(1).term(), net.node(1).last_index(), net.node(1).commit_index());
    assert_eq!(commit, last);

    // act
    let actions = net.propose(1, &["x"]);

    // check
    let new = net.node(1).entry(last + 1).unwrap().clone();
    assert_eq!((new.term, new.index, new.payload), (term, last + 1, Payload::Command("x".into())));
    assert!(actions.contains(&Action::ProposalAccepted {
        term,
        first_index: last + 1,
        last_index: last + 1
    }));
    let Some(Action::Persist(p)) = actions.iter().find(|a| matches!(a, Action::Persist(_))) else {
        panic!("no persist: {actions:?}")
    };
    assert_eq!((p.truncate_from, &p.entries), (None, &vec![net.node(1).entry(last + 1).unwrap().clone()]));
    let persist_at = actions.iter().position(|a| matches!(a, Action::Persist(_))).unwrap();
    let first_send = actions.iter().position(|a| matches!(a, Action::Send(_))).unwrap();
    assert!(persist_at < first_send);
    let out = sends(&actions);
    assert_eq!(out.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in out {
        let Body::AppendEntries { prev_index, prev_term, entries, commit: c } = &m.body else {
            panic!("{m}")
        };
        assert_eq!((*prev_index, *prev_term, c), (last, net.node(1).term_at(last).unwrap(), &commit));
        assert_eq!(entries, &vec![net.node(1).entry(last + 1).unwrap().clone()]);
    }
    assert_eq!(net.node(1).commit_index(), commit, "not committed yet");
    assert!(applies(&actions).is_empty());
}

/// Once a majority holds the entry it commits and applies; later messages carry the commit.
// Paper 5.3
#[test]
fn a12_majority_ack_commits_and_applies() {
    // setup: a proposal in flight
    let mut net = Net::new(3);
    net.elect(1);
    net.deliver_all();
    net.propose(1, &["x"]);
    let index = net.node(1).last_index();

    // act: only node 2 stores and acknowledges it
    net.deliver_where(|m| m.to == 2 && is_append(m));
    let on_ack = net.deliver_where(|m| m.from == 2 && m.to == 1);

    // check
    assert_eq!(net.node(1).commit_index(), index);
    let applied = applies(&on_ack);
    assert_eq!(applied.iter().map(|e| e.index).collect::<Vec<_>>(), vec![index]);
    assert_eq!(applied[0].payload, Payload::Command("x".into()));
    let mut later = Vec::new();
    later.extend(sends(&on_ack).into_iter().cloned());
    for _ in 0..classic_config(1).heartbeat_ticks {
        later.extend(sends(&net.tick(1)).into_iter().cloned());
    }
    assert!(later.iter().any(|m| m.to == 3), "node 3 hears of it");
    for m in &later {
        let Body::AppendEntries { commit, .. } = m.body else { panic!("{m}") };
        assert_eq!(commit, index, "{m}");
    }
    net.deliver_all();
    for id in 1..=3 {
        let indexes: Vec<_> = net.applied[&id].iter().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=index).collect::<Vec<_>>(), "node {id} applies in order");
    }
}

/// Commit advances iff the leader plus the acknowledgers form a majority.
// Paper 5.3
#[test]
fn a13_commit_needs_a_majority() {
    for n in [1u64, 3, 5] {
        for mask in 0..(1u32 << (n - 1)) {
            // setup
            let ackers: Vec<u64> = (2..=n).filter(|id| mask & (1 << (id - 2)) != 0).collect();
            let mut net = Net::new(n);
            net.elect(1);
            net.deliver_all();
            let before = net.node(1).commit_index();

            // act: only the ackers hear of the proposal
            for id in 2..=n {
                if !ackers.contains(&id) {
                    net.isolate(id);
                }
            }
            net.propose(1, &["x"]);
            net.deliver_all();

            // check
            let majority = (ackers.len() as u64 + 1) * 2 > n;
            let want = if majority { before + 1 } else { before };
            assert_eq!(net.node(1).commit_index(), want, "n={n} ackers={ackers:?}");
        }
    }
}

/// Committing a current-term entry commits every earlier entry with it, in order.
// Paper 5.3
#[test]
fn a14_new_leader_commits_older_entries_with_its_own() {
    // setup: node 1 holds `1 1 2`, the others `1`
    let mut net = Net::with_logs(&[(2, &[1, 1, 2]), (2, &[1]), (2, &[1])]);
    net.tick_until(1, |n| n.role() == Role::Candidate);

    // act: deliver one message at a time
    while net.deliver_one().is_some() {
        // check: the leader never commits a prefix without its term-3 entry
        let c = net.node(1).commit_index();
        assert!(c == 0 || c == 4, "commit {c}");
    }

    // check
    assert_eq!((net.node(1).role(), net.node(1).term(), net.node(1).commit_index()), (Role::Leader, 3, 4));
    for id in 1..=3 {
        let applied: Vec<(u64, Term)> = net.applied[&id].iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(applied, vec![(1, 1), (2, 1), (3, 2), (4, 3)], "node {id}");
    }
}

/// A follower commits min(leader commit, index of the last new entry) and applies in order.
// Paper 5.3
#[test]
fn a15_follower_commit_is_bounded_by_last_new_entry() {
    // (follower log, prev, entries' terms, leader commit, expected commit)
    type Case = (&'static [Term], (u64, Term), &'static [Term], u64, u64);
    let cases: &[Case] = &[
        (&[], (0, 0), &[1, 1, 1], 2, 2),
        (&[], (0, 0), &[1, 1, 1], 5, 3),
        (&[1, 1, 1, 1, 1], (0, 0), &[1, 1], 5, 2),
        (&[1, 1, 1], (1, 1), &[], 3, 1),
        (&[1, 1, 1], (3, 1), &[], 2, 2),
    ];
    for &(log, prev, terms, leader_commit, want) in cases {
        // setup
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 1, None, log))]);

        // act
        let sent = entries_from(prev.0 + 1, terms);
        net.inject(append(2, 1, 1, prev, sent, leader_commit));

        // check
        let case = format!("log={log:?} prev={prev:?} n={} commit={leader_commit}", terms.len());
        assert_eq!(net.node(1).commit_index(), want, "{case}");
        let applied: Vec<_> = net.applied[&1].iter().map(|e| e.index).collect();
        assert_eq!(applied, (1..=want).collect::<Vec<_>>(), "{case}");
    }

    // and later commits apply the rest, in order
    let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 1, None, &[]))]);
    net.inject(append(2, 1, 1, (0, 0), entries(&[1, 1, 1]), 1));
    net.inject(append(2, 1, 1, (3, 1), vec![], 3));
    let applied: Vec<_> = net.applied[&1].iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![1, 2, 3]);
}

/// A mismatching prev is rejected with the conflicting term and its first index, or the log's end.
// Paper 5.3
#[test]
fn a16_mismatch_rejected_with_conflict_hint() {
    // (prev index, prev term, hint) against the follower log `1 2`
    let cases = [
        (2, 3, ConflictHint { term: 2, index: 2 }),
        (1, 2, ConflictHint { term: 1, index: 1 }),
        (3, 2, ConflictHint { term: 0, index: 3 }),
        (5, 3, ConflictHint { term: 0, index: 3 }),
    ];
    for (prev_index, prev_term, hint) in cases {
        // setup
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 2, None, &[1, 2]))]);

        // act
        let actions =
            net.inject(append(2, 1, 3, (prev_index, prev_term), entries_from(prev_index + 1, &[3]), 0));

        // check
        let reply = the_reply(&actions);
        assert_eq!((reply.to, reply.term), (2, 3));
        assert_eq!(
            reply.body,
            Body::AppendEntriesResponse(AppendResult::Reject { rejected_prev: prev_index, hint }),
            "prev {prev_index}/{prev_term}"
        );
        assert_eq!(log_terms(net.node(1)), vec![1, 2], "log untouched");
        assert!(persists(&actions).iter().all(|p| p.entries.is_empty() && p.truncate_from.is_none()));
    }
}

/// A conflicting suffix is truncated and replaced; identical entries cause no write.
// Paper 5.3
#[test]
fn a17_conflicts_truncate_identical_entries_do_not_write() {
    // setup
    let follower = || Net::from_restored(vec![(classic_config(1), restored(3, 2, None, &[1, 2]))]);

    // act / check: entries of term 3 conflict at index 2
    let mut net = follower();
    let actions = net.inject(append(2, 1, 3, (1, 1), entries_from(2, &[3, 3]), 0));
    assert_eq!(log_terms(net.node(1)), vec![1, 3, 3]);
    let written: Vec<_> = persists(&actions).into_iter().filter(|p| !p.entries.is_empty()).collect();
    assert_eq!(written.len(), 1);
    assert_eq!((written[0].truncate_from, &written[0].entries), (Some(2), &entries_from(2, &[3, 3])));
    assert_eq!(net.disks[&1].entries, entries(&[1, 3, 3]));
    assert_eq!(
        the_reply(&actions).body,
        Body::AppendEntriesResponse(AppendResult::Success { match_index: 3 })
    );

    // act / check: the same entries again, at the same term: no write at all
    let mut net = follower();
    let actions = net.inject(append(2, 1, 2, (0, 0), entries(&[1, 2]), 0));
    assert!(persists(&actions).is_empty(), "{actions:?}");
    assert_eq!(log_terms(net.node(1)), vec![1, 2]);
    assert_eq!(
        the_reply(&actions).body,
        Body::AppendEntriesResponse(AppendResult::Success { match_index: 2 })
    );

    // act / check: an identical prefix plus one new entry writes only the new one
    let mut net = follower();
    let actions = net.inject(append(2, 1, 2, (0, 0), entries(&[1, 2, 2]), 0));
    let p = persists(&actions);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].truncate_from, &p[0].entries), (None, &entries_from(3, &[2])));
    assert_eq!(log_terms(net.node(1)), vec![1, 2, 2]);
}

/// The leader of term 8 with log `1 1 1 4 4 5 5 6 6 6` (paper figure 7).
const FIGURE7_LEADER: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/// Figure 7: node 2, holding `follower`, converges on node 1's log after at
/// most one rejection per conflicting term (`rejections`).
fn figure7(follower: &[Term], rejections: usize) {
    // setup: node 1 wins term 8 with node 3's vote alone, then talks only to node 2
    let follower_term = follower.last().copied().unwrap_or(0);
    let mut net = Net::with_logs(&[(7, FIGURE7_LEADER), (follower_term, follower), (0, &[])]);
    net.tick_until(1, |n| n.role() == Role::Candidate);
    assert_eq!(net.node(1).term(), 8);
    net.drop_where(|m| m.to == 2);
    net.deliver_where(|m| m.to == 3);
    net.deliver_where(|m| m.from == 3);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.isolate(3);
    let sent_before = net.sent.len();

    // act
    net.deliver_all();

    // check
    let leader_log = log_entries(net.node(1));
    let mut want_terms = FIGURE7_LEADER.to_vec();
    want_terms.push(8);
    assert_eq!(log_terms(net.node(1)), want_terms);
    assert_eq!(log_entries(net.node(2)), leader_log, "follower {follower:?} converges");
    assert_eq!(net.disks[&2].entries, leader_log, "and persisted it");
    let rejected = net.sent[sent_before..].iter().filter(|m| is_reject(m)).count();
    assert_eq!(rejected, rejections, "rejections for follower {follower:?}");
    assert_eq!(net.node(1).commit_index(), 11);
    assert_eq!(net.node(2).commit_index(), 11);
}

/// Figure 7 (a): missing the last entry.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_a_converges() {
    figure7(&[1, 1, 1, 4, 4, 5, 5, 6, 6], 1);
}

/// Figure 7 (b): missing everything after index 4.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_b_converges() {
    figure7(&[1, 1, 1, 4], 1);
}

/// Figure 7 (c): one extra uncommitted entry of term 6.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_c_converges() {
    figure7(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0);
}

/// Figure 7 (d): two extra uncommitted entries of term 7.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_d_converges() {
    figure7(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0);
}

/// Figure 7 (e): short, with extra entries of term 4.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_e_converges() {
    figure7(&[1, 1, 1, 4, 4, 4, 4], 2);
}

/// Figure 7 (f): diverges after index 3 with terms 2 and 3.
// Paper 5.3, figure 7
#[test]
fn a18_figure7_follower_f_converges() {
    figure7(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 2);
}

// ----- 5.4 -----

/// A RequestVote carries the candidate's last log index and term.
// Paper 5.4.1
#[test]
fn a19_request_vote_carries_last_index_and_term() {
    let logs: &[&[Term]] = &[&[], &[1], &[1, 1, 2], &[1, 2, 2, 3]];
    for &log in logs {
        // setup
        let term = log.last().copied().unwrap_or(0);
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, term, None, log))]);

        // act
        net.tick_until(1, |n| n.role() == Role::Candidate);

        // check
        let want =
            Body::RequestVote { last_log_index: log.len() as u64, last_log_term: term, transfer: false };
        assert_eq!(net.queue.len(), 2);
        assert!(net.queue.iter().all(|m| m.body == want && m.term == term + 1), "log {log:?}");
    }
}

/// A voter refuses a candidate whose log is less up to date than its own, and grants otherwise.
// Paper 5.4.1
#[test]
fn a20_vote_only_for_up_to_date_logs() {
    // (voter log, candidate last index, candidate last term, granted)
    let cases: &[(&[Term], u64, Term, bool)] = &[
        (&[1, 2, 2], 3, 2, true),  // same last term, same length
        (&[1, 2, 2], 4, 2, true),  // same last term, longer
        (&[1, 2, 2], 2, 2, false), // same last term, shorter
        (&[1, 2, 2], 1, 3, true),  // higher last term, shorter
        (&[1, 2, 2], 5, 1, false), // lower last term, longer
        (&[1, 2, 2], 3, 1, false), // lower last term, same length
        (&[1, 2, 2], 0, 0, false), // empty log
        (&[], 0, 0, true),         // both empty
        (&[], 1, 1, true),         // voter empty
        (&[1, 1], 1, 1, false),    // same term, one shorter
    ];
    for &(log, last_log_index, last_log_term, want) in cases {
        // setup
        let mut net = Net::from_restored(vec![(classic_config(1), restored(3, 2, None, log))]);

        // act
        let actions =
            net.inject(msg(2, 1, 4, Body::RequestVote { last_log_index, last_log_term, transfer: false }));

        // check
        let reply = the_reply(&actions);
        assert_eq!(reply.term, 4);
        assert_eq!(
            reply.body,
            Body::RequestVoteResponse { granted: want },
            "voter {log:?}, candidate last {last_log_index}/{last_log_term}"
        );
        assert_eq!(net.node(1).hard_state().vote, want.then_some(2));
    }
}

/// Acknowledging old-term entries commits nothing; acknowledging the new leader's entry commits all.
// Paper 5.4.2, figure 8
#[test]
fn a21_old_term_entries_commit_only_with_a_current_term_entry() {
    // setup: node 1 with `1 2` leads term 3 of a 2-node cluster
    let mut net = Net::with_logs(&[(2, &[1, 2]), (2, &[1])]);
    net.tick_until(1, |n| n.role() == Role::Candidate);
    net.deliver_where(|m| m.to == 2);
    net.deliver_where(|m| m.to == 1);
    assert_eq!((net.node(1).role(), net.node(1).term(), net.node(1).last_index()), (Role::Leader, 3, 3));
    net.queue.clear();

    // act / check: acks at 1 and 2 (old terms) move nothing
    for matched in [1, 2] {
        let actions = net.inject(ack(2, 1, 3, matched));
        assert_eq!(net.node(1).commit_index(), 0, "ack at {matched}");
        assert!(applies(&actions).is_empty());
    }

    // act / check: the ack at 3 (term 3) commits everything
    let actions = net.inject(ack(2, 1, 3, 3));
    assert_eq!(net.node(1).commit_index(), 3);
    let applied: Vec<_> = applies(&actions).iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(applied, vec![(1, 1), (2, 2), (3, 3)]);
}

/// A new leader's commit waits for its no-op, then takes everything before it along.
// Paper 5.4.2
#[test]
fn a22_commit_waits_for_the_new_leaders_noop() {
    // setup: node 1 and 2 hold `1 1 2`, node 3 `1`; node 1 wins term 3
    let mut net = Net::with_logs(&[(2, &[1, 1, 2]), (2, &[1, 1, 2]), (2, &[1])]);
    net.tick_until(1, |n| n.role() == Role::Candidate);
    net.deliver_where(|m| m.to == 2);
    net.deliver_where(|m| m.to == 1);
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Leader, 3));
    assert_eq!(net.node(1).entry(4).unwrap().payload, Payload::Noop);
    net.queue.clear();

    // act / check: a majority holds `1 1 2`, but commit stays
    net.inject(ack(2, 1, 3, 3));
    assert_eq!(net.node(1).commit_index(), 0);

    // act / check: the no-op on a majority commits it and all before it
    net.inject(ack(2, 1, 3, 4));
    assert_eq!(net.node(1).commit_index(), 4);
    let applied: Vec<_> = net.applied[&1].iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![1, 2, 3, 4]);
}
