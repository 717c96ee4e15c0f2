//! Runs the whole example in-process: election, replication, leader
//! failover and the old leader's restart.

use std::time::Duration;

use embed_example::{run, Command, Counter, Options, NODE_IDS};
use raft_core::{Entry, Payload};

#[test]
fn three_nodes_agree_and_survive_leader_failover() {
    let opts =
        Options { increments: 10, deadline: Duration::from_secs(8), verbose: false, ..Options::default() };
    let outcome = run(&opts).unwrap_or_else(|e| panic!("run failed: {e}"));

    assert_eq!(outcome.counter, 20);
    assert_ne!(outcome.first_leader, outcome.second_leader, "a new leader took over");
    assert_eq!(
        outcome.counters.keys().copied().collect::<Vec<_>>(),
        NODE_IDS.to_vec(),
        "all three ran at the end"
    );
    for (id, value) in &outcome.counters {
        assert_eq!(*value, 20, "node {id}");
    }
    assert!(outcome.elapsed < Duration::from_secs(8));
}

#[test]
fn a_command_committed_twice_counts_once() {
    let entry = |index, seq, delta| Entry {
        term: 1,
        index,
        payload: Payload::Command(Command { seq, delta }.encode()),
    };
    let mut counter = Counter::default();
    for e in [entry(1, 1, 5), entry(2, 2, -2), entry(3, 2, -2), entry(4, 3, 10)] {
        counter.apply(&e).expect("well-formed command");
    }
    assert_eq!(counter, Counter { value: 13, last_seq: 3 });
    assert!(Command::decode(b"short").is_none());
    assert!(counter.apply(&Entry { term: 1, index: 5, payload: Payload::Command("bad".into()) }).is_err());
}

#[test]
fn a_run_past_its_deadline_fails_with_a_reason() {
    // No election can finish in 50 ms: the first timeout is at least 150 ms.
    let opts = Options { deadline: Duration::from_millis(50), verbose: false, ..Options::default() };
    let error = run(&opts).expect_err("the run cannot finish in 50 ms");
    assert!(error.contains("waiting for a leader to be elected"), "{error}");
}
