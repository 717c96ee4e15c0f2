//! Section B7 (paper section 7, log compaction and InstallSnapshot) and the
//! classic lab snapshot tests of section C.

use raft_core::{Body, Message, NodeId, Payload, Role};

use super::membership::{settle, timed};
use super::{elect, ensure, no_violation, Outcome, Scenario};
use crate::network::NetConfig;
use crate::sim::{topology, Sim, SimOptions};

pub(crate) const SCENARIOS: &[Scenario] = &[
    ("b7_lagging_follower_gets_snapshot_then_entries", b7_lagging_follower_gets_snapshot_then_entries),
    ("b7_snapshot_prefix_keeps_suffix", b7_snapshot_prefix_keeps_suffix),
    ("b7_conflicting_snapshot_discards_log", b7_conflicting_snapshot_discards_log),
    ("b7_stale_snapshot_ignored", b7_stale_snapshot_ignored),
    ("b7_stale_term_snapshot_rejected", b7_stale_term_snapshot_rejected),
    ("b7_snapshot_carries_configuration", b7_snapshot_carries_configuration),
    ("b7_restart_from_snapshot_and_tail", b7_restart_from_snapshot_and_tail),
    ("b7_snapshot_during_joint_carries_it", b7_snapshot_during_joint_carries_it),
    ("b7_periodic_snapshots_bound_the_log", b7_periodic_snapshots_bound_the_log),
    ("c_snapshot_basic", c_snapshot_basic),
    ("c_snapshot_install", c_snapshot_install),
    ("c_snapshot_install_unreliable", c_snapshot_install_unreliable),
    ("c_snapshot_install_crash", c_snapshot_install_crash),
    ("c_snapshot_install_uncrash", c_snapshot_install_uncrash),
    ("c_snapshot_all_crash", c_snapshot_all_crash),
    ("c_snapshot_init", c_snapshot_init),
];

/// Small snapshots: every `every` entries, a short tail, small chunks.
fn snappy(o: &mut SimOptions, every: u64) {
    o.config.snapshot_entries_max = every;
    o.config.log_tail_entries = 2;
    o.config.bytes_per_message_max = 64;
    o.config.uncommitted_bytes_max = 64 * 30;
}

fn scripted_snappy(n: usize, every: u64) -> Sim {
    let mut o = SimOptions::scripted(n);
    snappy(&mut o, every);
    o.trace = super::trace_mode();
    Sim::new(o)
}

/// Timed writes that tolerate leader changes (a write without a leader is
/// skipped).
fn writes(sim: &mut Sim, n: u64) -> Outcome {
    for k in 0..n {
        if let Some(l) = sim.leader() {
            let _ = sim.propose(l, Sim::write_command((k % 3) as u8, k + 1));
        }
        sim.run_for(5);
    }
    no_violation(sim)
}

/// Every running node applied the same index and holds the same state.
fn converged(sim: &mut Sim, ids: &[NodeId]) -> Outcome {
    sim.run_for(3_000);
    no_violation(sim)?;
    let l = sim.leader().ok_or("no leader")?;
    let (applied, kv) = (sim.server(l).applied(), sim.server(l).kv().clone());
    for &id in ids {
        let s = sim.server(id);
        ensure(s.applied() == applied && s.kv() == &kv, || {
            format!("node {id} applied {} (leader {l}: {applied})", s.applied())
        })?;
    }
    Ok(())
}

fn installed(sim: &Sim) -> Outcome {
    ensure(sim.ext().snapshots_installed > 0, || "no snapshot was installed".into())
}

/// A follower cut off while the leader compacts gets the snapshot (in
/// chunks), then the entries after it.
// Paper section 7, figure 13
fn b7_lagging_follower_gets_snapshot_then_entries() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 10));
    let leader = settle(&mut sim, 1_000)?;
    let lag = leader % 3 + 1;
    sim.isolate(lag);
    writes(&mut sim, 60)?;
    sim.reconnect(lag);
    sim.run_for(500);
    installed(&sim)?;
    writes(&mut sim, 5)?;
    converged(&mut sim, &[1, 2, 3])?;
    ensure(sim.node(lag).snapshot_meta().index > 0, || "lagging node has no snapshot".into())
}

/// A snapshot covering a prefix of the follower's log (its entry at the
/// snapshot's index has the snapshot's term) keeps the entries after it.
// Paper section 7, figure 13 rule 6
fn b7_snapshot_prefix_keeps_suffix() -> Outcome {
    let mut sim = scripted_snappy(3, 10);
    elect(&mut sim, 1, |_| true)?;
    let commit0 = sim.node(1).commit_index();
    // 3 receives every entry but never learns that they commit.
    for k in 0..17 {
        sim.propose(1, Sim::write_command(0, k)).map_err(|e| e.to_string())?;
    }
    sim.deliver_where(|m| {
        m.to != 3 || matches!(&m.body, Body::AppendEntries { entries, commit, .. } if !entries.is_empty() && *commit <= commit0)
    });
    let snap = sim.node(1).snapshot_meta().clone();
    let term = sim.node(1).term();
    let last = sim.node(3).last_index();
    let before = sim.node(3).commit_index();
    ensure(snap.index > before && snap.index < last, || {
        format!("snapshot {} not inside 3's uncommitted log (commit {before}, last {last})", snap.index)
    })?;
    sim.inject(sim.snapshot_message(1, 3, term));
    no_violation(&sim)?;
    ensure(sim.node(3).snapshot_meta().index == snap.index, || "snapshot not installed".into())?;
    ensure(sim.node(3).last_index() == last, || {
        format!("suffix dropped: last {}", sim.node(3).last_index())
    })?;
    ensure(sim.server(3).applied() >= snap.index, || "not restored".into())
}

/// A snapshot whose last entry conflicts with the follower's log discards
/// the whole log (rule 7). With `KeepConflictingSuffix` the checker sees
/// the kept suffix break log matching.
// Paper section 7, figure 13 rule 7
fn b7_conflicting_snapshot_discards_log() -> Outcome {
    let mut sim = scripted_snappy(3, 10);
    elect(&mut sim, 3, |_| true)?;
    sim.isolate(3);
    for k in 0..30 {
        sim.propose(3, Sim::write_command(2, k)).map_err(|e| e.to_string())?;
    }
    sim.drop_all();
    elect(&mut sim, 1, |_| true)?;
    for k in 0..15 {
        sim.propose(1, Sim::write_command(0, k)).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    let snap = sim.node(1).snapshot_meta().clone();
    ensure(snap.index > 2 && snap.index < sim.node(3).last_index(), || {
        format!("snapshot at {}", snap.index)
    })?;
    sim.reconnect(3);
    for _ in 0..8 {
        sim.tick_all(3);
        sim.deliver_all();
    }
    no_violation(&sim)?;
    installed(&sim)?;
    let (a, b) = (sim.node(1), sim.node(3));
    ensure(
        a.last_index() == b.last_index() && b.term_at(b.last_index()) == a.term_at(a.last_index()),
        || format!("logs differ: {} vs {}", a.last_index(), b.last_index()),
    )?;
    ensure(sim.server(3).kv() == sim.server(1).kv(), || "state differs".into())
}

/// An older snapshot than what the follower committed changes nothing.
// Paper section 7, figure 13
fn b7_stale_snapshot_ignored() -> Outcome {
    let mut sim = scripted_snappy(3, 10);
    elect(&mut sim, 1, |_| true)?;
    for k in 0..12 {
        sim.propose(1, Sim::write_command(0, k)).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    let old = sim.snapshot_message(1, 2, sim.node(1).term());
    for k in 0..25 {
        sim.propose(1, Sim::write_command(1, k)).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    sim.tick_all(3);
    sim.deliver_all();
    let (commit, applied, kv) =
        (sim.node(2).commit_index(), sim.server(2).applied(), sim.server(2).kv().clone());
    let n = sim.ext().snapshots_installed;
    sim.inject(old);
    no_violation(&sim)?;
    ensure(sim.ext().snapshots_installed == n, || "stale snapshot installed".into())?;
    let s = sim.server(2);
    ensure(sim.node(2).commit_index() == commit && s.applied() == applied && s.kv() == &kv, || {
        "stale snapshot changed the follower".into()
    })
}

/// A snapshot from a deposed leader (older term) is rejected (rule 1).
// Paper section 7, figure 13 rule 1
fn b7_stale_term_snapshot_rejected() -> Outcome {
    let mut sim = scripted_snappy(3, 10);
    elect(&mut sim, 1, |_| true)?;
    for k in 0..12 {
        sim.propose(1, Sim::write_command(0, k)).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    let stale = sim.snapshot_message(1, 3, sim.node(1).term());
    // 3 moves to a later term while missing everything after its crash.
    sim.crash(3);
    elect(&mut sim, 2, |_| true)?;
    sim.restart(3);
    sim.isolate(3);
    sim.campaign(3);
    sim.drop_all();
    let (term, n) = (sim.node(3).term(), sim.ext().snapshots_installed);
    ensure(term > stale.term, || "3 is not ahead".into())?;
    let before = sim.node(3).snapshot_meta().clone();
    sim.inject(stale);
    no_violation(&sim)?;
    ensure(sim.ext().snapshots_installed == n && sim.node(3).snapshot_meta() == &before, || {
        "stale-term snapshot installed".into()
    })
}

/// The snapshot carries the configuration: a node that joins after the
/// leader compacted gets voters and learners from the snapshot.
// Paper section 7 (configuration in the snapshot), section 6
fn b7_snapshot_carries_configuration() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 5));
    let leader = settle(&mut sim, 1_000)?;
    let l4 = sim.add_node();
    sim.set_configuration(leader, topology(&[1, 2, 3], &[l4]));
    sim.run_for(500);
    writes(&mut sim, 40)?;
    let l5 = sim.add_node();
    let leader = sim.leader().ok_or("no leader")?;
    sim.set_configuration(leader, topology(&[1, 2, 3], &[l4, l5]));
    sim.run_for(1_000);
    installed(&sim)?;
    let m = sim.node(l5).membership().clone();
    ensure(m.is_learner(l4) && m.is_learner(l5) && m.voters.len() == 3, || format!("5 has {m:?}"))?;
    ensure(sim.node(l5).snapshot_meta().membership.is_learner(l4), || "snapshot lacks the learners".into())?;
    converged(&mut sim, &[1, 2, 3, l4, l5])
}

/// A restarted node rebuilds its state from its snapshot plus its log tail.
// Paper section 7
fn b7_restart_from_snapshot_and_tail() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 10));
    let leader = settle(&mut sim, 1_000)?;
    writes(&mut sim, 45)?;
    let f = leader % 3 + 1;
    let disk = sim.server(f).disk();
    ensure(disk.snapshot().index > 0 && !disk.entries().is_empty(), || {
        "no snapshot plus tail on disk".into()
    })?;
    sim.crash(f);
    sim.restart(f);
    ensure(sim.server(f).applied() == sim.server(f).disk().snapshot().index, || "not restored".into())?;
    writes(&mut sim, 5)?;
    converged(&mut sim, &[1, 2, 3])
}

/// With periodic snapshots, no node's in-memory log exceeds the bound.
// Paper section 7
fn b7_periodic_snapshots_bound_the_log() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 20));
    sim.set_log_bound(Some(20 + 2 + 64 + 8));
    settle(&mut sim, 1_000)?;
    writes(&mut sim, 400)?;
    converged(&mut sim, &[1, 2, 3])?;
    ensure(sim.ext().log_max <= 94, || format!("log reached {}", sim.ext().log_max))
}

// ----- lab tests (6.5840 3D, in spirit) -----

fn c_snapshot_basic() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 9));
    settle(&mut sim, 1_000)?;
    writes(&mut sim, 100)?;
    converged(&mut sim, &[1, 2, 3])?;
    ensure(sim.ext().snapshots_taken >= 3 * 10, || format!("{} snapshots", sim.ext().snapshots_taken))
}

fn c_snapshot_install() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 9));
    for round in 0..5u64 {
        let leader = settle(&mut sim, 500)?;
        let victim = (leader + round) % 3 + 1;
        sim.isolate(victim);
        writes(&mut sim, 30)?;
        sim.reconnect(victim);
    }
    converged(&mut sim, &[1, 2, 3])?;
    installed(&sim)
}

fn c_snapshot_install_unreliable() -> Outcome {
    let mut sim = timed(3, |o| {
        snappy(o, 9);
        o.plan.net = NetConfig {
            loss: 0.1,
            duplicate: 0.05,
            long_delay: 0.05,
            long_delay_max_ms: 200,
            ..NetConfig::reliable()
        };
    });
    for round in 0..5u64 {
        settle(&mut sim, 1_000)?;
        let victim = round % 3 + 1;
        sim.isolate(victim);
        writes(&mut sim, 30)?;
        sim.reconnect(victim);
    }
    sim.net.config = sim.net.config.healed();
    converged(&mut sim, &[1, 2, 3])?;
    installed(&sim)
}

fn c_snapshot_install_crash() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 9));
    for round in 0..5u64 {
        let leader = settle(&mut sim, 1_000)?;
        let victim = (leader + round) % 3 + 1;
        sim.crash(victim);
        writes(&mut sim, 30)?;
        sim.restart(victim);
    }
    converged(&mut sim, &[1, 2, 3])?;
    installed(&sim)
}

fn c_snapshot_install_uncrash() -> Outcome {
    let mut sim = timed(5, |o| snappy(o, 9));
    for round in 0..6u64 {
        settle(&mut sim, 1_000)?;
        let victim = round % 5 + 1;
        sim.crash(victim);
        writes(&mut sim, 20)?;
        sim.restart(victim);
        sim.run_for(50);
    }
    converged(&mut sim, &[1, 2, 3, 4, 5])
}

fn c_snapshot_all_crash() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 9));
    for _ in 0..4 {
        settle(&mut sim, 1_000)?;
        writes(&mut sim, 25)?;
        sim.run_for(300);
        let kv = sim.server(1).kv().clone();
        for id in 1..=3 {
            sim.crash(id);
        }
        for id in 1..=3 {
            sim.restart(id);
        }
        settle(&mut sim, 1_500)?;
        ensure(sim.server(1).kv() == &kv, || "state lost across a crash of everyone".into())?;
    }
    converged(&mut sim, &[1, 2, 3])
}

fn c_snapshot_init() -> Outcome {
    let mut sim = timed(3, |o| snappy(o, 9));
    settle(&mut sim, 1_000)?;
    writes(&mut sim, 30)?;
    sim.run_for(300);
    for id in 1..=3 {
        sim.crash(id);
        sim.restart(id);
        let s = sim.server(id);
        ensure(s.applied() == s.disk().snapshot().index && s.applied() > 0, || {
            format!("node {id} did not start from its snapshot")
        })?;
        ensure(sim.node(id).role() == Role::Follower, || "restart role".into())?;
    }
    writes(&mut sim, 5)?;
    converged(&mut sim, &[1, 2, 3])
}

/// An AppendEntries carrying C_new of a change that makes `voter` a voter
/// (not the entry that adds it as a learner, nor C_old,new).
fn carries_c_new(m: &Message, voter: NodeId) -> bool {
    matches!(&m.body, Body::AppendEntries { entries, .. }
        if entries.iter().any(|e| matches!(&e.payload, Payload::Membership(c) if !c.is_joint() && c.is_voter(voter))))
}

/// {1,2,3} -> {1,2,3,4} with C_new held back: the joint configuration
/// commits on {1,2,4} and the leader snapshots it. Node 3, cut off since
/// before the change and behind the leader's log tail, installs that
/// snapshot and so holds C_old,new as its configuration,
/// also after a restart from disk; once C_new flows, the change completes
/// everywhere.
// Paper sections 6 and 7 (a snapshot stores the latest configuration)
fn b7_snapshot_during_joint_carries_it() -> Outcome {
    let mut sim = scripted_snappy(3, 1);
    elect(&mut sim, 1, |_| true)?;
    sim.isolate(3);
    // Past the leader's log tail: 3 will need the snapshot.
    for k in 0..5 {
        sim.propose(1, Sim::write_command(0, k)).map_err(|e| e.to_string())?;
        sim.deliver_all();
    }
    let a = sim.add_node();
    sim.set_configuration(1, topology(&[1, 2, 3, a], &[]));
    // Only the leader's clock runs (heartbeats, catch-up): the section 5
    // elections of a scripted run would let the cut-off 3 disrupt.
    for _ in 0..6 {
        for _ in 0..3 {
            sim.tick(1);
        }
        sim.deliver_where(|m| !carries_c_new(m, a));
    }
    no_violation(&sim)?;
    let snap = sim.node(1).snapshot_meta().clone();
    ensure(snap.membership.is_joint(), || format!("leader's snapshot is not joint: {snap:?}"))?;
    ensure(sim.node(1).commit_index() < sim.node(1).last_index(), || "C_new committed".into())?;

    sim.reconnect(3);
    for _ in 0..4 {
        for _ in 0..3 {
            sim.tick(1);
        }
        sim.deliver_where(|m| !carries_c_new(m, a));
    }
    no_violation(&sim)?;
    installed(&sim)?;
    ensure(sim.node(3).snapshot_meta().index >= snap.index, || "3 did not install the snapshot".into())?;
    ensure(sim.node(3).membership().is_joint(), || {
        format!("3 is not joint: {:?}", sim.node(3).membership())
    })?;
    sim.crash(3);
    sim.restart(3);
    ensure(sim.node(3).membership().is_joint(), || "3 restarted without the joint configuration".into())?;

    for _ in 0..6 {
        for _ in 0..3 {
            sim.tick(1);
        }
        sim.deliver_all();
    }
    no_violation(&sim)?;
    for id in [1, 2, 3, a] {
        let m = sim.node(id).membership();
        ensure(!m.is_joint() && m.voters.len() == 4, || format!("node {id} ends in {m:?}"))?;
    }
    Ok(())
}
