//! [`MemStorage`]: the same contract as [`crate::FileStorage`], in memory.

use raft_core::{Entry, HardState, Persist, Restored, SnapshotMeta};

use crate::error::StorageError;
use crate::shape::LogShape;
use crate::Storage;

/// An in-memory [`Storage`] for tests and examples. It validates writes
/// exactly like [`crate::FileStorage`] and [`MemStorage::restored`] returns
/// what a restart would see; nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Entries after the snapshot.
    entries: Vec<Entry>,
    shape: LogShape,
}

impl MemStorage {
    /// An empty store, as for a brand-new node.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// What a node restarting from this store would get.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|(m, _)| m.clone()).unwrap_or_default(),
            entries: self.entries.clone(),
        }
    }
}

impl Storage for MemStorage {
    fn write_batch(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        self.write_batch_owned(batch.to_vec())
    }

    fn write_batch_owned(&mut self, batch: Vec<Persist>) -> Result<(), StorageError> {
        self.shape.check(&batch)?;
        for mut p in batch {
            if let Some(from) = p.truncate_from {
                let keep = (from - 1 - self.shape.base).min(self.entries.len() as u64);
                self.entries.truncate(keep as usize);
            }
            self.shape.apply(&p);
            self.entries.append(&mut p.entries);
            if let Some(hs) = p.hard_state {
                self.hard_state = hs;
            }
        }
        Ok(())
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        if let Some((current, _)) = &self.snapshot {
            if meta.index <= current.index {
                return Err(StorageError::StaleSnapshot { index: meta.index, current: current.index });
            }
        }
        if self.shape.snapshot_matches(meta) {
            let drop = (meta.index - self.shape.base) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.shape.compact(meta);
        self.snapshot = Some((meta.clone(), data.to_vec()));
        Ok(())
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        Ok(self.snapshot.clone())
    }
}
