//! Log compaction and InstallSnapshot (paper section 7).
//!
//! The application owns snapshot contents: the core asks for one
//! ([`Action::SnapshotNeeded`]) when enough was applied, the driver saves it
//! and reports [`Input::SnapshotTaken`](super::Input::SnapshotTaken), and
//! the core compacts its log, keeping a tail for slightly slow followers.
//!
//! A follower whose next index was compacted away gets the snapshot, one
//! chunk at a time: the leader's core names the chunk
//! ([`Action::SendSnapshotChunk`]), its driver reads the bytes, the
//! follower's core checks order and checksum and hands each chunk to its
//! driver ([`Action::SnapshotChunk`]), and answers with the next offset it
//! wants, so a lost chunk resumes where it stopped. Every chunk counts as
//! contact with the leader. When the last chunk verifies, the follower
//! applies the receiver rules and restores ([`Action::RestoreSnapshot`]).

use bytes::Bytes;

use super::{Action, Node, Role};
use crate::crc::crc32c;
use crate::membership::Membership;
use crate::message::{AppendResult, Body, Entry, Index, NodeId, Payload, SnapshotMeta, Term};
use crate::progress::ProgressState;

/// A snapshot arriving from the leader.
#[derive(Clone, Debug)]
pub(super) struct Receiving {
    meta: SnapshotMeta,
    term: Term,
    next_offset: u64,
    crc: u32,
}

impl Node {
    /// The latest snapshot taken or installed.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Entries held in memory (bounded by snapshots and compaction).
    pub fn log_entries(&self) -> usize {
        self.log.len()
    }

    /// The first index still in the in-memory log.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The configuration in force at `index` (at least the log boundary).
    fn membership_at(&self, index: Index) -> Membership {
        if index >= self.membership_index {
            return self.membership.clone(); // the latest configuration covers it
        }
        let mut i = index;
        while i > self.log.snapshot_index() {
            if let Some(Entry { payload: Payload::Membership(m), .. }) = self.log.entry(i) {
                return (**m).clone();
            }
            i -= 1;
        }
        self.boundary_membership.clone()
    }

    /// After applying: ask for a snapshot once enough was applied since the
    /// last one.
    pub(super) fn maybe_request_snapshot(&mut self, applied_bytes: u64) {
        self.applied_bytes_since_snapshot += applied_bytes;
        let entries = self.applied - self.snapshot.index;
        let due = entries >= self.config.snapshot_entries_max
            || self.applied_bytes_since_snapshot >= self.config.snapshot_bytes_max;
        if !due || self.snapshot_requested || self.applied <= self.snapshot.index {
            return;
        }
        let index = self.applied;
        let Some(term) = self.log.term_at(index) else { return };
        self.snapshot_requested = true;
        let meta = SnapshotMeta { index, term, membership: self.membership_at(index) };
        self.emit(Action::SnapshotNeeded { meta: Box::new(meta) });
    }

    /// The driver saved a snapshot at `index`: compact the log.
    pub(super) fn snapshot_taken(&mut self, index: Index) {
        self.snapshot_requested = false;
        if index <= self.snapshot.index || index > self.applied {
            return; // stale or impossible report: nothing to compact
        }
        let Some(term) = self.log.term_at(index) else { return };
        self.snapshot = SnapshotMeta { index, term, membership: self.membership_at(index) };
        self.applied_bytes_since_snapshot = 0;
        let boundary = index.saturating_sub(self.config.log_tail_entries).max(self.log.snapshot_index());
        self.compact_to(boundary);
        // Transfers of an older snapshot restart from the new one: a driver
        // need only keep its latest snapshot.
        let stale: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| p.state == ProgressState::Snapshot && p.snapshot.is_some_and(|(i, _)| i < index))
            .map(|(&id, _)| id)
            .collect();
        for peer in stale {
            self.start_snapshot_transfer(peer);
        }
    }

    fn compact_to(&mut self, boundary: Index) {
        if boundary <= self.log.snapshot_index() {
            return;
        }
        self.boundary_membership = self.membership_at(boundary);
        self.log.compact_to(boundary);
    }

    /// The leader cannot send `peer` the entries it needs: send the snapshot.
    pub(super) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let index = self.snapshot.index;
        let Some(p) = self.progress.get_mut(&peer) else { return };
        p.become_snapshot(index);
        self.send_snapshot_chunk(peer);
    }

    /// Asks the driver for the chunk `peer` wants next.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(p) = self.progress.get_mut(&peer) else { return };
        let Some((index, offset)) = p.snapshot else { return };
        p.stalled_ticks = 0;
        if index != self.snapshot.index {
            return;
        }
        let (term, meta) = (self.term, self.snapshot.clone());
        self.emit(Action::SendSnapshotChunk { to: peer, term, meta: Box::new(meta), offset });
    }

    pub(super) fn on_install_snapshot_response(&mut self, from: NodeId, index: Index, next_offset: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else { return };
        match p.snapshot {
            Some((sending, _)) if sending == index && p.state == ProgressState::Snapshot => {
                p.snapshot = Some((index, next_offset));
                self.send_snapshot_chunk(from);
            }
            _ => {}
        }
    }

    /// Paper figure 13, InstallSnapshot receiver rules.
    pub(super) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        checksum: u32,
    ) {
        // Rule 1 (stale term) was handled with the other stale messages.
        if self.role == Role::Leader {
            return;
        }
        self.heard_from_leader(from);
        if meta.index <= self.commit {
            // An older snapshot than what we know committed: ignore it and
            // tell the leader how far we are (committed entries match it).
            self.receiving = None;
            let match_index = self.commit;
            return self.send(from, Body::AppendEntriesResponse(AppendResult::Success { match_index }));
        }
        // Rules 2-5: chunks in order, offset 0 starts a new snapshot.
        let same = self.receiving.as_ref().is_some_and(|r| r.meta == meta && r.term == self.term);
        if offset == 0 && !same {
            self.receiving = Some(Receiving { meta: meta.clone(), term: self.term, next_offset: 0, crc: 0 });
        }
        let expected = match &self.receiving {
            Some(r) if r.meta == meta && r.term == self.term => r.next_offset,
            _ => 0,
        };
        if offset != expected {
            let index = meta.index;
            return self.send(from, Body::InstallSnapshotResponse { index, next_offset: expected });
        }
        let r = self.receiving.as_mut().expect("set above");
        let crc = crc32c(r.crc, &data);
        if done && crc != checksum {
            // Corrupt: start over from the first byte.
            self.receiving = None;
            let index = meta.index;
            return self.send(from, Body::InstallSnapshotResponse { index, next_offset: 0 });
        }
        r.crc = crc;
        r.next_offset = offset + data.len() as u64;
        let next_offset = r.next_offset;
        self.emit(Action::SnapshotChunk { meta: Box::new(meta.clone()), offset, data, done });
        if !done {
            let index = meta.index;
            return self.send(from, Body::InstallSnapshotResponse { index, next_offset });
        }
        self.receiving = None;
        self.install_snapshot(meta);
        let match_index = self.snapshot.index;
        self.send(from, Body::AppendEntriesResponse(AppendResult::Success { match_index }));
    }

    /// Rules 6-8: keep the log after the snapshot if it matches, else drop
    /// it all; restore the state machine from the snapshot.
    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        #[cfg(feature = "broken-rules")]
        let keep_conflicting = crate::broken::keep_conflicting_suffix();
        #[cfg(not(feature = "broken-rules"))]
        let keep_conflicting = false;
        if self.log.term_at(meta.index) == Some(meta.term) {
            self.log.compact_to(meta.index);
        } else if keep_conflicting && meta.index < self.log.last_index() {
            // Broken on purpose: pretend the suffix still follows the snapshot.
            self.log.compact_to(meta.index);
            self.log.reset_boundary_term(meta.term);
        } else {
            self.log.reset(meta.index, meta.term);
        }
        self.boundary_membership = meta.membership.clone();
        self.snapshot = meta.clone();
        self.snapshot_requested = false;
        self.applied_bytes_since_snapshot = 0;
        self.commit = self.commit.max(meta.index);
        self.applied = meta.index;
        // Proposals of ours the snapshot covers can no longer be told apart
        // from others; their clients will time out.
        while self.proposed.front().is_some_and(|p| p.last <= meta.index) {
            self.proposed.pop_front();
        }
        let before = (self.membership.clone(), self.membership_index);
        self.reload_membership();
        if (self.membership.clone(), self.membership_index) != before {
            self.membership_changed = true;
        }
        self.emit(Action::RestoreSnapshot { meta: Box::new(meta) });
        self.apply_committed();
    }
}
