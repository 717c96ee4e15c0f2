//! Membership changes through joint consensus, learners, and leadership
//! transfer. Paper section 6, dissertation chapters 3.10 and 4.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use raft_core::quorum::VoteResult;
use raft_core::{
    Action, Body, ConfigChangeError, Input, Membership, NodeId, Payload, ProposeError, Restored, Role,
    Topology, TransferError,
};

fn topology(voters: &[NodeId], learners: &[NodeId]) -> Topology {
    let addr = |ids: &[NodeId]| ids.iter().map(|&id| (id, format!("n{id}"))).collect::<BTreeMap<_, _>>();
    Topology { voters: addr(voters), learners: addr(learners) }
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// A 3-voter cluster led by 1 with its no-op committed, plus `extra` empty
/// nodes that know no configuration (started with `--join`).
fn cluster(voters: u64, extra: &[NodeId]) -> Net {
    let mut members: Vec<_> =
        (1..=voters).map(|id| (classic_config(id), Restored::new_cluster(membership(voters)))).collect();
    for &id in extra {
        members.push((classic_config(id), Restored::joining()));
    }
    let mut net = Net::from_restored(members);
    net.elect(1);
    net.deliver_all();
    net
}

fn config_outcomes(actions: &[Action]) -> Vec<Result<u64, ConfigChangeError>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ConfigChangeCompleted { index } => Some(Ok(*index)),
            Action::ConfigChangeFailed { error } => Some(Err(error.clone())),
            _ => None,
        })
        .collect()
}

/// Delivers everything, ticking the leader between rounds, and collects the
/// configuration outcomes the leader reports.
fn settle(net: &mut Net, leader: NodeId) -> Vec<Result<u64, ConfigChangeError>> {
    let mut outcomes = Vec::new();
    for _ in 0..50 {
        while let Some(m) = net.queue.pop_front() {
            if net.isolated.contains(&m.from) || net.isolated.contains(&m.to) {
                continue;
            }
            let to = m.to;
            let actions = net.inject(m);
            if to == leader {
                outcomes.extend(config_outcomes(&actions));
            }
        }
        outcomes.extend(config_outcomes(&net.tick(leader)));
    }
    outcomes
}

// ----- quorum arithmetic -----

/// Joint majorities for commit and vote, including even sizes and a
/// single-node half. Paper figure 11, SCENARIOS B5.
#[test]
fn b5_joint_quorum_tables() {
    let joint = |old: &[NodeId], new: &[NodeId]| Membership {
        voters: new.iter().map(|&id| (id, String::new())).collect(),
        learners: BTreeMap::new(),
        old_voters: Some(old.iter().map(|&id| (id, String::new())).collect()),
    };
    let mut scratch = Vec::new();
    let commit = |m: &Membership, acked: &[NodeId], scratch: &mut Vec<u64>| {
        let acked = set(acked);
        m.committed_index(scratch, |id| if acked.contains(&id) { 9 } else { 0 })
    };
    // (old, new, acknowledged, commits?)
    type Case<'a> = (&'a [NodeId], &'a [NodeId], &'a [NodeId], bool);
    let cases: &[Case<'_>] = &[
        (&[1, 2, 3], &[3, 4, 5], &[1, 2], false),
        (&[1, 2, 3], &[3, 4, 5], &[4, 5], false),
        (&[1, 2, 3], &[3, 4, 5], &[1, 2, 4, 5], true),
        (&[1, 2, 3], &[3, 4, 5], &[2, 3, 4], true),
        (&[1], &[2], &[1], false),
        (&[1], &[2], &[1, 2], true),
        (&[1, 2], &[1, 2, 3, 4], &[1, 2, 3], true),
        (&[1, 2], &[1, 2, 3, 4], &[1, 3, 4], false),
        (&[1, 2, 3, 4], &[1, 2, 3, 4, 5, 6], &[1, 2, 3, 5], true),
        (&[1, 2, 3, 4], &[1, 2, 3, 4, 5, 6], &[1, 2, 5, 6], false),
    ];
    for (old, new, acked, want) in cases {
        let m = joint(old, new);
        assert_eq!(commit(&m, acked, &mut scratch) == 9, *want, "old={old:?} new={new:?} acked={acked:?}");
        let granted = set(acked);
        let refused: BTreeSet<NodeId> = m.members().difference(&granted).copied().collect();
        let vote = m.vote_result(&granted, &refused);
        assert_eq!(vote == VoteResult::Won, *want, "vote old={old:?} new={new:?} granted={acked:?}");
    }
}

// ----- adding and removing -----

/// A new voter joins as a learner, catches up, then the leader goes through
/// C_old,new to C_new on its own. SCENARIOS B6 (1).
#[test]
fn add_voter_catches_up_as_learner_then_joint_then_new() {
    let mut net = cluster(3, &[4]);
    net.propose(1, &["a", "b", "c"]);
    net.deliver_all();

    let started = net.step(1, Input::SetConfiguration(topology(&[1, 2, 3, 4], &[])));
    assert!(config_outcomes(&started).is_empty());
    assert!(net.node(1).membership().is_learner(4), "a newcomer is a learner first");
    assert!(!net.node(1).membership().is_joint());
    let outcomes = settle(&mut net, 1);

    let want = topology(&[1, 2, 3, 4], &[]);
    assert_eq!(outcomes.len(), 1);
    let index = *outcomes[0].as_ref().expect("completed");
    for id in 1..=4 {
        let node = net.node(id);
        assert_eq!(node.membership().topology(), want, "node {id}");
        assert!(!node.membership().is_joint());
        assert!(node.commit_index() >= index, "node {id} knows C_new committed");
    }
    // The log went learner -> joint -> new, in that order.
    let configs: Vec<Membership> = (1..=net.node(1).last_index())
        .filter_map(|i| match &net.node(1).entry(i).unwrap().payload {
            Payload::Membership(m) => Some((**m).clone()),
            _ => None,
        })
        .collect();
    assert_eq!(configs.len(), 3);
    assert!(configs[0].is_learner(4));
    assert_eq!(configs[1].old_voters.as_ref().map(|o| o.len()), Some(3));
    assert_eq!(configs[2].old_voters, None);
}

/// A leader that removes itself keeps replicating without counting itself,
/// steps down once C_new commits, and never campaigns again. SCENARIOS B6 (2).
#[test]
fn leader_removing_itself_steps_down_after_c_new_commits() {
    let mut net = cluster(3, &[]);
    net.step(1, Input::SetConfiguration(topology(&[2, 3], &[])));
    let outcomes = settle(&mut net, 1);
    assert!(matches!(outcomes.as_slice(), [Ok(_)]), "{outcomes:?}");
    assert_eq!(net.node(1).role(), Role::Follower);
    assert!(!net.node(1).membership().is_voter(1));

    for _ in 0..200 {
        let actions = net.tick(1);
        assert!(
            sends(&actions).iter().all(|m| !matches!(m.body, Body::RequestVote { .. })),
            "never campaigns"
        );
    }
    net.queue.clear();
    net.tick_until(2, |n| n.role() != Role::Follower);
    net.deliver_all();
    assert!(net.node(2).role() == Role::Leader || net.node(3).role() == Role::Leader);
}

/// Learners receive the log but their acknowledgements count toward no
/// quorum, and they never campaign. SCENARIOS B6 (1).
#[test]
fn learners_do_not_count_and_do_not_campaign() {
    let mut net = cluster(3, &[4]);
    net.step(1, Input::SetConfiguration(topology(&[1, 2, 3], &[4])));
    settle(&mut net, 1);
    assert!(net.node(4).membership().is_learner(4));

    net.isolate(2);
    net.isolate(3);
    let commit = net.node(1).commit_index();
    net.propose(1, &["x"]);
    net.deliver_all();
    assert_eq!(net.node(4).last_index(), net.node(1).last_index(), "the learner has the entry");
    assert_eq!(net.node(1).commit_index(), commit, "leader + learner is no quorum");

    for _ in 0..300 {
        net.tick(4);
    }
    assert_eq!(net.node(4).role(), Role::Follower);
}

/// A new leader that finds C_old,new in its log finishes the transition.
/// Paper section 6: never stuck in joint.
#[test]
fn new_leader_finishes_a_joint_configuration() {
    let mut net = cluster(3, &[]);
    // Start removing node 1, the leader; let the joint entry reach everyone
    // but drop the acknowledgements so the leader cannot move on, then crash
    // the leader.
    net.step(1, Input::SetConfiguration(topology(&[2, 3], &[])));
    net.deliver_where(|m| m.to == 2);
    net.deliver_where(|m| m.to == 3);
    net.queue.clear();
    net.isolate(1);
    assert!(net.node(2).membership().is_joint());

    net.tick_until(2, |n| n.role() != Role::Follower);
    net.deliver_all();
    assert_eq!(net.node(2).role(), Role::Leader);
    let _ = settle(&mut net, 2);
    let m = net.node(2).membership();
    assert!(!m.is_joint(), "the new leader appended C_new");
    assert_eq!(m.topology(), topology(&[2, 3], &[]));
}

// ----- guards -----

/// One change at a time; a new leader commits its no-op first; topologies
/// are validated; only the leader changes the configuration.
#[test]
fn config_change_guards() {
    let mut net = cluster(3, &[4, 5]);
    let first = net.step(1, Input::SetConfiguration(topology(&[1, 2, 3, 4], &[])));
    assert!(config_outcomes(&first).is_empty());
    let second = net.step(1, Input::SetConfiguration(topology(&[1, 2, 3, 5], &[])));
    assert_eq!(config_outcomes(&second), vec![Err(ConfigChangeError::ConfigChangeInProgress)]);

    let bad = |t: Topology| {
        let mut net = cluster(3, &[]);
        config_outcomes(&net.step(1, Input::SetConfiguration(t)))
    };
    assert_eq!(bad(topology(&[], &[4])), vec![Err(ConfigChangeError::NoVoters)]);
    assert_eq!(bad(topology(&[0, 1], &[])), vec![Err(ConfigChangeError::InvalidNodeId)]);
    assert_eq!(bad(topology(&[1, 2], &[2])), vec![Err(ConfigChangeError::VoterAndLearner(2))]);
    let mut net = cluster(3, &[]);
    assert_eq!(
        config_outcomes(&net.step(2, Input::SetConfiguration(topology(&[1, 2], &[])))),
        vec![Err(ConfigChangeError::NotLeader { leader_hint: Some(1) })]
    );

    // A leader whose no-op has not committed refuses (SCENARIOS B6 (4)).
    let mut fresh = Net::new(3);
    fresh.tick_until(1, |n| n.role() == Role::Candidate);
    fresh.deliver_where(|m| m.to == 2);
    fresh.deliver_where(|m| m.to == 1);
    assert_eq!(fresh.node(1).role(), Role::Leader);
    assert_eq!(
        config_outcomes(&fresh.step(1, Input::SetConfiguration(topology(&[1, 2], &[])))),
        vec![Err(ConfigChangeError::LeaderNotReady)]
    );
}

/// A new voter that cannot catch up fails the change after
/// `catch_up_ticks_max`; it stays a learner and the cluster carries on.
#[test]
fn unreachable_new_voter_times_out_as_learner() {
    let mut net = cluster(3, &[4]);
    net.isolate(4);
    net.step(1, Input::SetConfiguration(topology(&[1, 2, 3, 4], &[])));
    let ticks = net.configs[&1].catch_up_ticks_max as usize + 1;
    let mut outcomes = Vec::new();
    for _ in 0..ticks {
        outcomes.extend(config_outcomes(&net.tick(1)));
        net.deliver_all();
    }
    assert_eq!(outcomes, vec![Err(ConfigChangeError::CatchUpTimeout(4))]);
    assert!(net.node(1).membership().is_learner(4));
    let again = net.propose(1, &["still works"]);
    assert!(again.iter().any(|a| matches!(a, Action::ProposalAccepted { .. })));
}

// ----- leadership transfer -----

fn transfer_errors(actions: &[Action]) -> Vec<TransferError> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::TransferFailed { error } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// The target, brought up to date first, campaigns at once on TimeoutNow and
/// wins; proposals are refused meanwhile. Dissertation 3.10.
#[test]
fn transfer_to_a_lagging_follower_catches_it_up_then_hands_over() {
    let mut net = cluster(3, &[]);
    net.isolate(2);
    net.propose(1, &["a", "b"]);
    net.deliver_all();
    net.heal();
    let term = net.node(1).term();

    net.step(1, Input::TransferLeadership { to: 2 });
    let refused = net.propose(1, &["c"]);
    assert!(refused.contains(&Action::ProposalRejected { count: 1, error: ProposeError::TransferInProgress }));
    // The leader notices the lost messages on its ticks and catches 2 up.
    for _ in 0..20 {
        net.deliver_all();
        if net.node(2).role() == Role::Leader {
            break;
        }
        net.tick(1);
    }

    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(net.node(2).term(), term + 1);
    assert_eq!(net.node(1).role(), Role::Follower);
}

/// Transfer works through the disruption guard: followers that hear from the
/// leader ignore ordinary vote requests, but not a transfer's.
#[test]
fn transfer_bypasses_the_disruption_guard() {
    let mut net = Net::with_config(3, |_| {});
    for _ in 0..1000 {
        if net.nodes.values().any(|n| n.role() == Role::Leader) {
            break;
        }
        for id in 1..=3 {
            net.tick(id);
        }
        net.deliver_all();
    }
    let leader = net.nodes.values().find(|n| n.role() == Role::Leader).map(|n| n.id()).unwrap();
    let to = if leader == 1 { 2 } else { 1 };
    net.step(leader, Input::TransferLeadership { to });
    net.deliver_all();
    assert_eq!(net.node(to).role(), Role::Leader);
}

/// Bad targets are typed errors; a target that never answers times the
/// transfer out and proposals resume.
#[test]
fn transfer_errors_and_timeout() {
    let mut net = cluster(3, &[4]);
    net.step(1, Input::SetConfiguration(topology(&[1, 2, 3], &[4])));
    settle(&mut net, 1);
    let mut err = |to| transfer_errors(&net.step(1, Input::TransferLeadership { to }));
    assert_eq!(err(1), vec![TransferError::ToSelf]);
    assert_eq!(err(4), vec![TransferError::ToLearner(4)]);
    assert_eq!(err(9), vec![TransferError::UnknownNode(9)]);
    assert_eq!(
        transfer_errors(&net.step(2, Input::TransferLeadership { to: 3 })),
        vec![TransferError::NotLeader { leader_hint: Some(1) }]
    );

    net.isolate(3);
    net.step(1, Input::TransferLeadership { to: 3 });
    let mut failed = Vec::new();
    for _ in 0..net.configs[&1].election_ticks_max {
        failed.extend(transfer_errors(&net.tick(1)));
        net.deliver_all();
    }
    assert_eq!(failed, vec![TransferError::Timeout]);
    assert_eq!(net.node(1).role(), Role::Leader);
    let resumed = net.propose(1, &["after"]);
    assert!(resumed.iter().any(|a| matches!(a, Action::ProposalAccepted { .. })));
}
