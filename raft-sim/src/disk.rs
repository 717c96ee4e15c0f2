//! A simulated disk that holds exactly what the persistence contract made
//! durable. A crash loses everything else: the node's memory and any write
//! whose sync had not completed.

use bytes::Bytes;
use raft_core::{Entry, HardState, Index, Membership, Persist, Restored, SnapshotMeta, Term};

/// The durable state of one node.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
    /// The state machine's bytes at `snapshot.index` (empty: the initial
    /// state).
    snapshot_data: Bytes,
    /// Completed syncs, for statistics.
    pub syncs: u64,
}

impl Disk {
    /// A disk holding `restored`, as if it had been written before the run.
    pub fn from_restored(restored: &Restored) -> Self {
        Disk {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot.clone(),
            entries: restored.entries.clone(),
            snapshot_data: Bytes::new(),
            syncs: 0,
        }
    }

    /// A disk holding `restored` whose snapshot's state machine bytes are `data`.
    pub fn with_snapshot_data(restored: &Restored, data: Bytes) -> Self {
        Disk { snapshot_data: data, ..Disk::from_restored(restored) }
    }

    /// Saves a snapshot durably (paper figure 13, rules 6-7): entries after
    /// it are kept if the log holds `meta.index` with `meta.term`, otherwise
    /// the whole log goes. An older snapshot than the one held is ignored.
    pub fn save_snapshot(&mut self, meta: &SnapshotMeta, data: Bytes) {
        if meta.index <= self.snapshot.index && self.snapshot.index > 0 {
            return;
        }
        if self.term_at(meta.index) == Some(meta.term) {
            let drop = (meta.index - self.snapshot.index) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.snapshot = meta.clone();
        self.snapshot_data = data;
        self.syncs += 1;
    }

    /// The snapshot's metadata.
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The snapshot's state machine bytes.
    pub fn snapshot_data(&self) -> &Bytes {
        &self.snapshot_data
    }

    /// Makes `p` durable, in field order: truncate, append, hard state.
    pub fn apply(&mut self, p: Persist) {
        if let Some(from) = p.truncate_from {
            let keep = from.saturating_sub(self.snapshot.index + 1) as usize;
            self.entries.truncate(keep);
        }
        debug_assert!(p.entries.first().is_none_or(|e| e.index == self.last_index() + 1));
        self.entries.extend(p.entries);
        if let Some(hs) = p.hard_state {
            self.hard_state = hs;
        }
        self.syncs += 1;
    }

    /// What a restarting node gets back.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }

    /// The durable term and vote.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The configuration the disk starts from.
    pub fn membership(&self) -> &Membership {
        &self.snapshot.membership
    }

    /// Last durable index.
    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    /// Term of the durable entry at `index`.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize).map(|e| e.term)
    }

    /// The durable entries after the snapshot.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Payload;

    fn e(index: Index, term: Term) -> Entry {
        Entry { index, term, payload: Payload::Noop }
    }

    #[test]
    fn truncate_append_then_hard_state() {
        let mut d = Disk::default();
        d.apply(Persist { truncate_from: None, entries: vec![e(1, 1), e(2, 1)], hard_state: None });
        d.apply(Persist {
            truncate_from: Some(2),
            entries: vec![e(2, 2)],
            hard_state: Some(HardState { term: 2, vote: Some(3) }),
        });
        assert_eq!(d.last_index(), 2);
        assert_eq!(d.term_at(2), Some(2));
        assert_eq!(d.restored().hard_state.vote, Some(3));
    }
}
