//! Section B4-B6 of SCENARIOS.md: membership changes (paper section 6,
//! figures 10 and 11) and leadership transfer (dissertation 3.10).

use raft_core::{Body, ConfigChangeError, Message, NodeId, Payload, Role, TransferError};

use super::{elect, ensure, no_violation, Outcome, Scenario};
use crate::sim::{topology, ConfigEvent, Sim, SimOptions};

pub(crate) const SCENARIOS: &[Scenario] = &[
    ("b4_figure10_direct_switch_two_leaders", b4_figure10_direct_switch_two_leaders),
    ("b5_leader_crash_before_joint_commits", b5_leader_crash_before_joint_commits),
    ("b5_only_joint_holders_lead_after_commit", b5_only_joint_holders_lead_after_commit),
    ("b6_1_new_members_catch_up_as_learners", b6_1_new_members_catch_up_as_learners),
    ("b6_2_leader_not_in_c_new_steps_down", b6_2_leader_not_in_c_new_steps_down),
    ("b6_3_removed_node_does_not_disrupt", b6_3_removed_node_does_not_disrupt),
    ("b6_4_new_leader_commits_noop_before_change", b6_4_new_leader_commits_noop_before_change),
    ("transfer_while_target_behind", transfer_while_target_behind),
    ("transfer_while_leader_crashes", transfer_while_leader_crashes),
    ("transfer_during_partition", transfer_during_partition),
    ("transfer_during_joint", transfer_during_joint),
];

/// A scripted cluster of `n` voters (section 5 elections).
pub(crate) fn scripted(n: usize) -> Sim {
    let mut opts = SimOptions::scripted(n);
    opts.trace = super::trace_mode();
    Sim::new(opts)
}

/// A timed, fault-free cluster of `n` voters (PreVote and CheckQuorum on).
pub(crate) fn timed(n: usize, tune: impl FnOnce(&mut SimOptions)) -> Sim {
    let mut opts = SimOptions::new(11, n);
    opts.trace = super::trace_mode();
    tune(&mut opts);
    Sim::new(opts)
}

/// Timed: runs `ms` and returns the leader.
pub(crate) fn settle(sim: &mut Sim, ms: u64) -> Result<NodeId, String> {
    sim.run_for(ms);
    no_violation(sim)?;
    sim.leader().ok_or_else(|| "no leader".to_string())
}

/// Timed: `n` writes on the current leader, a few ms apart.
pub(crate) fn writes(sim: &mut Sim, n: u64) -> Outcome {
    for k in 0..n {
        let l = sim.leader().ok_or("no leader")?;
        sim.propose(l, Sim::write_command((k % 3) as u8, k)).map_err(|e| e.to_string())?;
        sim.run_for(3);
    }
    no_violation(sim)
}

fn is_joint_entry(m: &Message) -> bool {
    matches!(&m.body, Body::AppendEntries { entries, .. }
        if entries.iter().any(|e| matches!(&e.payload, Payload::Membership(c) if c.is_joint())))
}

fn events(sim: &Sim) -> Vec<ConfigEvent> {
    sim.ext().config_events.iter().map(|(_, e)| e.clone()).collect()
}

/// Figure 10: growing {1,2,3} to {1..5}. Leader 3 appends the new
/// configuration and only 4 and 5 get it; then {1,2} | {3,4,5}. Switching
/// directly (the broken rule `DirectConfigSwitch`), 1 wins term 2 with the
/// C_old majority {1,2} and 4 wins term 2 with the C_new majority {3,4,5}:
/// two leaders in one term. The real path (learners, then joint consensus)
/// never gives 4 a vote that counts, so this returns Ok.
// Paper section 6, figure 10
fn b4_figure10_direct_switch_two_leaders() -> Outcome {
    let mut sim = scripted(3);
    elect(&mut sim, 3, |_| true)?;
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.set_configuration(3, topology(&[1, 2, 3, a, b], &[]));
    sim.deliver_where(|m| [a, b].contains(&m.to) || [a, b].contains(&m.from));
    sim.partition(&[&[1, 2], &[3, a, b]]);
    // C_new's majority first (a learner never campaigns), then C_old's.
    if sim.node(a).membership().is_voter(a) {
        sim.campaign(a);
        sim.deliver_all();
    }
    sim.campaign(1);
    sim.deliver_all();
    no_violation(&sim)
}

/// Figure 11: C_old={1,2,3} -> C_new={3,4,5}. C_old,new reaches only 4 and
/// 5 ({1,4,5}: no C_old majority, no commit); the leader crashes; C_new's
/// majority {4,5} cannot elect anyone alone; after healing the change
/// completes and everyone agrees.
// Paper section 6, figure 11
fn b5_leader_crash_before_joint_commits() -> Outcome {
    let mut sim = scripted(3);
    elect(&mut sim, 1, |_| true)?;
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.set_configuration(1, topology(&[3, a, b], &[]));
    sim.deliver_where(|m| !(is_joint_entry(m) && [2, 3].contains(&m.to)));
    let joint = sim.node(1).membership().is_joint();
    ensure(joint, || format!("leader not joint: {:?}", sim.node(1).membership()))?;
    ensure(sim.node(1).commit_index() < sim.node(1).last_index(), || "joint committed by {1,4,5}".into())?;
    sim.crash(1);
    sim.partition(&[&[1, 2, 3], &[a, b]]);
    for _ in 0..3 {
        sim.campaign(a);
        sim.deliver_all();
        ensure(sim.node(a).role() != Role::Leader, || "C_new majority {4,5} elected alone".into())?;
    }
    sim.heal();
    sim.restart(1);
    elect(&mut sim, a, |_| true)?;
    sim.tick_all(3);
    sim.deliver_all();
    no_violation(&sim)?;
    let m = sim.node(a).membership().clone();
    ensure(!m.is_joint() && m.voters.keys().copied().eq([3, a, b]), || format!("final config {m:?}"))
}

/// After C_old,new commits (on {1,2,4,5}), node 3, which lacks it, cannot
/// become leader.
// Paper section 6, figure 11
fn b5_only_joint_holders_lead_after_commit() -> Outcome {
    let mut sim = scripted(3);
    elect(&mut sim, 1, |_| true)?;
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.set_configuration(1, topology(&[1, 2, a, b], &[]));
    // 3 gets the learners' entry but nothing from the joint one on.
    let mut joint_seen = false;
    sim.deliver_where(|m| {
        joint_seen |= is_joint_entry(m);
        !(joint_seen && (m.to == 3 || m.from == 3))
    });
    no_violation(&sim)?;
    ensure(sim.node(1).commit_index() >= sim.node(2).commit_index(), || "no commit".into())?;
    ensure(!sim.node(3).membership().is_joint(), || "3 got the joint entry".into())?;
    for _ in 0..3 {
        sim.campaign(3);
        sim.deliver_all();
        ensure(sim.node(3).role() != Role::Leader, || "3 led without C_old,new".into())?;
    }
    no_violation(&sim)
}

/// New members join as learners: while 2 and 3 are cut off, 4 and 5's
/// acknowledgements do not commit anything; healed, the change completes.
// Paper section 6 (issue 1)
fn b6_1_new_members_catch_up_as_learners() -> Outcome {
    let mut sim = scripted(3);
    elect(&mut sim, 1, |_| true)?;
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.set_configuration(1, topology(&[1, 2, 3, a, b], &[]));
    sim.deliver_where(|m| ![2, 3].contains(&m.to));
    let m = sim.node(1).membership().clone();
    ensure(m.is_learner(a) && m.is_learner(b), || format!("not learners: {m:?}"))?;
    let commit = sim.node(1).commit_index();
    sim.propose(1, Sim::write_command(0, 1)).map_err(|e| e.to_string())?;
    sim.deliver_where(|m| ![2, 3].contains(&m.to));
    ensure(sim.node(1).commit_index() == commit, || "learners' acks committed an entry".into())?;
    for _ in 0..6 {
        sim.tick_all(3);
        sim.deliver_all();
    }
    no_violation(&sim)?;
    let m = sim.node(1).membership().clone();
    ensure(m.voters.len() == 5 && !m.is_joint(), || format!("final config {m:?}"))?;
    ensure(events(&sim).iter().any(|e| matches!(e, ConfigEvent::Completed(_))), || "not completed".into())
}

/// A leader outside C_new replicates C_new without counting itself and
/// steps down once it commits.
// Paper section 6 (issue 2)
fn b6_2_leader_not_in_c_new_steps_down() -> Outcome {
    let mut sim = scripted(3);
    elect(&mut sim, 1, |_| true)?;
    let a = sim.add_node();
    sim.set_configuration(1, topology(&[2, 3, a], &[]));
    for _ in 0..6 {
        sim.tick_all(3);
        sim.deliver_all();
    }
    no_violation(&sim)?;
    ensure(sim.node(1).role() != Role::Leader, || "leader outside C_new still leads".into())?;
    let m = sim.node(2).membership().clone();
    ensure(m.voters.keys().copied().eq([2, 3, a]) && !m.is_joint(), || format!("config {m:?}"))?;
    elect(&mut sim, 2, |_| true)
}

/// A removed node that keeps running (it missed its removal) does not
/// disrupt the cluster: with PreVote and CheckQuorum no term churn.
// Paper section 6 (issue 3)
fn b6_3_removed_node_does_not_disrupt() -> Outcome {
    let mut sim = timed(4, |_| {});
    let mut leader = settle(&mut sim, 1_000)?;
    if leader == 4 {
        sim.transfer_leadership(4, 1);
        leader = settle(&mut sim, 1_000)?;
    }
    sim.isolate(4);
    sim.set_configuration(leader, topology(&[1, 2, 3], &[]));
    sim.run_for(1_000);
    ensure(sim.node(leader).membership().voters.len() == 3, || "removal did not complete".into())?;
    sim.reconnect(4);
    let term = sim.node(leader).term();
    writes(&mut sim, 20)?;
    sim.run_for(5_000);
    no_violation(&sim)?;
    let now = sim.leader().ok_or("no leader")?;
    ensure(now == leader && sim.node(leader).term() == term, || {
        format!("term churn: leader {leader} t{term} -> {now} t{}", sim.node(now).term())
    })
}

/// A new leader refuses a configuration change until its own no-op
/// commits (the 2015 single-server bug), then accepts it.
// Paper section 6 (issue 4)
fn b6_4_new_leader_commits_noop_before_change() -> Outcome {
    let mut sim = scripted(3);
    let append = |m: &Message| matches!(m.body, Body::AppendEntries { .. });
    elect(&mut sim, 1, |m| !append(m))?;
    let a = sim.add_node();
    sim.set_configuration(1, topology(&[1, 2, 3, a], &[]));
    let ev = events(&sim);
    let refused = matches!(ev.last(), Some(ConfigEvent::Failed(ConfigChangeError::LeaderNotReady)));
    ensure(refused, || format!("change before the no-op commits: {ev:?}"))?;
    sim.tick_all(3);
    sim.deliver_all();
    sim.set_configuration(1, topology(&[1, 2, 3, a], &[]));
    for _ in 0..6 {
        sim.tick_all(3);
        sim.deliver_all();
    }
    no_violation(&sim)?;
    ensure(sim.node(1).membership().is_voter(a), || "change not applied after the no-op".into())
}

/// Transfer to a follower that is far behind: the leader first brings it
/// up to date, then sends TimeoutNow.
// Dissertation 3.10
fn transfer_while_target_behind() -> Outcome {
    let mut sim = timed(3, |_| {});
    let leader = settle(&mut sim, 1_000)?;
    let target = if leader == 3 { 2 } else { 3 };
    sim.isolate(target);
    writes(&mut sim, 30)?;
    sim.reconnect(target);
    sim.transfer_leadership(leader, target);
    sim.run_for(1_000);
    no_violation(&sim)?;
    ensure(sim.leader() == Some(target), || format!("leader {:?}, wanted {target}", sim.leader()))?;
    ensure(sim.node(target).commit_index() >= 31, || "target lacks entries".into())
}

/// The leader crashes right after starting a transfer: someone is elected,
/// safely.
// Dissertation 3.10
fn transfer_while_leader_crashes() -> Outcome {
    let mut sim = timed(3, |_| {});
    let leader = settle(&mut sim, 1_000)?;
    writes(&mut sim, 5)?;
    let target = leader % 3 + 1;
    sim.transfer_leadership(leader, target);
    sim.crash(leader);
    let now = settle(&mut sim, 2_000)?;
    ensure(now != leader, || "crashed leader leads".into())?;
    sim.restart(leader);
    sim.run_for(1_000);
    no_violation(&sim)
}

/// Transfer to a partitioned node fails (times out); the leader keeps
/// leading and serving.
// Dissertation 3.10
fn transfer_during_partition() -> Outcome {
    let mut sim = timed(3, |_| {});
    let leader = settle(&mut sim, 1_000)?;
    let target = leader % 3 + 1;
    sim.isolate(target);
    sim.transfer_leadership(leader, target);
    sim.run_for(3_000);
    no_violation(&sim)?;
    ensure(sim.leader() == Some(leader), || format!("leader now {:?}", sim.leader()))?;
    writes(&mut sim, 3)?;
    sim.reconnect(target);
    sim.run_for(1_000);
    no_violation(&sim)
}

/// A transfer asked for during a configuration change is refused.
// Dissertation 3.10, paper section 6
fn transfer_during_joint() -> Outcome {
    let mut sim = timed(3, |_| {});
    let leader = settle(&mut sim, 1_000)?;
    let a = sim.add_node();
    let others: Vec<NodeId> = (1..=3).filter(|&i| i != leader).collect();
    sim.set_configuration(leader, topology(&[others[0], others[1], a], &[]));
    sim.transfer_leadership(leader, others[0]);
    let refused = matches!(events(&sim).last(), Some(ConfigEvent::TransferFailed(TransferError::InProgress)));
    ensure(refused, || format!("transfer during a change: {:?}", events(&sim)))?;
    sim.run_for(2_000);
    no_violation(&sim)?;
    let l = sim.leader().ok_or("no leader")?;
    ensure(sim.node(l).membership().voters.keys().copied().eq([others[0], others[1], a]), || {
        format!("config {:?}", sim.node(l).membership())
    })
}
