//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use raft_core::{Entry, HardState, Index, Membership, Payload, Persist, SnapshotMeta, Term};
use raft_storage::{FileStorage, Options, Recovered, StorageError};

/// An entry whose payload names its index, so tests can check every byte.
pub(crate) fn entry(index: Index, term: Term) -> Entry {
    Entry { term, index, payload: Payload::Command(format!("entry {index} of term {term}").into()) }
}

pub(crate) fn append(range: std::ops::RangeInclusive<Index>, term: Term) -> Persist {
    Persist { entries: range.map(|i| entry(i, term)).collect(), ..Persist::default() }
}

pub(crate) fn hard_state(term: Term, vote: Option<u64>) -> Persist {
    Persist { hard_state: Some(HardState { term, vote }), ..Persist::default() }
}

pub(crate) fn truncate(from: Index) -> Persist {
    Persist { truncate_from: Some(from), ..Persist::default() }
}

pub(crate) fn meta(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta { index, term, membership: Membership::with_voters([(1, "127.0.0.1:7001")]) }
}

pub(crate) fn open(dir: &Path, options: &Options) -> Result<(FileStorage, Recovered), StorageError> {
    FileStorage::open(dir, options.clone())
}

/// Every file in `dir` with its contents, sorted by name.
pub(crate) fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    paths
}

pub(crate) fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

/// Puts `dir` back to exactly `files` (as saved by [`snapshot_dir`]), with
/// `path` cut to `cut` bytes.
pub(crate) fn restore_with_cut(dir: &Path, files: &[(PathBuf, Vec<u8>)], path: &Path, cut: usize) {
    for (p, _) in snapshot_dir(dir) {
        if !files.iter().any(|(f, _)| *f == p) {
            fs::remove_file(p).unwrap();
        }
    }
    for (p, bytes) in files {
        let bytes = if p == path { &bytes[..cut] } else { &bytes[..] };
        fs::write(p, bytes).unwrap();
    }
}
