//! [`FileStorage`]: the write-ahead log and snapshots in one directory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use raft_core::{HardState, Index, Persist, Restored, SnapshotMeta};

use crate::error::{io_err, StorageError};
use crate::record::{self, Frame, HeaderError, RecordRef, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::replay::Replay;
use crate::shape::LogShape;
use crate::snapshot::{self, sync_dir, SnapshotLocation};
use crate::Storage;

const LOCK_FILE: &str = "LOCK";

/// Tunables of a [`FileStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// A segment that has reached this size is closed and the next batch
    /// starts a new one. A batch is never split, so a segment can exceed
    /// this by one batch.
    pub segment_size_max: u64,
    /// How many snapshot files to keep (at least 1). Older ones are deleted
    /// after a new snapshot is saved.
    pub snapshots_retained: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { segment_size_max: 64 << 20, snapshots_retained: 2 }
    }
}

impl Options {
    /// Sets [`Options::segment_size_max`].
    pub fn segment_size_max(mut self, bytes: u64) -> Self {
        self.segment_size_max = bytes;
        self
    }

    /// Sets [`Options::snapshots_retained`].
    pub fn snapshots_retained(mut self, count: usize) -> Self {
        self.snapshots_retained = count;
        self
    }
}

/// What [`FileStorage::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Exactly what `raft_core::Node::new` needs: hard state, snapshot
    /// metadata, and the entries after the snapshot.
    pub restored: Restored,
    /// Where the newest snapshot's data lives, if there is a snapshot.
    pub snapshot: Option<SnapshotLocation>,
}

impl Recovered {
    /// Whether the directory held nothing at all: a brand-new node. Start it
    /// with `Restored::new_cluster` (and save that configuration with
    /// [`Storage::save_snapshot`] at index 0) or `Restored::joining`.
    pub fn is_new(&self) -> bool {
        self.snapshot.is_none() && self.restored == Restored::default()
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Highest entry index any append record in the segment carries (0: none).
    max_index: Index,
}

/// A node's durable state in one directory: segmented write-ahead log plus
/// snapshot files. See the crate docs for the layout and the guarantees.
///
/// `FileStorage` is `Send`: a driver typically moves it to a dedicated
/// thread that drains every `Persist` queued so far and hands them to one
/// [`Storage::write_batch`] call (one write, one fdatasync), while the
/// protocol keeps producing the next batch.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    options: Options,
    /// Held for the storage's lifetime; the OS releases it on exit.
    _lock: File,
    /// Oldest first; the last one is `active`.
    segments: VecDeque<Segment>,
    active: File,
    active_len: u64,
    buf: Vec<u8>,
    shape: LogShape,
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, SnapshotLocation)>,
    /// Indexes of the snapshot files on disk, oldest first.
    snapshot_files: Vec<Index>,
    poisoned: bool,
}

fn segment_file_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

impl FileStorage {
    /// Opens (creating if needed) the data directory `dir`, locks it, and
    /// recovers its state.
    ///
    /// A torn record at the end of the last segment (a write that was never
    /// acknowledged) is cut off, durably. Any other damage is an error naming
    /// the file and offset, and nothing is modified.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(FileStorage, Recovered), StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StorageError::Locked { dir }),
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let mut seqs = Vec::new();
        let mut snapshot_files = Vec::new();
        let mut tmp_files = Vec::new();
        for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let item = item.map_err(io_err(&dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = parse_segment_file_name(name) {
                seqs.push(seq);
            } else if let Some(index) = snapshot::parse_file_name(name) {
                snapshot_files.push(index);
            } else if name.starts_with("snapshot-") && name.ends_with(".tmp") {
                tmp_files.push(item.path());
            }
        }
        seqs.sort_unstable();
        snapshot_files.sort_unstable();
        for pair in seqs.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(StorageError::MissingSegment { dir, seq: pair[0] + 1 });
            }
        }

        let snapshot = match snapshot_files.last() {
            Some(&index) => Some(snapshot::open(&dir.join(snapshot::file_name(index)), index)?),
            None => None,
        };
        if snapshot.is_some() && seqs.is_empty() {
            return Err(StorageError::NoSegments { dir });
        }
        let snap_meta = snapshot.as_ref().map(|(m, _)| m.clone()).unwrap_or_default();

        // Replay every segment in order; only the last may have a torn tail.
        let mut replay = Replay::new(snap_meta.index, snap_meta.term);
        let mut segments = VecDeque::with_capacity(seqs.len());
        let mut active_len = 0;
        let mut dir_dirty = false;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_file_name(seq));
            let is_last = i + 1 == seqs.len();
            let data = fs::read(&path).map_err(io_err(&path))?;
            if data.len() < SEGMENT_HEADER_LEN {
                if is_last {
                    // Created but never completed: its first batch was never
                    // acknowledged.
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    dir_dirty = true;
                    break;
                }
                return Err(StorageError::CorruptSegmentHeader {
                    file: path,
                    reason: "file too short".into(),
                });
            }
            match record::decode_segment_header(&data[..SEGMENT_HEADER_LEN], seq) {
                Ok(()) => {}
                Err(HeaderError::Corrupt(reason)) => {
                    return Err(StorageError::CorruptSegmentHeader { file: path, reason })
                }
                Err(HeaderError::Version(found)) => {
                    return Err(StorageError::UnsupportedVersion {
                        file: path,
                        found,
                        supported: record::SEGMENT_VERSION,
                    })
                }
            }
            let mut offset = SEGMENT_HEADER_LEN;
            let mut max_index = 0;
            while offset < data.len() {
                let corrupt = |reason: String| StorageError::CorruptRecord {
                    file: path.clone(),
                    offset: offset as u64,
                    reason,
                };
                match record::read_frame(&data[offset..]) {
                    Frame::Valid { payload, frame_len } => {
                        let record = record::decode(payload).map_err(corrupt)?;
                        if let Some(max) = replay.apply(record).map_err(corrupt)? {
                            max_index = max_index.max(max);
                        }
                        offset += frame_len;
                    }
                    Frame::Torn | Frame::Bad { at_end: true, .. } if is_last => break,
                    Frame::Torn => return Err(corrupt("incomplete record in a closed segment".into())),
                    Frame::Bad { reason, .. } => return Err(corrupt(reason.into())),
                }
            }
            if offset < data.len() {
                // Cut the torn tail off, durably, before anything is appended
                // after it.
                let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                file.set_len(offset as u64).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
            active_len = offset as u64;
            segments.push_back(Segment { seq, path, max_index });
        }
        for tmp in &tmp_files {
            fs::remove_file(tmp).map_err(io_err(tmp))?;
            dir_dirty = true;
        }
        if dir_dirty {
            sync_dir(&dir)?;
        }
        let (hard_state, entries, discarded) = replay.finish();
        let shape = LogShape::new(&snap_meta, &entries);

        let active = match segments.back() {
            Some(last) => OpenOptions::new().append(true).open(&last.path).map_err(io_err(&last.path))?,
            // Placeholder; replaced just below by a real segment.
            None => lock.try_clone().map_err(io_err(&lock_path))?,
        };
        let recovered = Recovered {
            restored: Restored { hard_state, snapshot: snap_meta, entries },
            snapshot: snapshot.as_ref().map(|(_, loc)| loc.clone()),
        };
        let mut storage = FileStorage {
            dir,
            options,
            _lock: lock,
            segments,
            active,
            active_len,
            buf: Vec::with_capacity(64 << 10),
            shape,
            hard_state,
            snapshot,
            snapshot_files,
            poisoned: false,
        };
        // Every open starts a new segment: its preamble re-records the hard
        // state and the snapshot point (with the decision replay took for a
        // snapshot whose record was lost), so the recovered state never
        // depends on a segment tail that was just cut.
        let seq = storage.segments.back().map(|s| s.seq + 1).or(seqs.first().copied()).unwrap_or(1);
        storage.buf.clear();
        storage.start_segment(seq, discarded)?;
        storage.write_buf(true)?;
        storage.collect_garbage()?;
        Ok((storage, recovered))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the newest snapshot's data lives.
    pub fn snapshot_location(&self) -> Option<&SnapshotLocation> {
        self.snapshot.as_ref().map(|(_, loc)| loc)
    }

    /// The last index stored (the snapshot index when no entries follow it).
    pub fn last_index(&self) -> Index {
        self.shape.last
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Starts segment `seq`: its header and a preamble go into `buf` ahead
    /// of whatever the caller encodes next, so they share one write.
    ///
    /// The preamble repeats the current hard state and snapshot point, so
    /// deleting older segments never loses either.
    fn start_segment(&mut self, seq: u64, discard_log: bool) -> Result<(), StorageError> {
        let path = self.dir.join(segment_file_name(seq));
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io_err(&path))?;
        record::encode_segment_header(&mut self.buf, seq);
        record::encode(&mut self.buf, &RecordRef::HardState(&self.hard_state))?;
        if let Some((meta, _)) = &self.snapshot {
            let mark = RecordRef::Snapshot { index: meta.index, term: meta.term, discard_log };
            record::encode(&mut self.buf, &mark)?;
        }
        self.active = file;
        self.active_len = 0;
        self.segments.push_back(Segment { seq, path, max_index: 0 });
        Ok(())
    }

    /// Writes `buf` to the active segment with one write and one fdatasync.
    /// A new segment's directory entry is made durable too.
    fn write_buf(&mut self, new_segment: bool) -> Result<(), StorageError> {
        let path = &self.segments.back().expect("an active segment").path;
        let result = self.active.write_all(&self.buf).and_then(|()| self.active.sync_data());
        if let Err(e) = result {
            // After a failed fsync the page cache may have dropped the
            // dirty pages: nothing about the file can be trusted any more.
            self.poisoned = true;
            return Err(io_err(path)(e));
        }
        if new_segment {
            if let Err(e) = sync_dir(&self.dir) {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.active_len += self.buf.len() as u64;
        Ok(())
    }

    fn begin_write(&mut self) -> Result<bool, StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        self.buf.clear();
        if self.active_len >= self.options.segment_size_max {
            let seq = self.segments.back().map_or(1, |s| s.seq + 1);
            self.start_segment(seq, false)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn mark_snapshot(&mut self, meta: &SnapshotMeta, discard_log: bool) -> Result<(), StorageError> {
        let new_segment = self.begin_write()?;
        let mark = RecordRef::Snapshot { index: meta.index, term: meta.term, discard_log };
        record::encode(&mut self.buf, &mark)?;
        self.write_buf(new_segment)
    }

    /// Deletes segments wholly covered by the snapshot (oldest first, one
    /// directory fsync each so a crash leaves no gap) and snapshot files
    /// beyond the retention count.
    fn collect_garbage(&mut self) -> Result<(), StorageError> {
        while self.segments.len() > 1 && self.segments[0].max_index <= self.shape.base {
            let segment = self.segments.pop_front().expect("checked len");
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            sync_dir(&self.dir)?;
        }
        let retained = self.options.snapshots_retained.max(1);
        if self.snapshot_files.len() > retained {
            let excess = self.snapshot_files.len() - retained;
            for index in self.snapshot_files.drain(..excess) {
                let path = self.dir.join(snapshot::file_name(index));
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    /// Encodes the whole batch into one reused buffer, writes it with one
    /// `write` and makes it durable with one `fdatasync`. The batch is
    /// checked first; an invalid batch writes nothing.
    fn write_batch(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        self.shape.check(batch)?;
        if batch.iter().all(|p| p.truncate_from.is_none() && p.entries.is_empty() && p.hard_state.is_none()) {
            return Ok(());
        }
        let new_segment = self.begin_write()?;
        let mut max_index = 0;
        for p in batch {
            if let Some(from) = p.truncate_from {
                record::encode(&mut self.buf, &RecordRef::Truncate(from))?;
            }
            if let Some(last) = p.entries.last() {
                record::encode(&mut self.buf, &RecordRef::Append(&p.entries))?;
                max_index = last.index;
            }
            if let Some(hs) = &p.hard_state {
                record::encode(&mut self.buf, &RecordRef::HardState(hs))?;
            }
        }
        debug_assert!(self.buf.len() > FRAME_HEADER_LEN);
        self.write_buf(new_segment)?;
        for p in batch {
            self.shape.apply(p);
            if let Some(hs) = p.hard_state {
                self.hard_state = hs;
            }
        }
        let active = self.segments.back_mut().expect("an active segment");
        active.max_index = active.max_index.max(max_index);
        Ok(())
    }

    /// Writes the snapshot file (temp file, fsync, rename, directory fsync),
    /// records it in the log, then deletes covered segments and old
    /// snapshots. A snapshot whose last entry the log holds with the same
    /// term keeps the entries after it; any other replaces the whole log.
    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if let Some((current, _)) = &self.snapshot {
            if meta.index <= current.index {
                return Err(StorageError::StaleSnapshot { index: meta.index, current: current.index });
            }
        }
        let discard_log = !self.shape.snapshot_matches(meta);
        let location = snapshot::write(&self.dir, meta, data)?;
        if self.snapshot_files.last() != Some(&meta.index) {
            self.snapshot_files.push(meta.index);
        }
        self.snapshot = Some((meta.clone(), location));
        self.mark_snapshot(meta, discard_log)?;
        self.shape.compact(meta);
        self.collect_garbage()
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        match &self.snapshot {
            None => Ok(None),
            Some((meta, location)) => Ok(Some((meta.clone(), location.read()?))),
        }
    }
}
