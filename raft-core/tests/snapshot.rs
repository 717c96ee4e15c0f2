//! Log compaction and InstallSnapshot. Paper section 7, figure 13.

mod common;

use bytes::Bytes;
use common::*;
use raft_core::{
    crc32c, Action, AppendResult, Body, Config, HardState, Input, Message, NodeId, Restored, Role,
    SnapshotMeta,
};

fn small_snapshots(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
    config.snapshot_entries_max = 20;
    config.log_tail_entries = 0;
}

/// What each node's driver saved as its snapshot (fake contents: the
/// snapshot index repeated, long enough to need several chunks).
fn contents(index: u64) -> Vec<u8> {
    (0..100).map(|i| (index as u8).wrapping_add(i)).collect()
}

const CHUNK: usize = 30;

/// Executes snapshot actions as a driver would: saves snapshots when asked,
/// and turns SendSnapshotChunk into InstallSnapshot messages. Returns the
/// chunks and restores each node performed.
#[derive(Default, Debug)]
struct Driver {
    chunks: Vec<(NodeId, u64, usize, bool)>,
    restored: Vec<(NodeId, SnapshotMeta)>,
}

impl Driver {
    fn step(&mut self, net: &mut Net, id: NodeId, input: Input) -> Vec<Action> {
        let actions = net.step(id, input);
        self.handle(net, id, &actions);
        actions
    }

    fn handle(&mut self, net: &mut Net, id: NodeId, actions: &[Action]) {
        for a in actions {
            match a {
                Action::SnapshotNeeded { meta } => {
                    let more = net.step(id, Input::SnapshotTaken { index: meta.index });
                    self.handle(net, id, &more);
                }
                Action::SendSnapshotChunk { to, term, meta, offset } => {
                    let data = contents(meta.index);
                    let start = (*offset as usize).min(data.len());
                    let end = (start + CHUNK).min(data.len());
                    let body = Body::InstallSnapshot {
                        meta: meta.clone(),
                        offset: *offset,
                        data: Bytes::copy_from_slice(&data[start..end]),
                        done: end == data.len(),
                        checksum: crc32c(0, &data),
                    };
                    net.queue.push_back(Message { from: id, to: *to, term: *term, body });
                }
                Action::SnapshotChunk { offset, data, done, .. } => {
                    self.chunks.push((id, *offset, data.len(), *done))
                }
                Action::RestoreSnapshot { meta } => self.restored.push((id, (**meta).clone())),
                _ => {}
            }
        }
    }

    fn deliver_all(&mut self, net: &mut Net) {
        while let Some(m) = net.queue.pop_front() {
            if net.isolated.contains(&m.from) || net.isolated.contains(&m.to) {
                continue;
            }
            let to = m.to;
            self.step(net, to, Input::Message(m));
        }
    }

    fn propose(&mut self, net: &mut Net, id: NodeId, n: usize) {
        for i in 0..n {
            self.step(net, id, Input::Propose(vec![Bytes::from(format!("c{i}"))]));
            self.deliver_all(net);
        }
    }
}

/// Once `snapshot_entries_max` entries applied, the core asks for a
/// snapshot; after it is taken, the log keeps only the configured tail and
/// terms at the boundary still answer.
#[test]
fn compaction_bookkeeping() {
    let mut net = Net::with_config(1, |c| {
        small_snapshots(c);
        c.log_tail_entries = 5;
    });
    net.tick_until(1, |n| n.role() == Role::Leader);
    let mut asked = Vec::new();
    for i in 0..25 {
        for a in net.propose(1, &[&format!("c{i}")]) {
            if let Action::SnapshotNeeded { meta } = a {
                asked.push(meta);
            }
        }
    }
    assert_eq!(asked.len(), 1, "asked once, not again until taken");
    let meta = asked[0].clone();
    assert_eq!(meta.index, 20);
    assert_eq!(meta.membership, membership(1));
    let term_at_boundary = net.node(1).term_at(15);

    net.step(1, Input::SnapshotTaken { index: meta.index });

    let node = net.node(1);
    assert_eq!(node.snapshot_meta(), &*meta);
    assert_eq!(node.first_index(), 16, "a tail of 5 entries before the snapshot is kept");
    assert_eq!(node.term_at(15), term_at_boundary, "the boundary's term is still known");
    assert_eq!(node.term_at(14), None);
    assert_eq!(node.log_entries() as u64, node.last_index() - 15);
    assert!(node.invariants().is_ok());
}

/// A follower that missed compacted entries gets the snapshot in chunks,
/// restores it, and then receives the entries after it. Every chunk counts
/// as contact with the leader. SCENARIOS B7.
#[test]
fn lagging_follower_gets_snapshot_then_entries() {
    let mut net = Net::with_config(3, small_snapshots);
    let mut d = Driver::default();
    net.elect(1);
    d.deliver_all(&mut net);
    net.isolate(3);
    d.propose(&mut net, 1, 30);
    assert!(net.node(1).first_index() > 2, "leader compacted");
    net.heal();

    // The leader notices the stalled pipeline and finds node 3 behind its
    // compacted log.
    for _ in 0..3 * net.configs[&1].heartbeat_ticks {
        d.step(&mut net, 1, Input::Tick);
        d.deliver_all(&mut net);
    }

    let snap = net.node(1).snapshot_meta().clone();
    let chunks: Vec<_> = d.chunks.iter().filter(|c| c.0 == 3).map(|c| (c.1, c.2, c.3)).collect();
    assert_eq!(chunks, vec![(0, 30, false), (30, 30, false), (60, 30, false), (90, 10, true)]);
    assert_eq!(d.restored, vec![(3, snap.clone())]);
    assert_eq!(net.node(3).snapshot_meta(), &snap);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index(), "entries after the snapshot followed");
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
    assert_eq!(net.node(3).leader(), Some(1));
}

/// A lost chunk resumes from the follower's offset, not from the start.
#[test]
fn dropped_chunk_resumes_from_the_followers_offset() {
    let mut net = Net::with_config(3, small_snapshots);
    let mut d = Driver::default();
    net.elect(1);
    d.deliver_all(&mut net);
    net.isolate(3);
    d.propose(&mut net, 1, 30);
    net.heal();
    while !net.queue.iter().any(|m| matches!(m.body, Body::InstallSnapshot { .. })) {
        d.step(&mut net, 1, Input::Tick);
        net.queue.retain(|m| matches!(m.body, Body::InstallSnapshot { .. }));
    }
    // Deliver the first chunk and its answer, then lose the second chunk.
    let mut lost = false;
    while let Some(m) = net.queue.pop_front() {
        if !lost && matches!(m.body, Body::InstallSnapshot { offset: 30, .. }) {
            lost = true;
            continue;
        }
        let to = m.to;
        d.step(&mut net, to, Input::Message(m));
    }
    assert!(lost);
    for _ in 0..4 * net.configs[&1].heartbeat_ticks {
        d.step(&mut net, 1, Input::Tick);
        d.deliver_all(&mut net);
    }
    let offsets: Vec<u64> = d.chunks.iter().filter(|c| c.0 == 3).map(|c| c.1).collect();
    assert_eq!(offsets, vec![0, 30, 60, 90], "offset 0 was written once: the transfer resumed");
    assert_eq!(d.restored.len(), 1);
}

fn follower_with_log(log: &[u64], term: u64) -> Net {
    let mut config = Config::new(2);
    small_snapshots(&mut config);
    Net::from_restored(vec![(config, restored(3, term, None, log))])
}

fn chunk(term: u64, index: u64, snap_term: u64, data: &[u8], done: bool) -> Message {
    msg(
        1,
        2,
        term,
        Body::InstallSnapshot {
            meta: Box::new(SnapshotMeta { index, term: snap_term, membership: membership(3) }),
            offset: 0,
            data: Bytes::copy_from_slice(data),
            done,
            checksum: crc32c(0, data),
        },
    )
}

/// Rule 1: a snapshot of a stale term is rejected with the follower's term.
#[test]
fn stale_term_snapshot_is_rejected() {
    let mut net = follower_with_log(&[1, 2], 3);
    let actions = net.inject(chunk(2, 5, 2, b"x", true));
    let s = sends(&actions);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].term, 3);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::SnapshotChunk { .. } | Action::RestoreSnapshot { .. })));
}

/// Rule 6: a snapshot covering a prefix of the log keeps the suffix.
#[test]
fn snapshot_covering_a_prefix_keeps_the_suffix() {
    let mut net = follower_with_log(&[1, 1, 2, 2, 3], 3);
    let actions = net.inject(chunk(3, 3, 2, b"state", true));
    assert!(actions.iter().any(|a| matches!(a, Action::RestoreSnapshot { meta } if meta.index == 3)));
    let node = net.node(2);
    assert_eq!((node.first_index(), node.last_index()), (4, 5));
    assert_eq!(node.term_at(5), Some(3));
    assert_eq!(node.commit_index(), 3);
    let reply = sends(&actions).pop().unwrap().clone();
    assert_eq!(reply.body, Body::AppendEntriesResponse(AppendResult::Success { match_index: 3 }));
}

/// Rule 7: a snapshot that conflicts with the log discards all of it.
#[test]
fn conflicting_snapshot_discards_the_log() {
    let mut net = follower_with_log(&[1, 1, 2, 2, 2], 3);
    net.inject(chunk(3, 4, 3, b"state", true));
    let node = net.node(2);
    assert_eq!((node.first_index(), node.last_index()), (5, 4), "empty log after the snapshot");
    assert_eq!(node.term_at(4), Some(3));
}

/// A snapshot older than the commit index is ignored; the follower says
/// how far it is.
#[test]
fn stale_snapshot_is_ignored() {
    let mut net = follower_with_log(&[1, 1, 1], 1);
    let to_commit = append(1, 2, 1, (3, 1), vec![], 3);
    net.inject(to_commit);
    assert_eq!(net.node(2).commit_index(), 3);
    let actions = net.inject(chunk(1, 2, 1, b"old", true));
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::SnapshotChunk { .. } | Action::RestoreSnapshot { .. })));
    let reply = sends(&actions).pop().unwrap().clone();
    assert_eq!(reply.body, Body::AppendEntriesResponse(AppendResult::Success { match_index: 3 }));
    assert_eq!(net.node(2).last_index(), 3);
}

/// A snapshot whose bytes do not match its checksum is not installed; the
/// follower asks for it again from offset 0.
#[test]
fn corrupt_snapshot_restarts_from_zero() {
    let mut net = follower_with_log(&[1], 1);
    let mut bad = chunk(1, 4, 1, b"state", true);
    if let Body::InstallSnapshot { checksum, .. } = &mut bad.body {
        *checksum ^= 1;
    }
    let actions = net.inject(bad);
    assert!(!actions.iter().any(|a| matches!(a, Action::RestoreSnapshot { .. })));
    let reply = sends(&actions).pop().unwrap().clone();
    assert_eq!(reply.body, Body::InstallSnapshotResponse { index: 4, next_offset: 0 });
    assert_eq!(net.node(2).last_index(), 1);
}

/// Chunks reset the election timer: a follower receiving a long snapshot
/// does not start an election.
#[test]
fn chunks_count_as_contact_with_the_leader() {
    let mut net = follower_with_log(&[1], 1);
    let max = net.configs[&2].election_ticks_max;
    let data = vec![7u8; 1000];
    for (i, piece) in data.chunks(10).enumerate() {
        for _ in 0..max / 2 {
            net.tick(2);
        }
        let done = (i + 1) * 10 == data.len();
        let body = Body::InstallSnapshot {
            meta: Box::new(SnapshotMeta { index: 9, term: 1, membership: membership(3) }),
            offset: (i * 10) as u64,
            data: Bytes::copy_from_slice(piece),
            done,
            checksum: crc32c(0, &data),
        };
        net.inject(msg(1, 2, 1, body));
        assert_eq!(net.node(2).role(), Role::Follower, "no election during the transfer");
    }
    assert_eq!(net.node(2).commit_index(), 9);
}

/// A node restarts from its snapshot plus the log tail after it.
#[test]
fn restart_from_snapshot_and_tail() {
    let meta = SnapshotMeta { index: 10, term: 2, membership: membership(3) };
    let entries = (11..=13).map(|i| entry(i, 3)).collect();
    let restored =
        Restored { hard_state: HardState { term: 3, vote: None }, snapshot: meta.clone(), entries };
    let mut config = Config::new(1);
    small_snapshots(&mut config);
    let node = raft_core::Node::new(config, restored).unwrap();
    assert_eq!((node.commit_index(), node.applied_index()), (10, 10));
    assert_eq!((node.first_index(), node.last_index()), (11, 13));
    assert_eq!(node.term_at(10), Some(2));
    assert_eq!(node.snapshot_meta(), &meta);
}
