//! Fault plans: which faults a random run injects and at which rates, all
//! derived from the seed (and printed, so a failure says what was active).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::client::ReadMode;
use crate::event::Time;
use crate::network::NetConfig;

/// The fault families a run may draw from (the CLI's `--faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKinds {
    /// Loss, duplication, long delays (reordering).
    pub network: bool,
    /// Symmetric and asymmetric partitions.
    pub partition: bool,
    /// Crash and restart from the durable state.
    pub crash: bool,
    /// Pause and resume (SIGSTOP/SIGCONT).
    pub pause: bool,
    /// Slow disk: syncs take time, and a crash loses the unsynced writes.
    pub disk: bool,
    /// Membership changes and frequent snapshots (sections 6 and 7).
    pub membership: bool,
}

impl FaultKinds {
    /// Every fault family.
    pub const ALL: FaultKinds =
        FaultKinds { network: true, partition: true, crash: true, pause: true, disk: true, membership: true };
    /// No faults.
    pub const NONE: FaultKinds = FaultKinds {
        network: false,
        partition: false,
        crash: false,
        pause: false,
        disk: false,
        membership: false,
    };
}

impl FromStr for FaultKinds {
    type Err = String;
    /// `all`, `none`, or a comma list of `network,partition,crash,pause,disk,membership`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => return Ok(FaultKinds::ALL),
            "none" => return Ok(FaultKinds::NONE),
            _ => {}
        }
        let mut k = FaultKinds::NONE;
        for part in s.split(',') {
            match part.trim() {
                "network" | "net" => k.network = true,
                "partition" => k.partition = true,
                "crash" => k.crash = true,
                "pause" => k.pause = true,
                "disk" => k.disk = true,
                "membership" => k.membership = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}: use all, none, network, partition, crash, pause, disk, membership"
                    ))
                }
            }
        }
        Ok(k)
    }
}

/// The concrete faults and rates of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Network rates during the safety phase.
    pub net: NetConfig,
    /// Mean interval between partition changes (`None`: never).
    pub partition_every_ms: Option<Time>,
    /// Mean interval between crashes.
    pub crash_every_ms: Option<Time>,
    /// Mean interval between pauses.
    pub pause_every_ms: Option<Time>,
    /// Maximum sync latency (0: syncs are instantaneous).
    pub disk_latency_max_ms: Time,
    /// A crashed node restarts after 1..=this many ms.
    pub down_max_ms: Time,
    /// Nodes run with PreVote and CheckQuorum (raft-core's defaults); when
    /// false, with the paper's section 5 elections alone.
    pub pre_vote_check_quorum: bool,
    /// How clients read (forced with the CLI's `--reads`).
    pub reads: ReadMode,
    /// Clock drift: node i ticks every `tick_ms * (1 + d_i / 1000)` with
    /// `d_i` drawn from `0..=clock_drift_permille`. Lease reads stay correct
    /// while it is at most [`CLOCK_DRIFT_BOUND_PERMILLE`].
    pub clock_drift_permille: u32,
    /// Adversarial clocks: instead of a fixed rate per node, whoever leads
    /// runs the slowest clock the bound allows and everyone else the fastest
    /// (the worst case for leases).
    pub clock_adversarial: bool,
    /// Mean interval between random membership changes (add, remove,
    /// replace, promote a learner, replace the leader, transfer).
    pub membership_every_ms: Option<Time>,
    /// Nodes ask for a snapshot every this many applied entries (`None`:
    /// raft-core's default, never in a run this short).
    pub snapshot_entries_max: Option<u64>,
    /// Leaders send new entries while their own write of them is in flight
    /// (raft-core's `EarlySends`, raft-http's
    /// `Options::replicate_while_writing`). Only matters with slow syncs.
    pub replicate_while_writing: bool,
}

/// The clock drift bound lease reads tolerate with raft-core's default
/// timing (`election_ticks_min` 15, `lease_drift_ticks` 3). A lease runs
/// `min - drift` leader ticks from the start of a confirmed round; a follower
/// that acknowledged the round ignores votes for `min` of its own ticks, of
/// which at least `min - 1` whole intervals elapse. With tick intervals `L`
/// (leader) and `F` (follower) the lease is safe while
/// `(min - drift) * L <= (min - 1) * F`, i.e. `L / F <= 14 / 12`: a leader
/// tick up to 16.7% longer than a follower's. 150 permille stays inside.
pub const CLOCK_DRIFT_BOUND_PERMILLE: u32 = 150;

impl FaultPlan {
    /// Draws a plan from `rng`, restricted to `kinds`. Each enabled family is
    /// still switched on per seed with high probability, so that sweeps cover
    /// both single faults and combinations.
    pub fn from_rng(rng: &mut ChaCha8Rng, kinds: FaultKinds) -> Self {
        let lat_min = rng.gen_range(1..=3);
        let mut net = NetConfig {
            latency_min_ms: lat_min,
            latency_max_ms: lat_min + rng.gen_range(0..=25),
            ..NetConfig::reliable()
        };
        if kinds.network && rng.gen_bool(0.8) {
            net.loss = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3][rng.gen_range(0..6)];
            net.duplicate = [0.0, 0.01, 0.05][rng.gen_range(0..3)];
            net.long_delay = [0.0, 0.01, 0.05][rng.gen_range(0..3)];
            net.long_delay_max_ms = rng.gen_range(50..=500);
        }
        let every = |rng: &mut ChaCha8Rng, on: bool, lo: Time, hi: Time| {
            (on && rng.gen_bool(0.8)).then(|| rng.gen_range(lo..=hi))
        };
        let partition_every_ms = every(rng, kinds.partition, 100, 1500);
        let crash_every_ms = every(rng, kinds.crash, 200, 2000);
        let pause_every_ms = every(rng, kinds.pause, 200, 2000);
        let disk_latency_max_ms = if kinds.disk && rng.gen_bool(0.5) { rng.gen_range(1..=10) } else { 0 };
        let down_max_ms = [50, 500, 1500][rng.gen_range(0..3)];
        let pre_vote_check_quorum = rng.gen_bool(0.75);
        // Drawn last, so that the draws above do not depend on them.
        let reads =
            [ReadMode::Log, ReadMode::ReadIndex, ReadMode::Lease, ReadMode::EachOp][rng.gen_range(0..4)];
        let clock_drift_permille = [0, 50, 100, CLOCK_DRIFT_BOUND_PERMILLE][rng.gen_range(0..4)];
        let clock_adversarial = rng.gen_bool(0.5);
        // Drawn after everything above (sections 6 and 7).
        let membership_every_ms = (kinds.membership && rng.gen_bool(0.5)).then(|| rng.gen_range(300..=2000));
        let snapshot_entries_max =
            (kinds.membership && rng.gen_bool(0.7)).then(|| [5, 20, 100][rng.gen_range(0..3)]);
        // Drawn last of all.
        let replicate_while_writing = disk_latency_max_ms > 0 && rng.gen_bool(0.5);
        FaultPlan {
            net,
            partition_every_ms,
            crash_every_ms,
            pause_every_ms,
            disk_latency_max_ms,
            down_max_ms,
            pre_vote_check_quorum,
            reads,
            clock_drift_permille,
            clock_adversarial,
            membership_every_ms,
            snapshot_entries_max,
            replicate_while_writing,
        }
    }

    /// No faults, reliable network.
    pub fn none() -> Self {
        FaultPlan {
            net: NetConfig::reliable(),
            partition_every_ms: None,
            crash_every_ms: None,
            pause_every_ms: None,
            disk_latency_max_ms: 0,
            down_max_ms: 1500,
            pre_vote_check_quorum: true,
            reads: ReadMode::Log,
            clock_drift_permille: 0,
            clock_adversarial: false,
            membership_every_ms: None,
            snapshot_entries_max: None,
            replicate_while_writing: false,
        }
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |o: Option<Time>| o.map_or("off".to_string(), |t| format!("~{t}ms"));
        write!(
            f,
            "{} partitions={} crashes={} (down<={}ms) pauses={} disk-sync<={}ms{} elections={} reads={} clock-drift<={}{} membership={} snapshot-every={}",
            self.net,
            show(self.partition_every_ms),
            show(self.crash_every_ms),
            self.down_max_ms,
            show(self.pause_every_ms),
            self.disk_latency_max_ms,
            if self.replicate_while_writing { " (leaders replicate while writing)" } else { "" },
            if self.pre_vote_check_quorum { "prevote+checkquorum" } else { "classic" },
            self.reads,
            if self.clock_drift_permille == 0 {
                "0".to_string()
            } else {
                format!("{}.{}%", self.clock_drift_permille / 10, self.clock_drift_permille % 10)
            },
            if self.clock_adversarial && self.clock_drift_permille > 0 { " (leader slowest)" } else { "" },
            show(self.membership_every_ms),
            self.snapshot_entries_max.map_or("off".to_string(), |n| format!("{n}"))
        )
    }
}
