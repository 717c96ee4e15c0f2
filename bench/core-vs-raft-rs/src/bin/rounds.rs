//! `rounds --impl raft-core|raft-rs|raft-rs-each --batch B --rounds N [--warmup W]`
//!
//! Builds the cluster, runs W warm-up rounds (by default enough to pass the
//! first log compaction, so the log is at its steady-state size), then N
//! measured rounds inside `measured_rounds`, a function that is never
//! inlined, so that
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_rounds*' \
//!     target/release/rounds --impl raft-core --batch 1 --rounds 20000
//! ```
//!
//! counts the measured rounds only. Pick N so that N * B is a multiple of
//! 10,000: every window then holds the same number of compactions.
//! Prints one line: the settings, messages per round and wall time per round.

use std::hint::black_box;
use std::process::exit;
use std::time::Instant;

use core_vs_raft_rs::core::CoreCluster;
use core_vs_raft_rs::rs::RsCluster;
use core_vs_raft_rs::{Cluster, Impl, COMPACT_EVERY, KEEP_ENTRIES};

/// The measured rounds; callgrind's `--toggle-collect` names this function.
#[inline(never)]
fn measured_rounds<C: Cluster>(cluster: &mut C, batch: usize, rounds: usize) {
    for _ in 0..rounds {
        cluster.round(black_box(batch));
    }
}

fn run<C: Cluster>(mut cluster: C, which: Impl, batch: usize, rounds: usize, warmup: usize) {
    for _ in 0..warmup {
        cluster.round(batch);
    }
    cluster.check();
    let (first, _) = cluster.indexes();
    let delivered = cluster.delivered();
    let start = Instant::now();
    measured_rounds(&mut cluster, batch, rounds);
    let elapsed = start.elapsed();
    cluster.check();
    let (last, _) = cluster.indexes();
    assert_eq!(last - first, (batch * rounds) as u64, "every round appends B entries");
    let messages = cluster.delivered() - delivered;
    let ns = elapsed.as_nanos() as f64 / rounds as f64;
    println!(
        "impl={} batch={batch} rounds={rounds} warmup={warmup} messages/round={:.2} ns/round={ns:.0} ns/entry={:.1}",
        which.name(),
        messages as f64 / rounds as f64,
        ns / batch as f64,
    );
}

fn usage(error: &str) -> ! {
    eprintln!("{error}");
    eprintln!("usage: rounds --impl raft-core|raft-rs|raft-rs-each --batch B --rounds N [--warmup W]");
    exit(2)
}

fn main() {
    let mut which = None;
    let mut batch = None;
    let mut rounds = None;
    let mut warmup = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { usage(&format!("{flag} needs a value")) };
        let number =
            || value.parse::<usize>().unwrap_or_else(|_| usage(&format!("{flag} {value}: not a number")));
        match flag.as_str() {
            "--impl" => {
                which = Some(Impl::parse(&value).unwrap_or_else(|| usage(&format!("unknown impl {value}"))))
            }
            "--batch" => batch = Some(number()),
            "--rounds" => rounds = Some(number()),
            "--warmup" => warmup = Some(number()),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    let which = which.unwrap_or_else(|| usage("--impl is required"));
    let batch = batch.unwrap_or_else(|| usage("--batch is required"));
    let rounds = rounds.unwrap_or_else(|| usage("--rounds is required"));
    if batch == 0 || rounds == 0 {
        usage("--batch and --rounds must be at least 1");
    }
    // Past the first compaction, with some margin.
    let warmup = warmup.unwrap_or(((COMPACT_EVERY + 2 * KEEP_ENTRIES) as usize).div_ceil(batch).max(100));
    match which {
        Impl::Core => run(CoreCluster::new(), which, batch, rounds, warmup),
        Impl::RaftRs => run(RsCluster::new(), which, batch, rounds, warmup),
        Impl::RaftRsEach => run(RsCluster::new_each(), which, batch, rounds, warmup),
    }
}
