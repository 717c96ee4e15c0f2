//! The command line: `run`, `replay`, `scenario`.

use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use raft_sim::client::ReadMode;
use raft_sim::run::plan_for_run;
use raft_sim::{run_seed, scenarios, FaultKinds, RunOptions, RunReport, TraceMode};

#[derive(Parser, Debug)]
#[command(name = "raft-sim", about = "Deterministic simulator for raft-core")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Fault families: all, none, or a list of network,partition,crash,pause,disk.
    #[arg(long, default_value = "all")]
    faults: FaultKinds,
    /// Safety phase length in logical ms.
    #[arg(long, default_value_t = 20_000)]
    safety_ms: u64,
    /// Liveness bound in logical ms.
    #[arg(long, default_value_t = 10_000)]
    liveness_ms: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Test-only: leaders answer reads locally without confirming leadership.
    #[arg(long, hide = true)]
    broken_local_reads: bool,
    /// How clients read: log, read-index, lease, each-op (each read draws
    /// one), or mixed (the seed draws one of those four).
    #[arg(long, default_value = "mixed", value_parser = parse_reads)]
    reads: Reads,
    /// Clock drift bound in permille (default: drawn from the seed, at most
    /// 150, the bound lease reads tolerate).
    #[arg(long)]
    clock_drift_permille: Option<u32>,
    /// Adversarial clocks (the leader slowest, everyone else fastest), or
    /// fixed per-node rates (default: drawn from the seed).
    #[arg(long)]
    clock_adversarial: Option<bool>,
    /// A client retries after this long without an answer (logical ms).
    #[arg(long, default_value_t = 500)]
    client_timeout_ms: u64,
    /// Clients issue reads only (read throughput measurements).
    #[arg(long)]
    read_only: bool,
    /// Override raft-core's lease_drift_ticks (negative tests).
    #[arg(long)]
    lease_drift_ticks: Option<u32>,
    /// Leaders send new entries while writing them (raft-core's
    /// EarlySends), or only after (default: drawn from the seed when disk
    /// syncs are slow).
    #[arg(long)]
    replicate_while_writing: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
struct Reads(Option<ReadMode>);

fn parse_reads(s: &str) -> Result<Reads, String> {
    if s == "mixed" {
        return Ok(Reads(None));
    }
    s.parse().map(|m| Reads(Some(m)))
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            nodes: self.nodes as usize,
            faults: self.faults,
            safety_ms: self.safety_ms,
            liveness_ms: self.liveness_ms,
            clients: self.clients,
            broken_local_reads: self.broken_local_reads,
            reads: self.reads.0,
            clock_drift_permille: self.clock_drift_permille,
            lease_drift_ticks: self.lease_drift_ticks,
            clock_adversarial: self.clock_adversarial,
            client_timeout_ms: self.client_timeout_ms,
            read_only: self.read_only,
            replicate_while_writing: self.replicate_while_writing,
            ..RunOptions::default()
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a range of random seeds and checks each.
    Run {
        /// Seeds as START..END (END exclusive).
        #[arg(long, default_value = "0..100", value_parser = parse_range)]
        seeds: Range<u64>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Runs one seed, optionally printing every event.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Print one line per event.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Runs a named scenario, or `all`.
    Scenario {
        /// Scenario ID (e.g. b1_figure6_commit_and_state), `all` or `list`.
        name: String,
    },
}

fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected START..END")?;
    let a: u64 = a.parse().map_err(|e| format!("{e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("{e}"))?;
    if b <= a {
        return Err("empty range".into());
    }
    Ok(a..b)
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { seeds, jobs, args } => run(seeds, jobs, &args),
        Command::Replay { seed, trace, args } => replay(seed, trace, &args),
        Command::Scenario { name } => scenario(&name),
    }
}

fn run(seeds: Range<u64>, jobs: Option<usize>, args: &RunArgs) -> ExitCode {
    let opts = args.options();
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let total = seeds.end - seeds.start;
    println!(
        "raft-sim run: seeds {}..{} nodes={} faults={:?} reads={} safety={}ms liveness<={}ms clients={} jobs={jobs}",
        seeds.start,
        seeds.end,
        opts.nodes,
        args.faults,
        opts.reads.map_or("mixed (per seed)".to_string(), |r| r.to_string()),
        opts.safety_ms,
        opts.liveness_ms,
        opts.clients
    );
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta} {msg}")
            .expect("valid template"),
    );
    let next = AtomicU64::new(seeds.start);
    let reports: Mutex<Vec<RunReport>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let r = run_seed(seed, &opts);
                if r.violation.is_some() {
                    bar.println(r.failure_text());
                }
                bar.inc(1);
                reports.lock().expect("no panics while locked").push(r);
            });
        }
    });
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let mut reports = reports.into_inner().expect("no panics while locked");
    reports.sort_by_key(|r| r.seed);
    let events: u64 = reports.iter().map(|r| r.stats.events).sum();
    let ops: usize = reports.iter().map(|r| r.ops_checked).sum();
    let unknown: u64 = reports.iter().map(|r| r.stats.ops_unknown).sum();
    let lin: f64 = reports.iter().map(|r| r.lin_seconds).sum();
    let max_ops = reports.iter().map(|r| r.ops_checked).max().unwrap_or(0);
    let failed: Vec<&RunReport> = reports.iter().filter(|r| r.violation.is_some()).collect();
    println!("seeds:            {total}");
    println!("events:           {events}");
    println!("client ops:       {ops} checked ({unknown} unknown outcome; max {max_ops} per run)");
    let inconclusive: Vec<u64> = reports.iter().filter(|r| r.lin_inconclusive).map(|r| r.seed).collect();
    println!(
        "linearizability:  {lin:.2}s total ({:.3} ms per run); {} runs inconclusive (search budget exhausted){}",
        lin * 1e3 / total as f64,
        inconclusive.len(),
        if inconclusive.is_empty() { String::new() } else { format!(": seeds {inconclusive:?}") }
    );
    let early: u64 = reports.iter().map(|r| r.stats.early_sends).sum();
    let lost_writes: u64 = reports.iter().map(|r| r.stats.crashes_while_writing).sum();
    println!("early sends:      {early} AppendEntries sent while the leader wrote ({lost_writes} crashes lost a write in flight)");
    println!("violations:       {}", failed.len());
    println!(
        "wall:             {wall:.1}s, {:.0} events/s, {:.1} seeds/s ({jobs} threads)",
        events as f64 / wall,
        total as f64 / wall
    );
    if let Some(first) = failed.first() {
        // The first failure in full: property, last events, replay command.
        println!("{}", first.failure_text());
    }
    for r in &failed {
        println!(
            "FAILED seed {}: {}",
            r.seed,
            r.violation.as_ref().map(|v| v.to_string()).unwrap_or_default()
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(seed: u64, trace: bool, args: &RunArgs) -> ExitCode {
    let mut opts = args.options();
    opts.trace = if trace { TraceMode::Print } else { TraceMode::Off };
    println!("seed {seed}: {} nodes; {}", opts.nodes, plan_for_run(seed, &opts));
    let start = Instant::now();
    let r = run_seed(seed, &opts);
    let wall = start.elapsed().as_secs_f64();
    println!(
        "events={} messages={} ops={} (reads without the log: {}) unknown={} crashes={} end={}ms trace-hash={:016x} ({:.0} events/s)",
        r.stats.events,
        r.stats.messages,
        r.ops_checked,
        r.stats.reads_local,
        r.stats.ops_unknown,
        r.stats.crashes,
        r.end_ms,
        r.trace_hash,
        r.stats.events as f64 / wall
    );
    let ops = r.ops_checked.max(1) as f64;
    println!(
        "throughput: {:.0} ops per simulated second of the safety phase; per op {:.2} messages, {:.3} log entries",
        r.ops_checked as f64 * 1000.0 / opts.safety_ms as f64,
        r.stats.messages as f64 / ops,
        r.stats.entries_applied as f64 / ops
    );
    match &r.violation {
        None => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Some(_) => {
            println!("{}", r.failure_text());
            ExitCode::FAILURE
        }
    }
}

fn scenario(name: &str) -> ExitCode {
    let list = match name {
        "all" => scenarios::all(),
        "list" => {
            for (n, _) in scenarios::all() {
                println!("{n}");
            }
            return ExitCode::SUCCESS;
        }
        _ => match scenarios::find(name) {
            Some(s) => vec![s],
            None => {
                eprintln!("unknown scenario {name:?}; `raft-sim scenario list` shows them");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut failed = 0;
    for (n, f) in list {
        let start = Instant::now();
        match f() {
            Ok(()) => println!("ok    {n} ({:.2}s)", start.elapsed().as_secs_f64()),
            Err(e) => {
                failed += 1;
                println!("FAIL  {n}: {e}\n      replay: cargo run --release -p raft-sim -- scenario {n}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{failed} scenario(s) failed");
        ExitCode::FAILURE
    }
}
