//! The runtime without the network and the disk: 3 nodes in one process,
//! messages handed over in memory ([`raft_http::ChannelNetwork`]), log and
//! snapshots in memory ([`raft_http::RaftNode::start_in_memory`]), a state
//! machine that only counts. N tokio tasks each call
//! [`raft_http::RaftHandle::propose`] on the leader in a closed loop with a
//! small command. What is left is the cost of the runtime and the core per
//! proposal: the same shape as openraft's `benchmarks/minimal` (in-memory
//! log, no-op state machine, function-call network), so the two can be
//! compared on one machine.
//!
//! ```sh
//! cargo bench -p raft-http --bench inproc
//! RAFT_BENCH_CLIENTS=1,64,256,1024 RAFT_BENCH_SECS=3 RAFT_BENCH_RUNS=3 RAFT_BENCH_WORKERS=2 \
//!     cargo bench -p raft-http --bench inproc
//! ```
//!
//! `RAFT_BENCH_WORKERS` (default 2) is the tokio runtime's worker threads.
//! Each node applies in a task (`Options::apply_in_task`), as openraft's
//! state machine worker is one; `RAFT_BENCH_APPLY_IN_TASK=0` gives each node
//! its apply thread instead. Latency percentiles
//! are of every 32nd proposal.

mod common;

use common::{env, median, Counter};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raft_core::{Config, Membership, NodeId};
use raft_http::{ChannelNetwork, Options, RaftHandle, RaftNode};

/// A command the size of openraft's benchmark request.
const COMMAND_BYTES: usize = 16;

async fn start_cluster() -> Vec<RaftHandle> {
    let network = ChannelNetwork::new();
    let membership = Membership::with_voters((1..=3).map(|id| (id, format!("node-{id}"))));
    let mut handles = Vec::new();
    for id in 1..=3 {
        let mut options =
            Options::new(Config::new(id as NodeId), "unused").initial_membership(membership.clone());
        options.apply_in_task = env("RAFT_BENCH_APPLY_IN_TASK", 1u8) == 1;
        let handle =
            RaftNode::start_in_memory(options, Counter(0), network.clone()).await.expect("start node");
        network.register(id, handle.clone());
        handles.push(handle);
    }
    handles
}

async fn leader(handles: &[RaftHandle]) -> RaftHandle {
    loop {
        if let Some(h) = handles.iter().find(|h| h.leader().borrow().is_leader) {
            return h.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Run {
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

async fn run(leader: &RaftHandle, clients: usize, duration: Duration) -> Run {
    let before = leader.metrics();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let command = [7u8; COMMAND_BYTES];
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..clients {
        let (leader, stop, errors) = (leader.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("bounds");
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // The latency of every 32nd proposal: clock reads and a
                // histogram per client (1024 of them, cold in the cache) on
                // every operation would cost this loop more than it measures.
                let t = ok.is_multiple_of(32).then(Instant::now);
                // A buffer of its own per request, as a real client's
                // request body is: one `Bytes` shared by every client would
                // make all their reference counts one contended cache line.
                match leader.propose(Bytes::copy_from_slice(&command)).await {
                    Ok(_) => {
                        ok += 1;
                        if let Some(t) = t {
                            latency.saturating_record(t.elapsed().as_micros() as u64);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (ok, latency)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("bounds");
    let mut ops = 0;
    for task in tasks {
        let (ok, sampled) = task.await.expect("client task");
        ops += ok;
        latency.add(sampled).expect("same bounds");
    }
    let elapsed = started.elapsed().as_secs_f64();
    if std::env::var_os("RAFT_BENCH_VERBOSE").is_some() {
        let after = leader.metrics();
        let rounds = after.storage_batch_entries.count() - before.storage_batch_entries.count();
        let entries = after.storage_batch_entries.sum - before.storage_batch_entries.sum;
        let messages = after.messages_sent - before.messages_sent;
        let received = after.messages_received - before.messages_received;
        eprintln!(
            "  leader: {rounds} storage batches ({:.1} entries each), {messages} messages sent, {received} received, {:.1} proposals per node-task round",
            entries as f64 / rounds.max(1) as f64,
            after.propose_batch.mean()
        );
    }
    Run {
        ops_per_sec: ops as f64 / elapsed,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let clients: Vec<usize> = std::env::var("RAFT_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,64,256,1024".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let secs: f64 = env("RAFT_BENCH_SECS", if smoke { 0.2 } else { 3.0 });
    let runs: usize = env("RAFT_BENCH_RUNS", if smoke { 1 } else { 3 });
    let workers: usize = env("RAFT_BENCH_WORKERS", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let handles = start_cluster().await;
        let leader = leader(&handles).await;
        let apply = if env("RAFT_BENCH_APPLY_IN_TASK", 1u8) == 1 { "applied in a task" } else { "apply threads" };
        println!(
            "3 nodes in one process, in-memory log, channel network, {COMMAND_BYTES}-byte commands, {apply}, {workers} tokio workers"
        );
        println!("| proposers | ops/s (median of {runs} x {secs} s) | p50 us | p99 us | every run ops/s | errors |");
        println!("|---:|---:|---:|---:|---|---:|");
        for &n in &clients {
            // Warm-up: fills caches, grows buffers, lets the log compact once.
            let _ = run(&leader, n, Duration::from_secs_f64(secs.min(1.0) / 2.0)).await;
            let mut results = Vec::new();
            for _ in 0..runs {
                results.push(run(&leader, n, Duration::from_secs_f64(secs)).await);
            }
            let ops: Vec<f64> = results.iter().map(|r| r.ops_per_sec).collect();
            let all = ops.iter().map(|o| format!("{o:.0}")).collect::<Vec<_>>().join(", ");
            let p50 = median(results.iter().map(|r| r.p50_us as f64).collect());
            let p99 = median(results.iter().map(|r| r.p99_us as f64).collect());
            let errors: u64 = results.iter().map(|r| r.errors).sum();
            println!("| {n} | {:.0} | {p50:.0} | {p99:.0} | {all} | {errors} |", median(ops));
        }
        for h in handles {
            h.shutdown().await;
        }
    });
}
