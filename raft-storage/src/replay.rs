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
                let mut expected = None;
                for e in entries {
                    if let Some(expected) = expected {
                        if e.index != expected {
                            return Err(format!(
                                "entry {} follows entry {} in one record",
                                e.index,
                                expected - 1
                            ));
                        }
                    }
                    expected = Some(e.index + 1);
                    if e.index <= self.base {
                        if e.index == self.base {
                            self.term_at_base = Some(e.term);
                        }
                        continue;
                    }
                    if e.index != self.last() + 1 {
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
