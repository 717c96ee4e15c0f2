//! Write and recovery throughput of the file storage.
//!
//! `cargo bench -p raft-storage -- --warm-up-time 1 --measurement-time 3`
//!
//! - `fsync_4k/raw`: write 4 KiB to a file and fdatasync, the disk's limit.
//! - `fsync_4k/write_batch`: one 4 KiB entry per `write_batch`, same file system.
//! - `batch_1000x100B`: 1,000 entries of 100 bytes per `write_batch` (MB/s, entries/s).
//! - `recovery_1M`: `FileStorage::open` of a log of 1,000,000 entries of 100 bytes.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::{Entry, Payload, Persist};
use raft_storage::{FileStorage, Options, Storage};

fn entries(first: u64, count: u64, size: usize) -> Vec<Entry> {
    let data = Bytes::from(vec![7u8; size]);
    (first..first + count)
        .map(|index| Entry { term: 1, index, payload: Payload::Command(data.clone()) })
        .collect()
}

/// A directory on the same file system as the target dir (not a tmpfs /tmp).
fn bench_dir() -> tempfile::TempDir {
    let base =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn fsync_4k(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsync_4k");
    group.throughput(Throughput::Elements(1));
    let dir = bench_dir();
    let path = dir.path().join("raw");
    let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let block = vec![7u8; 4096];
    group.bench_function("raw", |b| {
        b.iter(|| {
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });

    let (mut storage, _) = FileStorage::open(dir.path().join("wal"), Options::default()).unwrap();
    let mut next = 1;
    // One record of ~4 KiB: a 4,060-byte command plus framing.
    let mut batch = [Persist { entries: entries(1, 1, 4060), ..Persist::default() }];
    group.bench_function("write_batch", |b| {
        b.iter(|| {
            batch[0].entries[0].index = next;
            storage.write_batch(&batch).unwrap();
            next += 1;
        })
    });
    group.finish();
}

fn batch_1000x100(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_1000x100B");
    let dir = bench_dir();
    let (mut storage, _) = FileStorage::open(dir.path(), Options::default()).unwrap();
    let mut next = 1;
    group.throughput(Throughput::Bytes(100 * 1000));
    group.bench_function("bytes", |b| {
        b.iter_batched(
            || {
                let batch = [Persist { entries: entries(next, 1000, 100), ..Persist::default() }];
                next += 1000;
                batch
            },
            |batch| storage.write_batch(&batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("entries", |b| {
        b.iter_batched(
            || {
                let batch = [Persist { entries: entries(next, 1000, 100), ..Persist::default() }];
                next += 1000;
                batch
            },
            |batch| storage.write_batch(&batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn recovery_1m(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery_1M");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    let dir = bench_dir();
    {
        let (mut storage, _) = FileStorage::open(dir.path(), Options::default()).unwrap();
        for chunk in 0..1000 {
            storage
                .write_batch(&[Persist {
                    entries: entries(chunk * 1000 + 1, 1000, 100),
                    ..Persist::default()
                }])
                .unwrap();
        }
    }
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("open", |b| {
        b.iter(|| {
            let (storage, recovered) = FileStorage::open(dir.path(), Options::default()).unwrap();
            assert_eq!(recovered.restored.entries.len(), 1_000_000);
            drop(storage);
            recovered
        })
    });
    group.finish();
}

criterion_group!(benches, fsync_4k, batch_1000x100, recovery_1m);
criterion_main!(benches);
