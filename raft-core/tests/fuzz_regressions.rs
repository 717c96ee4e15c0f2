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

/// An InstallSnapshot whose snapshot term is above the message's term is
/// malformed (its leader could not have held that entry): it changes
/// nothing, the term included, and the node restarts from what it wrote.
// Reported with the fuzz targets (issue 15): debug builds panicked on the
// node's own invariant ("last log term 11 above current term 2"); release
// builds persisted term 2 beside a snapshot of term 11, a state `Node::new`
// then refused, so the node could never restart.
#[test]
fn install_snapshot_with_a_term_above_the_message_changes_nothing() {
    for done in [true, false] {
        // Setup: a follower of a 3-node cluster at term 1, log [1, 1].
        let start = restored(3, 1, None, &[1, 1]);
        let mut node = Node::new(classic_config(2), start.clone()).unwrap();
        let mut disk = Disk::from_restored(&start);
        // Act: a chunk at message term 2 of a snapshot of term 11.
        let meta = raft_core::SnapshotMeta { index: 5, term: 11, membership: membership(3) };
        let body = Body::InstallSnapshot {
            meta: Box::new(meta),
            offset: 0,
            data: bytes::Bytes::from_static(b"state"),
            done,
            checksum: raft_core::crc32c(0, b"state"),
        };
        let actions = node.step(Input::Message(msg(1, 2, 2, body)));
        for action in &actions {
            if let raft_core::Action::Persist(p) = action {
                disk.apply(p);
            }
        }
        // Check: nothing happened, and the disk still restarts a node.
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!((node.term(), node.role(), node.last_index()), (1, Role::Follower, 2));
        node.invariants().unwrap();
        Node::new(classic_config(2), disk.restored()).unwrap();
    }
}
