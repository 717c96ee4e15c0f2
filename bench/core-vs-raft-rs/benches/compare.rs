//! raft-core vs raft-rs 0.7, the same replication round (see src/lib.rs and
//! README.md), side by side in one criterion group: time per round for
//! B = 1, 10, 100, 1000 commands of 16 bytes. The throughput line reports
//! entries/s; time per round / B is the cost per entry.
//!
//! `cargo bench -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;

use core_vs_raft_rs::core::CoreCluster;
use core_vs_raft_rs::rs::RsCluster;
use core_vs_raft_rs::{Cluster, Impl};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench<C: Cluster>(b: &mut criterion::Bencher<'_>, mut cluster: C, batch: usize) {
    b.iter(|| cluster.round(black_box(batch)));
    cluster.check();
}

fn compare(c: &mut Criterion) {
    let mut group = c.benchmark_group("round");
    for batch in [1usize, 10, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        for which in Impl::ALL {
            group.bench_with_input(BenchmarkId::new(which.name(), batch), &batch, |b, &batch| match which {
                Impl::Core => bench(b, CoreCluster::new(), batch),
                Impl::RaftRs => bench(b, RsCluster::new(), batch),
                Impl::RaftRsEach => bench(b, RsCluster::new_each(), batch),
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
