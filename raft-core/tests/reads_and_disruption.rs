//! PreVote, CheckQuorum, ReadIndex, lease reads and flow control, in the
//! spirit of etcd's raft_test.go: each test names the behaviour it pins.

mod common;

use common::*;
use raft_core::{Action, Body, Config, Input, Message, ProposeError, ReadError, ReadPolicy, Role};

fn modern(config: &mut Config) {
    config.pre_vote = true;
    config.check_quorum = true;
}

fn classic(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

/// Ticks every node once and delivers everything, `rounds` times.
fn run(net: &mut Net, rounds: usize) {
    for _ in 0..rounds {
        let ids: Vec<_> = net.nodes.keys().copied().collect();
        for id in ids {
            net.tick(id);
        }
        net.deliver_all();
    }
}

fn leader_of(net: &Net) -> Vec<u64> {
    net.nodes.values().filter(|n| n.role() == Role::Leader).map(|n| n.id()).collect()
}

fn reads(actions: &[Action]) -> Vec<(u64, Result<u64, ReadError>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReadReady { id, index } => Some((*id, Ok(*index))),
            Action::ReadFailed { id, error } => Some((*id, Err(*error))),
            _ => None,
        })
        .collect()
}

fn read(net: &mut Net, node: u64, id: u64, policy: ReadPolicy) -> Vec<Action> {
    net.step(node, Input::Read { id, policy })
}

/// A partitioned node with PreVote never raises its term, and rejoins without
/// deposing the leader. Dissertation 9.6.
#[test]
fn prevote_partitioned_node_keeps_its_term_and_rejoins_quietly() {
    let mut net = Net::with_config(3, modern);
    run_until_leader(&mut net);
    let (leader, term) = (leader_of(&net)[0], net.node(1).term().max(net.node(2).term()));
    let lonely = if leader == 3 { 2 } else { 3 };

    net.isolate(lonely);
    run(&mut net, 200);
    assert_eq!(net.node(lonely).term(), term, "pre-votes fail, so the term never moves");
    net.heal();
    run(&mut net, 50);

    assert_eq!(leader_of(&net), vec![leader], "the healthy leader stays");
    assert!(net.nodes.values().all(|n| n.term() == term), "no term churn");
}

/// Without PreVote and CheckQuorum, the same rejoin deposes the leader: the
/// rule above is what prevents it. Paper section 9.6 motivation.
#[test]
fn disruptive_follower_without_prevote_raises_terms() {
    let mut net = Net::with_config(3, classic);
    run_until_leader(&mut net);
    let (leader, term) = (leader_of(&net)[0], net.node(1).term().max(net.node(2).term()));
    let lonely = if leader == 3 { 2 } else { 3 };

    net.isolate(lonely);
    run(&mut net, 200);
    assert!(net.node(lonely).term() > term);
    net.heal();
    run(&mut net, 1);

    assert!(net.nodes.values().all(|n| n.term() > term), "the rejoining candidate forced a new term");
}

/// A follower cut off from the leader (but not from the other follower)
/// times out and pre-campaigns again and again; the other follower, which
/// still hears the leader, refuses every pre-vote, so no term moves. etcd
/// TestDuelingPreCandidates in spirit.
#[test]
fn cut_off_pre_candidate_is_refused_while_a_leader_is_heard() {
    let mut net = Net::with_config(3, modern);
    run_until_leader(&mut net);
    let leader = leader_of(&net)[0];
    let term = net.node(leader).term();
    let cut = if leader == 3 { 2 } else { 3 };

    let mut pre_votes = 0;
    for _ in 0..200 {
        for id in 1..=3 {
            net.tick(id);
        }
        net.drop_where(|m| (m.from == leader && m.to == cut) || (m.from == cut && m.to == leader));
        pre_votes += net.queue.iter().filter(|m| matches!(m.body, Body::PreVote { .. })).count();
        net.deliver_all();
    }

    assert!(pre_votes > 0, "the cut-off follower did pre-campaign");
    assert_eq!(leader_of(&net), vec![leader]);
    assert!(net.nodes.values().all(|n| n.term() == term), "no term moved");
}

/// A leader that hears from no quorum for an election timeout steps down.
/// Paper section 6 / dissertation 6.2 (CheckQuorum).
#[test]
fn leader_steps_down_when_quorum_lost() {
    let mut net = Net::with_config(3, modern);
    run_until_leader(&mut net);
    let leader = leader_of(&net)[0];
    let min = net.configs[&leader].election_ticks_min as usize;

    // Control: with a quorum answering, it stays.
    run(&mut net, 3 * min);
    assert_eq!(net.node(leader).role(), Role::Leader);

    net.isolate(leader);
    for _ in 0..2 * min {
        net.tick(leader);
    }
    assert_eq!(net.node(leader).role(), Role::Follower);
}

/// A candidate stuck at a higher term is freed: the leader's heartbeat gets a
/// reply carrying the higher term, the cluster moves up, and the up-to-date
/// nodes win. etcd TestFreeStuckCandidateWithCheckQuorum in spirit.
#[test]
fn stuck_candidate_is_freed() {
    let mut net = Net::with_config(3, |c| {
        c.pre_vote = false;
        c.check_quorum = true;
    });
    run_until_leader(&mut net);
    let leader = leader_of(&net)[0];
    let lonely = if leader == 3 { 2 } else { 3 };
    net.isolate(lonely);
    net.propose(leader, &["x"]);
    run(&mut net, 100);
    let stuck_term = net.node(lonely).term();
    assert!(stuck_term > net.node(leader).term());

    net.heal();
    run(&mut net, 100);

    let now = leader_of(&net);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], lonely, "the node with the shorter log cannot win");
    assert!(net.node(now[0]).term() > stuck_term, "the cluster moved past the stuck term");
    assert_eq!(net.node(lonely).role(), Role::Follower);
}

/// A new leader answers no read before its own no-op commits. Dissertation
/// 6.4 step 1, SCENARIOS B8 (2).
#[test]
fn read_only_for_new_leader_waits_for_its_noop() {
    let mut net = Net::with_config(3, classic);
    net.tick_until(1, |n| n.role() == Role::Candidate);
    net.deliver_where(|m| m.to == 2);
    net.deliver_where(|m| m.to == 1); // vote granted: 1 leads, no-op in flight
    assert_eq!(net.node(1).role(), Role::Leader);
    let noop = net.node(1).last_index();
    assert!(net.node(1).commit_index() < noop);

    let early = read(&mut net, 1, 7, ReadPolicy::Linearizable);
    assert!(reads(&early).is_empty(), "no read before the no-op commits");
    let early_lease = read(&mut net, 1, 8, ReadPolicy::Lease);
    assert!(reads(&early_lease).is_empty(), "not even from a lease");

    let mut answered = Vec::new();
    while let Some(actions) = net.deliver_one() {
        answered.extend(reads(&actions));
    }
    answered.sort();
    assert_eq!(answered, vec![(7, Ok(noop)), (8, Ok(noop))]);
}

/// Reads that arrive during a round ride the next one; each is answered with
/// the commit index of its arrival, only after a quorum acknowledged a round
/// that started after it. etcd TestReadOnlyOptionSafe in spirit.
#[test]
fn read_index_batches_and_confirms_with_a_quorum() {
    let mut net = Net::with_config(3, classic);
    net.elect(1);
    net.deliver_all();
    let commit = net.node(1).commit_index();

    let first = read(&mut net, 1, 1, ReadPolicy::Linearizable);
    let round1: Vec<Message> = sends(&first).into_iter().cloned().collect();
    assert_eq!(round1.len(), 2, "one confirmation per follower");
    assert!(round1.iter().all(|m| matches!(m.body, Body::ReadConfirm { round: 1 })));
    let second = read(&mut net, 1, 2, ReadPolicy::Linearizable);
    let third = read(&mut net, 1, 3, ReadPolicy::Linearizable);
    assert!(sends(&second).is_empty() && sends(&third).is_empty(), "batched into the next round");

    // One follower's ack makes a quorum with the leader.
    net.deliver_where(|m| m.to == 2 && matches!(m.body, Body::ReadConfirm { .. }));
    let acked = net.deliver_where(|m| m.to == 1 && matches!(m.body, Body::ReadConfirmResponse { .. }));
    assert_eq!(reads(&acked), vec![(1, Ok(commit))]);
    assert!(
        sends(&acked).iter().any(|m| matches!(m.body, Body::ReadConfirm { round: 2 })),
        "the waiting reads start round 2 at once"
    );

    // A duplicated ack of round 1 confirms nothing more.
    let dup = net.inject(raft_core::Message {
        from: 3,
        to: 1,
        term: net.node(1).term(),
        body: Body::ReadConfirmResponse { round: 1 },
    });
    assert!(reads(&dup).is_empty());

    let mut rest = Vec::new();
    while let Some(actions) = net.deliver_one() {
        rest.extend(reads(&actions));
    }
    assert_eq!(rest, vec![(2, Ok(commit)), (3, Ok(commit))]);
}

/// A leader cut off from its quorum never confirms a read; the read fails
/// once it steps down.
#[test]
fn partitioned_leader_serves_no_read() {
    let mut net = Net::with_config(3, modern);
    run_until_leader(&mut net);
    let leader = leader_of(&net)[0];
    net.isolate(leader);

    let mut outcome = reads(&read(&mut net, leader, 5, ReadPolicy::Linearizable));
    for _ in 0..100 {
        outcome.extend(reads(&net.tick(leader)));
    }
    assert_eq!(outcome, vec![(5, Err(ReadError::LeaderLost))]);
}

/// A follower forwards its read; the leader's read index comes back; a
/// follower without a leader fails at once.
#[test]
fn follower_read_forwarding() {
    let mut net = Net::with_config(3, classic);
    net.elect(1);
    net.deliver_all();
    let commit = net.node(1).commit_index();

    let asked = read(&mut net, 2, 9, ReadPolicy::Linearizable);
    assert!(sends(&asked)
        .iter()
        .any(|m| m.to == 1 && matches!(m.body, Body::ReadIndexRequest { id: 9, .. })));
    let mut answered = Vec::new();
    while let Some(actions) = net.deliver_one() {
        if actions.iter().any(|a| matches!(a, Action::ReadReady { .. })) {
            answered.extend(reads(&actions));
        }
    }
    assert_eq!(answered, vec![(9, Ok(commit))]);

    let mut lonely = Net::with_config(3, classic);
    assert_eq!(
        reads(&read(&mut lonely, 2, 1, ReadPolicy::Linearizable)),
        vec![(1, Err(ReadError::NoLeader))]
    );
}

/// Lease reads skip the round while the lease holds and fall back to
/// ReadIndex after `election_ticks_min - lease_drift_ticks` ticks.
#[test]
fn lease_read_holds_then_lapses() {
    let mut net = Net::with_config(3, modern);
    run_until_leader(&mut net);
    let leader = leader_of(&net)[0];
    let config = net.configs[&leader].clone();

    read(&mut net, leader, 1, ReadPolicy::Linearizable);
    net.deliver_all(); // a confirmed round starts the lease
    let fast = read(&mut net, leader, 2, ReadPolicy::Lease);
    assert_eq!(reads(&fast).len(), 1, "answered at once from the lease");
    assert!(sends(&fast).is_empty());

    net.isolate(leader);
    for _ in 0..(config.election_ticks_min - config.lease_drift_ticks) {
        net.tick(leader);
    }
    let slow = read(&mut net, leader, 3, ReadPolicy::Lease);
    assert!(reads(&slow).is_empty(), "lease lapsed: needs a round");
}

/// At most `inflight_messages_max` messages and `inflight_bytes_max` bytes in
/// flight per follower; proposals beyond `uncommitted_bytes_max` are refused
/// with a typed error, and accepted again once entries commit.
#[test]
fn flow_control_limits() {
    let mut net = Net::with_config(3, |c| {
        classic(c);
        c.inflight_messages_max = 2;
        c.bytes_per_message_max = 1000;
        c.inflight_bytes_max = 1000;
        c.uncommitted_bytes_max = 1000;
    });
    net.elect(1);
    net.deliver_all();
    net.queue.clear();

    let mut accepted = 0;
    let mut refused = None;
    for i in 0..20 {
        let actions = net.step(1, Input::Propose(vec![vec![i as u8; 100].into()]));
        for a in actions {
            match a {
                Action::ProposalAccepted { .. } => accepted += 1,
                Action::ProposalRejected { error, .. } => refused = refused.or(Some(error)),
                _ => {}
            }
        }
    }
    let to2 = net
        .queue
        .iter()
        .filter(|m| {
            m.to == 2 && matches!(&m.body, Body::AppendEntries { entries, .. } if !entries.is_empty())
        })
        .count();
    assert_eq!(to2, 2, "two messages in flight, no more");
    assert_eq!(accepted, 1000 / 124, "uncommitted bytes cap the accepted proposals");
    assert_eq!(refused, Some(ProposeError::UncommittedLimit { max: 1000 }));

    net.deliver_all();
    let again = net.step(1, Input::Propose(vec![vec![0u8; 100].into()]));
    assert!(again.iter().any(|a| matches!(a, Action::ProposalAccepted { .. })), "room again after commit");
}

fn run_until_leader(net: &mut Net) {
    for _ in 0..1000 {
        if leader_of(net).len() == 1 {
            return;
        }
        run(net, 1);
    }
    panic!("no leader elected");
}
