//! Property test: random appends, conflicting truncations, hard states,
//! snapshots (compactions and installs), batched several to a call, with
//! reopens at random points, some after cutting the last batch mid-way.
//! The recovered state always equals the model's durable state.

mod common;

use std::fs;

use common::*;
use proptest::prelude::*;
use raft_core::{HardState, Persist, Restored};
use raft_storage::{MemStorage, Options, Storage};

#[derive(Clone, Debug)]
enum Step {
    /// Append `n` entries in the current term.
    Append(u64),
    /// Truncate `back` entries (never into the snapshot) and append `n` in a new term.
    Conflict { back: u64, n: u64 },
    /// A new term and vote.
    Vote(u64),
}

#[derive(Clone, Debug)]
enum Op {
    /// One `write_batch` call carrying these persists.
    Batch(Vec<Vec<Step>>),
    /// Compact at a fraction (per mille) of the way from snapshot to last.
    Compact(u16),
    /// Install a leader's snapshot `ahead` entries past the last index, or
    /// at a conflicting term inside the log when `ahead` is 0.
    Install(u64),
    /// Close and reopen; with `Some(cut)`, first cut the last batch at
    /// `cut` per mille of its bytes.
    Reopen(Option<u16>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1..6u64).prop_map(Step::Append),
        1 => (0..5u64, 0..4u64).prop_map(|(back, n)| Step::Conflict { back, n }),
        1 => (0..3u64).prop_map(Step::Vote),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(prop::collection::vec(step(), 1..4), 1..4).prop_map(Op::Batch),
        1 => (0..1000u16).prop_map(Op::Compact),
        1 => (0..4u64).prop_map(Op::Install),
        2 => prop::option::of(0..1000u16).prop_map(Op::Reopen),
    ]
}

/// The model: what should be durable, as raft-core would restore it.
#[derive(Clone, Debug, Default)]
struct Model {
    restored: Restored,
    data: Option<Vec<u8>>,
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.restored.snapshot.index + self.restored.entries.len() as u64
    }

    /// Turns steps into a persist against the current model, and returns
    /// the model after each of the persist's records (truncate, append, hard
    /// state), since a crash can land between any two.
    fn persist(&mut self, steps: &[Step], states: &mut Vec<Model>) -> Persist {
        let mut p = Persist::default();
        for s in steps {
            match *s {
                Step::Append(n) => {
                    let first = match (p.entries.last(), p.truncate_from) {
                        (Some(e), _) => e.index + 1,
                        (None, Some(from)) => from,
                        (None, None) => self.last() + 1,
                    };
                    p.entries.extend((first..first + n).map(|i| entry(i, self.term.max(1))));
                }
                Step::Conflict { back, n } if p.entries.is_empty() && p.truncate_from.is_none() => {
                    let from = (self.last() + 1).saturating_sub(back).max(self.restored.snapshot.index + 1);
                    self.term += 1;
                    p.truncate_from = Some(from);
                    p.entries.extend((from..from + n).map(|i| entry(i, self.term)));
                }
                Step::Conflict { .. } => {}
                Step::Vote(v) => {
                    self.term += 1;
                    p.hard_state = Some(HardState { term: self.term, vote: (v > 0).then_some(v) });
                }
            }
        }
        if let Some(from) = p.truncate_from {
            let keep = from - 1 - self.restored.snapshot.index;
            self.restored.entries.truncate(keep as usize);
            states.push(self.clone());
        }
        if !p.entries.is_empty() {
            self.restored.entries.extend(p.entries.iter().cloned());
            states.push(self.clone());
        }
        if let Some(hs) = p.hard_state {
            self.restored.hard_state = hs;
            states.push(self.clone());
        }
        p
    }

    fn snapshot(&mut self, index: u64, term: u64) -> raft_core::SnapshotMeta {
        let base = self.restored.snapshot.index;
        let keeps = index >= base
            && index <= self.last()
            && (index == base && term == self.restored.snapshot.term
                || index > base && self.restored.entries[(index - base - 1) as usize].term == term);
        if keeps {
            self.restored.entries.drain(..(index - base) as usize);
        } else {
            self.restored.entries.clear();
        }
        self.restored.snapshot = meta(index, term);
        self.data = Some(format!("snapshot at {index}/{term}").into_bytes());
        self.restored.snapshot.clone()
    }
}

fn check(model: &Model, restored: &Restored, storage: &impl Storage) -> Result<(), TestCaseError> {
    prop_assert_eq!(restored, &model.restored);
    let data = storage.read_snapshot().unwrap().map(|(_, d)| d);
    prop_assert_eq!(data, model.data.clone());
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(400).snapshots_retained(2);
    let (mut storage, recovered) = open(dir.path(), &options).unwrap();
    prop_assert!(recovered.is_new());
    let mut mem = MemStorage::new();
    let mut model = Model::default();
    // The last batch: its segment, the segment's length before it, and the
    // model before it and after each of its records.
    let mut last_batch: Option<(std::path::PathBuf, u64, Vec<Model>)> = None;
    for op in ops {
        match op {
            Op::Batch(persists) => {
                let seg_before = segments(dir.path()).pop().unwrap();
                let len_before = fs::metadata(&seg_before).unwrap().len();
                let mut states = vec![model.clone()];
                let batch: Vec<Persist> = persists.iter().map(|s| model.persist(s, &mut states)).collect();
                storage.write_batch(&batch).unwrap();
                mem.write_batch(&batch).unwrap();
                let seg = segments(dir.path()).pop().unwrap();
                let from = if seg == seg_before { len_before } else { 0 };
                last_batch = Some((seg, from, states));
            }
            Op::Compact(per_mille) => {
                let base = model.restored.snapshot.index;
                if model.last() > base {
                    let index = base + 1 + (model.last() - base - 1) * u64::from(per_mille) / 1000;
                    let term = model.restored.entries[(index - base - 1) as usize].term;
                    let meta = model.snapshot(index, term);
                    storage.save_snapshot(&meta, model.data.as_ref().unwrap()).unwrap();
                    mem.save_snapshot(&meta, model.data.as_ref().unwrap()).unwrap();
                }
                last_batch = None;
            }
            Op::Install(ahead) => {
                model.term += 1;
                let index = if ahead == 0 { model.last().max(1) } else { model.last() + ahead };
                if index > model.restored.snapshot.index {
                    let meta = model.snapshot(index, model.term);
                    storage.save_snapshot(&meta, model.data.as_ref().unwrap()).unwrap();
                    mem.save_snapshot(&meta, model.data.as_ref().unwrap()).unwrap();
                }
                last_batch = None;
            }
            Op::Reopen(cut) => {
                drop(storage);
                if let (Some(cut), Some((seg, from, states))) = (cut, last_batch.take()) {
                    let bytes = fs::read(&seg).unwrap();
                    let at = from as usize + (bytes.len() - from as usize) * usize::from(cut) / 1000;
                    fs::write(&seg, &bytes[..at]).unwrap();
                    let (reopened, recovered) = open(dir.path(), &options).unwrap();
                    // Some prefix of the batch's records survived.
                    let Some(survivor) = states.iter().find(|m| m.restored == recovered.restored) else {
                        return Err(TestCaseError::fail(format!(
                            "cut at {at}: {:?} is no prefix of the batch",
                            recovered.restored
                        )));
                    };
                    model = survivor.clone();
                    mem = MemStorage::new();
                    if let Some(data) = &model.data {
                        mem.save_snapshot(&model.restored.snapshot, data).unwrap();
                    }
                    mem.write_batch(&[Persist {
                        entries: model.restored.entries.clone(),
                        hard_state: Some(model.restored.hard_state),
                        ..Persist::default()
                    }])
                    .unwrap();
                    storage = reopened;
                } else {
                    let (reopened, recovered) = open(dir.path(), &options).unwrap();
                    check(&model, &recovered.restored, &reopened)?;
                    storage = reopened;
                }
                last_batch = None;
            }
        }
        check(&model, &mem.restored(), &mem)?;
    }
    drop(storage);
    let (storage, recovered) = open(dir.path(), &options).unwrap();
    check(&model, &recovered.restored, &storage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovered_state_equals_the_models_durable_state(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
