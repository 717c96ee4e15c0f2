//! Every scenario of sections B and C passes (debug build: raft-core checks
//! its own invariants on every step too).

#[test]
fn every_scenario_passes() {
    for (name, scenario) in raft_sim::scenarios::all() {
        if let Err(e) = scenario() {
            panic!("{name}: {e}\n  replay: cargo run --release -p raft-sim -- scenario {name}");
        }
    }
}
