//! Exact scenarios: the Raft paper's figures (section B of SCENARIOS.md) and
//! the classic lab tests (section C). Each is one function returning
//! `Err(reason)` on failure; the name is the scenario ID.

/// Section C: the classic lab tests.
pub mod lab;
/// Sections B4-B6: membership changes and leadership transfer.
pub mod membership;
/// Section B: the paper's figures.
pub mod paper;
/// Section B8: clients (exactly once, reads).
pub mod reads;
/// Section B7 and the lab snapshot tests: compaction and InstallSnapshot.
pub mod snapshot;

/// A scenario's outcome.
pub type Outcome = Result<(), String>;

/// Fails with the first invariant the simulator's checker saw broken.
pub(crate) fn no_violation(sim: &crate::Sim) -> Outcome {
    match sim.violation() {
        None => Ok(()),
        Some(v) => Err(format!("invariant broken: {v}")),
    }
}

/// Scripted: campaigns `id` and delivers what `keep` allows until it leads
/// (at most 4 rounds).
pub(crate) fn elect(
    sim: &mut crate::Sim,
    id: raft_core::NodeId,
    mut keep: impl FnMut(&raft_core::Message) -> bool,
) -> Outcome {
    for _ in 0..4 {
        sim.campaign(id);
        sim.deliver_where(&mut keep);
        no_violation(sim)?;
        if sim.node(id).role() == raft_core::Role::Leader {
            return Ok(());
        }
    }
    Err(format!("node {id} did not win an election"))
}

/// A named scenario.
pub type Scenario = (&'static str, fn() -> Outcome);

/// Every scenario, in catalog order.
pub fn all() -> Vec<Scenario> {
    let mut v = paper::SCENARIOS.to_vec();
    v.extend_from_slice(reads::SCENARIOS);
    v.extend_from_slice(membership::SCENARIOS);
    v.extend_from_slice(snapshot::SCENARIOS);
    v.extend_from_slice(lab::SCENARIOS);
    v
}

/// The membership and transfer scenarios (B4-B6).
pub fn membership_scenarios() -> Vec<Scenario> {
    membership::SCENARIOS.to_vec()
}

/// The snapshot scenarios (B7, lab C).
pub fn snapshot_scenarios() -> Vec<Scenario> {
    snapshot::SCENARIOS.to_vec()
}

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|(n, _)| *n == name)
}

/// Fails with `msg` unless `cond`.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// `RAFT_SIM_TRACE=1` prints every event of the scenarios (the CLI's
/// `scenario NAME --trace` sets it).
pub(crate) fn trace_mode() -> crate::trace::TraceMode {
    if std::env::var_os("RAFT_SIM_TRACE").is_some() {
        crate::trace::TraceMode::Print
    } else {
        crate::trace::TraceMode::Off
    }
}
