//! Crash recovery: torn tails, interrupted snapshots, and what recovery
//! must refuse (corruption) without touching anything.

mod common;

use std::fs;

use common::*;
use raft_core::{HardState, Restored};
use raft_storage::{FileStorage, Options, Storage, StorageError};

/// Writes one record per batch and remembers (file length, expected state)
/// after each.
fn one_record_batches(dir: &std::path::Path) -> Vec<(u64, Restored)> {
    let (mut storage, _) = open(dir, &Options::default()).unwrap();
    let mut model = Restored::default();
    let mut lengths = Vec::new();
    let seg = segments(dir).pop().unwrap();
    lengths.push((fs::metadata(&seg).unwrap().len(), model.clone()));
    let mut last = 0;
    for round in 0..12u64 {
        let p = match round % 4 {
            0 | 1 => append(last + 1..=last + 1 + round % 3, round / 4 + 1),
            2 => hard_state(round / 4 + 1, Some(round % 3)),
            _ => truncate(last),
        };
        storage.write_batch(std::slice::from_ref(&p)).unwrap();
        if let Some(from) = p.truncate_from {
            model.entries.truncate(from as usize - 1);
        }
        model.entries.extend(p.entries.iter().cloned());
        if let Some(hs) = p.hard_state {
            model.hard_state = hs;
        }
        last = model.entries.len() as u64;
        lengths.push((fs::metadata(&seg).unwrap().len(), model.clone()));
    }
    lengths
}

// Every byte offset inside the last records: recovery keeps exactly the
// records that were completely written, and makes the cut durable.
#[test]
fn torn_tail_at_every_byte_keeps_exactly_the_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let states = one_record_batches(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let files = snapshot_dir(dir.path());
    let full = fs::read(&seg).unwrap();
    let from = states[states.len() - 8].0;
    for cut in from..=full.len() as u64 {
        restore_with_cut(dir.path(), &files, &seg, cut as usize);
        let (storage, recovered) = open(dir.path(), &Options::default()).unwrap();
        let (len, expected) = states.iter().rev().find(|(len, _)| *len <= cut).unwrap();
        assert_eq!(recovered.restored, *expected, "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), *len, "torn tail not cut off at {cut}");
        drop(storage);
    }
}

// A crash inside the header of a freshly created segment loses only that
// segment's unacknowledged first batch.
#[test]
fn torn_new_segment_header_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(1);
    let (mut storage, _) = open(dir.path(), &options).unwrap();
    storage.write_batch(&[append(1..=3, 1)]).unwrap();
    storage.write_batch(&[append(4..=5, 1)]).unwrap();
    drop(storage);
    let last = segments(dir.path()).pop().unwrap();
    let files = snapshot_dir(dir.path());
    for cut in 0..30 {
        restore_with_cut(dir.path(), &files, &last, cut);
        let (storage, recovered) = open(dir.path(), &options).unwrap();
        assert_eq!(recovered.restored.entries, append(1..=3, 1).entries, "cut at {cut}");
        drop(storage);
    }
}

// Crash after the snapshot's temp file was written but before the rename.
#[test]
fn crash_before_snapshot_rename_keeps_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path(), &Options::default()).unwrap();
    storage.write_batch(&[hard_state(2, Some(1)), append(1..=10, 2)]).unwrap();
    let before = storage.read_snapshot().unwrap();
    drop(storage);
    let tmp = dir.path().join("snapshot-00000000000000000005.snap.tmp");
    fs::write(&tmp, b"half a snapshot").unwrap();
    let (storage, recovered) = open(dir.path(), &Options::default()).unwrap();
    assert_eq!(recovered.restored.entries.len(), 10);
    assert_eq!(recovered.snapshot, None);
    assert_eq!(storage.read_snapshot().unwrap(), before);
    assert!(!tmp.exists(), "a leftover temp snapshot is removed on open");
}

/// Runs `save_snapshot`, then puts back the segments as they were before
/// it: the state of a crash right after the snapshot's rename.
fn crash_after_rename(snapshot_index: u64, snapshot_term: u64) -> Restored {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(200);
    let (mut storage, _) = open(dir.path(), &options).unwrap();
    for i in 0..10 {
        storage.write_batch(&[append(i * 3 + 1..=i * 3 + 3, 1), hard_state(1, Some(2))]).unwrap();
    }
    let before: Vec<_> = segments(dir.path()).iter().map(|p| (p.clone(), fs::read(p).unwrap())).collect();
    storage.save_snapshot(&meta(snapshot_index, snapshot_term), b"state machine").unwrap();
    drop(storage);
    for seg in segments(dir.path()) {
        fs::remove_file(seg).unwrap();
    }
    for (path, bytes) in &before {
        fs::write(path, bytes).unwrap();
    }
    let (storage, recovered) = open(dir.path(), &options).unwrap();
    assert_eq!(recovered.restored.hard_state, HardState { term: 1, vote: Some(2) });
    assert_eq!(storage.read_snapshot().unwrap().unwrap().1, b"state machine");
    drop(storage);
    // Open finished the interrupted save: covered segments are gone and a
    // second open agrees.
    assert!(segments(dir.path()).len() < before.len());
    let (_, again) = open(dir.path(), &options).unwrap();
    assert_eq!(again, recovered);
    recovered.restored
}

#[test]
fn crash_after_snapshot_rename_keeps_entries_after_a_matching_snapshot() {
    let restored = crash_after_rename(20, 1);
    assert_eq!(restored.snapshot, meta(20, 1));
    assert_eq!(restored.entries, append(21..=30, 1).entries);
}

#[test]
fn crash_after_snapshot_rename_discards_a_log_the_snapshot_contradicts() {
    // Paper section 7: a snapshot whose last entry the log does not hold
    // replaces the whole log.
    let restored = crash_after_rename(20, 3);
    assert_eq!(restored.snapshot, meta(20, 3));
    assert!(restored.entries.is_empty());
    let beyond = crash_after_rename(50, 3);
    assert!(beyond.entries.is_empty());
}

// Crash after the snapshot and its log record, before old segments were
// deleted: same state, and the deletion happens on the next open.
#[test]
fn crash_before_segment_deletion_recovers_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(200);
    let (mut storage, _) = open(dir.path(), &options).unwrap();
    for i in 0..10 {
        storage.write_batch(&[append(i * 3 + 1..=i * 3 + 3, 1)]).unwrap();
    }
    let before: Vec<_> = segments(dir.path()).iter().map(|p| (p.clone(), fs::read(p).unwrap())).collect();
    storage.save_snapshot(&meta(20, 1), b"s").unwrap();
    let deleted: Vec<_> = before.iter().filter(|(p, _)| !p.exists()).cloned().collect();
    assert!(!deleted.is_empty(), "the snapshot covers whole segments");
    drop(storage);
    for (path, bytes) in &deleted {
        fs::write(path, bytes).unwrap();
    }
    let (_storage, recovered) = open(dir.path(), &options).unwrap();
    assert_eq!(recovered.restored.snapshot, meta(20, 1));
    assert_eq!(recovered.restored.entries, append(21..=30, 1).entries);
    assert!(deleted.iter().all(|(p, _)| !p.exists()));
}

#[test]
fn snapshot_deletes_covered_segments_and_old_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(100).snapshots_retained(2);
    let (mut storage, _) = open(dir.path(), &options).unwrap();
    for i in 0..20 {
        storage.write_batch(&[append(i * 2 + 1..=i * 2 + 2, 1)]).unwrap();
        if i % 5 == 4 {
            storage.save_snapshot(&meta(i * 2 + 1, 1), format!("snap {i}").as_bytes()).unwrap();
        }
    }
    let snaps: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let segs = segments(dir.path()).len();
    assert!(segs <= 3, "{segs} segments left");
    drop(storage);
    let (storage, recovered) = open(dir.path(), &options).unwrap();
    assert_eq!(recovered.restored.snapshot, meta(39, 1));
    assert_eq!(recovered.restored.entries, append(40..=40, 1).entries);
    assert_eq!(recovered.snapshot.unwrap().read().unwrap(), b"snap 19");
    assert_eq!(storage.last_index(), 40);
}

#[test]
fn second_open_of_a_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = open(dir.path(), &Options::default()).unwrap();
    let err = open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(&err, StorageError::Locked { dir: d } if d == dir.path()));
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn invalid_batches_are_rejected_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path(), &Options::default()).unwrap();
    storage.write_batch(&[append(1..=5, 1)]).unwrap();
    storage.save_snapshot(&meta(3, 1), b"").unwrap();
    let files = snapshot_dir(dir.path());
    let gap = storage.write_batch(&[append(6..=6, 1), append(8..=8, 1)]).unwrap_err();
    assert!(matches!(gap, StorageError::NotContiguous { expected_after: 6, got: 8 }));
    let into = storage.write_batch(&[truncate(3)]).unwrap_err();
    assert!(matches!(into, StorageError::TruncateSnapshotted { from: 3, snapshot_index: 3 }));
    let stale = storage.save_snapshot(&meta(2, 1), b"").unwrap_err();
    assert!(matches!(stale, StorageError::StaleSnapshot { index: 2, current: 3 }));
    assert_eq!(snapshot_dir(dir.path()), files);
    storage.write_batch(&[append(6..=6, 1)]).unwrap();
}

/// A log in at least two segments, with a snapshot; returns the segments.
fn two_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let options = Options::default().segment_size_max(300);
    let (mut storage, _) = open(dir, &options).unwrap();
    for i in 0..8 {
        storage.write_batch(&[append(i * 2 + 1..=i * 2 + 2, 1)]).unwrap();
    }
    storage.save_snapshot(&meta(3, 1), b"snapshot data").unwrap();
    let segs = segments(dir);
    assert!(segs.len() >= 2);
    segs
}

// A flipped bit in an acknowledged record, in the last segment but not at
// its tail, or in a closed segment: a precise error, nothing modified.
#[test]
fn bit_flip_in_a_non_tail_record_fails_with_file_and_offset() {
    for in_last_segment in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let segs = two_segments(dir.path());
        let target = if in_last_segment { segs.last().unwrap() } else { &segs[0] };
        // The first record after the 24-byte header; flip a payload bit.
        flip_bit(target, 24 + 12 + 1);
        let files = snapshot_dir(dir.path());
        let err = open(dir.path(), &Options::default()).unwrap_err();
        match &err {
            StorageError::CorruptRecord { file, offset, .. } => {
                assert_eq!((file, *offset), (target, 24));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("offset 24"), "{err}");
        assert_eq!(snapshot_dir(dir.path()), files, "recovery modified files");
        // A flipped length bit is caught by the frame header checksum.
        flip_bit(target, 24 + 12 + 1);
        flip_bit(target, 24);
        assert!(matches!(open(dir.path(), &Options::default()), Err(StorageError::CorruptRecord { .. })));
    }
}

#[test]
fn bit_flip_in_a_segment_header_fails() {
    let dir = tempfile::tempdir().unwrap();
    let segs = two_segments(dir.path());
    flip_bit(&segs[0], 13);
    let files = snapshot_dir(dir.path());
    let err = open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(&err, StorageError::CorruptSegmentHeader { file, .. } if file == &segs[0]), "{err:?}");
    assert_eq!(snapshot_dir(dir.path()), files);
}

#[test]
fn newer_segment_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let segs = two_segments(dir.path());
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segs[0], bytes).unwrap();
    let err = open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StorageError::UnsupportedVersion { found: 2, supported: 1, .. }), "{err:?}");
}

#[test]
fn bit_flip_in_a_snapshot_fails() {
    for offset_from_end in [1u64, 20] {
        let dir = tempfile::tempdir().unwrap();
        two_segments(dir.path());
        let snap = dir.path().join("snapshot-00000000000000000003.snap");
        let len = fs::metadata(&snap).unwrap().len();
        // The last byte is data; 20 bytes from the end is metadata.
        flip_bit(&snap, len - offset_from_end);
        let files = snapshot_dir(dir.path());
        let err = open(dir.path(), &Options::default()).unwrap_err();
        assert!(matches!(&err, StorageError::CorruptSnapshot { file, .. } if file == &snap), "{err:?}");
        assert_eq!(snapshot_dir(dir.path()), files);
    }
}

#[test]
fn missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size_max(100);
    let (mut storage, _) = open(dir.path(), &options).unwrap();
    for i in 0..10 {
        storage.write_batch(&[append(i + 1..=i + 1, 1)]).unwrap();
    }
    drop(storage);
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    assert!(matches!(open(dir.path(), &options), Err(StorageError::MissingSegment { .. })));
}

// The bootstrap snapshot at index 0 keeps the initial configuration
// across restarts before the first real snapshot.
#[test]
fn initial_configuration_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, recovered) = open(dir.path(), &Options::default()).unwrap();
    assert!(recovered.is_new());
    storage.save_snapshot(&meta(0, 0), b"").unwrap();
    storage.write_batch(&[append(1..=2, 1)]).unwrap();
    drop(storage);
    let (_, recovered) = FileStorage::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.restored.snapshot, meta(0, 0));
    assert_eq!(recovered.restored.entries.len(), 2);
    assert!(!recovered.is_new());
}
