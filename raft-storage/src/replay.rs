//! Rebuilding the log from its records, in order, on top of the newest
//! snapshot.
//!
//! Replay starts from the snapshot (`base`). Entries at or below `base` are
//! covered by it and skipped (their segments may already be partly
//! deleted, so their contiguity cannot be checked), except that the term of
//! the entry at `base` is remembered. Entries above `base` must continue the
//! log exactly. A `Snapshot` record for `base` carries the decision taken
//! when it was saved (paper section 7: keep the log if it holds the
//! snapshot's last entry with the same term, otherwise discard it), because
//! the segment holding that entry may since have been deleted. If the
//! process died after the snapshot file was renamed into place but before
//! that record was written, no segment has been deleted for it yet and the
//! rule is applied at the end of replay.

use raft_core::{Entry, HardState, Index, Term};

use crate::record::Record;

#[derive(Debug)]
pub(crate) struct Replay {
    base: Index,
    base_term: Term,
    /// Term of the entry at `base` as the log currently has it, if known.
    term_at_base: Option<Term>,
    /// Whether a `Snapshot` record for `base` has been replayed.
    marked: bool,
    pub(crate) hard_state: HardState,
    pub(crate) entries: Vec<Entry>,
}

impl Replay {
    pub(crate) fn new(base: Index, base_term: Term) -> Self {
        Replay {
            base,
            base_term,
            term_at_base: (base == 0).then_some(0),
            marked: base == 0,
            hard_state: HardState::default(),
            entries: Vec::new(),
        }
    }

    fn last(&self) -> Index {
        self.base + self.entries.len() as Index
    }

    /// Applies one record; the error is a reason, the caller adds file and
    /// offset. Returns the highest entry index the record appends, if any.
    pub(crate) fn apply(&mut self, record: Record) -> Result<Option<Index>, String> {
        match record {
            Record::Append(entries) => {
                let max = entries.last().map(|e| e.index);
                let mut previous: Option<Index> = None;
                for e in entries {
                    // Checked: a damaged or hostile record may carry index u64::MAX.
                    if let Some(previous) = previous {
                        if previous.checked_add(1) != Some(e.index) {
                            return Err(format!("entry {} follows entry {previous} in one record", e.index));
                        }
                    }
                    previous = Some(e.index);
                    if e.index <= self.base {
                        if e.index == self.base {
                            self.term_at_base = Some(e.term);
                        }
                        continue;
                    }
                    if self.last().checked_add(1) != Some(e.index) {
                        return Err(format!("entry {} does not follow last index {}", e.index, self.last()));
                    }
                    self.entries.push(e);
                }
                Ok(max)
            }
            Record::Truncate(from) => {
                if from == 0 {
                    return Err("truncation from index 0".into());
                }
                if from <= self.base {
                    if self.marked {
                        return Err(format!(
                            "truncation from {from} reaches into the snapshot at {}",
                            self.base
                        ));
                    }
                    // Written before the snapshot was taken.
                    self.entries.clear();
                    self.term_at_base = None;
                } else {
                    let keep = (from - 1 - self.base).min(self.entries.len() as Index);
                    self.entries.truncate(keep as usize);
                }
                Ok(None)
            }
            Record::HardState(hs) => {
                self.hard_state = hs;
                Ok(None)
            }
            Record::Snapshot { index, term, discard_log } => {
                if index > self.base {
                    return Err(format!("snapshot record for index {index} beyond the newest snapshot file"));
                }
                if index == self.base {
                    if term != self.base_term {
                        return Err(format!(
                            "snapshot record says term {term} at {index}, the snapshot file says {}",
                            self.base_term
                        ));
                    }
                    if discard_log {
                        self.entries.clear();
                    }
                    self.term_at_base = Some(term);
                    self.marked = true;
                }
                Ok(None)
            }
        }
    }

    /// Ends replay: the hard state, the log entries after the snapshot, and
    /// for a snapshot without its record, whether the log was discarded.
    pub(crate) fn finish(mut self) -> (HardState, Vec<Entry>, bool) {
        let discard = !self.marked && self.term_at_base != Some(self.base_term);
        if discard {
            self.entries.clear();
        }
        (self.hard_state, self.entries, discard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Payload;

    fn noop(index: Index) -> Entry {
        Entry { term: 1, index, payload: Payload::Noop }
    }

    // Found by fuzz target wal_records: `attempt to add with overflow` on an
    // append record holding entry u64::MAX followed by another entry.
    #[test]
    fn entry_index_max_is_an_error_not_an_overflow() {
        let mut replay = Replay::new(Index::MAX, 1);
        let err = replay.apply(Record::Append(vec![noop(Index::MAX), noop(0)])).unwrap_err();
        assert!(err.contains("follows entry"), "{err}");
        let mut replay = Replay::new(Index::MAX - 1, 1);
        assert_eq!(replay.apply(Record::Append(vec![noop(Index::MAX)])), Ok(Some(Index::MAX)));
        let err = replay.apply(Record::Append(vec![noop(Index::MAX)])).unwrap_err();
        assert!(err.contains("does not follow"), "{err}");
    }
}
