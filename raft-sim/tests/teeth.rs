//! Teeth: break one rule at a time and show the checkers catch it within a
//! bounded number of seeds. raft-core's `broken-rules` feature is enabled in
//! this crate's dev-dependencies only.

use raft_core::broken::{self, BrokenRule};
use raft_sim::{run_seed, scenarios, FaultPlan, Property, RunOptions};

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
fn correct_rules_pass_the_same_seeds() {
    assert_eq!(hunt(None, false, 3), None);
}
