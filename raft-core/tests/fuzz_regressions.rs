//! Inputs the `fuzz/` targets found to panic a node, kept as plain tests.
//! Each names the target that found it.

mod common;

use common::*;
use raft_core::{Body, Input, Node, Role, Term, TERM_MAX};

/// A message at `Term::MAX` is malformed and changes nothing; one at the
/// last usable term ([`TERM_MAX`]) is adopted, and the node must then never
/// campaign (there is no next term), by timeout, pre-vote or transfer.
// Found by fuzz target node_inputs: `attempt to add with overflow` in
// campaign_with after a TimeoutNow at term u64::MAX.
#[test]
fn term_max_never_campaigns() {
    for pre_vote in [false, true] {
        // Setup: a follower of a 3-node cluster.
        let config = raft_core::Config { pre_vote, ..classic_config(2) };
        let mut node = Node::new(config, restored(3, 1, None, &[1])).unwrap();
        // Act: a heartbeat at u64::MAX (dropped), one at the last usable
        // term, a TimeoutNow, then election timeouts.
        assert!(node.step(Input::Message(append(1, 2, Term::MAX, (1, 1), vec![], 1))).is_empty());
        assert_eq!(node.term(), 1);
        node.step(Input::Message(append(1, 2, TERM_MAX, (1, 1), vec![], 1)));
        assert_eq!(node.term(), TERM_MAX);
        node.step(Input::Message(msg(1, 2, TERM_MAX, Body::TimeoutNow)));
        for _ in 0..200 {
            node.step(Input::Tick);
        }
        // A pre-vote grant for the term after the last one cannot count.
        node.step(Input::Message(msg(3, 2, Term::MAX, Body::PreVoteResponse { granted: true })));
        // Check: still a follower at the last term, invariants intact.
        assert_eq!(node.role(), Role::Follower);
        assert_eq!(node.term(), TERM_MAX);
        node.invariants().unwrap();
    }
}
