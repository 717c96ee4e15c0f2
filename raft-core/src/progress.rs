//! What the leader knows of each follower's log: the match and next indexes
//! (paper figure 2) and the flow-control state that decides when to send.

use std::collections::VecDeque;

use crate::message::{Index, NodeId};

/// The leader's progress per follower, in id order: a sorted vector, which
/// for a handful of followers is several times cheaper to look up and walk
/// than a `BTreeMap` on the replication path, in the same deterministic
/// order.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerMap(Vec<(NodeId, Progress)>);

impl PeerMap {
    fn position(&self, id: NodeId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |(peer, _)| *peer)
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Progress> {
        self.position(*id).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Progress> {
        self.position(*id).ok().map(|i| &mut self.0[i].1)
    }

    pub(crate) fn insert(&mut self, id: NodeId, progress: Progress) {
        match self.position(id) {
            Ok(i) => self.0[i].1 = progress,
            Err(i) => self.0.insert(i, (id, progress)),
        }
    }

    /// The progress of `id`, made by `new` if there is none.
    pub(crate) fn get_or_insert_with(&mut self, id: NodeId, new: impl FnOnce() -> Progress) -> &mut Progress {
        let i = match self.position(id) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (id, new()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&NodeId, &mut Progress) -> bool) {
        self.0.retain_mut(|(id, p)| keep(id, p));
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.0.iter().map(|(id, _)| id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Progress)> + '_ {
        self.0.iter().map(|(id, p)| (id, p))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Progress)> + '_ {
        self.0.iter_mut().map(|(id, p)| (&*id, p))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> + '_ {
        self.0.iter_mut().map(|(_, p)| p)
    }

    /// The first follower with an id above `after` (the first one for `None`).
    pub(crate) fn next_after(&self, after: Option<NodeId>) -> Option<NodeId> {
        let start = match after {
            None => 0,
            Some(id) => match self.position(id) {
                Ok(i) => i + 1,
                Err(i) => i,
            },
        };
        self.0.get(start).map(|(id, _)| *id)
    }
}

/// How the leader is currently sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match is unknown: one AppendEntries at a time, each
    /// waiting for its answer (or a heartbeat interval) before the next.
    Probe,
    /// The follower is known to match: entries are pipelined, up to
    /// `inflight_messages_max` messages ahead of its acknowledgements.
    Replicate,
    /// The follower needs entries the leader has compacted: a snapshot is
    /// being streamed, one chunk at a time; replication waits for it.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// Sending mode.
    pub state: ProgressState,
    /// In probe state: a probe is outstanding, wait before sending another.
    pub(crate) probe_sent: bool,
    /// Last index and entry bytes of each AppendEntries in flight
    /// (replicate state).
    pub(crate) inflight: VecDeque<(Index, usize)>,
    /// Sum of the bytes in `inflight`.
    pub(crate) inflight_bytes: usize,
    /// The highest read-confirmation round this follower acknowledged.
    pub(crate) read_round: u64,
    /// Whether the follower answered since the last CheckQuorum.
    pub(crate) recent_active: bool,
    /// Ticks since `match_index` last advanced while entries were in flight.
    pub(crate) stalled_ticks: u32,
    /// In snapshot state: the snapshot being sent and the next byte offset.
    pub(crate) snapshot: Option<(Index, u64)>,
    /// The highest commit index this follower has been told about (in a
    /// message whose entries prove it may commit that far).
    pub(crate) commit_conveyed: Index,
}

impl Progress {
    pub(crate) fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            read_round: 0,
            recent_active: false,
            stalled_ticks: 0,
            commit_conveyed: 0,
            snapshot: None,
        }
    }

    /// Messages currently in flight.
    pub fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }

    /// Whether another AppendEntries may be sent now.
    pub(crate) fn can_send(&self, inflight_max: usize, inflight_bytes_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < inflight_max && self.inflight_bytes < inflight_bytes_max
            }
            ProgressState::Snapshot => false,
        }
    }

    /// Records that entries through `last`, of `bytes` in all, were sent.
    pub(crate) fn sent(&mut self, last: Index, bytes: usize) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
        }
    }

    /// Bytes of entries in flight.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// The follower acknowledged `index`. Returns whether match advanced.
    pub(crate) fn acked(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.stalled_ticks = 0;
        }
        self.next_index = self.next_index.max(index + 1);
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Snapshot if self.snapshot.is_none_or(|(index, _)| index <= self.match_index) => {
                self.become_replicate()
            }
            _ => {}
        }
        advanced
    }

    /// Starts streaming the snapshot at `index` from offset 0.
    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot;
        self.snapshot = Some((index, 0));
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }

    pub(crate) fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.snapshot = None;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time_then_pipelines() {
        let mut p = Progress::new(5);
        assert!(p.can_send(4, usize::MAX));
        p.sent(7, 10);
        assert!(!p.can_send(4, usize::MAX), "a probe waits for its answer");
        assert_eq!(p.next_index, 5, "probing does not advance next optimistically");
        assert!(p.acked(7));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, 8);
        for last in [9, 11, 13, 15] {
            assert!(p.can_send(4, usize::MAX));
            p.sent(last, 10);
        }
        assert!(!p.can_send(4, usize::MAX), "window of 4 is full");
        p.acked(11);
        assert_eq!(p.inflight_messages(), 2);
        assert!(p.can_send(4, usize::MAX));
        assert_eq!(p.next_index, 16);
        assert_eq!(p.inflight_bytes(), 20);
        assert!(!p.can_send(8, 20), "byte window of 20 is full");
    }

    #[test]
    fn stale_ack_does_not_regress() {
        let mut p = Progress::new(1);
        p.acked(10);
        assert!(!p.acked(4));
        assert_eq!(p.match_index, 10);
        assert_eq!(p.next_index, 11);
    }
}
