//! Teeth: break one rule at a time and show the checkers catch it within a
//! bounded number of seeds. raft-core's `broken-rules` feature is enabled in
//! this crate's dev-dependencies only.

use raft_core::broken::{self, BrokenRule};
use raft_sim::client::ReadMode;
use raft_sim::faults::CLOCK_DRIFT_BOUND_PERMILLE;
use raft_sim::{run_seed, scenarios, FaultKinds, FaultPlan, Property, RunOptions, Sim, SimOptions};

/// Runs seeds until one fails; returns (seed, property).
fn hunt(rule: Option<BrokenRule>, local_reads: bool, max_seeds: u64) -> Option<(u64, Property)> {
    let opts = RunOptions { safety_ms: 3_000, broken_local_reads: local_reads, ..RunOptions::default() };
    hunt_with(rule, &opts, max_seeds)
}

fn hunt_with(rule: Option<BrokenRule>, opts: &RunOptions, max_seeds: u64) -> Option<(u64, Property)> {
    let local_reads = opts.broken_local_reads;
    broken::repair_all();
    if let Some(r) = rule {
        broken::set(r);
    }
    let found = (0..max_seeds).find_map(|seed| {
        let r = run_seed(seed, opts);
        r.violation.map(|v| {
            eprintln!("{rule:?} local_reads={local_reads}: caught at seed {seed}: {v}");
            (seed, v.property)
        })
    });
    broken::repair_all();
    found
}

#[test]
fn commit_old_term_by_counting_is_caught_by_figure8() {
    broken::set(BrokenRule::CommitOldTermByCounting);
    let (_, b2) = scenarios::find("b2_figure8_old_term_never_committed_by_counting").expect("exists");
    let outcome = b2();
    broken::repair_all();
    assert!(outcome.is_err(), "figure 8 did not catch commit-by-counting");
    eprintln!("figure 8 with the broken rule: {}", outcome.unwrap_err());
}

#[test]
fn forget_vote_persist_is_caught() {
    // A forgotten vote matters only if the voter crashes and votes again in
    // the same term: 3 nodes (a voter is half of every majority), frequent
    // crashes, slow links (more split elections).
    let mut plan = FaultPlan::none();
    plan.crash_every_ms = Some(60);
    plan.net.latency_max_ms = 40;
    plan.down_max_ms = 10;
    let opts = RunOptions { nodes: 3, safety_ms: 3_000, plan: Some(plan), ..RunOptions::default() };
    let found = hunt_with(Some(BrokenRule::ForgetVotePersist), &opts, 60);
    assert!(found.is_some(), "ForgetVotePersist not caught in 60 seeds");
}

#[test]
fn skip_up_to_date_check_is_caught() {
    let found = hunt(Some(BrokenRule::SkipUpToDateCheck), false, 20);
    assert!(found.is_some(), "SkipUpToDateCheck not caught in 20 seeds");
}

#[test]
fn apply_before_commit_is_caught() {
    let found = hunt(Some(BrokenRule::ApplyBeforeCommit), false, 20);
    assert!(found.is_some(), "ApplyBeforeCommit not caught in 20 seeds");
}

#[test]
fn local_reads_without_confirmation_are_caught() {
    let found = hunt(None, true, 400);
    assert!(
        matches!(found, Some((_, Property::Linearizability))),
        "stale local reads not caught in 400 seeds: {found:?}"
    );
}

#[test]
fn read_without_confirmation_is_caught_with_read_index_reads() {
    // raft-core's leader answers ReadIndex reads at once (no ReadConfirm
    // round): a deposed leader in a minority serves stale values. Same
    // hostile client settings as the lease tests, clocks true.
    let opts = RunOptions { reads: Some(ReadMode::ReadIndex), ..lease_opts(0, None) };
    let found = hunt_with(Some(BrokenRule::ReadWithoutConfirmation), &opts, 100);
    assert!(
        matches!(found, Some((_, Property::Linearizability))),
        "ReadWithoutConfirmation not caught in 100 seeds: {found:?}"
    );
}

/// Lease reads under adversarial clocks: whoever leads ticks slowest, the
/// rest fastest; partitions only; many clients with short timeouts, so that
/// writes reach a new leader while the old one still believes its lease.
fn lease_opts(drift_permille: u32, lease_drift_ticks: Option<u32>) -> RunOptions {
    RunOptions {
        safety_ms: 6_000,
        faults: FaultKinds { partition: true, ..FaultKinds::NONE },
        clients: 8,
        client_timeout_ms: 100,
        reads: Some(ReadMode::Lease),
        clock_drift_permille: Some(drift_permille),
        clock_adversarial: Some(true),
        lease_drift_ticks,
        ..RunOptions::default()
    }
}

/// Negative test (see FOUND.md, "lease reads and clock drift"): with
/// `lease_drift_ticks = 0` and a leader clock 4x slower than its followers'
/// (far beyond [`CLOCK_DRIFT_BOUND_PERMILLE`]), followers' vote guards end
/// long before the leader's lease: a new leader commits writes while the
/// old one still serves lease reads, and the checker finds the stale read.
/// Replay: `cargo run --release -p raft-sim -- replay --seed 21 --faults
/// partition --clients 8 --client-timeout-ms 100 --reads lease
/// --clock-drift-permille 3000 --clock-adversarial true --lease-drift-ticks 0`
#[test]
fn lease_reads_beyond_the_drift_bound_are_caught() {
    let found = hunt_with(None, &lease_opts(3_000, Some(0)), 60);
    assert!(
        matches!(found, Some((_, Property::Linearizability))),
        "lease reads beyond the drift bound not caught in 60 seeds: {found:?}"
    );
}

/// The same hostile schedule within the bound (raft-core's default
/// `lease_drift_ticks`) stays linearizable, and so do ReadIndex reads far
/// beyond it (they do not depend on clocks).
#[test]
fn lease_reads_within_the_drift_bound_pass_the_same_seeds() {
    assert_eq!(hunt_with(None, &lease_opts(CLOCK_DRIFT_BOUND_PERMILLE, None), 30), None);
    let read_index = RunOptions { reads: Some(ReadMode::ReadIndex), ..lease_opts(3_000, Some(0)) };
    assert_eq!(hunt_with(None, &read_index, 30), None);
}

#[test]
fn correct_rules_pass_the_same_seeds() {
    assert_eq!(hunt(None, false, 3), None);
}

/// One voter and one learner, slow disks, leaders replicating while they
/// write, two clients: the one shape where the leader's own copy alone is a
/// quorum, so its commit index runs ahead of its disk at every proposal.
fn lone_voter_run(seed: u64) -> (Option<raft_sim::Violation>, u64) {
    use raft_core::{Membership, Restored};
    let mut membership = Membership::with_voters([(1, "n1")]);
    membership.learners.insert(2, "n2".into());
    let mut opts = SimOptions::new(seed, 2);
    opts.restored = Some(vec![Restored::new_cluster(membership); 2]);
    opts.plan.disk_latency_max_ms = 10;
    opts.plan.replicate_while_writing = true;
    opts.clients = 2;
    let mut sim = Sim::new(opts);
    sim.run_for(3_000);
    (sim.violation().cloned(), sim.stats().early_sends)
}

// Dissertation 10.2.1: a leader may send new entries before its own write of
// them is durable, but no commit index that counts that copy may leave.
#[test]
fn early_send_revealing_a_commit_is_caught() {
    broken::set(BrokenRule::EarlySendRevealsCommit);
    let found = (0..10).find_map(|seed| lone_voter_run(seed).0.map(|v| (seed, v)));
    broken::repair_all();
    let (seed, v) = found.expect("EarlySendRevealsCommit not caught in 10 seeds");
    eprintln!("EarlySendRevealsCommit caught at seed {seed}: {v}");
    assert_eq!(v.property, Property::CommittedDurable);
}

#[test]
fn early_sends_with_the_commit_check_pass_the_same_seeds() {
    for seed in 0..10 {
        // Every message of a lone voter carries a commit index that counts
        // its own pending copy: with the check, none leaves early.
        assert_eq!(lone_voter_run(seed), (None, 0), "seed {seed}");
    }
}

// Replicating while writing, under every fault (crashes lose writes in
// flight after their entries left), passes the seeds the plain order does.
#[test]
fn replicate_while_writing_passes_random_faults() {
    let opts = RunOptions { safety_ms: 3_000, replicate_while_writing: Some(true), ..RunOptions::default() };
    let early: u64 = (0..20)
        .map(|seed| {
            let r = run_seed(seed, &opts);
            assert_eq!(r.violation, None, "seed {seed}: {}", r.failure_text());
            r.stats.early_sends
        })
        .sum();
    assert!(early > 0, "nothing was sent early in 20 seeds");
}
