//! The simulated cluster: nodes, disks, state machines, network, clients and
//! checkers driven by one event queue and one seeded RNG.
//!
//! Two ways to drive it. *Random runs* ([`Sim::new`] with a [`FaultPlan`]):
//! ticks, deliveries and faults are scheduled events. *Scripted scenarios*
//! ([`SimOptions::scripted`]): nothing happens unless the script says so:
//! [`Sim::tick`], [`Sim::deliver_all`], [`Sim::isolate`], [`Sim::crash`], ...

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft_core::{
    Action, Body, Config, EarlySends, Entry, Index, Input, Lost, Membership, Message, Node, NodeId, Payload,
    ProposeError, ReadError, ReadId, ReadPolicy, Restored, Role, Term,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{Checker, Property, Violation};
use crate::client::{Client, ReadMode, ReadVia, Reply};
use crate::disk::Disk;
use crate::event::{EventQueue, Time};
use crate::faults::FaultPlan;
use crate::kv::{Command, Kv, Op, Output};
use crate::linearizability::Operation;
use crate::network::{Network, Partition};
use crate::trace::{message_digest, Trace, TraceMode};

mod ext;
pub use ext::{restored_with_snapshot, topology, ConfigEvent, Ext};

/// Everything a simulation is built from.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The run's seed: the only source of randomness.
    pub seed: u64,
    /// Number of voters (ids `1..=nodes`).
    pub nodes: usize,
    /// Logical milliseconds per `Input::Tick`.
    pub tick_ms: Time,
    /// Node configuration template (`id` and `seed` are set per node).
    pub config: Config,
    /// Faults and rates.
    pub plan: FaultPlan,
    /// Scripted mode: no automatic ticks, messages wait for `deliver_*`.
    pub scripted: bool,
    /// Initial durable state per node (default: a new cluster).
    pub restored: Option<Vec<Restored>>,
    /// Concurrent clients (random runs).
    pub clients: usize,
    /// Keys the clients use.
    pub keys: u8,
    /// A client retries after this long without an answer.
    pub client_timeout_ms: Time,
    /// ... and gives up (unknown outcome) after this many timeouts.
    pub client_give_up_after: u32,
    /// Test-only: a leader answers reads from its local state machine
    /// without confirming it still leads (a deliberately broken rule).
    pub broken_local_reads: bool,
    /// How clients read.
    pub reads: ReadMode,
    /// Clients issue reads only (throughput measurements).
    pub read_only: bool,
    /// Per node (index 0 is node 1): its tick interval is
    /// `tick_ms * (1 + d / 1000)`. Empty or short: no drift.
    pub tick_drift_permille: Vec<u32>,
    /// Adversarial clocks: a leader ticks every `tick_ms * (1 + d / 1000)`,
    /// everyone else every `tick_ms` (overrides `tick_drift_permille`).
    pub leader_slow_permille: Option<u32>,
    /// A resumed node first gets the ticks it missed while paused, as a
    /// driver reading a monotonic clock would, before it handles anything
    /// that arrived meanwhile (lease reads rely on it: a paused leader's
    /// clock must not stop).
    pub catch_up_ticks: bool,
    /// Trace lines wanted.
    pub trace: TraceMode,
}

impl SimOptions {
    /// A random-run default for `nodes` nodes and `seed`, without faults.
    pub fn new(seed: u64, nodes: usize) -> Self {
        SimOptions {
            seed,
            nodes,
            tick_ms: 10,
            config: Config::new(1),
            plan: FaultPlan::none(),
            scripted: false,
            restored: None,
            clients: 0,
            keys: 3,
            client_timeout_ms: 500,
            client_give_up_after: 3,
            broken_local_reads: false,
            reads: ReadMode::Log,
            read_only: false,
            tick_drift_permille: Vec::new(),
            leader_slow_permille: None,
            catch_up_ticks: false,
            trace: TraceMode::Off,
        }
    }

    /// A scripted cluster of `nodes` (no automatic ticks or deliveries),
    /// with the paper's section 5 elections (no PreVote or CheckQuorum) so
    /// that [`Sim::campaign`] starts a real election at once.
    pub fn scripted(nodes: usize) -> Self {
        let mut opts = SimOptions { scripted: true, ..SimOptions::new(0, nodes) };
        opts.config.pre_vote = false;
        opts.config.check_quorum = false;
        opts
    }
}

/// Liveness of a simulated process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// Stopped (SIGSTOP): keeps its memory, processes nothing.
    Paused,
    /// Crashed: memory lost, disk kept.
    #[default]
    Crashed,
}

/// Which phase a random run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Faults active, clients issue new operations.
    Safety,
    /// Faults healed; pending operations must finish and nodes converge.
    Liveness,
    /// Done: converged.
    Finished,
}

/// The fault families the nemesis schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nemesis {
    Partition,
    Crash,
    Pause,
    Membership,
}

#[derive(Debug)]
enum Event {
    Tick { node: usize, generation: u32 },
    Deliver(Message),
    DiskSync { node: usize, life: u32 },
    Request { node: usize, client: usize, cmd: Command, via: ReadVia },
    Reply { client: usize, serial: u64, reply: Reply },
    ClientNext { client: usize },
    ClientRetry { client: usize, serial: u64, attempt: u32 },
    ClientTimeout { client: usize, serial: u64, attempt: u32 },
    Nemesis(Nemesis),
    Restart { node: usize },
    Resume { node: usize },
    StartLiveness { bound_ms: Time },
    LivenessCheck,
}

/// One simulated server.
#[derive(Debug, Default)]
pub struct SimNode {
    /// Left the cluster: stays crashed.
    retired: bool,
    id: NodeId,
    node: Option<Node>,
    disk: Disk,
    kv: Kv,
    state: NodeState,
    /// Bumped at each crash: pending disk syncs of an earlier life are void.
    life: u32,
    /// Bumped whenever the tick chain restarts.
    tick_generation: u32,
    outbox: VecDeque<Action>,
    syncing: Option<raft_core::Persist>,
    /// While `syncing` and leaders replicate while they write: the walk of
    /// raft-core's [`EarlySends`] that began with that write, continued over
    /// every action stepped since, as raft-http's driver does.
    early: Option<EarlySends>,
    held: Vec<Event>,
    /// Client requests waiting for their entry to apply: index -> (client, serial, term).
    waiting: BTreeMap<Index, (usize, u64, Term)>,
    applied: Index,
    /// Reads given to raft-core (`Input::Read`), by read id.
    reads: BTreeMap<ReadId, PendingRead>,
    /// Tick interval in microseconds (clock drift), and the carried remainder.
    tick_us: u64,
    tick_carry_us: u64,
    /// When it was paused.
    paused_at: Time,
}

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOwner {
    Client { client: usize, serial: u64 },
    Script,
}

/// A read handed to raft-core, waiting for `ReadReady` and then for the
/// state machine to reach the read index.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    owner: ReadOwner,
    key: u8,
    /// Set by `ReadReady`: answer once `applied >= index`.
    ready_at: Option<Index>,
}

/// What became of a scripted read ([`Sim::read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// No answer yet (not confirmed, or confirmed but not applied yet).
    Pending,
    /// Confirmed at read index `index` and read from the node's state machine.
    Value {
        /// The value read.
        value: u64,
        /// Its modify index.
        mod_index: Index,
        /// The read index raft-core confirmed.
        index: Index,
    },
    /// raft-core refused it.
    Failed(ReadError),
}

impl SimNode {
    /// The raft-core node, unless crashed.
    pub fn raft(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    /// Its state machine.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }
    /// Its disk.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }
    /// Up, paused or crashed.
    pub fn state(&self) -> NodeState {
        self.state
    }
    /// Highest index the driver applied to the state machine.
    pub fn applied(&self) -> Index {
        self.applied
    }
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Messages sent by nodes.
    pub messages: u64,
    /// Command bytes carried in AppendEntries.
    pub entry_bytes: u64,
    /// Client operations completed with a definite answer.
    pub ops_ok: u64,
    /// Client operations abandoned (unknown outcome).
    pub ops_unknown: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Reads answered through ReadIndex or a lease (not the log).
    pub reads_local: u64,
    /// Log entries carrying a client command, counted when they first apply
    /// anywhere.
    pub entries_applied: u64,
    /// AppendEntries a leader sent while its own write was in flight.
    pub early_sends: u64,
    /// Crashes that lost a write in flight.
    pub crashes_while_writing: u64,
}

/// A simulated cluster.
#[derive(Debug)]
pub struct Sim {
    opts: SimOptions,
    now: Time,
    rng: ChaCha8Rng,
    queue: EventQueue<Event>,
    nodes: Vec<SimNode>,
    /// The network (links and rates).
    pub net: Network,
    inflight: VecDeque<Message>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    checker: Checker,
    trace: Trace,
    scratch: Vec<Action>,
    stats: Stats,
    phase: Phase,
    liveness_deadline: Time,
    ext: Ext,
    next_read: ReadId,
    read_results: BTreeMap<ReadId, ReadOutcome>,
    /// Highest index applied anywhere (for `entries_applied`).
    applied_max: Index,
}

fn membership_of(n: usize) -> Membership {
    Membership::with_voters((1..=n as NodeId).map(|id| (id, format!("n{id}"))))
}

impl Sim {
    /// Builds a cluster from `opts`. In a random run, schedules ticks,
    /// clients and the nemesis.
    pub fn new(opts: SimOptions) -> Sim {
        let n = opts.nodes;
        let restored =
            opts.restored.clone().unwrap_or_else(|| vec![Restored::new_cluster(membership_of(n)); n]);
        assert_eq!(restored.len(), n, "one Restored per node");
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let net = Network::new(n, opts.plan.net.clone());
        let nodes: Vec<SimNode> = restored
            .iter()
            .enumerate()
            .map(|(i, r)| SimNode {
                retired: false,
                id: i as NodeId + 1,
                node: None,
                disk: Disk::from_restored(r),
                kv: Kv::default(),
                state: NodeState::Crashed,
                life: 0,
                tick_generation: 0,
                outbox: VecDeque::new(),
                syncing: None,
                early: None,
                held: Vec::new(),
                waiting: BTreeMap::new(),
                applied: r.snapshot.index,
                reads: BTreeMap::new(),
                tick_us: opts.tick_ms
                    * (1000 + u64::from(opts.tick_drift_permille.get(i).copied().unwrap_or(0))),
                tick_carry_us: 0,
                paused_at: 0,
            })
            .collect();
        let disks: Vec<&Disk> = nodes.iter().map(|s| &s.disk).collect();
        let checker = Checker::new(&disks);
        let clients = (0..opts.clients).map(|c| Client::new(c as u32 + 1, n)).collect();
        let trace = Trace::new(opts.trace);
        let mut queue = EventQueue::default();
        if !opts.scripted {
            for c in 0..opts.clients {
                queue.push(rng.gen_range(50..150), Event::ClientNext { client: c });
            }
            let plan = &opts.plan;
            for (every, kind) in [
                (plan.partition_every_ms, Nemesis::Partition),
                (plan.crash_every_ms, Nemesis::Crash),
                (plan.pause_every_ms, Nemesis::Pause),
                (plan.membership_every_ms, Nemesis::Membership),
            ] {
                if let Some(mean) = every {
                    queue.push(rng.gen_range(mean / 2..=mean * 3 / 2), Event::Nemesis(kind));
                }
            }
        }
        let mut sim = Sim {
            now: 0,
            rng,
            queue,
            nodes,
            net,
            inflight: VecDeque::new(),
            clients,
            history: Vec::new(),
            checker,
            trace,
            scratch: Vec::new(),
            stats: Stats::default(),
            phase: Phase::Safety,
            liveness_deadline: Time::MAX,
            ext: Ext::new(&opts),
            next_read: 0,
            read_results: BTreeMap::new(),
            applied_max: 0,
            opts,
        };
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    // ----- accessors -----

    /// Current logical time.
    pub fn now(&self) -> Time {
        self.now
    }
    /// Node `id`'s simulated server.
    pub fn server(&self, id: NodeId) -> &SimNode {
        &self.nodes[id as usize - 1]
    }
    /// Node `id`'s raft-core node (panics if crashed).
    pub fn node(&self, id: NodeId) -> &Node {
        self.server(id).node.as_ref().expect("node is crashed")
    }
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// The first violated invariant, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.checker.violation.as_ref()
    }
    /// The invariant checker (for tests that feed it fabricated input).
    pub fn checker_mut(&mut self) -> &mut Checker {
        &mut self.checker
    }
    /// The client history so far.
    pub fn history(&self) -> &[Operation] {
        &self.history
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// The trace (hash and kept lines).
    pub fn trace(&self) -> &Trace {
        &self.trace
    }
    /// The run's phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Highest index known committed anywhere.
    pub fn committed_index(&self) -> Index {
        self.checker.committed_index()
    }
    /// The current leader with the highest term among running nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|s| s.state == NodeState::Up)
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    // ----- lifecycle -----

    fn boot(&mut self, i: usize) {
        let sn = &mut self.nodes[i];
        let mut config = self.opts.config.clone();
        config.id = sn.id;
        config.seed = self.opts.seed ^ (u64::from(sn.life) << 32);
        let node = Node::new(config, sn.disk.restored()).expect("restored state is valid");
        sn.applied = sn.disk.restored().snapshot.index;
        sn.node = Some(node);
        sn.state = NodeState::Up;
        let data = sn.disk.snapshot_data();
        sn.kv = if data.is_empty() { Kv::default() } else { Kv::from_snapshot(data).expect("saved by us") };
        self.schedule_tick(i, true);
    }

    fn schedule_tick(&mut self, i: usize, fresh: bool) {
        if self.opts.scripted {
            return;
        }
        let sn = &mut self.nodes[i];
        if fresh {
            sn.tick_generation += 1;
        }
        let delay = if fresh {
            sn.tick_carry_us = 0;
            self.rng.gen_range(1..=self.opts.tick_ms)
        } else {
            let tick_us = match self.opts.leader_slow_permille {
                Some(d) if sn.node.as_ref().is_some_and(|n| n.role() == Role::Leader) => {
                    self.opts.tick_ms * (1000 + u64::from(d))
                }
                Some(_) => self.opts.tick_ms * 1000,
                None => sn.tick_us,
            };
            let us = sn.tick_carry_us + tick_us;
            sn.tick_carry_us = us % 1000;
            us / 1000
        };
        let generation = sn.tick_generation;
        self.queue.push(self.now + delay, Event::Tick { node: i, generation });
    }

    /// Crashes node `id`: memory, unsynced writes and queued actions are lost.
    pub fn crash(&mut self, id: NodeId) {
        let i = id as usize - 1;
        let sn = &mut self.nodes[i];
        if sn.state == NodeState::Crashed {
            return;
        }
        sn.node = None;
        sn.state = NodeState::Crashed;
        sn.life += 1;
        sn.tick_generation += 1;
        sn.outbox.clear();
        sn.early = None;
        if sn.syncing.take().is_some() {
            self.stats.crashes_while_writing += 1;
        }
        sn.held.clear();
        sn.waiting.clear();
        sn.reads.clear();
        self.stats.crashes += 1;
        self.trace.record(self.now, 0xc0 ^ id, || format!("crash {id}"));
    }

    /// Restarts node `id` from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let i = id as usize - 1;
        if self.nodes[i].state != NodeState::Crashed || self.nodes[i].retired {
            return;
        }
        self.trace.record(self.now, 0xc1 ^ id, || format!("restart {id}"));
        self.checker.on_restart(i, &self.nodes[i].disk);
        self.boot(i);
    }

    /// Pauses node `id` (it keeps its memory; events wait for it).
    pub fn pause(&mut self, id: NodeId) {
        let i = id as usize - 1;
        if self.nodes[i].state != NodeState::Up {
            return;
        }
        self.nodes[i].state = NodeState::Paused;
        self.nodes[i].tick_generation += 1;
        self.nodes[i].paused_at = self.now;
        self.trace.record(self.now, 0xc2 ^ id, || format!("pause {id}"));
    }

    /// Resumes a paused node: held events run now, in arrival order.
    pub fn resume(&mut self, id: NodeId) {
        let i = id as usize - 1;
        if self.nodes[i].state != NodeState::Paused {
            return;
        }
        self.nodes[i].state = NodeState::Up;
        self.trace.record(self.now, 0xc3 ^ id, || format!("resume {id}"));
        if self.opts.catch_up_ticks {
            let missed = (self.now - self.nodes[i].paused_at) * 1000 / self.nodes[i].tick_us;
            for _ in 0..missed {
                self.step(i, Input::Tick, None);
            }
        }
        for e in std::mem::take(&mut self.nodes[i].held) {
            self.queue.push(self.now, e);
        }
        self.schedule_tick(i, true);
    }

    /// Cuts node `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        self.net.isolate(id);
        self.trace.record(self.now, 0xd0 ^ id, || format!("isolate {id}"));
    }

    /// Reconnects node `id`.
    pub fn reconnect(&mut self, id: NodeId) {
        self.net.reconnect(id);
        self.trace.record(self.now, 0xd1 ^ id, || format!("reconnect {id}"));
    }

    /// Nodes talk iff in the same group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.net.partition(groups);
        self.trace.record(self.now, 0xd2, || format!("partition {groups:?}"));
    }

    /// Applies a partition shape.
    pub fn apply_partition(&mut self, p: &Partition) {
        self.net.apply(p);
        self.trace.record(self.now, 0xd3, || format!("partition: {p}"));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.net.heal();
        self.trace.record(self.now, 0xd4, || "heal".to_string());
    }

    // ----- stepping nodes -----

    /// Steps node `i` and executes the resulting actions (as far as disk
    /// syncs allow). `request` ties a proposal to a client.
    fn step(&mut self, i: usize, input: Input, request: Option<(usize, u64)>) {
        let mut acts = std::mem::take(&mut self.scratch);
        let sn = &mut self.nodes[i];
        let Some(node) = sn.node.as_mut() else { return };
        let before = (node.role(), node.term());
        node.step_into(input, &mut acts);
        let term = node.term();
        for a in &acts {
            match a {
                Action::Persist(p) => self.checker.on_log_change(i, p, term),
                Action::RestoreSnapshot { meta } => {
                    let node = self.nodes[i].node.as_ref().expect("stepped above");
                    self.checker.on_restore_log(i, meta, node);
                }
                Action::Send(m) => {
                    // Checked when the vote is cast, not when the (possibly
                    // sync-delayed) response leaves.
                    if let Body::RequestVoteResponse { granted: true } = m.body {
                        if let Some(candidate) = self.nodes[m.to as usize - 1].node.as_ref() {
                            self.checker.on_vote_granted(i, candidate, m.term);
                        }
                    }
                }
                Action::ProposalAccepted { term, first_index, .. } => {
                    if let Some((client, serial)) = request {
                        self.nodes[i].waiting.insert(*first_index, (client, serial, *term));
                    }
                }
                Action::ProposalRejected { error, .. } => {
                    if let Some((client, serial)) = request {
                        let hint = match error {
                            ProposeError::NotLeader { leader_hint } => *leader_hint,
                            _ => None,
                        };
                        let reply = Reply::NotLeader(hint);
                        self.reply(client, serial, reply);
                    }
                }
                _ => {}
            }
        }
        let cap = self.commit_cap(i);
        let sn = &mut self.nodes[i];
        let node = sn.node.as_ref().expect("stepped above");
        self.checker.after_step(i, node, cap);
        self.check_log_bound(i);
        let sn = &mut self.nodes[i];
        let node = sn.node.as_ref().expect("stepped above");
        if (node.role(), node.term()) != before && self.trace.wants_lines() {
            let (id, role, term) = (node.id(), node.role(), node.term());
            self.trace.record(self.now, 0, || format!("{id} is {role:?} in term {term}"));
        }
        let walked = sn.outbox.len();
        sn.outbox.extend(acts.drain(..));
        self.scratch = acts;
        self.send_early_while_writing(i, walked);
        self.drain(i);
    }

    /// The commit index the checker may count as decided on node `i` (see
    /// [`Checker::after_step`]): with leaders replicating while they write,
    /// only the durable prefix.
    fn commit_cap(&self, i: usize) -> Option<Index> {
        if !self.opts.plan.replicate_while_writing {
            return None;
        }
        // The disk's prefix that the in-memory log shares: a pending
        // truncation makes what follows it stale.
        let sn = &self.nodes[i];
        let queued = sn.outbox.iter().filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        });
        let truncated = sn.syncing.iter().chain(queued).filter_map(|p| p.truncate_from).min();
        let durable = sn.disk.last_index();
        Some(truncated.map_or(durable, |from| durable.min(from.saturating_sub(1))))
    }

    /// While node `i` writes, sends at once what the write's [`EarlySends`]
    /// walk allows among the actions queued from position `from` on (all of
    /// them when the write starts, then those just stepped): the walk goes
    /// on over them in order, and what it does not allow stays queued, in
    /// order, behind the write.
    fn send_early_while_writing(&mut self, i: usize, from: usize) {
        let sn = &mut self.nodes[i];
        let Some(early) = sn.early.as_mut() else { return };
        let mut sends = Vec::new();
        for action in sn.outbox.split_off(from) {
            if !early.allows(&action) {
                sn.outbox.push_back(action);
            } else if let Action::Send(m) = action {
                sends.push(m);
            }
        }
        self.stats.early_sends += sends.len() as u64;
        for m in sends {
            self.send(m);
        }
    }

    /// Executes queued actions of node `i` in order, stopping at a Persist
    /// whose sync takes time: nothing after it runs before it is durable,
    /// except the messages raft-core's [`EarlySends`] lets a leader send
    /// while it writes (when the plan says so).
    fn drain(&mut self, i: usize) {
        loop {
            let sn = &mut self.nodes[i];
            if sn.syncing.is_some() || sn.state != NodeState::Up {
                return;
            }
            let Some(action) = sn.outbox.pop_front() else { return };
            match action {
                Action::Persist(p) => {
                    let max = self.opts.plan.disk_latency_max_ms;
                    if max == 0 || self.opts.scripted {
                        sn.disk.apply(p);
                    } else {
                        let p = if self.opts.plan.replicate_while_writing {
                            let (p, walk) = early_sends_walk(sn.id, p);
                            sn.early = Some(walk);
                            p
                        } else {
                            p
                        };
                        sn.syncing = Some(p);
                        let life = sn.life;
                        let d = self.rng.gen_range(1..=max);
                        self.queue.push(self.now + d, Event::DiskSync { node: i, life });
                        // What is queued behind the write goes through the
                        // walk now; what is stepped later, as it comes.
                        self.send_early_while_writing(i, 0);
                        return;
                    }
                }
                Action::Send(m) => self.send(m),
                Action::Apply(entries) => {
                    // The entries' own writes are durable now: let the
                    // checker count the commit they reveal first.
                    if let (Some(cap), Some(node)) = (self.commit_cap(i), self.nodes[i].node.as_ref()) {
                        self.checker.after_step(i, node, Some(cap));
                    }
                    self.apply(i, entries)
                }
                Action::ProposalLost(lost) => self.lost(i, lost),
                Action::ReadReady { id, index } => {
                    if let Some(r) = self.nodes[i].reads.get_mut(&id) {
                        r.ready_at = Some(index);
                        self.serve_reads(i);
                    }
                }
                Action::ReadFailed { id, error } => self.read_failed(i, id, error),
                Action::SnapshotNeeded { meta } => self.take_snapshot(i, *meta),
                Action::SendSnapshotChunk { to, term, meta, offset } => {
                    self.send_snapshot_chunk(i, to, term, *meta, offset)
                }
                Action::SnapshotChunk { offset, data, .. } => self.snapshot_chunk(i, offset, data),
                Action::RestoreSnapshot { meta } => self.restore_snapshot(i, *meta),
                Action::ConfigChangeCompleted { index } => {
                    self.config_event(i, ConfigEvent::Completed(index))
                }
                Action::ConfigChangeFailed { error } => self.config_event(i, ConfigEvent::Failed(error)),
                Action::TransferFailed { error } => self.config_event(i, ConfigEvent::TransferFailed(error)),
                _ => {}
            }
        }
    }

    fn send(&mut self, m: Message) {
        self.stats.messages += 1;
        if let Body::AppendEntries { entries, .. } = &m.body {
            for e in entries {
                if let Payload::Command(c) = &e.payload {
                    self.stats.entry_bytes += c.len() as u64;
                }
            }
        }
        if self.opts.scripted {
            self.inflight.push_back(m);
            return;
        }
        if !self.net.link_up(m.from, m.to) || self.net.lose(&mut self.rng) {
            return;
        }
        if self.net.duplicate(&mut self.rng) {
            let d = self.net.latency(&mut self.rng);
            self.queue.push(self.now + d, Event::Deliver(m.clone()));
        }
        let d = self.net.latency(&mut self.rng);
        self.queue.push(self.now + d, Event::Deliver(m));
    }

    fn apply(&mut self, i: usize, entries: Vec<Entry>) {
        for e in entries {
            {
                let disks: Vec<&Disk> = self.nodes.iter().map(|s| &s.disk).collect();
                self.checker.on_apply(i, &e, &disks);
            }
            let sn = &mut self.nodes[i];
            sn.applied = e.index;
            if e.index > self.applied_max {
                self.applied_max = e.index;
                if matches!(e.payload, Payload::Command(_)) {
                    self.stats.entries_applied += 1;
                }
            }
            let output = match &e.payload {
                Payload::Command(bytes) => Command::decode(bytes).and_then(|c| sn.kv.apply(e.index, &c)),
                _ => None,
            };
            let hash = sn.kv.state_hash();
            self.checker.on_state(i, e.index, hash, "applies");
            let sn = &mut self.nodes[i];
            let Some((client, serial, term)) = sn.waiting.remove(&e.index) else { continue };
            let reply = match output {
                Some(out) if term == e.term => Reply::Done(out),
                _ => Reply::Lost,
            };
            self.reply(client, serial, reply);
        }
        self.serve_reads(i);
    }

    /// Answers the confirmed reads of node `i` whose read index it applied,
    /// from its local state machine.
    fn serve_reads(&mut self, i: usize) {
        let sn = &mut self.nodes[i];
        let applied = sn.applied;
        let ready: Vec<ReadId> = sn
            .reads
            .iter()
            .filter(|(_, r)| r.ready_at.is_some_and(|at| at <= applied))
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            let sn = &mut self.nodes[i];
            let Some(r) = sn.reads.remove(&id) else { continue };
            let (value, mod_index) = sn.kv.get(r.key);
            let index = r.ready_at.unwrap_or(0);
            self.trace.record(self.now, 0x13 ^ id, || {
                format!("{} read {id} (key {}, index {index}, applied {applied}) = {value}", i + 1, r.key)
            });
            match r.owner {
                ReadOwner::Client { client, serial } => {
                    self.stats.reads_local += 1;
                    self.reply(client, serial, Reply::Done(Output::Read { value, mod_index }));
                }
                ReadOwner::Script => {
                    self.read_results.insert(id, ReadOutcome::Value { value, mod_index, index });
                }
            }
        }
    }

    fn read_failed(&mut self, i: usize, id: ReadId, error: ReadError) {
        let Some(r) = self.nodes[i].reads.remove(&id) else { return };
        self.trace.record(self.now, 0x14 ^ id, || format!("{} read {id} failed: {error}", i + 1));
        match r.owner {
            ReadOwner::Client { client, serial } => {
                let me = self.nodes[i].id;
                let hint = self.nodes[i].node.as_ref().and_then(|n| n.leader()).filter(|&l| l != me);
                self.reply(client, serial, Reply::NotLeader(hint));
            }
            ReadOwner::Script => {
                self.read_results.insert(id, ReadOutcome::Failed(error));
            }
        }
    }

    /// Hands a read of `key` to node `i`'s raft-core (`Input::Read`).
    fn start_read(&mut self, i: usize, owner: ReadOwner, key: u8, policy: ReadPolicy) -> ReadId {
        self.next_read += 1;
        let id = self.next_read;
        self.nodes[i].reads.insert(id, PendingRead { owner, key, ready_at: None });
        self.step(i, Input::Read { id, policy }, None);
        id
    }

    fn lost(&mut self, i: usize, lost: Lost) {
        let sn = &mut self.nodes[i];
        let gone: Vec<Index> =
            sn.waiting.range(lost.first_index..=lost.last_index).map(|(&k, _)| k).collect();
        for k in gone {
            if let Some((client, serial, _)) = self.nodes[i].waiting.remove(&k) {
                self.reply(client, serial, Reply::Lost);
            }
        }
    }

    fn reply(&mut self, client: usize, serial: u64, reply: Reply) {
        if self.opts.scripted || client >= self.clients.len() {
            return;
        }
        if self.net.lose(&mut self.rng) {
            return;
        }
        let d = self.net.latency(&mut self.rng);
        self.queue.push(self.now + d, Event::Reply { client, serial, reply });
    }

    // ----- the event loop -----

    /// Runs events up to and including time `end` (or until a violation or
    /// the end of the liveness phase). Returns false if stopped early.
    pub fn run_until(&mut self, end: Time) -> bool {
        while let Some(t) = self.queue.peek_time() {
            if t > end {
                break;
            }
            let (t, event) = self.queue.pop().expect("peeked");
            self.now = t;
            self.stats.events += 1;
            self.handle(event);
            if self.checker.violation.is_some() || self.phase == Phase::Finished {
                return false;
            }
        }
        self.now = self.now.max(end);
        true
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: Time) -> bool {
        self.run_until(self.now + ms)
    }

    fn hold_if_paused(&mut self, i: usize, e: Event) -> Option<Event> {
        match self.nodes[i].state {
            NodeState::Up => Some(e),
            NodeState::Paused => {
                self.nodes[i].held.push(e);
                None
            }
            NodeState::Crashed => None,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, generation } => {
                let sn = &self.nodes[node];
                if sn.tick_generation != generation || sn.state != NodeState::Up {
                    return;
                }
                self.trace.record(self.now, 0x7 ^ ((node as u64) << 8), String::new);
                self.step(node, Input::Tick, None);
                self.schedule_tick(node, false);
            }
            Event::Deliver(m) => {
                if !self.net.link_up(m.from, m.to) {
                    return;
                }
                let i = m.to as usize - 1;
                let Some(Event::Deliver(m)) = self.hold_if_paused(i, Event::Deliver(m)) else { return };
                self.trace.record(self.now, message_digest(&m), || m.to_string());
                self.step(i, Input::Message(m), None);
            }
            Event::DiskSync { node, life } => {
                if self.nodes[node].life != life {
                    return;
                }
                let Some(e) = self.hold_if_paused(node, Event::DiskSync { node, life }) else { return };
                drop(e);
                let sn = &mut self.nodes[node];
                sn.early = None;
                if let Some(p) = sn.syncing.take() {
                    sn.disk.apply(p);
                }
                self.drain(node);
            }
            Event::Request { node, client, cmd, via } => {
                let Some(Event::Request { cmd, .. }) =
                    self.hold_if_paused(node, Event::Request { node, client, cmd, via })
                else {
                    return;
                };
                self.trace.record(self.now, 0x11 ^ cmd.serial, || {
                    format!("client {} -> {}: {cmd:?} via {via:?}", client + 1, node + 1)
                });
                self.on_request(node, client, cmd, via);
            }
            Event::Reply { client, serial, reply } => self.on_reply(client, serial, reply),
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientRetry { client, serial, attempt } => {
                if self.current_attempt(client, serial) == Some(attempt) {
                    self.send_request(client);
                }
            }
            Event::ClientTimeout { client, serial, attempt } => {
                if self.current_attempt(client, serial) == Some(attempt) {
                    self.on_client_timeout(client);
                }
            }
            Event::Nemesis(kind) => self.nemesis(kind),
            Event::Restart { node } => self.restart(node as NodeId + 1),
            Event::Resume { node } => self.resume(node as NodeId + 1),
            Event::StartLiveness { bound_ms } => self.start_liveness(bound_ms),
            Event::LivenessCheck => self.liveness_check(),
        }
    }

    // ----- clients -----

    fn current_attempt(&self, client: usize, serial: u64) -> Option<u32> {
        let p = self.clients[client].pending.as_ref()?;
        (p.cmd.serial == serial).then_some(p.attempt)
    }

    fn client_next(&mut self, client: usize) {
        if self.phase != Phase::Safety || self.clients[client].pending.is_some() {
            return;
        }
        let (keys, reads, read_only) = (self.opts.keys, self.opts.reads, self.opts.read_only);
        self.clients[client].start(self.now, keys, reads, read_only, &mut self.rng);
        self.send_request(client);
    }

    fn send_request(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let Some(p) = c.pending.as_mut() else { return };
        p.attempt += 1;
        let (cmd, attempt, via) = (p.cmd, p.attempt, p.via);
        let node = c.target() as usize - 1;
        if !self.net.lose(&mut self.rng) {
            let d = self.net.latency(&mut self.rng);
            self.queue.push(self.now + d, Event::Request { node, client, cmd, via });
        }
        let timeout = self.opts.client_timeout_ms;
        self.queue.push(self.now + timeout, Event::ClientTimeout { client, serial: cmd.serial, attempt });
    }

    fn on_request(&mut self, node: usize, client: usize, cmd: Command, via: ReadVia) {
        if self.opts.broken_local_reads && cmd.op == Op::Read {
            let leads = self.nodes[node].node.as_ref().is_some_and(|n| n.role() == Role::Leader);
            if leads {
                let (value, mod_index) = self.nodes[node].kv.get(cmd.key);
                self.reply(client, cmd.serial, Reply::Done(Output::Read { value, mod_index }));
                return;
            }
        }
        let owner = ReadOwner::Client { client, serial: cmd.serial };
        match (cmd.op, via) {
            (Op::Read, ReadVia::ReadIndex) => {
                self.start_read(node, owner, cmd.key, ReadPolicy::Linearizable);
            }
            (Op::Read, ReadVia::Lease) => {
                self.start_read(node, owner, cmd.key, ReadPolicy::Lease);
            }
            _ => self.step(node, Input::Propose(vec![cmd.encode()]), Some((client, cmd.serial))),
        }
    }

    fn on_reply(&mut self, client: usize, serial: u64, reply: Reply) {
        let Some(attempt) = self.current_attempt(client, serial) else { return };
        self.trace.record(self.now, 0x12 ^ serial, || format!("client {} <- {reply:?}", client + 1));
        match reply {
            Reply::Done(out) => {
                if let Some(op) = self.clients[client].complete(self.now, out) {
                    self.history.push(op);
                }
                self.stats.ops_ok += 1;
                let think = self.rng.gen_range(0..=20);
                self.queue.push(self.now + think, Event::ClientNext { client });
            }
            Reply::NotLeader(hint) => {
                self.clients[client].try_next(hint);
                self.queue.push(self.now + 10, Event::ClientRetry { client, serial, attempt });
            }
            Reply::Lost => {
                self.clients[client].try_next(None);
                self.queue.push(self.now + 10, Event::ClientRetry { client, serial, attempt });
            }
        }
    }

    fn on_client_timeout(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let Some(p) = c.pending.as_mut() else { return };
        p.timeouts += 1;
        if self.phase == Phase::Safety && p.timeouts >= self.opts.client_give_up_after {
            if let Some(op) = c.abandon() {
                self.history.push(op);
            }
            self.stats.ops_unknown += 1;
            self.queue.push(self.now + 1, Event::ClientNext { client });
            return;
        }
        c.try_next(None);
        self.send_request(client);
    }

    // ----- faults -----

    fn nemesis(&mut self, kind: Nemesis) {
        if self.phase != Phase::Safety {
            return;
        }
        let n = self.nodes.len();
        let mean = match kind {
            Nemesis::Partition => {
                if self.net.is_partitioned() && self.rng.gen_bool(0.5) {
                    self.heal();
                } else {
                    let p = Network::random_partition(n, &mut self.rng);
                    self.apply_partition(&p);
                }
                self.opts.plan.partition_every_ms
            }
            Nemesis::Crash => {
                if let Some(i) = self.random_up_node() {
                    self.crash(i as NodeId + 1);
                    let down = self.rng.gen_range(1..=self.opts.plan.down_max_ms.max(1));
                    self.queue.push(self.now + down, Event::Restart { node: i });
                }
                self.opts.plan.crash_every_ms
            }
            Nemesis::Pause => {
                if let Some(i) = self.random_up_node() {
                    self.pause(i as NodeId + 1);
                    let down = self.rng.gen_range(20..=1000);
                    self.queue.push(self.now + down, Event::Resume { node: i });
                }
                self.opts.plan.pause_every_ms
            }
            Nemesis::Membership => {
                self.random_membership();
                self.opts.plan.membership_every_ms
            }
        };
        if let Some(mean) = mean {
            let next = self.rng.gen_range(mean / 2..=mean * 3 / 2);
            self.queue.push(self.now + next, Event::Nemesis(kind));
        }
    }

    fn random_up_node(&mut self) -> Option<usize> {
        let up: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].state == NodeState::Up).collect();
        (!up.is_empty()).then(|| up[self.rng.gen_range(0..up.len())])
    }

    /// Schedules the switch to the liveness phase at `at`: every fault
    /// healed, then everything must complete within `bound_ms`.
    pub fn schedule_liveness(&mut self, at: Time, bound_ms: Time) {
        self.queue.push(at, Event::StartLiveness { bound_ms });
    }

    fn start_liveness(&mut self, bound_ms: Time) {
        self.phase = Phase::Liveness;
        self.trace.record(self.now, 0xe0, || "liveness phase: heal everything".to_string());
        self.heal();
        self.net.config = self.net.config.healed();
        // Clocks run true again (drift is a fault of the safety phase).
        self.opts.leader_slow_permille = self.opts.leader_slow_permille.map(|_| 0);
        for sn in &mut self.nodes {
            sn.tick_us = self.opts.tick_ms * 1000;
        }
        for id in 1..=self.nodes.len() as NodeId {
            self.restart(id);
            self.resume(id);
        }
        self.liveness_deadline = self.now + bound_ms;
        self.queue.push(self.now + 50, Event::LivenessCheck);
    }

    /// Whether every node is up with the same log, all of it committed and applied.
    pub fn converged(&self) -> bool {
        let Some(first) = self.nodes.iter().find(|s| !s.retired).and_then(|s| s.node.as_ref()) else {
            return false;
        };
        let (last, term) = (first.last_index(), first.term_at(first.last_index()));
        self.nodes.iter().filter(|s| !s.retired).all(|s| {
            s.state == NodeState::Up
                && s.outbox.is_empty()
                && s.node.as_ref().is_some_and(|n| {
                    n.last_index() == last && n.term_at(last) == term && n.commit_index() == last
                })
                && s.applied == last
        }) && self.leader().is_some()
    }

    fn liveness_check(&mut self) {
        self.settle_membership();
        let idle = self.clients.iter().all(|c| c.pending.is_none());
        if idle && self.converged() && self.membership_settled() {
            self.phase = Phase::Finished;
            return;
        }
        if self.now >= self.liveness_deadline {
            let pending = self.clients.iter().filter(|c| c.pending.is_some()).count();
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|s| match s.node.as_ref() {
                    Some(n) => format!(
                        "{}:{:?}/t{}/last{}/commit{}/applied{}",
                        s.id,
                        n.role(),
                        n.term(),
                        n.last_index(),
                        n.commit_index(),
                        s.applied
                    ),
                    None => format!("{}:down", s.id),
                })
                .collect();
            let detail = format!(
                "not converged after healing: {pending} client ops pending; nodes {}",
                states.join(" ")
            );
            self.checker.violation.get_or_insert(Violation { property: Property::Liveness, detail });
            return;
        }
        self.queue.push(self.now + 50, Event::LivenessCheck);
    }

    // ----- scripted API -----

    /// Scripted: one tick on node `id`.
    pub fn tick(&mut self, id: NodeId) {
        let i = id as usize - 1;
        if self.nodes[i].state == NodeState::Up {
            self.step(i, Input::Tick, None);
        }
    }

    /// Scripted: ticks node `id` until it starts a new election (its term
    /// goes up), at most `election_ticks_max` times.
    pub fn campaign(&mut self, id: NodeId) {
        let before = self.node(id).term();
        for _ in 0..=self.opts.config.election_ticks_max {
            self.tick(id);
            if self.node(id).term() > before {
                return;
            }
        }
        panic!("node {id} did not campaign");
    }

    /// Scripted: `n` ticks on every running node.
    pub fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            for id in 1..=self.nodes.len() as NodeId {
                self.tick(id);
            }
        }
    }

    /// Scripted: messages waiting for delivery.
    pub fn inflight(&self) -> &VecDeque<Message> {
        &self.inflight
    }

    /// Scripted: delivers messages (and the messages they cause) until none
    /// is left, dropping those the network blocks, that go to a crashed
    /// node, or for which `keep` returns false. Returns the number delivered.
    pub fn deliver_where(&mut self, mut keep: impl FnMut(&Message) -> bool) -> usize {
        let mut delivered = 0;
        while let Some(m) = self.inflight.pop_front() {
            let i = m.to as usize - 1;
            let ok = self.net.link_up(m.from, m.to) && self.nodes[i].state == NodeState::Up && keep(&m);
            if !ok {
                self.trace.record(self.now, 0xdd, || format!("{m} (dropped)"));
                continue;
            }
            self.stats.events += 1;
            self.trace.record(self.now, message_digest(&m), || m.to_string());
            self.step(i, Input::Message(m), None);
            delivered += 1;
        }
        delivered
    }

    /// Scripted: delivers everything the network allows, until quiet.
    pub fn deliver_all(&mut self) -> usize {
        self.deliver_where(|_| true)
    }

    /// Scripted: drops every message in flight.
    pub fn drop_all(&mut self) {
        self.inflight.clear();
    }

    /// Proposes `command` directly on node `id` (as the application would).
    pub fn propose(&mut self, id: NodeId, command: Bytes) -> Result<(Term, Index), ProposeError> {
        let i = id as usize - 1;
        if self.nodes[i].state != NodeState::Up {
            return Err(ProposeError::NotLeader { leader_hint: None });
        }
        let mut result = Err(ProposeError::Empty);
        let mut acts = std::mem::take(&mut self.scratch);
        let node = self.nodes[i].node.as_mut().expect("up");
        node.step_into(Input::Propose(vec![command]), &mut acts);
        let term = node.term();
        for a in &acts {
            match a {
                Action::Persist(p) => self.checker.on_log_change(i, p, term),
                Action::ProposalAccepted { term, first_index, .. } => result = Ok((*term, *first_index)),
                Action::ProposalRejected { error, .. } => result = Err(error.clone()),
                _ => {}
            }
        }
        let cap = self.commit_cap(i);
        let sn = &mut self.nodes[i];
        self.checker.after_step(i, sn.node.as_ref().expect("up"), cap);
        let walked = sn.outbox.len();
        sn.outbox.extend(acts.drain(..));
        self.scratch = acts;
        self.send_early_while_writing(i, walked);
        self.drain(i);
        result
    }

    /// Scripted: asks node `id` for a read of `key` (`Input::Read`); see
    /// [`Sim::read_outcome`].
    pub fn read(&mut self, id: NodeId, key: u8, policy: ReadPolicy) -> ReadId {
        self.start_read(id as usize - 1, ReadOwner::Script, key, policy)
    }

    /// Scripted: what became of read `read`.
    pub fn read_outcome(&self, read: ReadId) -> ReadOutcome {
        self.read_results.get(&read).copied().unwrap_or(ReadOutcome::Pending)
    }

    /// A scripted key-value write (no client session).
    pub fn write_command(key: u8, value: u64) -> Bytes {
        Command { client: 0, serial: 0, key, op: Op::Write(value) }.encode()
    }
}

/// Builds the durable state of a node whose log has the given entry terms
/// (index 1 first) and commands, with `term` as its stored term.
pub fn restored_with_log(nodes: usize, terms: &[Term], commands: &[Bytes], term: Term) -> Restored {
    let mut r = Restored::new_cluster(membership_of(nodes));
    r.hard_state.term = term;
    r.entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            term: t,
            index: i as Index + 1,
            payload: commands.get(i).cloned().map_or(Payload::Noop, Payload::Command),
        })
        .collect();
    r
}

/// The [`EarlySends`] walk of node `me` that begins with the write of `p`,
/// and `p` back.
fn early_sends_walk(me: NodeId, p: raft_core::Persist) -> (raft_core::Persist, EarlySends) {
    let mut early = EarlySends::new(me);
    let write = Action::Persist(p);
    early.allows(&write);
    let Action::Persist(p) = write else { unreachable!("built above") };
    (p, early)
}
