//! Teeth for section 6: switching configurations directly (figure 10) is
//! caught; the real path passes the same schedule.

use raft_core::broken::{self, BrokenRule};
use raft_sim::scenarios;

#[test]
fn direct_config_switch_gives_two_leaders_in_one_term() {
    let (_, b4) = scenarios::find("b4_figure10_direct_switch_two_leaders").expect("exists");
    broken::repair_all();
    assert_eq!(b4(), Ok(()), "the real path (learners, joint consensus) must pass figure 10");
    broken::set(BrokenRule::DirectConfigSwitch);
    let outcome = b4();
    broken::repair_all();
    let err = outcome.expect_err("DirectConfigSwitch not caught by figure 10");
    assert!(err.contains("ElectionSafety"), "{err}");
    eprintln!("figure 10 with DirectConfigSwitch: {err}");
}

#[test]
fn membership_scenarios_pass() {
    broken::repair_all();
    for (name, f) in scenarios::membership_scenarios() {
        assert_eq!(f(), Ok(()), "{name}");
    }
}
