//! The in-memory log: entries after the last snapshot, plus the snapshot's
//! index and term so that term lookups work at the boundary.

use std::collections::VecDeque;

use crate::message::{Entry, Index, Term};

#[derive(Clone, Debug)]
pub(crate) struct Log {
    /// Index of the last entry covered by the snapshot (0 if none).
    snapshot_index: Index,
    /// Term of that entry (0 if none).
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
}

impl Log {
    pub(crate) fn new(snapshot_index: Index, snapshot_term: Term, entries: Vec<Entry>) -> Self {
        Log { snapshot_index, snapshot_term, entries: entries.into() }
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The first index still held in memory.
    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term at `index`, if known: the snapshot's boundary counts, compacted
    /// indexes below it and indexes beyond the end do not.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries `from ..= to`, both within the log.
    pub(crate) fn range(&self, from: Index, to: Index) -> impl Iterator<Item = &Entry> {
        debug_assert!(from > self.snapshot_index && to <= self.last_index());
        let start = (from - self.snapshot_index - 1) as usize;
        let end = (to - self.snapshot_index) as usize;
        self.entries.range(start..end.max(start))
    }

    /// Drops every entry up to `index` (which must be in the log or be the
    /// boundary), keeping the suffix after it.
    pub(crate) fn compact_to(&mut self, index: Index) {
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term_at(index).expect("compacting to an index in the log");
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Discards the whole log: it continues after `index` of `term`.
    pub(crate) fn reset(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Test-only (broken rules): claims the boundary entry had `term`.
    #[cfg_attr(not(feature = "broken-rules"), allow(dead_code))]
    pub(crate) fn reset_boundary_term(&mut self, term: Term) {
        self.snapshot_term = term;
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes every entry at `index` and after.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.snapshot_index);
        self.entries.truncate((index - self.snapshot_index - 1) as usize);
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push_back(entry);
    }

    /// Paper section 5.4.1: a log is at least as up to date as ours if its
    /// last term is higher, or equal with an index at least as high.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of `term` that contains `index`, scanning
    /// back no further than `floor`.
    pub(crate) fn first_index_of_term_run(&self, index: Index, term: Term, floor: Index) -> Index {
        let mut i = index;
        while i > floor.max(self.first_index()) && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index holding an entry of `term`, if any (terms ascend along
    /// the log, so a binary search finds it).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let after = self.entries.partition_point(|e| e.term <= term);
        if after == 0 {
            return (self.snapshot_term == term && self.snapshot_index > 0).then_some(self.snapshot_index);
        }
        let e = &self.entries[after - 1];
        (e.term == term).then_some(e.index)
    }

    /// Checks the structure: contiguous indexes, non-decreasing terms.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut prev = (self.snapshot_index, self.snapshot_term);
        for e in &self.entries {
            if e.index != prev.0 + 1 {
                return Err(format!("entry index {} follows {}", e.index, prev.0));
            }
            if e.term < prev.1 {
                return Err(format!(
                    "entry {} has term {} below its predecessor's {}",
                    e.index, e.term, prev.1
                ));
            }
            prev = (e.index, e.term);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Payload;

    fn log_of(terms: &[Term]) -> Log {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry { term, index: i as Index + 1, payload: Payload::Noop })
            .collect();
        Log::new(0, 0, entries)
    }

    #[test]
    fn term_lookups() {
        let log = log_of(&[1, 1, 4, 4, 5]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(4));
        assert_eq!(log.term_at(6), None);
        assert_eq!(log.last_index_of_term(4), Some(4));
        assert_eq!(log.last_index_of_term(2), None);
        assert_eq!(log.last_index_of_term(9), None);
        assert_eq!(log.first_index_of_term_run(4, 4, 0), 3);
        assert_eq!(log.first_index_of_term_run(2, 1, 0), 1);
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_of(&[1, 1, 2, 3, 3]);
        log.compact_to(3);
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!(log.term_at(3), Some(2), "the boundary's term survives");
        assert_eq!(log.term_at(2), None, "compacted");
        assert!(log.entry(3).is_none());
        assert_eq!(log.range(4, 5).count(), 2);
        assert_eq!(log.last_index_of_term(2), Some(3));
        assert_eq!(log.first_index_of_term_run(5, 3, 0), 4, "runs stop at the boundary");
        log.reset(9, 4);
        assert_eq!((log.first_index(), log.last_index(), log.last_term()), (10, 9, 4));
    }

    #[test]
    fn truncate_and_push() {
        let mut log = log_of(&[1, 1, 2]);
        log.truncate_from(2);
        assert_eq!(log.last_index(), 1);
        log.push(Entry { term: 3, index: 2, payload: Payload::Noop });
        assert_eq!(log.last_term(), 3);
        assert!(log.check().is_ok());
    }
}
