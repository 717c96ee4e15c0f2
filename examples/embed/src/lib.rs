//! `raft-core` driven by plain std threads and channels: no async runtime.
//!
//! This crate is an example of embedding the pure [`raft_core::Node`] state
//! machine in an ordinary program. Everything a driver must do is here, in
//! one file:
//!
//! - **Threads.** Each node runs on its own `std::thread` and owns its
//!   [`Node`], its store and its state machine. Nothing is shared; threads
//!   talk only through `std::sync::mpsc` channels.
//! - **Time.** A node thread waits for mail with `recv_timeout` and steps
//!   [`Input::Tick`] every `tick` (10 ms) of wall time. With
//!   [`Config::new`]'s defaults that gives 150-300 ms election timeouts and
//!   30 ms heartbeats.
//! - **The action contract.** After every step the thread executes the
//!   returned [`Action`]s in order: [`Action::Persist`] through
//!   [`Storage::write_batch`] of a [`MemStorage`] (the simulator-style store;
//!   a `FileStorage` would fsync here) before anything that follows it,
//!   [`Action::Send`] into the peer's channel, and [`Action::Apply`] to a
//!   replicated counter, in index order.
//! - **The network.** Every node holds a [`Sender`] to each peer's mailbox.
//!   A message to a stopped node is lost, which Raft tolerates.
//! - **Clients.** Commands are `add N` with a client sequence number, so a
//!   retried command that commits twice is applied once (Raft paper, section
//!   8). The driver sends each command to the leader it knows of and retries
//!   on rejection or timeout.
//!
//! [`run`] plays a short scenario on a 3-node cluster: elect a leader, commit
//! `increments` additions and check that all three counters agree; stop the
//! leader, wait for a new one and commit `increments` more on the remaining
//! two; restart the old leader from its store and check that it catches up
//! so all three agree again. The binary (`cargo run -p embed-example`)
//! prints what happens; the test calls [`run`] directly.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Action, Config, Entry, Index, Input, Membership, Message, Node, NodeId, Payload};
use raft_core::{Restored, Role, Term};
use raft_storage::{MemStorage, Storage};

/// The cluster's node ids.
pub const NODE_IDS: [NodeId; 3] = [1, 2, 3];

/// How long the client waits for one command to commit before it asks
/// again (perhaps another leader).
const RETRY_AFTER: Duration = Duration::from_millis(300);

/// What [`run`] does and how long it may take.
#[derive(Clone, Debug)]
pub struct Options {
    /// Wall time per [`Input::Tick`].
    pub tick: Duration,
    /// Increments committed before the leader is stopped, and again after.
    pub increments: u64,
    /// The whole run fails if it is not done within this time.
    pub deadline: Duration,
    /// Print what happens on stdout.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick: Duration::from_millis(10),
            increments: 10,
            deadline: Duration::from_secs(10),
            verbose: true,
        }
    }
}

/// What a successful [`run`] observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The leader elected first, then stopped.
    pub first_leader: NodeId,
    /// The leader elected once the first was stopped.
    pub second_leader: NodeId,
    /// Each node's final counter.
    pub counters: BTreeMap<NodeId, i64>,
    /// The value every node agreed on at the end.
    pub counter: i64,
    /// How long the run took.
    pub elapsed: Duration,
}

// ----- the replicated state machine -----

/// A client command: add `delta` to the counter. `seq` numbers the client's
/// commands (1, 2, 3, ...) so that duplicates can be recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's sequence number for this command.
    pub seq: u64,
    /// What to add.
    pub delta: i64,
}

impl Command {
    /// Encodes the command as 16 bytes: `seq` then `delta`, little-endian.
    pub fn encode(self) -> Bytes {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.seq.to_le_bytes());
        bytes.extend_from_slice(&self.delta.to_le_bytes());
        Bytes::from(bytes)
    }

    /// The inverse of [`Command::encode`]; `None` if `bytes` is not 16 bytes long.
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        let (seq, delta) = bytes.split_first_chunk::<8>()?;
        let delta: [u8; 8] = delta.try_into().ok()?;
        Some(Command { seq: u64::from_le_bytes(*seq), delta: i64::from_le_bytes(delta) })
    }
}

/// The state machine every node replicates: a counter, plus the last client
/// sequence number applied (so a command committed twice counts once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// The counter.
    pub value: i64,
    /// The highest command `seq` applied.
    pub last_seq: u64,
}

impl Counter {
    /// Applies one committed entry. No-ops and configuration entries change
    /// nothing; a command adds its delta unless it is a duplicate.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        match &entry.payload {
            Payload::Command(data) => {
                let cmd = Command::decode(data)
                    .ok_or_else(|| format!("entry {} holds a malformed command", entry.index))?;
                if cmd.seq > self.last_seq {
                    self.value = self
                        .value
                        .checked_add(cmd.delta)
                        .ok_or_else(|| format!("entry {} overflows the counter", entry.index))?;
                    self.last_seq = cmd.seq;
                }
            }
            Payload::Noop | Payload::Membership(_) => {}
        }
        Ok(())
    }
}

// ----- one node: its thread and how it executes actions -----

/// What arrives in a node's mailbox.
#[derive(Debug)]
enum Mail {
    /// A Raft message from a peer.
    Peer(Message),
    /// A client command to propose.
    Propose(Command),
    /// Shut down and hand back the durable state.
    Stop,
}

/// What node threads tell the driver.
#[derive(Debug)]
enum Event {
    Role { node: NodeId, role: Role, term: Term, leader: Option<NodeId> },
    Applied { node: NodeId, index: Index, counter: Counter },
    Rejected { node: NodeId, seq: Option<u64>, reason: String },
    Lost { node: NodeId, first_index: Index, last_index: Index },
    Failed { node: NodeId, error: String },
}

/// What a stopped node leaves behind, enough to restart it: its durable
/// state and its mailbox (peers still hold senders to it).
#[derive(Debug)]
struct Stopped {
    storage: MemStorage,
    mailbox: Receiver<Mail>,
}

/// Everything one node thread owns.
struct NodeThread {
    node: Node,
    storage: MemStorage,
    counter: Counter,
    peers: BTreeMap<NodeId, Sender<Mail>>,
    events: Sender<Event>,
}

impl NodeThread {
    /// The thread's main loop: a tick every `tick` of wall time, and in
    /// between whatever arrives in the mailbox. Returns on [`Mail::Stop`].
    fn run(mut self, mailbox: Receiver<Mail>, tick: Duration) -> Result<Stopped, String> {
        let mut actions = Vec::new();
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            // Tick first when due, so a busy mailbox cannot stop the clock.
            let (input, proposal) = if now >= next_tick {
                next_tick = now + tick;
                (Input::Tick, None)
            } else {
                match mailbox.recv_timeout(next_tick - now) {
                    Ok(Mail::Peer(message)) => (Input::Message(message), None),
                    Ok(Mail::Propose(cmd)) => (Input::Propose(vec![cmd.encode()]), Some(cmd.seq)),
                    Ok(Mail::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                }
            };
            self.node.step_into(input, &mut actions);
            if let Err(error) = self.execute(&mut actions, proposal) {
                self.report(Event::Failed { node: self.node.id(), error: error.clone() });
                return Err(error);
            }
        }
        Ok(Stopped { storage: self.storage, mailbox })
    }

    /// Executes one step's actions in order. `proposal` is the sequence
    /// number of the command this step proposed, if any.
    fn execute(&mut self, actions: &mut Vec<Action>, proposal: Option<u64>) -> Result<(), String> {
        let id = self.node.id();
        for action in actions.drain(..) {
            match action {
                // Durable before the next action runs: MemStorage is
                // synchronous, so returning from write_batch is enough.
                Action::Persist(persist) => self
                    .storage
                    .write_batch(std::slice::from_ref(&persist))
                    .map_err(|e| format!("node {id}: storage write failed: {e}"))?,
                Action::Send(message) => self.send(message),
                Action::Apply(entries) => self.apply(&entries)?,
                Action::RoleChanged { role, term, leader } => {
                    self.report(Event::Role { node: id, role, term, leader })
                }
                Action::ProposalRejected { error, .. } => {
                    self.report(Event::Rejected { node: id, seq: proposal, reason: error.to_string() })
                }
                Action::ProposalLost(lost) => self.report(Event::Lost {
                    node: id,
                    first_index: lost.first_index,
                    last_index: lost.last_index,
                }),
                // Acceptance is not commitment: the client waits for Apply.
                // This example issues no reads.
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands a message to the peer's mailbox. If the peer is gone the
    /// message is lost, as on a real network.
    fn send(&self, message: Message) {
        if let Some(peer) = self.peers.get(&message.to) {
            let _ = peer.send(Mail::Peer(message));
        }
    }

    /// Applies committed entries in order and reports the new state.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            self.counter.apply(entry).map_err(|e| format!("node {}: {e}", self.node.id()))?;
        }
        if let Some(last) = entries.last() {
            self.report(Event::Applied { node: self.node.id(), index: last.index, counter: self.counter });
        }
        Ok(())
    }

    /// Tells the driver. If the driver is gone there is no one to tell.
    fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

// ----- the driver: starts, stops and watches the nodes; acts as the client -----

/// What the driver knows of a node, from its events.
#[derive(Clone, Copy, Debug)]
struct View {
    role: Role,
    term: Term,
    applied: Index,
    counter: Counter,
}

impl View {
    fn new() -> Self {
        View { role: Role::Follower, term: 0, applied: 0, counter: Counter::default() }
    }
}

/// The cluster as the driver sees it.
struct Cluster {
    opts: Options,
    started: Instant,
    deadline: Instant,
    /// A sender to every node's mailbox, running or not.
    mailboxes: BTreeMap<NodeId, Sender<Mail>>,
    running: BTreeMap<NodeId, JoinHandle<Result<Stopped, String>>>,
    views: BTreeMap<NodeId, View>,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    /// The last command a node refused.
    rejected: Option<u64>,
}

impl Cluster {
    /// Creates the mailboxes and starts every node of a new cluster.
    fn start(opts: &Options) -> Result<Cluster, String> {
        let started = Instant::now();
        let (events_tx, events) = mpsc::channel();
        let (mut mailboxes, mut receivers) = (BTreeMap::new(), Vec::new());
        for id in NODE_IDS {
            let (tx, rx) = mpsc::channel();
            mailboxes.insert(id, tx);
            receivers.push((id, rx));
        }
        let mut cluster = Cluster {
            opts: opts.clone(),
            started,
            deadline: started + opts.deadline,
            mailboxes,
            running: BTreeMap::new(),
            views: BTreeMap::new(),
            events,
            events_tx,
            rejected: None,
        };
        let membership = Membership::with_voters(NODE_IDS.map(|id| (id, format!("t{id}"))));
        for (id, mailbox) in receivers {
            cluster.spawn(id, new_member_storage(&membership)?, mailbox)?;
        }
        cluster.say(format_args!("started nodes {NODE_IDS:?}, one thread each, {:?} ticks", opts.tick));
        Ok(cluster)
    }

    /// Starts node `id` on its own thread from whatever `storage` holds.
    fn spawn(&mut self, id: NodeId, storage: MemStorage, mailbox: Receiver<Mail>) -> Result<(), String> {
        let node = Node::new(Config::new(id), storage.restored())
            .map_err(|e| format!("node {id} cannot start: {e}"))?;
        let peers = self.mailboxes.iter().filter(|(&p, _)| p != id).map(|(&p, tx)| (p, tx.clone())).collect();
        let thread = NodeThread {
            node,
            storage,
            // This example takes no snapshots: the counter is rebuilt by
            // applying the log again from index 1.
            counter: Counter::default(),
            peers,
            events: self.events_tx.clone(),
        };
        let tick = self.opts.tick;
        let handle = thread::Builder::new()
            .name(format!("raft-node-{id}"))
            .spawn(move || thread.run(mailbox, tick))
            .map_err(|e| format!("cannot spawn the thread of node {id}: {e}"))?;
        self.running.insert(id, handle);
        self.views.insert(id, View::new());
        Ok(())
    }

    /// Stops node `id` and waits for its thread; returns its durable state.
    fn stop(&mut self, id: NodeId) -> Result<Stopped, String> {
        let handle = self.running.remove(&id).ok_or_else(|| format!("node {id} is not running"))?;
        if let Some(mailbox) = self.mailboxes.get(&id) {
            let _ = mailbox.send(Mail::Stop);
        }
        let stopped = handle.join().map_err(|_| format!("the thread of node {id} panicked"))??;
        // Take in what the node said before it stopped, so nothing stale
        // arrives after a restart.
        self.drain_events()?;
        Ok(stopped)
    }

    /// Restarts a stopped node from its store. Messages sent to it while
    /// it was down are dropped: that is what a real network does.
    fn restart(&mut self, id: NodeId, stopped: Stopped) -> Result<(), String> {
        let dropped = stopped.mailbox.try_iter().count();
        let restored = stopped.storage.restored();
        self.say(format_args!(
            "restarting node {id} from its store: term {}, {} log entries ({dropped} messages sent while it was down are dropped)",
            restored.hard_state.term,
            restored.entries.len()
        ));
        self.spawn(id, stopped.storage, stopped.mailbox)
    }

    /// Stops every running node.
    fn stop_all(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.running.keys().copied().collect();
        for id in ids {
            self.stop(id)?;
        }
        Ok(())
    }

    /// The leader of the highest term among the running nodes, as far as
    /// the driver knows.
    fn leader(&self) -> Option<NodeId> {
        self.running
            .keys()
            .filter_map(|id| self.views.get(id).map(|v| (*id, v)))
            .filter(|(_, v)| v.role == Role::Leader)
            .max_by_key(|(_, v)| v.term)
            .map(|(id, _)| id)
    }

    /// Waits until some running node is leader.
    fn wait_for_leader(&mut self) -> Result<NodeId, String> {
        self.wait_until("a leader to be elected", |c| c.leader().is_some())?;
        self.leader().ok_or_else(|| "no leader after waiting for one".to_string())
    }

    /// Commits `count` increments of 1, numbered from `first_seq`, one
    /// after the other.
    fn commit_increments(&mut self, first_seq: u64, count: u64) -> Result<(), String> {
        for seq in first_seq..first_seq + count {
            self.commit(Command { seq, delta: 1 })?;
        }
        Ok(())
    }

    /// Acts as a client: proposes `cmd` to the leader and waits until the
    /// leader has applied it; on rejection, timeout or a change of leader
    /// it tries again (the sequence number makes that safe).
    fn commit(&mut self, cmd: Command) -> Result<(), String> {
        loop {
            let leader = self.wait_for_leader()?;
            self.rejected = None;
            if let Some(mailbox) = self.mailboxes.get(&leader) {
                let _ = mailbox.send(Mail::Propose(cmd));
            }
            let applied = |c: &Cluster| c.views.get(&leader).is_some_and(|v| v.counter.last_seq >= cmd.seq);
            self.wait_up_to(RETRY_AFTER, |c| {
                applied(c) || c.rejected == Some(cmd.seq) || c.leader() != Some(leader)
            })?;
            if let Some(view) = self.views.get(&leader).filter(|_| applied(self)) {
                let (index, value) = (view.applied, view.counter.value);
                self.say(format_args!(
                    "add {} (#{}) committed: leader {leader} applied index {index}, counter = {value}",
                    cmd.delta, cmd.seq
                ));
                return Ok(());
            }
            self.say(format_args!(
                "add {} (#{}) not committed by node {leader}: retrying",
                cmd.delta, cmd.seq
            ));
        }
    }

    /// Waits until every running node has applied exactly `expected`.
    fn wait_for_agreement(&mut self, expected: i64) -> Result<(), String> {
        let what = format!("the running nodes to agree on counter = {expected}");
        self.wait_until(&what, |c| {
            c.running.keys().all(|id| c.views.get(id).is_some_and(|v| v.counter.value == expected))
        })?;
        self.drain_events()?;
        let values: Vec<String> = self.counters().iter().map(|(id, v)| format!("node {id} = {v}")).collect();
        self.say(format_args!("agreement: {}", values.join(", ")));
        Ok(())
    }

    /// The counter of each running node.
    fn counters(&self) -> BTreeMap<NodeId, i64> {
        self.running.keys().filter_map(|id| self.views.get(id).map(|v| (*id, v.counter.value))).collect()
    }

    /// Processes the events already queued, without waiting for more.
    fn drain_events(&mut self) -> Result<(), String> {
        while let Ok(event) = self.events.try_recv() {
            self.observe(event)?;
        }
        Ok(())
    }

    /// Processes events until `done` holds; fails at the run's deadline.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) -> Result<(), String> {
        if self.wait_up_to(self.deadline.saturating_duration_since(Instant::now()), &done)? {
            Ok(())
        } else {
            Err(format!("gave up after {:?} waiting for {what}", self.opts.deadline))
        }
    }

    /// Processes events until `done` holds (true) or `timeout` passes
    /// (false), whichever comes first, but never past the run's deadline.
    fn wait_up_to(&mut self, timeout: Duration, done: impl Fn(&Cluster) -> bool) -> Result<bool, String> {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if done(self) {
                return Ok(true);
            }
            match self.events.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(event) => self.observe(event)?,
                Err(RecvTimeoutError::Timeout) => return Ok(done(self)),
                Err(RecvTimeoutError::Disconnected) => return Err("the event channel closed".into()),
            }
        }
    }

    /// Updates the views from one event and prints what is worth seeing.
    fn observe(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Role { node, role, term, leader } => {
                if let Some(view) = self.views.get_mut(&node) {
                    (view.role, view.term) = (role, term);
                }
                let what = match (role, leader) {
                    (Role::Leader, _) => format!("is LEADER of term {term}"),
                    (Role::Candidate, _) => format!("is candidate in term {term}"),
                    (Role::Follower, Some(leader)) => format!("follows node {leader} in term {term}"),
                    (Role::Follower, None) => format!("is follower in term {term}, no leader known"),
                };
                self.say(format_args!("node {node} {what}"));
            }
            Event::Applied { node, index, counter } => {
                if let Some(view) = self.views.get_mut(&node) {
                    (view.applied, view.counter) = (index, counter);
                }
            }
            Event::Rejected { node, seq, reason } => {
                self.rejected = seq;
                self.say(format_args!("node {node} refused a proposal: {reason}"));
            }
            Event::Lost { node, first_index, last_index } => self.say(format_args!(
                "node {node}: entries {first_index}..={last_index} it proposed were overwritten"
            )),
            Event::Failed { node, error } => return Err(format!("node {node} failed: {error}")),
        }
        Ok(())
    }

    /// Prints a line stamped with the time since the start, if verbose.
    fn say(&self, what: fmt::Arguments<'_>) {
        if self.opts.verbose {
            println!("[{:>5} ms] {what}", self.started.elapsed().as_millis());
        }
    }
}

impl Drop for Cluster {
    /// Never leave node threads behind, also when a run fails half-way.
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// A store for a brand-new member: empty, except for the initial
/// configuration saved as the snapshot at index 0 (as `raft-storage`
/// recommends), so that a restart always finds the configuration.
fn new_member_storage(membership: &Membership) -> Result<MemStorage, String> {
    let mut storage = MemStorage::new();
    storage
        .save_snapshot(&Restored::new_cluster(membership.clone()).snapshot, &[])
        .map_err(|e| format!("cannot record the initial configuration: {e}"))?;
    Ok(storage)
}

/// Plays the scenario described in the crate documentation on a fresh
/// 3-node cluster. Fails with a description of what did not happen if any
/// step fails or the run exceeds `opts.deadline`.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let n = opts.increments;
    let per_phase = i64::try_from(n).map_err(|_| format!("{n} increments are too many"))?;
    let total = per_phase.checked_mul(2).ok_or_else(|| format!("{n} increments are too many"))?;
    let mut cluster = Cluster::start(opts)?;

    let first_leader = cluster.wait_for_leader()?;
    cluster.commit_increments(1, n)?;
    cluster.wait_for_agreement(per_phase)?;

    cluster.say(format_args!("stopping the leader, node {first_leader}"));
    let stopped = cluster.stop(first_leader)?;
    let second_leader = cluster.wait_for_leader()?;
    cluster.commit_increments(n + 1, n)?;
    cluster.wait_for_agreement(total)?;

    cluster.restart(first_leader, stopped)?;
    cluster.wait_for_agreement(total)?;

    let counters = cluster.counters();
    cluster.stop_all()?;
    Ok(Outcome { first_leader, second_leader, counters, counter: total, elapsed: cluster.started.elapsed() })
}
