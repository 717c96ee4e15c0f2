use bytes::Bytes;
use raft_core::{Body, Message, NodeId, ReadPolicy, Role};

use super::{elect, ensure, no_violation, Outcome, Scenario};
use crate::kv::{Command, Op};
use crate::sim::{ReadOutcome, Sim, SimOptions};

pub(crate) const SCENARIOS: &[Scenario] = &[
    ("b8_1_exactly_once_retry_after_leader_crash", b8_1_exactly_once_retry_after_leader_crash),
    (
        "b8_2_new_leader_serves_no_read_before_its_noop_commits",
        b8_2_new_leader_serves_no_read_before_its_noop_commits,
    ),
    (
        "b8_3_partitioned_old_leader_does_not_return_stale_value",
        b8_3_partitioned_old_leader_does_not_return_stale_value,
    ),
];

const X: u8 = 0;

/// `raft_core_defaults`: PreVote and CheckQuorum on (leases rely on
/// CheckQuorum's vote guard); otherwise the paper's section 5 elections.
fn scripted(nodes: usize, raft_core_defaults: bool) -> Sim {
    let mut opts = SimOptions::scripted(nodes);
    opts.config.check_quorum = raft_core_defaults;
    opts.config.pre_vote = raft_core_defaults;
    opts.trace = super::trace_mode();
    Sim::new(opts)
}

/// Heartbeat rounds with delivery until `done` (at most `rounds`).
fn settle(sim: &mut Sim, rounds: usize, mut done: impl FnMut(&Sim) -> bool) -> Outcome {
    for _ in 0..rounds {
        if done(sim) {
            return Ok(());
        }
        sim.tick_all(1);
        sim.deliver_all();
        no_violation(sim)?;
    }
    ensure(done(sim), || format!("not settled after {rounds} ticks"))
}

/// Ticks node `id` alone (with delivery) until it leads.
fn settle_ticking(sim: &mut Sim, id: NodeId, ticks: usize) -> Outcome {
    for _ in 0..ticks {
        if sim.node(id).role() == Role::Leader {
            return Ok(());
        }
        sim.tick(id);
        sim.deliver_all();
        no_violation(sim)?;
    }
    Err(format!("node {id} did not win an election"))
}

fn session_write(client: u32, serial: u64, value: u64) -> Bytes {
    Command { client, serial, key: X, op: Op::Write(value) }.encode()
}

fn is_append_with_entries(m: &Message) -> bool {
    matches!(&m.body, Body::AppendEntries { entries, .. } if !entries.is_empty())
}

/// Lets through the leader's entries and the answers to them, nothing that
/// would tell followers the new commit index.
fn entries_and_acks(m: &Message) -> bool {
    is_append_with_entries(m) || matches!(m.body, Body::AppendEntriesResponse(_))
}

/// B8 (1): the leader commits client 7's write and crashes before replying;
/// the client retries with the same session serial on the new leader; the
/// write applies once (a write by client 8 in between is not overwritten).
// Paper section 8 (client interaction), dissertation 6.3
fn b8_1_exactly_once_retry_after_leader_crash() -> Outcome {
    let mut sim = scripted(3, false);
    elect(&mut sim, 1, |_| true)?;
    settle(&mut sim, 10, |s| s.server(1).applied() >= 1)?;
    let first = session_write(7, 1, 5);
    let (_, i1) = sim.propose(1, first.clone()).map_err(|e| format!("propose: {e:?}"))?;
    sim.deliver_where(entries_and_acks);
    ensure(sim.server(1).applied() >= i1, || "S1 did not commit and apply the write".into())?;
    ensure(sim.server(1).kv().get(X) == (5, i1), || format!("S1 state {:?}", sim.server(1).kv().get(X)))?;
    // S1 crashes before its reply leaves (scripted: replies go nowhere).
    sim.crash(1);
    sim.drop_all();
    elect(&mut sim, 2, |_| true)?;
    settle(&mut sim, 10, |s| s.server(2).applied() >= i1)?;
    let (_, i8) = sim.propose(2, session_write(8, 1, 6)).map_err(|e| format!("client 8's write: {e:?}"))?;
    // The retry: same client, same serial, same bytes.
    let (_, retry) = sim.propose(2, first).map_err(|e| format!("retry: {e:?}"))?;
    ensure(retry > i8, || format!("retry at {retry}, client 8's write at {i8}"))?;
    sim.restart(1);
    settle(&mut sim, 30, |s| (1..=3).all(|id| s.server(id).applied() >= retry))?;
    for id in 1..=3 {
        let got = sim.server(id).kv().get(X);
        ensure(got == (6, i8), || {
            format!("S{id}: x = {got:?}, want (6, {i8}): the retried write applied twice")
        })?;
    }
    no_violation(&sim)
}

/// B8 (2): a new leader does not know what is committed until its own no-op
/// commits, so it answers no read (ReadIndex or lease, local or forwarded)
/// before then. S1 commits x=1 with S2 and crashes before anyone learns the
/// commit; S2 leads with commit index 0 and x unset in its state machine.
// Paper section 8 (read-only operations), dissertation 6.4 step 1
fn b8_2_new_leader_serves_no_read_before_its_noop_commits() -> Outcome {
    let mut sim = scripted(3, false);
    elect(&mut sim, 1, |_| true)?;
    settle(&mut sim, 10, |s| (1..=3).all(|id| s.server(id).applied() >= 1))?;
    let (_, i1) = sim.propose(1, Sim::write_command(X, 1)).map_err(|e| format!("{e:?}"))?;
    sim.deliver_where(entries_and_acks);
    ensure(sim.node(1).commit_index() >= i1, || "S1 did not commit x=1".into())?;
    ensure(sim.node(2).commit_index() < i1, || "S2 already knows x=1 is committed".into())?;
    sim.crash(1);
    sim.drop_all();
    // S2 wins; its no-op reaches S3 (which learns who leads) but no
    // acknowledgement gets back, so the no-op does not commit.
    let no_acks = |m: &Message| !matches!(m.body, Body::AppendEntriesResponse(_));
    elect(&mut sim, 2, no_acks)?;
    ensure(sim.node(3).leader() == Some(2), || "S3 does not know S2 leads".into())?;
    let noop = sim.node(2).last_index();
    ensure(sim.server(2).kv().get(X).0 == 0, || "S2 applied x=1 early".into())?;
    let on_leader = sim.read(2, X, ReadPolicy::Linearizable);
    let lease = sim.read(2, X, ReadPolicy::Lease);
    let forwarded = sim.read(3, X, ReadPolicy::Linearizable);
    sim.deliver_where(no_acks);
    for (what, r) in [("ReadIndex", on_leader), ("lease", lease), ("forwarded", forwarded)] {
        ensure(sim.read_outcome(r) == ReadOutcome::Pending, || {
            format!("{what} read answered before the no-op committed: {:?}", sim.read_outcome(r))
        })?;
    }
    // Now let the no-op through: every read completes with x=1.
    settle(&mut sim, 20, |s| {
        [on_leader, lease, forwarded].iter().all(|&r| s.read_outcome(r) != ReadOutcome::Pending)
    })?;
    for (what, r) in [("ReadIndex", on_leader), ("lease", lease), ("forwarded", forwarded)] {
        match sim.read_outcome(r) {
            ReadOutcome::Value { value: 1, index, .. } if index >= noop => {}
            other => return Err(format!("{what} read after the no-op: {other:?} (no-op at {noop})")),
        }
    }
    no_violation(&sim)
}

/// B8 (3): partition {S1 old leader, S2} | {S3, S4, S5}; the majority elects
/// S3 and writes x=2; no read on S1 or S2 returns the old x=1. ReadIndex
/// reads on S1 cannot gather a quorum (they wait, then fail when CheckQuorum
/// deposes S1); lease reads on S1 are served only while the lease from S1's
/// last confirmed round holds (`election_ticks_min - lease_drift_ticks`
/// ticks), which ends before S3, S4 and S5 stop ignoring votes.
// Paper section 8 (read-only operations), dissertation 6.4 and 6.4.1
fn b8_3_partitioned_old_leader_does_not_return_stale_value() -> Outcome {
    let mut sim = scripted(5, true);
    let config = raft_core::Config::new(1);
    let (min, lease_ticks) =
        (config.election_ticks_min as usize, (config.election_ticks_min - config.lease_drift_ticks) as usize);
    // PreVote: S1 times out first and wins.
    settle_ticking(&mut sim, 1, 3 * config.election_ticks_max as usize)?;
    sim.propose(1, Sim::write_command(X, 1)).map_err(|e| format!("{e:?}"))?;
    settle(&mut sim, 10, |s| (1..=5).all(|id| s.server(id).kv().get(X).0 == 1))?;
    // A lease read with no lease runs a round: the lease starts now.
    let r = sim.read(1, X, ReadPolicy::Lease);
    sim.deliver_all();
    ensure(matches!(sim.read_outcome(r), ReadOutcome::Value { value: 1, .. }), || {
        format!("lease read before the partition: {:?}", sim.read_outcome(r))
    })?;
    sim.partition(&[&[1, 2], &[3, 4, 5]]);
    // Time passes in lockstep; S4 and S5 tick only until their vote guard
    // ends, so that S3 is the one to time out and win.
    let mut reads: Vec<(usize, &str, u64)> = Vec::new();
    let mut x2_committed_at = None;
    for t in 1..=6 * min {
        for id in 1..=3 {
            sim.tick(id);
        }
        if t <= min {
            sim.tick(4);
            sim.tick(5);
        }
        {
            reads.push((t, "lease on S1", sim.read(1, X, ReadPolicy::Lease)));
            reads.push((t, "ReadIndex on S1", sim.read(1, X, ReadPolicy::Linearizable)));
            reads.push((t, "ReadIndex on S2", sim.read(2, X, ReadPolicy::Linearizable)));
        }
        sim.deliver_all();
        no_violation(&sim)?;
        if x2_committed_at.is_none() && sim.node(3).role() == Role::Leader {
            let n3 = sim.node(3);
            if n3.commit_index() == n3.last_index() && sim.server(3).kv().get(X).0 != 2 {
                sim.propose(3, Sim::write_command(X, 2)).map_err(|e| format!("{e:?}"))?;
            }
        }
        if x2_committed_at.is_none() && (3..=5).filter(|&id| sim.server(id).kv().get(X).0 == 2).count() >= 1 {
            x2_committed_at = Some(t);
        }
    }
    let Some(x2_at) = x2_committed_at else { return Err("the majority did not commit x=2".into()) };
    ensure(sim.node(3).role() == Role::Leader, || "S3 is not the majority's leader".into())?;
    let mut by_lease = 0;
    for &(t, what, r) in &reads {
        match sim.read_outcome(r) {
            ReadOutcome::Value { value, .. } => {
                by_lease += 1;
                ensure(what == "lease on S1" && t < lease_ticks, || {
                    format!("{what} issued at tick {t} returned x={value} (lease {lease_ticks} ticks)")
                })?;
                ensure(t < x2_at, || format!("{what} at tick {t} returned x={value} after x=2 committed"))?;
            }
            ReadOutcome::Pending | ReadOutcome::Failed(_) => {}
        }
    }
    // The lease did serve reads during the partition, before it expired.
    ensure(by_lease > 0, || "no lease read was served during the lease".into())?;
    let failed =
        reads.iter().filter(|&&(_, _, r)| matches!(sim.read_outcome(r), ReadOutcome::Failed(_))).count();
    ensure(failed > 0, || "no read on the minority failed".into())?;
    // After healing, a read on S1 is forwarded to S3 and sees x=2.
    sim.heal();
    settle(&mut sim, 100, |s| s.node(1).leader() == Some(3) && s.server(1).kv().get(X).0 == 2)?;
    let r = sim.read(1, X, ReadPolicy::Linearizable);
    settle(&mut sim, 10, |s| s.read_outcome(r) != ReadOutcome::Pending)?;
    ensure(matches!(sim.read_outcome(r), ReadOutcome::Value { value: 2, .. }), || {
        format!("read on S1 after healing: {:?}", sim.read_outcome(r))
    })?;
    no_violation(&sim)
}
