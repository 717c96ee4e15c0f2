//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

use raft_core::Index;

/// Everything that can go wrong while opening, writing or reading storage.
///
/// Corruption variants name the file (and the byte offset where it applies)
/// so an operator can look at the exact spot. Opening never "repairs" a
/// corrupt file: the only thing recovery removes on its own is a torn record
/// at the very end of the last segment, which was never acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Another process (or another open storage in this one) holds the
    /// directory's lock.
    #[error("data directory {} is locked by another process", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// An operating-system call failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A log record failed its checksum or did not decode, somewhere other
    /// than the tail of the last segment, or it breaks the log's rules.
    #[error("corrupt record in {} at offset {offset}: {reason}", file.display())]
    CorruptRecord {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the record's frame within the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment's header is damaged.
    #[error("corrupt segment header in {}: {reason}", file.display())]
    CorruptSegmentHeader {
        /// The segment file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file was written by a newer version of this crate.
    #[error("{} has format version {found}; this build reads versions up to {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// A snapshot file is damaged.
    #[error("corrupt snapshot {}: {reason}", file.display())]
    CorruptSnapshot {
        /// The snapshot file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A segment between the first and the last is missing.
    #[error("segment {seq} is missing from {}: the log has a gap", dir.display())]
    MissingSegment {
        /// The data directory.
        dir: PathBuf,
        /// The sequence number of the missing segment.
        seq: u64,
    },
    /// A snapshot exists but no log segment does, so the hard state is lost.
    #[error("{} holds a snapshot but no log segment: the hard state is missing", dir.display())]
    NoSegments {
        /// The data directory.
        dir: PathBuf,
    },
    /// Appended entries do not continue the log.
    #[error("entry index {got} does not follow the log's last index {expected_after}")]
    NotContiguous {
        /// The last index of the log at that point.
        expected_after: Index,
        /// The index of the offending entry.
        got: Index,
    },
    /// A truncation would remove entries covered by the snapshot.
    #[error("cannot truncate from {from}: entries up to {snapshot_index} are in the snapshot")]
    TruncateSnapshotted {
        /// The requested truncation point.
        from: Index,
        /// The current snapshot index.
        snapshot_index: Index,
    },
    /// A snapshot is not newer than the stored one.
    #[error("snapshot at index {index} is not newer than the stored snapshot at {current}")]
    StaleSnapshot {
        /// The offered snapshot's index.
        index: Index,
        /// The stored snapshot's index.
        current: Index,
    },
    /// One record would exceed the 4 GiB frame limit.
    #[error("a record of {len} bytes exceeds the frame limit of 4 GiB")]
    RecordTooLarge {
        /// The encoded length.
        len: usize,
    },
    /// Serialization failed (should not happen for raft-core's types).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// An earlier write or sync failed, so what is on disk is unknown. The
    /// storage refuses further writes; reopen it to recover.
    #[error("an earlier write failed; reopen the storage to recover")]
    Poisoned,
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { path, source }
}
