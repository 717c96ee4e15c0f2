//! Teeth for section 7 (a kept conflicting suffix is caught) and the cost
//! of installing a large snapshot.

use raft_core::broken::{self, BrokenRule};
use raft_core::{Membership, Restored, Role};
use raft_sim::kv::{Command, Kv, Op};
use raft_sim::sim::restored_with_snapshot;
use raft_sim::{scenarios, Sim, SimOptions};

#[test]
fn keep_conflicting_suffix_is_caught() {
    let (_, b7) = scenarios::find("b7_conflicting_snapshot_discards_log").expect("exists");
    broken::repair_all();
    assert_eq!(b7(), Ok(()));
    broken::set(BrokenRule::KeepConflictingSuffix);
    let outcome = b7();
    broken::repair_all();
    let err = outcome.expect_err("KeepConflictingSuffix not caught");
    assert!(err.contains("LogMatching"), "{err}");
    eprintln!("rule 7 broken: {err}");
}

#[test]
fn large_snapshot_installs_without_an_election() {
    // 100,000 client sessions (the KV's keys are u8; sessions are what a
    // large state machine holds here) plus 256 keys.
    let mut kv = Kv::default();
    for c in 1..=100_000u32 {
        kv.apply(u64::from(c), &Command { client: c, serial: 1, key: c as u8, op: Op::Write(u64::from(c)) });
    }
    let members = Membership::with_voters((1..=3u64).map(|id| (id, format!("n{id}"))));
    let r = restored_with_snapshot(100_000, 1, members.clone());
    let mut opts = SimOptions::new(3, 3);
    opts.config.bytes_per_message_max = 64 << 10;
    opts.restored = Some(vec![r.clone(), r, Restored::new_cluster(members)]);
    let mut sim = Sim::new(opts);
    sim.load_snapshot_state(1, &kv);
    sim.load_snapshot_state(2, &kv);
    let mut elected = None;
    for _ in 0..200 {
        sim.run_for(10);
        if let Some(l) = sim.leader() {
            elected = Some((l, sim.node(l).term(), sim.now()));
            break;
        }
    }
    let (leader, term, t0) = elected.expect("a leader");
    let mut done = None;
    for _ in 0..2_000 {
        sim.run_for(1);
        if sim.server(3).applied() >= 100_000 {
            done = Some(sim.now());
            break;
        }
    }
    let t1 = done.expect("snapshot installed");
    sim.run_for(2_000);
    assert!(sim.violation().is_none(), "{:?}", sim.violation());
    assert_eq!(sim.leader(), Some(leader));
    assert_eq!(sim.node(leader).term(), term, "an election happened during the transfer");
    assert_eq!(sim.node(3).role(), Role::Follower);
    assert_eq!(sim.server(3).kv(), &kv);
    let bytes = kv.to_snapshot().len();
    eprintln!(
        "snapshot of {} entries ({bytes} bytes): {} chunks of <= 64 KiB, installed {} ms (simulated) after the election",
        kv.len(),
        sim.ext().chunks_sent,
        t1 - t0
    );
}
