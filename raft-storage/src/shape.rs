//! The shape of the stored log (snapshot point, last index, term runs),
//! enough to validate writes and to place a snapshot without keeping the
//! entries themselves in memory. Shared by the file and memory stores so
//! both reject exactly the same writes.

use raft_core::{Entry, Index, Persist, SnapshotMeta, Term};

use crate::error::StorageError;

#[derive(Clone, Debug, Default)]
pub(crate) struct LogShape {
    /// Index covered by the snapshot (0: none).
    pub(crate) base: Index,
    pub(crate) base_term: Term,
    /// Last index stored (== base when no entries follow the snapshot).
    pub(crate) last: Index,
    /// (first index, term) of each run of equal terms in `base+1 ..= last`.
    runs: Vec<(Index, Term)>,
}

impl LogShape {
    pub(crate) fn new(snapshot: &SnapshotMeta, entries: &[Entry]) -> Self {
        let mut shape = LogShape {
            base: snapshot.index,
            base_term: snapshot.term,
            last: snapshot.index,
            runs: Vec::new(),
        };
        for e in entries {
            shape.push(e);
        }
        shape
    }

    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        if index < self.base || index > self.last {
            return None;
        }
        let run = self.runs.partition_point(|&(first, _)| first <= index);
        Some(self.runs[run - 1].1)
    }

    /// Checks a whole batch against the rules of `Persist` before any of it
    /// is written: truncations stay above the snapshot, entries continue the
    /// log contiguously.
    pub(crate) fn check(&self, batch: &[Persist]) -> Result<(), StorageError> {
        let mut last = self.last;
        for p in batch {
            if let Some(from) = p.truncate_from {
                if from <= self.base {
                    return Err(StorageError::TruncateSnapshotted { from, snapshot_index: self.base });
                }
                last = last.min(from - 1);
            }
            for e in &p.entries {
                if e.index != last + 1 {
                    return Err(StorageError::NotContiguous { expected_after: last, got: e.index });
                }
                last = e.index;
            }
        }
        Ok(())
    }

    /// Applies a checked persist.
    pub(crate) fn apply(&mut self, p: &Persist) {
        if let Some(from) = p.truncate_from {
            self.truncate(from);
        }
        for e in &p.entries {
            self.push(e);
        }
    }

    fn truncate(&mut self, from: Index) {
        self.last = self.last.min(from - 1);
        let keep = self.runs.partition_point(|&(first, _)| first <= self.last);
        self.runs.truncate(keep);
    }

    fn push(&mut self, e: &Entry) {
        debug_assert_eq!(e.index, self.last + 1);
        if self.runs.last().is_none_or(|&(_, term)| term != e.term) {
            self.runs.push((e.index, e.term));
        }
        self.last = e.index;
    }

    /// Whether a snapshot at `meta` continues the log (the log holds its last
    /// entry with the same term) rather than replacing it.
    pub(crate) fn snapshot_matches(&self, meta: &SnapshotMeta) -> bool {
        self.term_at(meta.index) == Some(meta.term)
    }

    /// Moves the snapshot point. Paper section 7: entries after a matching
    /// snapshot are kept, otherwise the whole log is discarded.
    pub(crate) fn compact(&mut self, meta: &SnapshotMeta) {
        if self.snapshot_matches(meta) && meta.index >= self.base {
            let first_kept = self.runs.partition_point(|&(first, _)| first <= meta.index + 1);
            // Keep the run that covers base + 1 (if any) and everything after.
            let drop = first_kept.saturating_sub(1);
            self.runs.drain(..drop);
            if let Some(run) = self.runs.first_mut() {
                run.0 = run.0.max(meta.index + 1);
            }
            if self.last == meta.index {
                self.runs.clear();
            }
        } else {
            self.runs.clear();
            self.last = meta.index;
        }
        self.base = meta.index;
        self.base_term = meta.term;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Payload;

    fn entries(range: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
        range.map(|index| Entry { term, index, payload: Payload::Noop }).collect()
    }

    #[test]
    fn terms_survive_truncate_and_compact() {
        let mut shape = LogShape::new(&SnapshotMeta::default(), &entries(1..=5, 1));
        shape.apply(&Persist { truncate_from: Some(4), entries: entries(4..=8, 2), hard_state: None });
        assert_eq!(
            (shape.term_at(3), shape.term_at(4), shape.term_at(8), shape.term_at(9)),
            (Some(1), Some(2), Some(2), None)
        );
        shape.compact(&SnapshotMeta { index: 5, term: 2, ..Default::default() });
        assert_eq!((shape.base, shape.last, shape.term_at(6), shape.term_at(4)), (5, 8, Some(2), None));
        shape.compact(&SnapshotMeta { index: 20, term: 3, ..Default::default() });
        assert_eq!((shape.base, shape.last, shape.term_at(20)), (20, 20, Some(3)));
    }

    #[test]
    fn rejects_gaps_and_truncating_the_snapshot() {
        let shape =
            LogShape::new(&SnapshotMeta { index: 3, term: 1, ..Default::default() }, &entries(4..=5, 1));
        let gap = Persist { entries: entries(7..=7, 1), ..Default::default() };
        assert!(matches!(
            shape.check(&[gap]),
            Err(StorageError::NotContiguous { expected_after: 5, got: 7 })
        ));
        let below = Persist { truncate_from: Some(3), ..Default::default() };
        assert!(matches!(shape.check(&[below]), Err(StorageError::TruncateSnapshotted { .. })));
    }
}
