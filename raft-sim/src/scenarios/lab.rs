//! Section C: ports of the classic MIT 6.5840 Raft lab tests, in their
//! spirit: time-compressed, seeded, driven through the simulator's event
//! loop with a reliable (or lossy) network and scripted faults.

use bytes::Bytes;
use raft_core::{Index, NodeId, Payload, Role};

use super::{ensure, Outcome, Scenario};
use crate::event::Time;
use crate::faults::{FaultKinds, FaultPlan};
use crate::network::NetConfig;
use crate::run::{run_seed, RunOptions};
use crate::sim::{NodeState, Sim, SimOptions};

pub(crate) const SCENARIOS: &[Scenario] = &[
    ("c_initial_election", c_initial_election),
    ("c_reelection", c_reelection),
    ("c_many_elections", c_many_elections),
    ("c_basic_agree", c_basic_agree),
    ("c_bytes_per_command", c_bytes_per_command),
    ("c_follower_failure", c_follower_failure),
    ("c_leader_failure", c_leader_failure),
    ("c_fail_agree", c_fail_agree),
    ("c_fail_no_agree", c_fail_no_agree),
    ("c_concurrent_starts", c_concurrent_starts),
    ("c_rejoin", c_rejoin),
    ("c_backup", c_backup),
    ("c_count", c_count),
    ("c_persist1", c_persist1),
    ("c_persist2", c_persist2),
    ("c_persist3", c_persist3),
    ("c_figure8", c_figure8),
    ("c_unreliable_agree", c_unreliable_agree),
    ("c_figure8_unreliable", c_figure8_unreliable),
    ("c_reliable_churn", c_reliable_churn),
    ("c_unreliable_churn", c_unreliable_churn),
];

const ELECTION_MS: Time = 1_000;

/// The lab's test harness: a cluster plus which nodes are connected.
struct Lab {
    sim: Sim,
    connected: Vec<bool>,
    value: u64,
}

impl Lab {
    fn new(n: usize, seed: u64, net: NetConfig) -> Lab {
        let mut opts = SimOptions::new(seed, n);
        opts.plan = FaultPlan { net, ..FaultPlan::none() };
        opts.trace = super::trace_mode();
        Lab { sim: Sim::new(opts), connected: vec![true; n + 1], value: 0 }
    }

    fn n(&self) -> NodeId {
        self.sim.len() as NodeId
    }

    fn ok(&self) -> Outcome {
        match self.sim.violation() {
            None => Ok(()),
            Some(v) => Err(format!("invariant broken at t={}: {v}", self.sim.now())),
        }
    }

    fn run(&mut self, ms: Time) -> Outcome {
        self.sim.run_for(ms);
        self.ok()
    }

    fn relink(&mut self) {
        self.sim.net.heal();
        for id in 1..=self.n() {
            if !self.connected[id as usize] {
                self.sim.net.isolate(id);
            }
        }
    }

    fn disconnect(&mut self, id: NodeId) {
        self.connected[id as usize] = false;
        self.relink();
    }

    fn connect(&mut self, id: NodeId) {
        self.connected[id as usize] = true;
        self.relink();
    }

    fn up(&self, id: NodeId) -> bool {
        self.sim.server(id).state() == NodeState::Up
    }

    /// Exactly one leader among connected nodes in the latest term.
    fn check_one_leader(&mut self) -> Result<NodeId, String> {
        for _ in 0..10 {
            self.run(ELECTION_MS / 2)?;
            let mut best: Option<(u64, NodeId)> = None;
            let mut count = 0;
            for id in 1..=self.n() {
                if !self.connected[id as usize] || !self.up(id) {
                    continue;
                }
                let node = self.sim.node(id);
                if node.role() == Role::Leader {
                    match best {
                        Some((t, _)) if t == node.term() => count += 1,
                        Some((t, _)) if t > node.term() => {}
                        _ => {
                            best = Some((node.term(), id));
                            count = 1;
                        }
                    }
                }
            }
            if let Some((term, id)) = best {
                ensure(count == 1, || format!("{count} leaders in term {term}"))?;
                return Ok(id);
            }
        }
        Err("no leader elected".into())
    }

    fn check_no_leader(&mut self) -> Outcome {
        self.run(ELECTION_MS)?;
        for id in 1..=self.n() {
            if self.connected[id as usize] && self.up(id) && self.sim.node(id).role() == Role::Leader {
                return Err(format!("disconnected minority node {id} leads"));
            }
        }
        Ok(())
    }

    /// How many nodes applied `index`, and the command there.
    fn n_committed(&self, index: Index) -> Result<(usize, Option<Bytes>), String> {
        let mut count = 0;
        let mut cmd: Option<Bytes> = None;
        for id in 1..=self.n() {
            let s = self.sim.server(id);
            if s.state() != NodeState::Up || s.applied() < index {
                continue;
            }
            let Some(Payload::Command(c)) = self.sim.node(id).entry(index).map(|e| e.payload.clone()) else {
                continue;
            };
            if let Some(prev) = &cmd {
                ensure(prev == &c, || format!("nodes disagree at index {index}"))?;
            }
            cmd = Some(c);
            count += 1;
        }
        Ok((count, cmd))
    }

    fn command(&mut self) -> Bytes {
        self.value += 1;
        Bytes::from(format!("cmd-{}", self.value))
    }

    /// Proposes until some leader accepts `cmd` and `expected` nodes apply
    /// it (the lab's `one()`). Returns its index.
    fn one(&mut self, cmd: Bytes, expected: usize) -> Result<Index, String> {
        let start = self.sim.now();
        let mut next = 1;
        while self.sim.now() < start + 10_000 {
            let mut accepted = None;
            for _ in 0..self.n() {
                let id = next;
                next = next % self.n() + 1;
                if self.connected[id as usize] && self.up(id) {
                    if let Ok((_, index)) = self.sim.propose(id, cmd.clone()) {
                        accepted = Some(index);
                        break;
                    }
                }
            }
            if let Some(index) = accepted {
                let until = self.sim.now() + 2_000;
                while self.sim.now() < until {
                    self.run(20)?;
                    let (count, got) = self.n_committed(index)?;
                    if count >= expected && got.as_ref() == Some(&cmd) {
                        return Ok(index);
                    }
                }
            } else {
                self.run(50)?;
            }
        }
        Err(format!("one({:?}) failed to reach agreement on {expected} nodes", cmd))
    }

    fn next_cmd_one(&mut self, expected: usize) -> Result<Index, String> {
        let c = self.command();
        self.one(c, expected)
    }
}

fn reliable(n: usize) -> Lab {
    Lab::new(n, 1, NetConfig::reliable())
}

fn unreliable() -> NetConfig {
    NetConfig {
        latency_min_ms: 1,
        latency_max_ms: 27,
        loss: 0.1,
        duplicate: 0.01,
        long_delay: 0.0,
        long_delay_max_ms: 0,
    }
}

/// A leader is elected, and stays (same term) without failures.
// Paper 5.2
fn c_initial_election() -> Outcome {
    let mut lab = reliable(3);
    let leader = lab.check_one_leader()?;
    let term = lab.sim.node(leader).term();
    lab.run(2 * ELECTION_MS)?;
    ensure(lab.sim.node(leader).term() == term, || "term changed without failures".into())?;
    lab.check_one_leader().map(|_| ())
}

/// A new leader after the leader disconnects; the old one rejoins as follower;
/// no leader without a quorum.
// Paper 5.2
fn c_reelection() -> Outcome {
    let mut lab = reliable(3);
    let l1 = lab.check_one_leader()?;
    lab.disconnect(l1);
    let l2 = lab.check_one_leader()?;
    lab.connect(l1);
    let l3 = lab.check_one_leader()?;
    ensure(l3 == l2, || "rejoining old leader disrupted the new one".into())?;
    lab.disconnect(l2);
    lab.disconnect(l2 % 3 + 1);
    lab.check_no_leader()?;
    lab.connect(l2 % 3 + 1);
    lab.check_one_leader()?;
    lab.connect(l2);
    lab.check_one_leader().map(|_| ())
}

/// 7 nodes, 3 random ones disconnected per round: always one leader.
// Paper 5.2
fn c_many_elections() -> Outcome {
    let mut lab = reliable(7);
    lab.check_one_leader()?;
    for round in 0..10u64 {
        let picks = [round % 7 + 1, (round * 3 + 1) % 7 + 1, (round * 5 + 4) % 7 + 1];
        for &p in &picks {
            lab.disconnect(p);
        }
        lab.check_one_leader()?;
        for &p in &picks {
            lab.connect(p);
        }
    }
    lab.check_one_leader().map(|_| ())
}

/// Commands commit on every node at consecutive indexes.
// Paper 5.3
fn c_basic_agree() -> Outcome {
    let mut lab = reliable(3);
    lab.check_one_leader()?;
    for i in 1..=3u64 {
        // Index 1 is the first leader's no-op.
        let index = lab.next_cmd_one(3)?;
        ensure(index == i + 1, || format!("command {i} at index {index}"))?;
    }
    Ok(())
}

/// Each command crosses the network about once per follower.
// Paper 5.3
fn c_bytes_per_command() -> Outcome {
    let mut lab = reliable(3);
    lab.check_one_leader()?;
    lab.next_cmd_one(3)?;
    let before = lab.sim.stats().entry_bytes;
    let mut sent = 0u64;
    for i in 0..10u8 {
        let cmd = Bytes::from(vec![b'a' + i; 5_000]);
        sent += cmd.len() as u64;
        lab.one(cmd, 3)?;
    }
    let got = lab.sim.stats().entry_bytes - before;
    let expected = sent * 2;
    ensure(got <= expected + expected / 5, || format!("{got} command bytes sent for {expected} expected"))
}

/// Agreement continues with one follower down, stops with two.
// Paper 5.3
fn c_follower_failure() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    let l1 = lab.check_one_leader()?;
    lab.disconnect(l1 % 3 + 1);
    lab.next_cmd_one(2)?;
    lab.run(ELECTION_MS)?;
    lab.next_cmd_one(2)?;
    let l2 = lab.check_one_leader()?;
    lab.disconnect(l2 % 3 + 1);
    lab.disconnect((l2 + 1) % 3 + 1);
    let cmd = lab.command();
    let (_, index) = lab.sim.propose(l2, cmd).map_err(|e| e.to_string())?;
    lab.run(2 * ELECTION_MS)?;
    let (count, _) = lab.n_committed(index)?;
    ensure(count == 0, || format!("{count} committed without a majority"))
}

/// Agreement continues after the leader disconnects.
// Paper 5.3
fn c_leader_failure() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    let l1 = lab.check_one_leader()?;
    lab.disconnect(l1);
    lab.next_cmd_one(2)?;
    lab.run(ELECTION_MS)?;
    let l2 = lab.check_one_leader()?;
    lab.disconnect(l2);
    let before = lab.sim.committed_index();
    for id in 1..=3 {
        let cmd = lab.command();
        let _ = lab.sim.propose(id, cmd);
    }
    lab.run(2 * ELECTION_MS)?;
    ensure(lab.sim.committed_index() == before, || "committed with one node connected".into())
}

/// A disconnected follower catches up when it rejoins.
// Paper 5.3
fn c_fail_agree() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    let l = lab.check_one_leader()?;
    lab.disconnect(l % 3 + 1);
    for _ in 0..4 {
        lab.next_cmd_one(2)?;
    }
    lab.run(ELECTION_MS)?;
    lab.connect(l % 3 + 1);
    lab.next_cmd_one(3)?;
    lab.next_cmd_one(3).map(|_| ())
}

/// With 3 of 5 disconnected nothing commits; after rejoining it does.
// Paper 5.3
fn c_fail_no_agree() -> Outcome {
    let mut lab = reliable(5);
    lab.next_cmd_one(5)?;
    let l = lab.check_one_leader()?;
    let others: Vec<NodeId> = (1..=5).filter(|&i| i != l).collect();
    for &o in &others[..3] {
        lab.disconnect(o);
    }
    let cmd = lab.command();
    let (_, index) = lab.sim.propose(l, cmd).map_err(|e| e.to_string())?;
    lab.run(2 * ELECTION_MS)?;
    ensure(lab.n_committed(index)?.0 == 0, || "committed without a majority".into())?;
    for &o in &others[..3] {
        lab.connect(o);
    }
    lab.check_one_leader()?;
    lab.next_cmd_one(5).map(|_| ())
}

/// Several proposals at once on the leader all commit in one term.
// Paper 5.3
fn c_concurrent_starts() -> Outcome {
    let mut lab = reliable(3);
    let l = lab.check_one_leader()?;
    let mut indexes = Vec::new();
    let mut term = None;
    for _ in 0..5 {
        let cmd = lab.command();
        let (t, i) = lab.sim.propose(l, cmd).map_err(|e| e.to_string())?;
        ensure(term.is_none_or(|x| x == t), || "term changed".into())?;
        term = Some(t);
        indexes.push(i);
    }
    lab.run(ELECTION_MS)?;
    for i in indexes {
        ensure(lab.n_committed(i)?.0 == 3, || format!("index {i} not on all nodes"))?;
    }
    Ok(())
}

/// A partitioned leader's uncommitted entries are discarded when it rejoins.
// Paper 5.3, 5.4
fn c_rejoin() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    let l1 = lab.check_one_leader()?;
    lab.disconnect(l1);
    for _ in 0..3 {
        let cmd = lab.command();
        let _ = lab.sim.propose(l1, cmd);
    }
    lab.next_cmd_one(2)?;
    let l2 = lab.check_one_leader()?;
    lab.disconnect(l2);
    lab.connect(l1);
    lab.next_cmd_one(2)?;
    lab.connect(l2);
    lab.next_cmd_one(3).map(|_| ())
}

/// The leader backs up quickly over many conflicting entries.
// Paper 5.3 (conflict hints)
fn c_backup() -> Outcome {
    let mut lab = reliable(5);
    lab.next_cmd_one(5)?;
    let l1 = lab.check_one_leader()?;
    let ring = |k: u64| (l1 + k - 1) % 5 + 1;
    for k in 2..=4 {
        lab.disconnect(ring(k));
    }
    for _ in 0..50 {
        let cmd = lab.command();
        let _ = lab.sim.propose(l1, cmd);
    }
    lab.run(ELECTION_MS / 2)?;
    lab.disconnect(l1);
    lab.disconnect(ring(1));
    for k in 2..=4 {
        lab.connect(ring(k));
    }
    for _ in 0..50 {
        lab.next_cmd_one(3)?;
    }
    let l2 = lab.check_one_leader()?;
    let other = (2..=4).map(ring).find(|&x| x != l2).expect("three candidates");
    lab.disconnect(other);
    for _ in 0..50 {
        let cmd = lab.command();
        let _ = lab.sim.propose(l2, cmd);
    }
    lab.run(ELECTION_MS / 2)?;
    for id in 1..=5 {
        lab.disconnect(id);
    }
    lab.connect(l1);
    lab.connect(ring(1));
    lab.connect(other);
    for _ in 0..50 {
        lab.next_cmd_one(3)?;
    }
    for id in 1..=5 {
        lab.connect(id);
    }
    lab.next_cmd_one(5).map(|_| ())
}

/// Message budgets: an election, agreements, and idle heartbeats.
// Paper 5.2, 5.3
fn c_count() -> Outcome {
    let mut lab = reliable(3);
    while lab.sim.leader().is_none() {
        ensure(lab.sim.now() < 5_000, || "no leader".into())?;
        lab.run(5)?;
    }
    let election = lab.sim.stats().messages;
    ensure(election < 30, || format!("{election} messages to elect a leader"))?;
    let before = lab.sim.stats().messages;
    let start = lab.sim.now();
    for _ in 0..10 {
        lab.next_cmd_one(3)?;
    }
    let used = lab.sim.stats().messages - before;
    // Per command: append + ack and commit notice + ack to each of 2 peers,
    // plus heartbeats (every 3 ticks of 10 ms) for the time taken.
    let heartbeats = 4 * (lab.sim.now() - start) / 30 + 4;
    ensure(used <= 10 * 8 + heartbeats, || format!("{used} messages for 10 agreements"))?;
    let before = lab.sim.stats().messages;
    lab.run(1_000)?;
    let idle = lab.sim.stats().messages - before;
    ensure(idle <= 4 * 1_000 / 30 + 8, || format!("{idle} messages while idle for 1 s"))
}

/// Crash and restart all, the leader, and followers: state survives.
// Paper 5.1 (persistent state), figure 2
fn c_persist1() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    for id in 1..=3 {
        lab.sim.crash(id);
    }
    for id in 1..=3 {
        lab.sim.restart(id);
    }
    lab.next_cmd_one(3)?;
    let l1 = lab.check_one_leader()?;
    lab.sim.crash(l1);
    lab.sim.restart(l1);
    lab.next_cmd_one(3)?;
    let l2 = lab.check_one_leader()?;
    lab.sim.crash(l2);
    lab.next_cmd_one(2)?;
    lab.sim.restart(l2);
    lab.run(ELECTION_MS)?;
    let i3 = lab.check_one_leader()? % 3 + 1;
    lab.sim.crash(i3);
    lab.next_cmd_one(2)?;
    lab.sim.restart(i3);
    lab.next_cmd_one(3).map(|_| ())
}

/// Repeated crashes of majorities in a 5-node cluster.
// Paper 5.1, figure 2
fn c_persist2() -> Outcome {
    let mut lab = reliable(5);
    for _ in 0..5 {
        lab.next_cmd_one(5)?;
        let l = lab.check_one_leader()?;
        let r = |k: u64| (l + k - 1) % 5 + 1;
        lab.sim.crash(r(1));
        lab.sim.crash(r(2));
        lab.next_cmd_one(3)?;
        lab.sim.crash(l);
        lab.sim.crash(r(3));
        lab.sim.crash(r(4));
        lab.sim.restart(r(1));
        lab.sim.restart(r(2));
        lab.run(ELECTION_MS)?;
        lab.sim.restart(r(3));
        lab.next_cmd_one(3)?;
        lab.sim.restart(l);
        lab.sim.restart(r(4));
    }
    lab.next_cmd_one(5).map(|_| ())
}

/// A partitioned follower plus crashes of the other two.
// Paper 5.1, figure 2
fn c_persist3() -> Outcome {
    let mut lab = reliable(3);
    lab.next_cmd_one(3)?;
    let l = lab.check_one_leader()?;
    let r = |k: u64| (l + k - 1) % 3 + 1;
    lab.disconnect(r(2));
    lab.next_cmd_one(2)?;
    lab.sim.crash(l);
    lab.sim.crash(r(1));
    lab.connect(r(2));
    lab.sim.restart(l);
    lab.next_cmd_one(2)?;
    lab.sim.restart(r(1));
    lab.next_cmd_one(3).map(|_| ())
}

fn figure8(net: NetConfig, iterations: u64, crash: bool) -> Outcome {
    let mut lab = Lab::new(5, 8, net);
    lab.next_cmd_one(1)?;
    let mut up = 5;
    let mut pick = 0u64;
    for it in 0..iterations {
        let mut leader = None;
        for id in 1..=5 {
            if lab.up(id) && lab.connected[id as usize] {
                let cmd = lab.command();
                if lab.sim.propose(id, cmd).is_ok() {
                    leader = Some(id);
                }
            }
        }
        lab.run(if it % 10 == 0 { ELECTION_MS / 2 } else { 13 })?;
        pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if let Some(l) = leader.filter(|_| (pick >> 33).is_multiple_of(2)) {
            if crash {
                lab.sim.crash(l);
            } else {
                lab.disconnect(l);
            }
            up -= 1;
        }
        if up < 3 {
            let id = (pick >> 40) % 5 + 1;
            let down = if crash { !lab.up(id) } else { !lab.connected[id as usize] };
            if down {
                if crash {
                    lab.sim.restart(id);
                } else {
                    lab.connect(id);
                }
                up += 1;
            }
        }
    }
    for id in 1..=5 {
        lab.sim.restart(id);
        lab.connect(id);
    }
    lab.sim.net.config = lab.sim.net.config.healed();
    lab.next_cmd_one(5).map(|_| ())
}

/// Randomized Figure 8: leaders crash right after proposing; committed
/// entries survive.
// Paper 5.4.2, figure 8
fn c_figure8() -> Outcome {
    figure8(NetConfig::reliable(), 300, true)
}

/// Agreement under 10% loss and 1-27 ms latency.
// Paper 5.3
fn c_unreliable_agree() -> Outcome {
    let mut lab = Lab::new(5, 2, unreliable());
    for _ in 0..50 {
        for id in 1..=5 {
            let cmd = lab.command();
            let _ = lab.sim.propose(id, cmd);
        }
        lab.next_cmd_one(1)?;
    }
    lab.sim.net.config = lab.sim.net.config.healed();
    lab.next_cmd_one(5).map(|_| ())
}

/// Figure 8 with loss and long reordering delays, partitions instead of crashes.
// Paper 5.4.2, figure 8
fn c_figure8_unreliable() -> Outcome {
    let net = NetConfig { long_delay: 0.1, long_delay_max_ms: 2_000, ..unreliable() };
    figure8(net, 300, false)
}

fn churn(faults: FaultKinds, seeds: std::ops::Range<u64>) -> Outcome {
    for seed in seeds {
        let opts = RunOptions { nodes: 5, faults, clients: 6, safety_ms: 4_000, ..RunOptions::default() };
        let r = run_seed(seed, &opts);
        if r.violation.is_some() {
            return Err(r.failure_text());
        }
    }
    Ok(())
}

/// Concurrent clients while nodes crash, restart and partition (reliable links).
// Paper 5, 8
fn c_reliable_churn() -> Outcome {
    churn(FaultKinds { partition: true, crash: true, ..FaultKinds::NONE }, 0..20)
}

/// The same with loss, duplication and reordering.
// Paper 5, 8
fn c_unreliable_churn() -> Outcome {
    churn(FaultKinds { partition: true, crash: true, network: true, ..FaultKinds::NONE }, 0..20)
}
