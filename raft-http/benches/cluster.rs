//! A 3-node cluster in one process over loopback HTTP (the real
//! `HttpConnect`/`Transport` on 127.0.0.1, OS-assigned ports) with durable
//! `raft-storage` in temp dirs. Tokio tasks call `RaftHandle::propose` on the
//! leader with 256-byte commands; reports ops/s and latency percentiles per
//! number of concurrent proposers.
//!
//! ```sh
//! cargo bench -p raft-http --bench cluster
//! RAFT_BENCH_SECS=3 RAFT_BENCH_RUNS=2 RAFT_BENCH_CLIENTS=1,16,64,256 cargo bench -p raft-http --bench cluster
//! RAFT_BENCH_REPLICATE_WHILE_WRITING=0 ...   # the leader writes before it sends
//! ```
//!
//! Each configuration runs `RAFT_BENCH_RUNS` times (default 2) for
//! `RAFT_BENCH_SECS` seconds (default 3) after a short warm-up; the table
//! shows every run and the median. The leader's raft-http metrics (batch
//! sizes, fsync and append latency, peer round trips) follow the table.

mod common;

use common::{env, median, Counter};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raft_core::{Config, Membership, NodeId};
use raft_http::{HttpConnect, HttpOptions, Options, RaftHandle, RaftNode, Transport};
use tokio::net::TcpListener;

const COMMAND_BYTES: usize = 256;

struct Cluster {
    handles: Vec<RaftHandle>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_cluster() -> Cluster {
    let http = HttpOptions::new("bench").secret("bench-secret");
    let mut listeners = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        dirs.push(tempfile::tempdir().expect("temp dir"));
    }
    let membership = Membership::with_voters(
        listeners.iter().enumerate().map(|(i, l)| (i as NodeId + 1, l.local_addr().unwrap().to_string())),
    );
    let mut handles = Vec::new();
    for (i, (listener, dir)) in listeners.into_iter().zip(&dirs).enumerate() {
        let mut options =
            Options::new(Config::new(i as NodeId + 1), dir.path()).initial_membership(membership.clone());
        // On by default (see `Options::replicate_while_writing`).
        options.replicate_while_writing =
            std::env::var("RAFT_BENCH_REPLICATE_WHILE_WRITING").map_or(true, |v| v != "0");
        let connect = HttpConnect::new(http.clone()).expect("http client");
        let handle = RaftNode::start(options, Counter(0), connect).await.expect("start node");
        let router = Transport::new(handle.clone(), &http).router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        handles.push(handle);
    }
    Cluster { handles, _dirs: dirs }
}

async fn leader(cluster: &Cluster) -> RaftHandle {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(h) = cluster.handles.iter().find(|h| h.leader().borrow().is_leader) {
            return h.clone();
        }
        assert!(Instant::now() < deadline, "no leader elected within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Run {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
}

/// `clients` tasks propose back to back for `warmup + duration`; only the
/// requests that start and end inside the measured window count.
async fn run(handle: &RaftHandle, clients: usize, warmup: Duration, duration: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_to = measure_from + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let handle = handle.clone();
        let stop = stop.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut command = vec![b'x'; COMMAND_BYTES];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                command[..8].copy_from_slice(&(c as u64).to_le_bytes());
                command[8..16].copy_from_slice(&n.to_le_bytes());
                n += 1;
                let sent = Instant::now();
                let result = handle.propose(Bytes::copy_from_slice(&command)).await;
                let done = Instant::now();
                if sent >= measure_from && done <= measure_to {
                    match result {
                        Ok(_) => {
                            let micros = done.duration_since(sent).as_micros() as u64;
                            histogram.saturating_record(micros.max(1));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            histogram
        }));
    }
    tokio::time::sleep_until(measure_to.into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for task in tasks {
        total.add(task.await.expect("client task")).unwrap();
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Run {
        ops_per_sec: total.len() as f64 / duration.as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    let secs: f64 = env("RAFT_BENCH_SECS", 3.0);
    let runs: usize = env("RAFT_BENCH_RUNS", 2).max(1);
    let clients: Vec<usize> = std::env::var("RAFT_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let cluster = start_cluster().await;
        let leader = leader(&cluster).await;
        println!(
            "raft-http cluster bench: 3 nodes, loopback HTTP, durable storage, {COMMAND_BYTES} B commands, \
             {runs} x {secs} s per row, leader = node {}",
            leader.id()
        );
        println!();
        println!("| proposers | run | ops/s | p50 ms | p99 ms | p99.9 ms | errors |");
        println!("|---:|---|---:|---:|---:|---:|---:|");
        let mut summary = Vec::new();
        for &c in &clients {
            let mut results = Vec::new();
            for r in 0..runs {
                let result = run(&leader, c, Duration::from_millis(500), Duration::from_secs_f64(secs)).await;
                println!(
                    "| {c} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                    r + 1,
                    result.ops_per_sec,
                    result.p50_ms,
                    result.p99_ms,
                    result.p999_ms,
                    result.errors
                );
                results.push(result);
            }
            let m = |f: fn(&Run) -> f64| median(results.iter().map(f).collect());
            summary.push((c, m(|r| r.ops_per_sec), m(|r| r.p50_ms), m(|r| r.p99_ms), m(|r| r.p999_ms)));
        }
        println!();
        println!("medians:");
        println!();
        println!("| proposers | ops/s | p50 ms | p99 ms | p99.9 ms |");
        println!("|---:|---:|---:|---:|---:|");
        for (c, ops, p50, p99, p999) in summary {
            println!("| {c} | {ops:.0} | {p50:.2} | {p99:.2} | {p999:.2} |");
        }
        let m = leader.metrics();
        let q = |h: &raft_http::HistogramSnapshot, p: f64| match h.quantile(p) {
            u64::MAX => ">10s".to_owned(),
            v => format!("<={v}"),
        };
        println!();
        println!("leader metrics (whole run; bucket upper bounds):");
        println!(
            "  proposals/round: mean {:.1}, p50 {}, p99 {}",
            m.propose_batch.mean(),
            q(&m.propose_batch, 0.5),
            q(&m.propose_batch, 0.99)
        );
        println!(
            "  entries/storage write: mean {:.1}, p50 {}, p99 {}",
            m.storage_batch_entries.mean(),
            q(&m.storage_batch_entries, 0.5),
            q(&m.storage_batch_entries, 0.99)
        );
        println!(
            "  storage write+fsync us: mean {:.0}, p50 {}, p99 {} ({} writes)",
            m.fsync_us.mean(),
            q(&m.fsync_us, 0.5),
            q(&m.fsync_us, 0.99),
            m.fsync_us.count()
        );
        println!(
            "  proposal (stepped -> applied) us: mean {:.0}, p50 {}, p99 {}",
            m.append_us.mean(),
            q(&m.append_us, 0.5),
            q(&m.append_us, 0.99)
        );
        println!(
            "  messages/request: mean {:.1}, p99 {}",
            m.peer_batch.mean(),
            q(&m.peer_batch, 0.99)
        );
        for (peer, h) in &m.peer_rtt_us {
            println!(
                "  peer {peer} request round trip us: mean {:.0}, p50 {}, p99 {} ({} requests)",
                h.mean(),
                q(h, 0.5),
                q(h, 0.99),
                h.count()
            );
        }
        for handle in &cluster.handles {
            if handle.id() != leader.id() {
                let f = handle.metrics();
                println!(
                    "  follower {}: storage write+fsync us mean {:.0}, p50 {}, p99 {}; entries/write mean {:.1}",
                    handle.id(),
                    f.fsync_us.mean(),
                    q(&f.fsync_us, 0.5),
                    q(&f.fsync_us, 0.99),
                    f.storage_batch_entries.mean()
                );
            }
        }
        println!("  dropped messages: {}", m.messages_dropped);
        for handle in &cluster.handles {
            handle.shutdown().await;
        }
    });
}
