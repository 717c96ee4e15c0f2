//! Durable storage for `raft-core`: a crash-safe write-ahead log, hard state
//! and snapshot files in one directory on local disk (std::fs only), plus an
//! in-memory store with the same API for tests.
//!
//! A driver executes each `Action::Persist` of `raft-core` through
//! [`Storage::write_batch`], saves the application's snapshots with
//! [`Storage::save_snapshot`], and on restart gets back exactly the
//! `raft_core::Restored` the node needs from [`FileStorage::open`].
//!
//! ```
//! use raft_core::{Entry, HardState, Payload, Persist};
//! use raft_storage::{FileStorage, Options, Storage};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (mut storage, recovered) = FileStorage::open(dir.path(), Options::default()).unwrap();
//! assert!(recovered.is_new());
//!
//! // One call, one write, one fdatasync, however many Persists it carries.
//! let entry = Entry { term: 1, index: 1, payload: Payload::Command("set x=1".into()) };
//! let persist = Persist { truncate_from: None, entries: vec![entry.clone()], hard_state: Some(HardState { term: 1, vote: Some(1) }) };
//! storage.write_batch(&[persist]).unwrap();
//! drop(storage);
//!
//! let (_storage, recovered) = FileStorage::open(dir.path(), Options::default()).unwrap();
//! assert_eq!(recovered.restored.entries, vec![entry]);
//! assert_eq!(recovered.restored.hard_state, HardState { term: 1, vote: Some(1) });
//! ```
//!
//! # Group commit from a dedicated thread
//!
//! `write_batch` blocks for one fdatasync. A driver that wants throughput
//! moves the [`FileStorage`] to its own thread, sends it `Persist`s over a
//! channel, and on each round drains everything queued (`recv` then
//! `try_iter`) into a single `write_batch` call. While that fsync runs, the
//! protocol keeps producing the next batch; the driver releases the `Send`s
//! that followed those `Persist`s only once `write_batch` returns `Ok`.
//! If `write_batch` fails, the store refuses further writes
//! ([`StorageError::Poisoned`]): the node must stop and be reopened.
//!
//! # File layout
//!
//! ```text
//! <dir>/LOCK                               empty; locked (flock) while a process has the store open
//! <dir>/wal-00000000000000000001.log       write-ahead log segments, numbered without gaps
//! <dir>/wal-00000000000000000002.log
//! <dir>/snapshot-00000000000000004096.snap snapshots, named by their last included index
//! <dir>/snapshot-....snap.tmp              a snapshot being written; removed on open
//! ```
//!
//! A **segment** starts with a 24-byte header (magic `RAFTWAL\0`, format
//! version, sequence number, CRC32C), then records. Each record is framed
//! as `len u32 | payload CRC32C u32 | header CRC32C u32 | postcard payload`.
//! Records: entries appended, suffix truncated (`remove entries >= index`),
//! hard state replaced, snapshot saved. Every segment begins with the
//! current hard state and snapshot point, so old segments can go. A batch
//! is one write followed by one fdatasync; a segment that reached
//! [`Options::segment_size_max`] is closed and the next batch opens a new
//! one.
//!
//! A **snapshot** file holds the `SnapshotMeta` (index, term, membership),
//! the CRC32C of the data, and the application's bytes. It is written to a
//! `.tmp` file, fsynced, renamed and the directory fsynced; after that,
//! segments wholly below its index are deleted, as are snapshot files
//! beyond [`Options::snapshots_retained`].
//!
//! **Recovery** replays the segments in order over the newest snapshot. A
//! torn record at the end of the last segment (never acknowledged) is
//! truncated away and the truncation fsynced. A bad checksum anywhere else,
//! a damaged header, a missing segment or a damaged snapshot is an error
//! naming the file (and offset); nothing is modified.
//!
//! **What is safe to delete:** nothing. Every file is either live or cleaned
//! up by the store itself. **Backups:** copy the directory of a stopped
//! node, or take a snapshot through the application and copy the newest
//! `snapshot-*.snap` (a node restored from only a snapshot rejoins and
//! catches up from the leader, but it has lost its vote: do that only for a
//! node the cluster can treat as new).
//!
//! A brand-new cluster member should record its initial configuration by
//! saving `Restored::new_cluster(membership).snapshot` with empty data as
//! the snapshot at index 0, so a restart before the first real snapshot
//! still knows the configuration.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod file;
mod mem;
mod record;
mod replay;
mod shape;
mod snapshot;

pub use error::StorageError;
pub use file::{FileStorage, Options, Recovered};
pub use mem::MemStorage;
pub use snapshot::SnapshotLocation;

use raft_core::{Persist, SnapshotMeta};

/// Durable state of one Raft node. Implemented by [`FileStorage`] (disk) and
/// [`MemStorage`] (memory, for tests).
pub trait Storage {
    /// Makes a batch of `Persist`s durable, in order, each applied in its
    /// field order (truncate, append, hard state). On `Ok` all of it is
    /// durable; a crash during the call leaves some prefix of its records.
    /// An invalid batch (a gap in indexes, a truncation into the snapshot)
    /// is rejected before anything is written.
    fn write_batch(&mut self, batch: &[Persist]) -> Result<(), StorageError>;

    /// [`Storage::write_batch`] for a caller that no longer needs the
    /// batch: a store that keeps the entries themselves (in memory) takes
    /// them instead of copying them. The default writes a borrowed batch.
    fn write_batch_owned(&mut self, batch: Vec<Persist>) -> Result<(), StorageError> {
        self.write_batch(&batch)
    }

    /// Stores a snapshot: its metadata and the application's data. `meta`
    /// must be newer than the stored snapshot (the first snapshot may be at
    /// index 0, to record an initial configuration). Entries up to
    /// `meta.index` are dropped; if the log does not hold `meta.index` with
    /// `meta.term`, every entry is dropped (paper section 7).
    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError>;

    /// The newest snapshot's metadata and data, checked against its checksum.
    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError>;
}
