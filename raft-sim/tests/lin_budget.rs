//! Runs whose linearizability search used to run out of budget (many client
//! operations with unknown outcome: clients gave up after timeouts) are
//! decided now, and pass.

use raft_sim::{run_seed, RunOptions};

#[test]
fn histories_with_many_unknown_outcomes_are_decided() {
    // (seed, nodes): the inconclusive runs of the CI sweeps before the
    // checker dropped unknown operations cheaply.
    for (seed, nodes) in [(237, 5), (539, 5), (119, 3), (242, 7)] {
        let r = run_seed(seed, &RunOptions { nodes, ..RunOptions::default() });
        assert!(r.violation.is_none(), "{}", r.failure_text());
        assert!(!r.lin_inconclusive, "seed {seed} with {nodes} nodes: linearizability search over budget");
    }
}
