//! One random run of the simulator: a safety phase with faults, a liveness
//! phase after healing, then the linearizability check of the history.

use std::fmt::Write as _;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{Property, Violation};
use crate::client::ReadMode;
use crate::event::Time;
use crate::faults::{FaultKinds, FaultPlan};
use crate::linearizability::{check_history, LinResult};
use crate::sim::{Phase, Sim, SimOptions, Stats};
use crate::trace::TraceMode;

/// Options of a random run (everything else comes from the seed).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Cluster size.
    pub nodes: usize,
    /// Fault families the seed may draw from.
    pub faults: FaultKinds,
    /// Length of the safety phase (faults active).
    pub safety_ms: Time,
    /// Bound of the liveness phase (all healed).
    pub liveness_ms: Time,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys.
    pub keys: u8,
    /// Test-only: leaders serve reads locally without confirmation.
    pub broken_local_reads: bool,
    /// Trace lines wanted.
    pub trace: TraceMode,
    /// Search budget of the linearizability check, per key.
    pub lin_budget: u64,
    /// Use this plan instead of drawing one from the seed.
    pub plan: Option<FaultPlan>,
    /// How clients read; `None` (the CLI's `mixed`): drawn from the seed.
    pub reads: Option<ReadMode>,
    /// Clients issue reads only.
    pub read_only: bool,
    /// Override raft-core's `lease_drift_ticks` (negative tests).
    pub lease_drift_ticks: Option<u32>,
    /// Override the plan's clock drift bound (permille).
    pub clock_drift_permille: Option<u32>,
    /// Override the plan's adversarial-clock choice.
    pub clock_adversarial: Option<bool>,
    /// A client retries after this long without an answer.
    pub client_timeout_ms: Time,
    /// Override the plan's choice of leaders replicating while they write.
    pub replicate_while_writing: Option<bool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            nodes: 5,
            faults: FaultKinds::ALL,
            safety_ms: 20_000,
            liveness_ms: 10_000,
            clients: 4,
            keys: 3,
            broken_local_reads: false,
            trace: TraceMode::Off,
            lin_budget: 2_000_000,
            plan: None,
            reads: None,
            read_only: false,
            lease_drift_ticks: None,
            clock_drift_permille: None,
            clock_adversarial: None,
            client_timeout_ms: 500,
            replicate_while_writing: None,
        }
    }
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// The faults it injected.
    pub plan: FaultPlan,
    /// Counters.
    pub stats: Stats,
    /// The first violated property, if any.
    pub violation: Option<Violation>,
    /// Hash of the whole trace (same seed, same hash).
    pub trace_hash: u64,
    /// Client operations checked for linearizability.
    pub ops_checked: usize,
    /// Time spent in the linearizability check.
    pub lin_seconds: f64,
    /// The linearizability search ran out of budget on some key: that key's
    /// history was neither proven linearizable nor refuted.
    pub lin_inconclusive: bool,
    /// The last trace lines (filled on failure).
    pub last_lines: Vec<String>,
    /// Logical time at the end.
    pub end_ms: Time,
    /// The replay command line.
    pub replay: String,
}

impl RunReport {
    /// A failure report: seed, faults, first violated property, last events,
    /// and the command that replays it. Empty if the run passed.
    pub fn failure_text(&self) -> String {
        let Some(v) = &self.violation else { return String::new() };
        let mut s = format!(
            "seed {} FAILED ({} nodes; {})\n  {v}\n  last events:\n",
            self.seed, self.nodes, self.plan
        );
        for l in &self.last_lines {
            let _ = writeln!(s, "    {l}");
        }
        let _ = write!(s, "  replay: {}", self.replay);
        s
    }
}

/// The fault plan seed `seed` draws.
pub fn plan_for(seed: u64, kinds: FaultKinds) -> FaultPlan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17_0000_0000);
    FaultPlan::from_rng(&mut rng, kinds)
}

/// The plan a run of `seed` with `opts` uses: `opts.plan` or the seed's,
/// with the read mode `opts.reads` forces.
pub fn plan_for_run(seed: u64, opts: &RunOptions) -> FaultPlan {
    let mut plan = opts.plan.clone().unwrap_or_else(|| plan_for(seed, opts.faults));
    if let Some(reads) = opts.reads {
        plan.reads = reads;
    }
    if let Some(d) = opts.clock_drift_permille {
        plan.clock_drift_permille = d;
    }
    if let Some(a) = opts.clock_adversarial {
        plan.clock_adversarial = a;
    }
    if let Some(r) = opts.replicate_while_writing {
        plan.replicate_while_writing = r;
    }
    plan
}

/// Each node's clock drift (permille) for a plan allowing up to `max`.
pub fn clock_drifts(seed: u64, nodes: usize, max: u32) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc10c_d21f_0000_0000);
    (0..nodes).map(|_| rng.gen_range(0..=max)).collect()
}

fn run_once(seed: u64, opts: &RunOptions, trace: TraceMode) -> (Sim, FaultPlan) {
    let plan = plan_for_run(seed, opts);
    let mut so = SimOptions::new(seed, opts.nodes);
    so.plan = plan.clone();
    so.config.pre_vote = plan.pre_vote_check_quorum;
    so.config.check_quorum = plan.pre_vote_check_quorum;
    if let Some(d) = opts.lease_drift_ticks {
        so.config.lease_drift_ticks = d;
    }
    so.reads = plan.reads;
    so.read_only = opts.read_only;
    so.client_timeout_ms = opts.client_timeout_ms;
    so.catch_up_ticks = plan.reads.uses_lease();
    so.tick_drift_permille = clock_drifts(seed, opts.nodes, plan.clock_drift_permille);
    so.leader_slow_permille = plan.clock_adversarial.then_some(plan.clock_drift_permille);
    if let Some(n) = plan.snapshot_entries_max {
        so.config.snapshot_entries_max = n;
        so.config.log_tail_entries = n / 2;
        // Small messages: snapshots travel in several chunks.
        so.config.bytes_per_message_max = 128;
        so.config.uncommitted_bytes_max = 64 * crate::kv::ENCODED_LEN;
    }
    so.clients = opts.clients;
    so.keys = opts.keys;
    so.broken_local_reads = opts.broken_local_reads;
    so.trace = trace;
    let mut sim = Sim::new(so);
    sim.schedule_liveness(opts.safety_ms, opts.liveness_ms);
    sim.run_until(opts.safety_ms + opts.liveness_ms + 1_000);
    (sim, plan)
}

/// Runs seed `seed` and checks it.
pub fn run_seed(seed: u64, opts: &RunOptions) -> RunReport {
    let (sim, plan) = run_once(seed, opts, opts.trace);
    let mut violation = sim.violation().cloned();
    if violation.is_none() && sim.phase() != Phase::Finished {
        violation =
            Some(Violation { property: Property::Liveness, detail: "run ended before converging".into() });
    }
    let mut lin_seconds = 0.0;
    let mut lin_inconclusive = false;
    if violation.is_none() {
        let start = Instant::now();
        match check_history(sim.history(), opts.lin_budget) {
            LinResult::Ok => {}
            LinResult::Inconclusive { .. } => lin_inconclusive = true,
            bad @ LinResult::Violation { .. } => {
                violation = Some(Violation { property: Property::Linearizability, detail: bad.to_string() })
            }
        }
        lin_seconds = start.elapsed().as_secs_f64();
    }
    let mut last_lines = Vec::new();
    if violation.is_some() {
        // Same seed, same run: replay it keeping the last lines.
        let (again, _) = run_once(seed, opts, TraceMode::Keep(30));
        last_lines = again.trace().lines().map(str::to_string).collect();
    }
    let mut replay =
        format!("cargo run --release -p raft-sim -- replay --seed {seed} --nodes {}", opts.nodes);
    if opts.faults != FaultKinds::ALL {
        replay.push_str(" --faults <as in the run>");
    }
    let defaults = RunOptions::default();
    if opts.safety_ms != defaults.safety_ms {
        replay.push_str(&format!(" --safety-ms {}", opts.safety_ms));
    }
    if opts.clients != defaults.clients {
        replay.push_str(&format!(" --clients {}", opts.clients));
    }
    if opts.broken_local_reads {
        replay.push_str(" --broken-local-reads");
    }
    if let Some(reads) = opts.reads {
        replay.push_str(&format!(" --reads {reads}"));
    }
    if let Some(d) = opts.clock_drift_permille {
        replay.push_str(&format!(" --clock-drift-permille {d}"));
    }
    if opts.read_only {
        replay.push_str(" --read-only");
    }
    if opts.client_timeout_ms != defaults.client_timeout_ms {
        replay.push_str(&format!(" --client-timeout-ms {}", opts.client_timeout_ms));
    }
    if let Some(a) = opts.clock_adversarial {
        replay.push_str(&format!(" --clock-adversarial {a}"));
    }
    if let Some(d) = opts.lease_drift_ticks {
        replay.push_str(&format!(" --lease-drift-ticks {d}"));
    }
    if let Some(r) = opts.replicate_while_writing {
        replay.push_str(&format!(" --replicate-while-writing {r}"));
    }
    replay.push_str(" --trace");
    RunReport {
        seed,
        nodes: opts.nodes,
        plan,
        stats: sim.stats(),
        violation,
        trace_hash: sim.trace().hash(),
        ops_checked: sim.history().len(),
        lin_seconds,
        lin_inconclusive,
        last_lines,
        end_ms: sim.now(),
        replay,
    }
}
