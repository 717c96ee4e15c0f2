//! raft-jepsen: a Jepsen-style fault harness for `raft-kv`, with real
//! processes on 127.0.0.11.., a seeded nemesis (kill -9, SIGSTOP, iptables
//! partitions and flaky links, a full disk on one node's tmpfs,
//! leadership transfers, membership changes) and raft-sim's
//! linearizability checker.
//!
//! ```text
//! cargo build --release -p raft-kv -p raft-jepsen
//! sudo target/release/raft-jepsen --duration 60s --seed 1
//! ```
//!
//! The nemesis repeats: inject one fault (see [`Fault`]), hold it 2-5 s,
//! heal, rest 1-3 s. Every fault kind takes one turn per round, in a seeded
//! order, so a 60 s run covers them all. Root is needed for the iptables
//! faults (`partition`, `loss`: one `RAFT_JEPSEN` chain jumped to from
//! INPUT, matching only the node addresses and the raft port; flushed at
//! heal, removed at exit) and for `disk-full` (a small tmpfs mounted on the
//! LAST node's data directory only, unmounted at exit; the disk fault is
//! skipped with a notice where mounting is not permitted). Both are undone
//! on error, panic and Ctrl-C; a tmpfs left by a SIGKILLed run is unmounted
//! by the next one.
//!
//! Only that one node is on tmpfs, where fsync costs nothing: the others
//! keep their data in the work directory on the real disk, so every write
//! still waits for real fsyncs on a majority (a notice says so if the work
//! directory is itself on tmpfs). To cover "the leader's disk fills", every
//! other `disk-full` turn first makes the tmpfs node the leader with a
//! leadership transfer (`POST /v1/cluster/transfer-leader`); if that fails,
//! its disk is filled as a follower and the fault's log line says why.

mod check;
mod cluster;
mod disk;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::Verdict;
use crate::cluster::{Cluster, Firewall};
use crate::disk::Disk;
use crate::workload::{Kind, Outcome, Record, Workload};

/// A fault the nemesis can inject. Every kind but `membership` takes a turn
/// in each round of the schedule (seeded order), so a 60 s run covers them
/// all; `membership` rides along with half of the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    /// kill -9 a node (sometimes the leader), restart it at heal.
    Kill,
    /// SIGSTOP a node (sometimes the leader), SIGCONT at heal.
    Pause,
    /// iptables partitions: isolate one, isolate the leader, majority/minority, majorities ring, bridge.
    Partition,
    /// Flaky links (iptables `statistic` random DROP, both directions): one node's links at 20-50%
    /// loss, the leader's links at 20-50%, or every link at 5-15%. Removed at heal.
    Loss,
    /// A full disk: the last node's data directory (only that one; the others stay on the real
    /// disk, for real fsync timing) is a small tmpfs; a ballast file fills it until the node's
    /// writes fail with ENOSPC and it stops. Every other turn (the first included) the node is
    /// made the leader first, by a leadership transfer, so that the leader's disk fills; if the
    /// transfer fails, it is filled as a follower and the log line says why. At heal the
    /// ballast goes and a stopped node is restarted from its directory (SIGTERM, start).
    /// Skipped, with a notice, where mounting a tmpfs is not permitted.
    DiskFull,
    /// Remove a node from the cluster and add it back, while another fault is active.
    Membership,
}

#[derive(Debug, Parser)]
#[command(name = "raft-jepsen", about = "Jepsen-style fault harness for raft-kv (real processes, iptables)")]
struct Cli {
    /// How long the clients and the nemesis run (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the nemesis schedule and the clients.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of nodes (on 127.0.0.11 ..).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Number of keys.
    #[arg(long, default_value_t = 4)]
    keys: u8,
    /// Fault kinds (comma-separated); default: all.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,loss,disk-full,membership"
    )]
    faults: Vec<Fault>,
    /// Run without iptables (no partitions, no flaky links; for non-root runs).
    #[arg(long)]
    no_partitions: bool,
    /// Size of the tmpfs holding the last node's data directory (disk-full fault), in MiB.
    #[arg(long, default_value_t = 64)]
    disk_mib: u64,
    /// The iptables binary (iptables-legacy if the nf_tables one does not work).
    #[arg(long, default_value = "iptables")]
    iptables: String,
    /// The raft-kv binary (default: next to this one).
    #[arg(long)]
    raft_kv: Option<PathBuf>,
    /// Pass `--jepsen-broken MODE` to every node (a raft-kv built with the jepsen-broken feature).
    #[arg(long)]
    broken: Option<String>,
    /// Exit 0 only if a violation is found (to check the harness catches a broken build).
    #[arg(long)]
    expect_violation: bool,
    /// Raft port on every node address.
    #[arg(long, default_value_t = 7601)]
    raft_port: u16,
    /// Client port on every node address.
    #[arg(long, default_value_t = 7602)]
    client_port: u16,
    /// Raft tick in ms passed to the nodes.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Client request timeout.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    timeout: Duration,
    /// Where the report goes (also printed).
    #[arg(long, default_value = "jepsen-report.txt")]
    report: PathBuf,
    /// Keep node data and logs here (default: a temporary directory, removed on exit).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Mutual TLS between the nodes and https for the clients (certificates
    /// from `raft-kv certs`, in the work directory).
    #[arg(long)]
    tls: bool,
    /// Search budget of the linearizability checker, per key.
    #[arg(long, default_value_t = 50_000_000)]
    budget: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?} (ms, s, m)")),
    };
    if !seconds.is_finite() || !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("duration out of range: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Sleeps up to `d`, waking early on a signal; false if interrupted.
fn sleep(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if STOP.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    !STOP.load(Ordering::Relaxed)
}

/// One nemesis window: when, what, and whether it was healed.
#[derive(Debug, Clone)]
struct Window {
    start: f64,
    end: f64,
    what: String,
}

#[derive(Debug, Default)]
struct Timeline {
    events: Vec<(f64, String)>,
    windows: Vec<Window>,
    /// Fault kinds asked for that this run could not inject, and why.
    skipped: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signal_handlers();
    match run(&cli) {
        Ok(violations) => {
            if cli.expect_violation {
                if violations > 0 {
                    println!("expected a violation and found {violations}: the harness has teeth");
                    ExitCode::SUCCESS
                } else {
                    println!("expected a violation (--expect-violation) but found none");
                    ExitCode::FAILURE
                }
            } else if violations > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; the number of violations found.
fn run(cli: &Cli) -> Result<usize, String> {
    if cli.nodes < 3 || cli.nodes > 9 {
        return Err("--nodes must be 3 to 9".to_owned());
    }
    if cli.keys == 0 || cli.clients == 0 {
        return Err("--keys and --clients must be positive".to_owned());
    }
    let exe = match &cli.raft_kv {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("no directory for this executable")?
            .join("raft-kv"),
    };
    if !exe.is_file() {
        return Err(format!("no raft-kv binary at {} (build it, or pass --raft-kv)", exe.display()));
    }
    let partitions =
        (cli.faults.contains(&Fault::Partition) || cli.faults.contains(&Fault::Loss)) && !cli.no_partitions;
    // The firewall first: refuse early if it cannot work.
    let mut firewall = if partitions { Some(Firewall::new(&cli.iptables, cli.raft_port)?) } else { None };
    let mut timeline = Timeline::default();
    // Faults asked for that this run cannot inject: printed and reported.
    let skipped = &mut timeline.skipped;
    if !partitions {
        for fault in [Fault::Partition, Fault::Loss] {
            if cli.faults.contains(&fault) {
                skipped.push(format!("{fault:?} (--no-partitions)"));
            }
        }
    }

    let temp = tempfile::Builder::new().prefix("raft-jepsen-").tempdir().map_err(|e| e.to_string())?;
    let work = match &cli.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    if disk::on_tmpfs(&work) {
        println!(
            "notice: the work directory {} is on tmpfs: fsync costs nothing on any node \
             (pass --work-dir on a real disk for real fsync timing)",
            work.display()
        );
    }
    // The last node's data directory on a small tmpfs, for the disk-full
    // fault (the others stay on the real disk); declared before the
    // cluster so that it is dropped (unmounted) after the processes are
    // gone. Removing and re-adding that node (membership) does not touch
    // its directory: the process keeps running on it, and a restart
    // reopens the same directory, still on the tmpfs.
    let mut disk = if cli.faults.contains(&Fault::DiskFull) {
        let node = cli.nodes - 1;
        match Disk::mount(node, &cluster::node_dir(&work, node), cli.disk_mib << 20) {
            Ok(mut disk) => {
                if cli.work_dir.is_some() {
                    // Asked to keep the data: copied out before unmounting.
                    disk.keep_data();
                }
                Some(disk)
            }
            Err(e) => {
                println!(
                    "notice: the disk-full fault is SKIPPED in this run: cannot mount a tmpfs on n{}'s data directory ({e})",
                    node + 1
                );
                skipped.push(format!("DiskFull (cannot mount a tmpfs: {e})"));
                None
            }
        }
    } else {
        None
    };
    let mut cluster = Cluster::new(
        &exe,
        &work,
        cli.nodes,
        cli.raft_port,
        cli.client_port,
        cluster::NodeFlags { tick_ms: cli.tick_ms, broken: cli.broken.clone(), tls: cli.tls },
    )?;
    for i in 0..cli.nodes {
        cluster.start(i)?;
    }
    let started = Instant::now();
    cluster
        .wait_converged(Duration::from_secs(20))
        .map_err(|e| format!("the cluster did not start: {e} (logs in {})", work.display()))?;
    println!(
        "raft-jepsen: {} nodes on 127.0.0.11..{} (raft :{}, client :{}), up in {:.1}s; {} clients, {} keys, {:?}, seed {}, faults {:?}{}{}",
        cli.nodes,
        10 + cli.nodes,
        cli.raft_port,
        cli.client_port,
        started.elapsed().as_secs_f64(),
        cli.clients,
        cli.keys,
        cli.duration,
        cli.seed,
        cli.faults,
        match &disk {
            Some(disk) => format!(
                "; n{}'s data directory on a {} MiB tmpfs, the others' in {}",
                disk.node() + 1,
                disk.size() >> 20,
                work.display()
            ),
            None => format!("; data directories in {}", work.display()),
        },
        if skipped.is_empty() { String::new() } else { format!("; SKIPPED: {}", skipped.join(", ")) }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workload = Arc::new(Workload {
        endpoints: (0..cli.nodes).map(|i| cluster.client_url(i)).collect(),
        keys: cli.keys,
        start: Instant::now(),
        stop: stop.clone(),
        history: Mutex::new(Vec::new()),
        timeout: cli.timeout,
        tls: cluster.tls.clone(),
    });
    let clients: Vec<_> = (0..cli.clients)
        .map(|c| {
            let workload = workload.clone();
            let seed = cli.seed;
            std::thread::spawn(move || workload.client(c, seed))
        })
        .collect();

    let nemesis_result =
        nemesis(cli, &mut cluster, firewall.as_mut(), disk.as_mut(), &workload, &mut timeline);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let t_end = workload.now() as f64 / 1e6;
    // Heal everything, whatever happened.
    if let Some(firewall) = firewall.as_mut() {
        firewall.heal()?;
    }
    if let Some(disk) = disk.as_mut() {
        disk.free()?;
    }
    for i in 0..cli.nodes {
        if cluster.nodes[i].paused {
            cluster.resume(i);
        }
    }
    let mut crashed = Vec::new();
    for (id, status) in cluster.reap_exited() {
        crashed.push(format!("node {id} exited by itself ({status})"));
    }
    for i in 0..cli.nodes {
        if !cluster.running(i) {
            cluster.start(i)?;
        } else if cluster.stopped_inside(i) {
            // Stopped by a storage error the nemesis did not heal (interrupted).
            let stop = cluster.terminate(i, Duration::from_secs(5));
            cluster.start(i)?;
            timeline
                .events
                .push((t_end, format!("n{} had stopped inside ({}); restarted", i + 1, short(&stop))));
        }
    }
    timeline.events.push((t_end, "heal everything; restart stopped nodes".to_owned()));
    nemesis_result?;
    if STOP.load(Ordering::Relaxed) {
        return Err("interrupted (firewall rules, tmpfs mounts and processes removed)".to_owned());
    }
    // Make sure every node is a voter again.
    restore_membership(&cluster, &mut timeline, t_end);
    let converge = cluster.wait_converged(Duration::from_secs(40));
    let mut problems: Vec<String> = crashed;
    match &converge {
        Ok(d) => timeline.events.push((t_end, format!("converged after {:.1}s", d.as_secs_f64()))),
        Err(e) => problems.push(format!("no convergence after healing: {e}")),
    }

    // Final reads: every key through every node, linearizable then local.
    let mut history = workload.history.lock().map_err(|_| "poisoned")?.clone();
    let http =
        cluster::http_client(Duration::from_secs(5), Duration::from_millis(500), cluster.tls.as_deref())?;
    let mut finals: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    for key in 0..cli.keys {
        let mut seen: Vec<(usize, Option<(u64, u64)>)> = Vec::new();
        for node in 0..cli.nodes {
            for consistency in ["linearizable", "stale"] {
                let call = workload.now();
                let got = final_read(&http, &cluster.client_url(node), key, consistency);
                let ret = workload.now();
                if let Some((value, index)) = got {
                    if consistency == "linearizable" {
                        history.push(Record {
                            client: 1000 + node as u32,
                            node,
                            key,
                            kind: Kind::Read,
                            call,
                            ret,
                            outcome: Outcome::Ok,
                            value,
                            expect: 0,
                            mismatch: false,
                            mod_index: (index > 0).then_some(index),
                            note: "final read".to_owned(),
                        });
                    }
                }
                seen.push((node, got));
            }
        }
        let answers: Vec<(u64, u64)> = seen.iter().filter_map(|(_, g)| *g).collect();
        if answers.len() < seen.len() {
            problems.push(format!(
                "key k{key}: {} of {} final reads failed",
                seen.len() - answers.len(),
                seen.len()
            ));
        }
        if let Some(first) = answers.first() {
            if answers.iter().any(|a| a != first) {
                problems.push(format!("key k{key}: nodes disagree after convergence: {seen:?}"));
            }
            finals.insert(key, *answers.iter().max_by_key(|a| a.1).unwrap_or(first));
        }
    }

    let checked_at = Instant::now();
    let results = check::check(&history, cli.budget);
    let check_time = checked_at.elapsed();
    problems.extend(check::acknowledged_writes(&history, &finals));

    let mut violations = problems.len();
    for r in &results {
        if matches!(r.verdict, Verdict::Violation(_)) {
            violations += 1;
        }
    }
    let inconclusive = results.iter().any(|r| matches!(r.verdict, Verdict::Inconclusive));
    let report = report(cli, &history, &timeline, &results, &problems, check_time, &cluster);
    print!("{report}");
    std::fs::write(&cli.report, &report).map_err(|e| format!("{}: {e}", cli.report.display()))?;
    println!("report written to {}", cli.report.display());
    if cli.work_dir.is_none() && violations > 0 {
        // Keep the node logs and data of a failing run (the tmpfs node's
        // files are copied back into its directory when it is unmounted).
        if let Some(disk) = disk.as_mut() {
            disk.keep_data();
        }
        let kept = temp.keep();
        println!("node logs kept in {}", kept.display());
    }
    if inconclusive && violations == 0 && !cli.expect_violation {
        return Err("the checker ran out of budget on some key (raise --budget)".to_owned());
    }
    Ok(violations)
}

fn final_read(
    http: &reqwest::blocking::Client,
    base: &str,
    key: u8,
    consistency: &str,
) -> Option<(u64, u64)> {
    for _ in 0..10 {
        if let Ok(response) = http.get(format!("{base}/v1/kv/k{key}?consistency={consistency}")).send() {
            let status = response.status().as_u16();
            let index = response
                .headers()
                .get("x-raft-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = response.text().unwrap_or_default();
            match status {
                200 => return body.trim().parse().ok().map(|v| (v, index)),
                404 => return Some((0, 0)),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// Adds back any node that is not a voter (a removal whose add-back failed).
fn restore_membership(cluster: &Cluster, timeline: &mut Timeline, t: f64) {
    for _ in 0..20 {
        let Some(leader) = cluster.leader() else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let Some(voters) = cluster.voters(leader) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let missing: Vec<usize> =
            (0..cluster.nodes.len()).filter(|i| !voters.contains(&cluster.nodes[*i].id)).collect();
        let Some(&target) = missing.first() else { return };
        let outcome = cluster.change_membership(leader, target, true);
        timeline.events.push((t, format!("after the run: add n{} back: {}", target + 1, short(&outcome))));
        if outcome.is_err() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn short(outcome: &Result<String, String>) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {}", e.chars().take(100).collect::<String>()),
    }
}

/// The nemesis: fault, hold 2-5 s, heal, rest 1-3 s, until the duration ends.
fn nemesis(
    cli: &Cli,
    cluster: &mut Cluster,
    mut firewall: Option<&mut Firewall>,
    mut disk: Option<&mut Disk>,
    workload: &Workload,
    timeline: &mut Timeline,
) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(cli.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut kinds: Vec<Fault> = cli.faults.iter().copied().filter(|f| *f != Fault::Membership).collect();
    kinds.dedup();
    if firewall.is_none() {
        kinds.retain(|f| *f != Fault::Partition && *f != Fault::Loss);
    }
    if disk.is_none() {
        kinds.retain(|f| *f != Fault::DiskFull);
    }
    let membership = cli.faults.contains(&Fault::Membership);
    let n = cli.nodes;
    let now = |w: &Workload| w.now() as f64 / 1e6;
    if !sleep(Duration::from_secs(2)) {
        return Ok(());
    }
    let (mut step, mut shapes) = (0usize, rng.gen_range(0..5usize));
    let mut loss_shapes = rng.gen_range(0..3usize);
    // Disk-full turns so far: even ones make the tmpfs node the leader first.
    let mut disk_turns = 0usize;
    while workload.start.elapsed() + Duration::from_secs(2) < cli.duration {
        let t0 = now(workload);
        let mut what = Vec::new();
        // Every kind and partition shape in turn (seeded order), so that a
        // short run still covers them all.
        if step % kinds.len().max(1) == 0 {
            kinds.shuffle(&mut rng);
        }
        let fault = kinds.get(step % kinds.len().max(1)).copied();
        step += 1;
        // The node whose disk fills, if this turn should make it the leader
        // first (it must then stay a voter: it is not the one removed).
        let disk_leader = match (fault, disk.as_deref()) {
            (Some(Fault::DiskFull), Some(disk)) => {
                disk_turns += 1;
                (disk_turns % 2 == 1).then_some(disk.node())
            }
            _ => None,
        };
        // Membership change: remove a node now, add it back while the fault
        // is active (or after the heal if that fails).
        let mut removed = None;
        if membership && rng.gen_bool(0.5) {
            let mut victim = rng.gen_range(0..n);
            if Some(victim) == disk_leader {
                victim = (victim + 1) % n;
            }
            let via = cluster.leader().filter(|&l| l != victim).unwrap_or((victim + 1) % n);
            let outcome = cluster.change_membership(via, victim, false);
            let event = format!("remove n{} via n{}: {}", victim + 1, via + 1, short(&outcome));
            timeline.events.push((now(workload), event));
            removed = Some(victim);
        }
        let leader = cluster.leader();
        let pick_leader = rng.gen_bool(0.4);
        let target = match (pick_leader, leader) {
            (true, Some(l)) => l,
            _ => rng.gen_range(0..n),
        };
        let mut killed = Vec::new();
        let mut paused = Vec::new();
        let mut full = Vec::new();
        match fault {
            Some(Fault::Kill) => {
                let count = if rng.gen_bool(0.25) { 2 } else { 1 };
                let mut victims = vec![target];
                while victims.len() < count {
                    let v = rng.gen_range(0..n);
                    if !victims.contains(&v) {
                        victims.push(v);
                    }
                }
                for v in victims {
                    cluster.kill(v);
                    killed.push(v);
                    what.push(format!(
                        "kill -9 n{}{}",
                        v + 1,
                        if Some(v) == leader { " (leader)" } else { "" }
                    ));
                }
            }
            Some(Fault::Pause) => {
                cluster.pause(target);
                paused.push(target);
                what.push(format!(
                    "SIGSTOP n{}{}",
                    target + 1,
                    if Some(target) == leader { " (leader)" } else { "" }
                ));
            }
            Some(Fault::Partition) => {
                let firewall = firewall.as_deref_mut().ok_or("no firewall")?;
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                let shape = shapes % 5;
                shapes += 1;
                // connected(a, b): may a and b talk?
                let (name, groups): (String, Box<dyn Fn(usize, usize) -> bool>) = match shape {
                    0 => {
                        let lone = order[0];
                        (format!("isolate n{}", lone + 1), Box::new(move |a, b| a != lone && b != lone))
                    }
                    1 => {
                        let lone = leader.unwrap_or(order[0]);
                        (
                            format!("isolate the leader n{}", lone + 1),
                            Box::new(move |a, b| a != lone && b != lone),
                        )
                    }
                    2 => {
                        let minority: Vec<usize> = order[..(n - 1) / 2].to_vec();
                        let label = format!(
                            "split minority {:?} / majority",
                            minority.iter().map(|i| i + 1).collect::<Vec<_>>()
                        );
                        (label, Box::new(move |a, b| minority.contains(&a) == minority.contains(&b)))
                    }
                    3 => {
                        // Majorities ring: each node sees its ring neighbours only.
                        let position: Vec<usize> = {
                            let mut p = vec![0; n];
                            for (k, &node) in order.iter().enumerate() {
                                p[node] = k;
                            }
                            p
                        };
                        let reach = (n - 1) / 2 / 2 + 1;
                        let label =
                            format!("majorities ring {:?}", order.iter().map(|i| i + 1).collect::<Vec<_>>());
                        (
                            label,
                            Box::new(move |a, b| {
                                let d = position[a].abs_diff(position[b]);
                                d.min(n - d) <= reach.max(1)
                            }),
                        )
                    }
                    _ => {
                        // Bridge: two halves that only the bridge node joins.
                        let bridge = order[0];
                        let half: Vec<usize> = order[1..].iter().copied().take((n - 1) / 2).collect();
                        let label = format!(
                            "bridge n{} between {:?} and the rest",
                            bridge + 1,
                            half.iter().map(|i| i + 1).collect::<Vec<_>>()
                        );
                        (
                            label,
                            Box::new(move |a, b| {
                                a == bridge || b == bridge || half.contains(&a) == half.contains(&b)
                            }),
                        )
                    }
                };
                for a in 0..n {
                    for b in 0..n {
                        if a != b && !groups(a, b) {
                            firewall.block(cluster.nodes[a].ip, cluster.nodes[b].ip)?;
                        }
                    }
                }
                what.push(name);
            }
            Some(Fault::Loss) => {
                let firewall = firewall.as_deref_mut().ok_or("no firewall")?;
                let shape = loss_shapes % 3;
                loss_shapes += 1;
                // The flaky node (None: every link), and the loss in percent.
                let (label, lone, percent) = match shape {
                    0 => {
                        let lone = rng.gen_range(0..n);
                        let percent = rng.gen_range(20..=50u32);
                        let role = if Some(lone) == leader { " (leader)" } else { "" };
                        (
                            format!("flaky links of n{}{role}: {percent}% packet loss", lone + 1),
                            Some(lone),
                            percent,
                        )
                    }
                    1 => {
                        let lone = leader.unwrap_or_else(|| rng.gen_range(0..n));
                        let percent = rng.gen_range(20..=50u32);
                        (
                            format!("flaky links of the leader n{}: {percent}% packet loss", lone + 1),
                            Some(lone),
                            percent,
                        )
                    }
                    _ => {
                        let percent = rng.gen_range(5..=15u32);
                        (format!("flaky network: {percent}% packet loss on every link"), None, percent)
                    }
                };
                for a in 0..n {
                    for b in 0..n {
                        if a != b && lone.is_none_or(|l| a == l || b == l) {
                            let p = f64::from(percent) / 100.0;
                            firewall.lossy(cluster.nodes[a].ip, cluster.nodes[b].ip, p)?;
                        }
                    }
                }
                what.push(format!("{label} (each way, raft traffic)"));
            }
            Some(Fault::DiskFull) => {
                let disk = disk.as_deref_mut().ok_or("no tmpfs mount")?;
                let v = disk.node();
                // Make it the leader first (every other turn), else fill it
                // as it is; `role` says which it was when its disk filled.
                let role = match disk_leader {
                    Some(_) if leader == Some(v) => " (leader)".to_owned(),
                    Some(_) => match make_leader(cluster, v, leader) {
                        Ok(from) => {
                            let event = format!("transfer leadership {from}to n{}: ok", v + 1);
                            timeline.events.push((now(workload), event));
                            format!(" (leader, after a transfer {from}to it)")
                        }
                        Err(e) => {
                            let event = format!("transfer leadership to n{}: {e}", v + 1);
                            timeline.events.push((now(workload), event));
                            format!(" (as a FOLLOWER: the transfer to it failed: {e})")
                        }
                    },
                    None if leader == Some(v) => " (leader)".to_owned(),
                    None if removed == Some(v) => " (follower, just removed)".to_owned(),
                    None => " (follower)".to_owned(),
                };
                // Where the node's log ends now: its storage error comes after.
                let log_len = std::fs::metadata(cluster.nodes[v].log_path()).map_or(0, |m| m.len());
                let ballast = disk.fill()?;
                full.push((v, log_len));
                what.push(format!(
                    "disk full on n{v1}{role}: {:.1} MiB ballast fills its {} MiB tmpfs ({} bytes free)",
                    ballast as f64 / f64::from(1 << 20),
                    disk.size() >> 20,
                    disk.free_bytes().map_or("?".to_owned(), |b| b.to_string()),
                    v1 = v + 1,
                ));
            }
            _ => {}
        }
        let label = if what.is_empty() { "nothing".to_owned() } else { what.join("; ") };
        // Logged once injected (a leadership transfer may have come first;
        // the fault's window still starts at t0).
        timeline.events.push((now(workload), label.clone()));
        let hold = Duration::from_millis(rng.gen_range(2000..5000));
        let interrupted = !sleep(hold);
        // Add back while the fault is still active (half of the time).
        if let Some(victim) = removed {
            if rng.gen_bool(0.7) && !interrupted {
                add_back(cluster, victim, timeline, workload);
            }
        }
        if let Some(firewall) = firewall.as_deref_mut() {
            firewall.heal()?;
        }
        for v in paused {
            cluster.resume(v);
        }
        for v in killed {
            cluster.start(v)?;
        }
        for (v, log_len) in full {
            if let Some(disk) = disk.as_deref_mut() {
                disk.free()?;
            }
            let event = heal_disk(cluster, v, log_len)?;
            timeline.events.push((now(workload), event));
        }
        let t1 = now(workload);
        timeline.events.push((t1, "heal".to_owned()));
        timeline.windows.push(Window { start: t0, end: t1, what: label });
        if let Some(victim) = removed {
            let _ = sleep(Duration::from_millis(500));
            add_back(cluster, victim, timeline, workload);
        }
        for (id, status) in cluster.reap_exited() {
            timeline
                .events
                .push((now(workload), format!("node {id} exited by itself ({status}); restarting")));
            cluster.start(id as usize - 1)?;
        }
        if interrupted || !sleep(Duration::from_millis(rng.gen_range(1000..3000))) {
            return Ok(());
        }
    }
    Ok(())
}

/// After node `v`'s ballast is gone: restarts it if its full disk stopped
/// it, and says what happened (with the storage error its log shows after
/// byte `log_len`).
fn heal_disk(cluster: &mut Cluster, v: usize, log_len: u64) -> Result<String, String> {
    let error = cluster::last_line_with(cluster.nodes[v].log_path(), log_len, "storage failed")
        .and_then(|line| line.find("storage failed").map(|at| format!(" ({})", &line[at..])))
        .unwrap_or_default();
    if let Some(status) = cluster.exit_status(v) {
        cluster.start(v)?;
        return Ok(format!("n{}: disk freed; its process had exited ({status}){error}; restarted", v + 1));
    }
    if cluster.stopped_inside(v) {
        let stop = cluster.terminate(v, Duration::from_secs(5));
        cluster.start(v)?;
        let stop = match stop {
            Ok(status) => format!("SIGTERM: exited {status}"),
            Err(e) => format!("SIGTERM: {e}"),
        };
        return Ok(format!(
            "n{}: disk freed; it had stopped on its storage error{error}; {stop}; restarted",
            v + 1
        ));
    }
    Ok(format!("n{}: disk freed; still serving (no write of its failed)", v + 1))
}

/// Makes node `v` the leader with a leadership transfer (asked of the
/// current leader, or of `v` itself; either forwards it), then checks that
/// `v` says it leads. Ok("from nX ") on success, else why not.
fn make_leader(cluster: &Cluster, v: usize, leader: Option<usize>) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        let via = if attempt == 1 { v } else { leader.unwrap_or(v) };
        match cluster.transfer_leader(via, v) {
            Ok(_) => {
                // The 200 means it led when it answered; make sure it still
                // does (it may have lost it at once under another fault).
                let leads = (0..10).any(|_| {
                    let leads = cluster.status(v).is_some_and(|s| s["role"] == "leader");
                    if !leads {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    leads
                });
                if leads {
                    return Ok(leader.map_or(String::new(), |l| format!("from n{} ", l + 1)));
                }
                last = format!("n{} answered 200 but does not say it leads", v + 1);
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("failed: {}", last.chars().take(100).collect::<String>()))
}

/// Adds a removed node back as a voter (if it is not one already).
fn add_back(cluster: &Cluster, victim: usize, timeline: &mut Timeline, workload: &Workload) {
    let id = cluster.nodes[victim].id;
    for attempt in 0..3 {
        let via = cluster.leader().unwrap_or((victim + 1 + attempt) % cluster.nodes.len());
        if cluster.voters(via).is_some_and(|v| v.contains(&id)) {
            return;
        }
        let outcome = cluster.change_membership(via, victim, true);
        timeline.events.push((
            workload.now() as f64 / 1e6,
            format!("add n{} back via n{}: {}", victim + 1, via + 1, short(&outcome)),
        ));
        if outcome.is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(
    cli: &Cli,
    history: &[Record],
    timeline: &Timeline,
    results: &[check::KeyResult],
    problems: &[String],
    check_time: Duration,
    cluster: &Cluster,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== raft-jepsen report (seed {}, {:?}, {} nodes{}) ===",
        cli.seed,
        cli.duration,
        cli.nodes,
        if cluster.tls.is_some() { ", mutual TLS between nodes, https clients" } else { "" }
    );
    for s in &timeline.skipped {
        let _ = writeln!(out, "fault SKIPPED in this run: {s}");
    }
    let _ = writeln!(out, "\nops by outcome:");
    let _ = writeln!(out, "  {:<6} {:>8} {:>8} {:>8} {:>8}", "kind", "ok", "fail", "unknown", "total");
    for kind in [Kind::Read, Kind::Write, Kind::Cas] {
        let count = |o: Outcome| {
            history.iter().filter(|r| r.kind == kind && r.outcome == o && r.client < 1000).count()
        };
        let (ok, fail, unknown) = (count(Outcome::Ok), count(Outcome::Fail), count(Outcome::Unknown));
        let mismatch = history.iter().filter(|r| r.kind == kind && r.mismatch).count();
        let extra = if kind == Kind::Cas {
            format!("  ({mismatch} of the ok were cas mismatches)")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<6} {ok:>8} {fail:>8} {unknown:>8} {:>8}{extra}",
            format!("{kind:?}"),
            ok + fail + unknown
        );
    }
    let _ = writeln!(out, "\nlatency of ok ops (ms):");
    for kind in [Kind::Read, Kind::Write, Kind::Cas] {
        let mut l: Vec<u64> = history
            .iter()
            .filter(|r| r.kind == kind && r.outcome == Outcome::Ok && r.client < 1000)
            .map(|r| r.ret - r.call)
            .collect();
        l.sort_unstable();
        let _ = writeln!(
            out,
            "  {:<6} p50 {:7.2}  p90 {:7.2}  p99 {:7.2}  max {:7.2}",
            format!("{kind:?}"),
            percentile(&l, 50.0),
            percentile(&l, 90.0),
            percentile(&l, 99.0),
            percentile(&l, 100.0)
        );
    }
    let _ = writeln!(out, "\navailability per fault window (ok / invoked):");
    let mut edges: Vec<(f64, f64, String)> = Vec::new();
    let mut last = 0.0;
    for w in &timeline.windows {
        if w.start > last {
            edges.push((last, w.start, "(no fault)".to_owned()));
        }
        edges.push((w.start, w.end, w.what.clone()));
        last = w.end;
    }
    let end = history.iter().filter(|r| r.client < 1000).map(|r| r.call as f64 / 1e6).fold(last, f64::max);
    edges.push((last, end + 0.001, "(no fault)".to_owned()));
    for (a, b, what) in edges {
        let ops: Vec<&Record> = history
            .iter()
            .filter(|r| r.client < 1000 && (r.call as f64 / 1e6) >= a && (r.call as f64 / 1e6) < b)
            .collect();
        let ok = ops.iter().filter(|r| r.outcome == Outcome::Ok).count();
        let pct = if ops.is_empty() { 0.0 } else { 100.0 * ok as f64 / ops.len() as f64 };
        let _ = writeln!(out, "  {a:7.2}s-{b:7.2}s {ok:>5}/{:<5} {pct:5.1}%  {what}", ops.len());
    }
    let _ = writeln!(out, "\nnemesis timeline:");
    for (t, e) in &timeline.events {
        let _ = writeln!(out, "  {t:7.2}s  {e}");
    }
    let checked: usize = results.iter().map(|r| r.ops).sum();
    let _ = writeln!(
        out,
        "\nlinearizability ({checked} operations checked in {:.2}s, per key, raft-sim's Wing-Gong/Lowe checker):",
        check_time.as_secs_f64()
    );
    for r in results {
        let verdict = match &r.verdict {
            Verdict::Linearizable => "linearizable".to_owned(),
            Verdict::Inconclusive => "INCONCLUSIVE (search budget exhausted)".to_owned(),
            Verdict::Violation(detail) => format!("VIOLATION: {detail}"),
        };
        let _ = writeln!(out, "  key k{} ({} ops): {verdict}", r.key, r.ops);
    }
    if problems.is_empty() {
        let _ = writeln!(out, "\nevery acknowledged write is accounted for; all nodes agree on every key");
    } else {
        let _ = writeln!(out, "\nother problems ({}):", problems.len());
        for p in problems.iter().take(30) {
            let _ = writeln!(out, "  {p}");
        }
    }
    let violations =
        problems.len() + results.iter().filter(|r| matches!(r.verdict, Verdict::Violation(_))).count();
    if violations > 0 {
        let _ = writeln!(out, "\nlast lines of node logs:");
        for node in &cluster.nodes {
            let _ = writeln!(out, "  -- n{} --\n{}", node.id, cluster::tail(node.log_path(), 5));
        }
    }
    let _ = writeln!(
        out,
        "\nRESULT: {}",
        if violations == 0 { "OK".to_owned() } else { format!("{violations} VIOLATION(S)") }
    );
    out
}
