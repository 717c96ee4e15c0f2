//! The node task, the storage thread and the apply thread.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{
    Action, Body, Config, ConfigChangeError, EarlySends, Entry, Index, Input, Lost, Membership, Message,
    Node, NodeId, Payload, Persist, ProposeError, ReadId, Restored, Role, SnapshotMeta, Term, TransferError,
};
use raft_storage::{FileStorage, MemStorage, Storage, StorageError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, RestoreError};
use crate::handle::{Command, LeaderState, RaftHandle, Shared};
use crate::metrics::Metrics;
use crate::peer::{Connect, Peer};

/// The application's replicated state machine.
///
/// [`StateMachine::apply`] is called for each committed command, in log
/// order, exactly once per node lifetime: after a restart the log is applied
/// again from the beginning (or from the last snapshot), so a state machine
/// that is rebuilt in memory on start comes back to the same state.
/// It runs on a dedicated thread, so it may block.
pub trait StateMachine: Send + 'static {
    /// Applies the command committed at `index` and returns the response
    /// [`RaftHandle::propose`] hands back to the proposer.
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes;

    /// Serializes the whole state, as of the last applied entry. Called
    /// when the core asks for a snapshot (every `snapshot_entries_max`
    /// entries or `snapshot_bytes_max` bytes applied, see
    /// `raft_core::Config`); the log up to it is then compacted. The default
    /// returns nothing, which is only right for a state machine that keeps
    /// no state: override it together with [`StateMachine::restore`].
    fn snapshot(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Replaces the whole state with a snapshot's data: on start when the
    /// data directory holds a snapshot, and when the leader sends one to a
    /// node too far behind. Entries after the snapshot are applied next.
    fn restore(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// [`StateMachine::restore`] for data that might not decode; the
    /// runtime calls this one. The default calls `restore` and succeeds.
    /// Override it to refuse data the state machine cannot rebuild itself
    /// from (a corrupt snapshot, or one written by another program or
    /// format version): [`RaftNode::start`] then fails with
    /// [`Error::Restore`], and a running node stops (logged, like a storage
    /// failure) rather than apply later entries to a state it could not
    /// rebuild. The data has passed the storage and transfer checksums, so
    /// this points at a format mismatch or a bug, not at a bad disk.
    fn try_restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.restore(data);
        Ok(())
    }
}

/// How to start a node.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The core's configuration (id, timeouts in ticks, limits).
    pub config: Config,
    /// The node's data directory (created if missing, locked while open).
    pub data_dir: PathBuf,
    /// Storage tunables.
    pub storage: raft_storage::Options,
    /// The configuration of a brand-new cluster. Used only when the data
    /// directory is empty: it is saved as the index-0 snapshot. With `None`
    /// an empty directory starts a node that joins an existing cluster.
    pub initial_membership: Option<Membership>,
    /// The length of one tick (default 10 ms).
    pub tick: Duration,
    /// Deadline of [`RaftHandle::propose`] (default 5 s).
    pub propose_timeout: Duration,
    /// Deadline of [`RaftHandle::read`] (default 5 s).
    pub read_timeout: Duration,
    /// Capacity of the node's input queue (default 4096).
    pub inbox_max: usize,
    /// Addresses of nodes the membership does not list, used to reach them
    /// anyway: a node started to join an existing cluster (no
    /// `initial_membership`) knows no one until the leader's configuration
    /// entries reach it, yet must answer the leader before that. Give it the
    /// current members here. The membership's addresses take precedence.
    pub peers: BTreeMap<NodeId, String>,
    /// A leader sends a batch of new entries to its followers while its own
    /// write of them is in flight (dissertation 10.2.1), everything else
    /// still waiting for that write; exactly what `raft_core::EarlySends`
    /// allows, the rule raft-sim checks under crashes that lose the write
    /// (its sweeps draw this per seed). On by default: it takes the
    /// leader's fsync off the critical path of every commit. Off: the plain
    /// persist-before-send order.
    pub replicate_while_writing: bool,
    /// Apply committed entries in a tokio task instead of on a thread of the
    /// node's own (off by default). It saves a thread wake-up, and the
    /// switches that go with it, for every batch a node applies, which is
    /// much of a busy node's overhead on few cores; but then
    /// [`StateMachine::apply`] runs on the runtime's worker threads, so it
    /// must never block and must be quick, or it holds up the node's ticks
    /// and messages. Snapshots are still taken and restored on a blocking
    /// thread (`spawn_blocking`), applying nothing meanwhile.
    pub apply_in_task: bool,
}

impl Options {
    /// Defaults for a node with `config` storing its state in `data_dir`.
    pub fn new(config: Config, data_dir: impl Into<PathBuf>) -> Self {
        Options {
            config,
            data_dir: data_dir.into(),
            storage: raft_storage::Options::default(),
            initial_membership: None,
            tick: Duration::from_millis(10),
            propose_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            inbox_max: 4096,
            peers: BTreeMap::new(),
            replicate_while_writing: true,
            apply_in_task: false,
        }
    }

    /// Sets [`Options::initial_membership`].
    pub fn initial_membership(mut self, membership: Membership) -> Self {
        self.initial_membership = Some(membership);
        self
    }

    /// Sets [`Options::peers`].
    pub fn peers<A: Into<String>>(mut self, peers: impl IntoIterator<Item = (NodeId, A)>) -> Self {
        self.peers = peers.into_iter().map(|(id, address)| (id, address.into())).collect();
        self
    }

    /// Sets [`Options::tick`].
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets [`Options::propose_timeout`].
    pub fn propose_timeout(mut self, timeout: Duration) -> Self {
        self.propose_timeout = timeout;
        self
    }
}

/// Starts nodes: see [`RaftNode::start`].
#[derive(Debug)]
pub struct RaftNode(());

impl RaftNode {
    /// Opens the data directory, recovers the node's state, and starts it:
    /// one tokio task owns the `raft_core::Node` and executes its actions,
    /// a dedicated thread makes `Persist`s durable (many per fsync), another
    /// applies committed entries to `state_machine`. Messages leave through
    /// peers made by `connect`; messages arrive through
    /// [`RaftHandle::receive`] (for example from a [`crate::Transport`]).
    ///
    /// Must be called inside a tokio runtime with the timer enabled.
    pub async fn start(
        options: Options,
        state_machine: impl StateMachine,
        connect: impl Connect,
    ) -> Result<RaftHandle, Error> {
        let dir = options.data_dir.clone();
        let storage_options = options.storage.clone();
        let membership = options.initial_membership.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let (mut storage, recovered) = FileStorage::open(&dir, storage_options)?;
            if recovered.is_new() {
                let restored = new_node(&mut storage, membership)?;
                return Ok((storage, restored, None));
            }
            let data = if recovered.restored.snapshot.index > 0 {
                storage.read_snapshot()?.map(|(_, data)| Bytes::from(data))
            } else {
                None
            };
            Ok((storage, recovered.restored, data))
        })
        .await
        .map_err(|_| Error::Stopped)??;
        let (storage, restored, snapshot_data) = opened;
        Self::launch(options, Box::new(storage), None, restored, snapshot_data, state_machine, connect)
    }

    /// [`RaftNode::start`] with the log, hard state and snapshots in memory
    /// ([`raft_storage::MemStorage`]): nothing is written to disk and nothing
    /// survives the process, so a "restart" is a new node. For tests,
    /// benchmarks of the runtime itself, and nodes whose durability comes
    /// from elsewhere. [`Options::data_dir`] is not used.
    pub async fn start_in_memory(
        options: Options,
        state_machine: impl StateMachine,
        connect: impl Connect,
    ) -> Result<RaftHandle, Error> {
        let mut storage = MemStorage::new();
        let restored = new_node(&mut storage, options.initial_membership.clone())?;
        let storage = InlineStorage(Arc::new(std::sync::Mutex::new(storage)));
        let inline = Some(storage.clone());
        Self::launch(options, Box::new(storage), inline, restored, None, state_machine, connect)
    }

    /// Starts the node's task and threads. `inline`: the same storage as
    /// `storage`, written by the node task itself (see [`InlineStorage`]).
    fn launch(
        options: Options,
        storage: Box<dyn Storage + Send>,
        inline: Option<InlineStorage>,
        restored: Restored,
        snapshot_data: Option<Bytes>,
        mut state_machine: impl StateMachine,
        connect: impl Connect,
    ) -> Result<RaftHandle, Error> {
        let id = options.config.id;
        let first_applied = restored.snapshot.index;
        let node = Node::new(options.config.clone(), restored)?;
        let metrics = Metrics::new();
        metrics.set_role(node.role(), node.term(), node.leader());
        metrics.0.commit_index.store(node.commit_index(), Ordering::Relaxed);
        metrics.0.applied_index.store(first_applied, Ordering::Relaxed);
        connect.attach_metrics(metrics.clone());
        let connect: Arc<dyn Connect> = Arc::new(connect);
        let snapshot = match snapshot_data {
            Some(data) => {
                state_machine.try_restore(&data)?;
                Some(LocalSnapshot::new(node.snapshot_meta().clone(), data))
            }
            None => None,
        };

        let (persist_tx, persist_rx) = std::sync::mpsc::channel::<StorageJob>();
        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let storage_thread = std::thread::Builder::new()
            .name(format!("raft-storage-{id}"))
            .spawn({
                let durable_tx = durable_tx.clone();
                let metrics = metrics.clone();
                move || storage_loop(storage, persist_rx, durable_tx, metrics)
            })
            .map_err(|e| Error::Storage(StorageError::Io { path: options.data_dir.clone(), source: e }))?;

        let (applied_tx, applied_rx) = watch::channel(first_applied);
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let applier = Applier {
            state_machine,
            waiters: Waiters::default(),
            applied: applied_tx,
            last_applied: first_applied,
            storage: persist_tx.clone(),
            durable: durable_tx,
            metrics: metrics.clone(),
        };
        let apply_worker = ApplyWorker::start(id, applier, apply_rx, options.apply_in_task)
            .map_err(|e| Error::Storage(StorageError::Io { path: options.data_dir.clone(), source: e }))?;

        let (commands_tx, commands_rx) = mpsc::channel(options.inbox_max.max(1));
        let initial =
            LeaderState { term: node.term(), leader: node.leader(), is_leader: node.role() == Role::Leader };
        let (leader_tx, leader_rx) = watch::channel(initial);
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let (snapshot_tx, snapshot_rx) = watch::channel(first_applied);
        let node_last_index = node.last_index();

        let driver = Driver {
            node,
            connect: connect.clone(),
            peers: HashMap::new(),
            persist_tx: Some(persist_tx),
            inline_storage: inline,
            apply_tx: Some(apply_tx),
            registrations: Vec::new(),
            proposals: Vec::new(),
            leader_tx,
            reads: HashMap::new(),
            next_read: 1,
            in_flight: false,
            held: Vec::new(),
            queued: Vec::new(),
            known_peers: options.peers.clone(),
            pending_config: None,
            pending_transfer: None,
            chunk_max: options.config.bytes_per_message_max.max(1),
            snapshot,
            snapshot_tx,
            incoming: None,
            restoring: VecDeque::new(),
            metrics: metrics.clone(),
            last_term: Some(initial.term),
            proposed_this_round: 0,
            durable_index: node_last_index,
            in_flight_last: None,
            replicate_while_writing: options.replicate_while_writing,
            early: None,
            walked: 0,
            ticks_since_expiry: 0,
        };
        tokio::spawn(driver.run(
            options.tick,
            commands_rx,
            durable_rx,
            storage_thread,
            apply_worker,
            stopped_tx,
        ));

        let shared = Arc::new(Shared {
            id,
            propose_timeout: options.propose_timeout,
            read_timeout: options.read_timeout,
            election_timeout: options.tick * options.config.election_ticks_max,
            connect,
            peers: options.peers,
            metrics,
        });
        Ok(RaftHandle {
            shared,
            commands: commands_tx,
            leader: leader_rx,
            applied: applied_rx,
            stopped: stopped_rx,
            snapshot: snapshot_rx,
        })
    }
}

/// The state of a node whose storage holds nothing yet: a member of a new
/// cluster (its configuration saved as the index-0 snapshot) or, without a
/// membership, a node that joins an existing one.
fn new_node(storage: &mut dyn Storage, membership: Option<Membership>) -> Result<Restored, Error> {
    Ok(match membership {
        Some(m) => {
            let restored = Restored::new_cluster(m);
            storage.save_snapshot(&restored.snapshot, &[])?;
            restored
        }
        None => Restored::joining(),
    })
}

/// A [`MemStorage`] shared by the node task, which writes its batches at
/// once (a write to memory is durable as soon as it returns: handing it to
/// a thread would only add two thread wake-ups per batch), and the storage
/// thread, which saves the snapshots the apply thread takes.
#[derive(Clone)]
struct InlineStorage(Arc<std::sync::Mutex<MemStorage>>);

impl InlineStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemStorage> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for InlineStorage {
    fn write_batch(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        self.lock().write_batch(batch)
    }

    fn write_batch_owned(&mut self, batch: Vec<Persist>) -> Result<(), StorageError> {
        self.lock().write_batch_owned(batch)
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.lock().save_snapshot(meta, data)
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        self.lock().read_snapshot()
    }
}

/// Work for the storage thread, done in order.
enum StorageJob {
    /// `Persist`s and installed snapshots, made durable in order; answered
    /// by one [`Durable::Batch`].
    Batch(Vec<StorageOp>),
    /// A snapshot the state machine took; answered by [`Durable::Snapshot`].
    Snapshot(SnapshotMeta, Bytes),
}

enum StorageOp {
    Persist(Persist),
    /// A snapshot received from the leader (`Action::RestoreSnapshot`).
    Install(SnapshotMeta, Bytes),
}

/// What the storage (and apply) thread tells the node task.
enum Durable {
    Batch(Result<(), StorageError>),
    /// A taken snapshot was saved (`Some`), or was not (`None`: stale, or
    /// the state machine was not at its index); report it to the core.
    Snapshot(Index, Option<LocalSnapshot>),
    Failed(StorageError),
    /// The state machine refused a snapshot from the leader; the apply
    /// thread has stopped.
    RestoreFailed(Index, RestoreError),
}

fn write_ops(storage: &mut dyn Storage, ops: Vec<StorageOp>) -> Result<(), StorageError> {
    let mut run = Vec::new();
    for op in ops {
        match op {
            StorageOp::Persist(persist) => run.push(persist),
            StorageOp::Install(meta, data) => {
                if !run.is_empty() {
                    storage.write_batch_owned(std::mem::take(&mut run))?;
                }
                storage.save_snapshot(&meta, &data)?;
            }
        }
    }
    if run.is_empty() {
        Ok(())
    } else {
        storage.write_batch_owned(run)
    }
}

fn storage_loop(
    mut storage: Box<dyn Storage + Send>,
    jobs: std::sync::mpsc::Receiver<StorageJob>,
    durable: mpsc::UnboundedSender<Durable>,
    metrics: Metrics,
) {
    // The node task sends one batch at a time and gathers everything that
    // arrives meanwhile into the next one: one fdatasync per batch.
    for job in jobs {
        let message = match job {
            StorageJob::Batch(ops) => {
                let entries: usize = ops
                    .iter()
                    .map(|op| match op {
                        StorageOp::Persist(p) => p.entries.len(),
                        StorageOp::Install(..) => 0,
                    })
                    .sum();
                let started = Instant::now();
                let result = write_ops(storage.as_mut(), ops);
                metrics.0.fsync.record_duration(started.elapsed());
                metrics.0.storage_batch_entries.record(entries as u64);
                Durable::Batch(result)
            }
            StorageJob::Snapshot(meta, data) => match storage.save_snapshot(&meta, &data) {
                Ok(()) => Durable::Snapshot(meta.index, Some(LocalSnapshot::new(meta, data))),
                // An installed snapshot overtook it: nothing to compact.
                Err(StorageError::StaleSnapshot { .. }) => Durable::Snapshot(meta.index, None),
                Err(e) => Durable::Failed(e),
            },
        };
        let failed = matches!(message, Durable::Batch(Err(_)) | Durable::Failed(_));
        if durable.send(message).is_err() || failed {
            break;
        }
    }
}

/// The newest snapshot this node holds, kept in memory to send to followers.
#[derive(Clone)]
struct LocalSnapshot {
    meta: SnapshotMeta,
    data: Bytes,
    checksum: u32,
}

impl LocalSnapshot {
    fn new(meta: SnapshotMeta, data: Bytes) -> Self {
        let checksum = raft_core::crc32c(0, &data);
        LocalSnapshot { meta, data, checksum }
    }
}

/// Where a proposal's outcome goes.
type Reply = oneshot::Sender<Result<Bytes, Error>>;

/// The proposal at `index` in `term` waits for its response.
struct Registration {
    index: Index,
    term: Term,
    /// When the node task received it.
    started: Instant,
    /// When it is answered [`Error::Timeout`] if it has not applied.
    deadline: Instant,
    reply: Reply,
}

enum ApplyMsg {
    /// Proposals waiting for their responses. The node task gathers them and
    /// sends them just ahead of its next message to the apply thread (none
    /// can be answered before that), so they cost no wake-up of their own.
    Register(Vec<Registration>),
    Entries(Vec<Entry>),
    Lost(Lost),
    /// Take a snapshot as of `meta.index` and have it saved.
    TakeSnapshot(SnapshotMeta),
    /// Replace the state with this snapshot.
    Restore(SnapshotMeta, Bytes),
    /// Answer [`Error::Timeout`] to the proposals whose deadline is past
    /// (sent by the node task every few ticks while any wait).
    Expire(Instant),
}

/// The proposals waiting for their entries to apply, in index order. They
/// arrive in index order and mostly leave in it, so a sorted deque (push
/// at the back, pop at the front) does what a `BTreeMap` did for a
/// fraction of the work per proposal.
#[derive(Default)]
struct Waiters(VecDeque<Registration>);

impl Waiters {
    fn position(&self, index: Index) -> Result<usize, usize> {
        self.0.binary_search_by_key(&index, |r| r.index)
    }

    /// Adds a waiter, returning the one of the same index it replaces.
    fn insert(&mut self, waiter: Registration) -> Option<Registration> {
        if self.0.back().is_none_or(|last| last.index < waiter.index) {
            self.0.push_back(waiter);
            return None;
        }
        match self.position(waiter.index) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], waiter)),
            Err(i) => {
                self.0.insert(i, waiter);
                None
            }
        }
    }

    fn remove(&mut self, index: Index) -> Option<Registration> {
        match self.0.front() {
            Some(first) if first.index == index => self.0.pop_front(),
            Some(first) if first.index < index => {
                let i = self.position(index).ok()?;
                self.0.remove(i)
            }
            _ => None,
        }
    }

    /// Takes every waiter at or below `index`.
    fn take_through(&mut self, index: Index) -> Vec<Registration> {
        let end = self.0.partition_point(|r| r.index <= index);
        self.0.drain(..end).collect()
    }

    /// Takes every waiter for which `take` says so.
    fn take_if(&mut self, mut take: impl FnMut(&Registration) -> bool) -> Vec<Registration> {
        // Mostly nothing is taken (the expiry runs every few ticks): then
        // the deque is left as it is.
        if !self.0.iter().any(&mut take) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.0.len());
        for waiter in self.0.drain(..) {
            if take(&waiter) {
                taken.push(waiter);
            } else {
                kept.push_back(waiter);
            }
        }
        self.0 = kept;
        taken
    }
}

/// The apply side: the state machine, the proposals waiting for their
/// responses, and what it reports. [`Applier::handle`] takes one message;
/// the loop around it runs on a thread of its own, or as a task
/// ([`Options::apply_in_task`]).
struct Applier<S> {
    state_machine: S,
    waiters: Waiters,
    applied: watch::Sender<Index>,
    last_applied: Index,
    storage: std::sync::mpsc::Sender<StorageJob>,
    durable: mpsc::UnboundedSender<Durable>,
    metrics: Metrics,
}

impl<S: StateMachine> Applier<S> {
    fn answered(&self, n: usize) {
        self.metrics.0.proposals_inflight.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// Answers `error()` to every one of `waiters`.
    fn fail(&self, waiters: Vec<Registration>, error: impl Fn() -> Error) {
        self.answered(waiters.len());
        for waiter in waiters {
            let _ = waiter.reply.send(Err(error()));
        }
    }

    /// Handles one message; `Break` when the applier must stop.
    fn handle(&mut self, msg: ApplyMsg) -> std::ops::ControlFlow<()> {
        let registry = &self.metrics.0;
        match msg {
            ApplyMsg::TakeSnapshot(meta) => {
                if meta.index == self.last_applied {
                    let data = Bytes::from(self.state_machine.snapshot());
                    let _ = self.storage.send(StorageJob::Snapshot(meta, data));
                } else {
                    tracing::warn!(
                        index = meta.index,
                        last_applied = self.last_applied,
                        "snapshot asked at another index: skipped"
                    );
                    let _ = self.durable.send(Durable::Snapshot(meta.index, None));
                }
            }
            ApplyMsg::Restore(meta, data) => {
                if let Err(e) = self.state_machine.try_restore(&data) {
                    // Waiters get Error::Stopped as the applier stops.
                    let _ = self.durable.send(Durable::RestoreFailed(meta.index, e));
                    return std::ops::ControlFlow::Break(());
                }
                self.last_applied = meta.index;
                // Proposals inside the snapshot: whether they committed is
                // unknown here.
                let covered = self.waiters.take_through(meta.index);
                self.fail(covered, || Error::Timeout);
                registry.applied_index.store(meta.index, Ordering::Relaxed);
                self.applied.send_replace(meta.index);
            }
            ApplyMsg::Register(registrations) => {
                for registration in registrations {
                    if let Some(old) = self.waiters.insert(registration) {
                        self.answered(1);
                        let _ = old.reply.send(Err(Error::ProposalLost));
                    }
                }
            }
            ApplyMsg::Expire(now) => {
                // The outcome stays unknown: the entry may still commit.
                let expired = self.waiters.take_if(|w| w.deadline <= now);
                self.fail(expired, || Error::Timeout);
            }
            ApplyMsg::Lost(lost) => {
                let range = lost.first_index..=lost.last_index;
                let gone = self.waiters.take_if(|w| w.term == lost.term && range.contains(&w.index));
                registry.proposals_lost.fetch_add(gone.len() as u64, Ordering::Relaxed);
                self.fail(gone, || Error::ProposalLost);
            }
            ApplyMsg::Entries(entries) => {
                let Some(last) = entries.last().map(|e| e.index) else {
                    return std::ops::ControlFlow::Continue(());
                };
                self.last_applied = last;
                // One clock read per batch for the latency metric.
                let mut now = None;
                for entry in entries {
                    let response = match &entry.payload {
                        Payload::Command(command) => self.state_machine.apply(entry.index, command),
                        _ => Bytes::new(),
                    };
                    if let Some(waiter) = self.waiters.remove(entry.index) {
                        self.answered(1);
                        let outcome = if waiter.term == entry.term {
                            let now = *now.get_or_insert_with(Instant::now);
                            registry.append.record_duration(now.saturating_duration_since(waiter.started));
                            Ok(response)
                        } else {
                            registry.proposals_lost.fetch_add(1, Ordering::Relaxed);
                            Err(Error::ProposalLost)
                        };
                        let _ = waiter.reply.send(outcome);
                    }
                }
                registry.applied_index.store(last, Ordering::Relaxed);
                self.applied.send_replace(last);
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Where the applier runs, to wait for it at the end.
enum ApplyWorker {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl ApplyWorker {
    /// Starts `applier` on a thread of its own, or (`in_task`) as a task.
    fn start<S: StateMachine>(
        id: NodeId,
        mut applier: Applier<S>,
        mut inbox: mpsc::UnboundedReceiver<ApplyMsg>,
        in_task: bool,
    ) -> std::io::Result<ApplyWorker> {
        if in_task {
            return Ok(ApplyWorker::Task(tokio::spawn(async move {
                while let Some(msg) = inbox.recv().await {
                    // Taking or restoring a snapshot walks the whole state:
                    // the applier moves to a blocking thread for it (and
                    // nothing else applies meanwhile, as on its own thread).
                    let flow = if matches!(msg, ApplyMsg::TakeSnapshot(_) | ApplyMsg::Restore(..)) {
                        let slow = tokio::task::spawn_blocking(move || {
                            let flow = applier.handle(msg);
                            (applier, flow)
                        });
                        let Ok((back, flow)) = slow.await else { break };
                        applier = back;
                        flow
                    } else {
                        applier.handle(msg)
                    };
                    if flow.is_break() {
                        break;
                    }
                }
            })));
        }
        let thread = std::thread::Builder::new().name(format!("raft-apply-{id}")).spawn(move || {
            while let Some(msg) = inbox.blocking_recv() {
                if applier.handle(msg).is_break() {
                    break;
                }
            }
        })?;
        Ok(ApplyWorker::Thread(thread))
    }
}

/// Answers a command the node will never step.
fn refuse(command: Command) {
    match command {
        Command::Propose(_, reply, _) => {
            let _ = reply.send(Err(Error::Stopped));
        }
        Command::SetConfiguration(_, reply) => {
            let _ = reply.send(Err(Error::Stopped));
        }
        Command::TransferLeadership(_, reply) => {
            let _ = reply.send(Err(Error::Stopped));
        }
        Command::Read(_, reply) => {
            let _ = reply.send(Err(Error::Stopped));
        }
        Command::Messages(_) | Command::Status(_) | Command::Shutdown => {}
    }
}

struct Driver {
    node: Node,
    connect: Arc<dyn Connect>,
    peers: HashMap<NodeId, (String, Box<dyn Peer>)>,
    persist_tx: Option<std::sync::mpsc::Sender<StorageJob>>,
    /// Storage in memory: batches are written here, by the node task, not
    /// handed to the storage thread (which then only saves snapshots).
    inline_storage: Option<InlineStorage>,
    apply_tx: Option<mpsc::UnboundedSender<ApplyMsg>>,
    /// Proposals accepted since the last message to the apply thread.
    registrations: Vec<Registration>,
    /// Proposals taken this round, not stepped yet (`flush_proposals`).
    proposals: Vec<(Bytes, Reply, Instant)>,
    leader_tx: watch::Sender<LeaderState>,
    reads: HashMap<ReadId, oneshot::Sender<Result<Index, Error>>>,
    next_read: ReadId,
    /// A batch of `Persist`s is being written.
    in_flight: bool,
    /// Actions that follow the in-flight `Persist`s: run once they are durable.
    held: Vec<Action>,
    /// Actions stepped since the last dispatch, not yet started.
    queued: Vec<Action>,
    /// Fallback addresses ([`Options::peers`]).
    known_peers: BTreeMap<NodeId, String>,
    /// The configuration change this node is leading, waiting for its end.
    pending_config: Option<oneshot::Sender<Result<Index, Error>>>,
    /// The leadership transfer waiting for its target to lead.
    pending_transfer: Option<(NodeId, oneshot::Sender<Result<(), Error>>)>,
    /// Largest snapshot chunk in one message.
    chunk_max: usize,
    /// The newest snapshot, to send to followers that are too far behind.
    snapshot: Option<LocalSnapshot>,
    /// Its index, for [`RaftHandle::snapshot_index`].
    snapshot_tx: watch::Sender<Index>,
    /// A snapshot being received from the leader.
    incoming: Option<(SnapshotMeta, Vec<u8>)>,
    /// Data of the `RestoreSnapshot`s held until their batch is durable.
    restoring: VecDeque<Bytes>,
    metrics: Metrics,
    /// The term last reported by `RoleChanged`, to log term changes.
    last_term: Option<Term>,
    /// Proposals stepped since the last dispatch.
    proposed_this_round: u64,
    /// The log is durable up to this index (completed batches).
    durable_index: Index,
    /// The last entry index of the batch in flight, once durable.
    in_flight_last: Option<Index>,
    /// [`Options::replicate_while_writing`].
    replicate_while_writing: bool,
    /// While a batch is written (and leaders replicate while they write):
    /// the `EarlySends` walk that began with it.
    early: Option<EarlySends>,
    /// How many actions at the front of `queued` that walk has seen.
    walked: usize,
    /// Ticks since the last `ApplyMsg::Expire`.
    ticks_since_expiry: u32,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("id", &self.node.id()).finish_non_exhaustive()
    }
}

/// Inputs stepped per wake-up at most, so ticks and durability
/// notifications are never starved.
const COMMANDS_PER_ROUND: usize = 1024;

/// How often (in ticks) proposals past their deadline are answered: a
/// proposal times out at most this many ticks late.
const EXPIRE_TICKS: u32 = 5;

impl Driver {
    async fn run(
        mut self,
        tick: Duration,
        mut commands: mpsc::Receiver<Command>,
        mut durable: mpsc::UnboundedReceiver<Durable>,
        storage_thread: std::thread::JoinHandle<()>,
        apply_worker: ApplyWorker,
        stopped: watch::Sender<bool>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'run: loop {
            tokio::select! {
                biased;
                result = durable.recv() => match result {
                    Some(Durable::Batch(Ok(()))) => self.on_durable(),
                    Some(Durable::Snapshot(index, saved)) => {
                        if let Some(saved) = saved {
                            tracing::info!(node = self.node.id(), index, bytes = saved.data.len(), "snapshot saved");
                            self.snapshot_tx.send_replace(index);
                            self.snapshot = Some(saved);
                        }
                        self.step(Input::SnapshotTaken { index });
                    }
                    Some(Durable::Batch(Err(e)) | Durable::Failed(e)) => {
                        tracing::error!(node = self.node.id(), "storage failed, stopping the node: {e}");
                        break 'run;
                    }
                    Some(Durable::RestoreFailed(index, e)) => {
                        tracing::error!(node = self.node.id(), index, "{e}; stopping the node");
                        break 'run;
                    }
                    None => break 'run,
                },
                _ = interval.tick() => {
                    self.step(Input::Tick);
                    self.expire_proposals();
                }
                command = commands.recv() => match command {
                    Some(command) => if !self.command(command) { break 'run },
                    None => break 'run,
                },
            }
            // Let the tasks woken with this one (proposers whose previous
            // request was just answered, above all) queue their requests
            // first, so that they join this round's batch instead of each
            // starting a round of its own. With nothing else runnable the
            // yield returns at once.
            tokio::task::yield_now().await;
            for _ in 0..COMMANDS_PER_ROUND {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.command(command) {
                            break 'run;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.flush_proposals();
            if !self.dispatch() {
                break 'run;
            }
        }
        // Requests still queued were never stepped: say so, since a dropped
        // reply reads as "taken, outcome unknown".
        for (_, reply, _) in self.proposals.drain(..) {
            let _ = reply.send(Err(Error::Stopped));
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            refuse(command);
        }
        // Closing the channels ends both threads once their queues are done.
        self.persist_tx = None;
        self.apply_tx = None;
        drop(self);
        let apply_thread = match apply_worker {
            ApplyWorker::Thread(thread) => Some(thread),
            ApplyWorker::Task(task) => {
                let _ = task.await;
                None
            }
        };
        let _ = tokio::task::spawn_blocking(move || {
            let _ = storage_thread.join();
            if let Some(thread) = apply_thread {
                let _ = thread.join();
            }
        })
        .await;
        stopped.send_replace(true);
    }

    /// Steps one command; false means stop.
    fn command(&mut self, command: Command) -> bool {
        // Proposals have no order with respect to messages (either order is
        // a valid interleaving), but one taken before a configuration
        // change, a transfer or a read is stepped before it.
        if !matches!(command, Command::Propose(..) | Command::Messages(_)) {
            self.flush_proposals();
        }
        match command {
            Command::Messages(messages) => {
                self.metrics.0.messages_received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                for message in messages {
                    self.step(Input::Message(message));
                }
            }
            Command::Propose(data, reply, deadline) => {
                // Gathered and stepped as one batch (`flush_proposals`):
                // one append, one AppendEntries per follower per round.
                self.proposals.push((data, reply, deadline));
            }
            Command::Read(_, reply) if !self.node.membership().contains(self.node.id()) => {
                let _ = reply.send(Err(Error::NotMember));
            }
            Command::Read(policy, reply) => {
                let id = self.next_read;
                self.next_read += 1;
                self.reads.insert(id, reply);
                self.step(Input::Read { id, policy });
            }
            Command::SetConfiguration(topology, reply) => {
                let start = self.queued.len();
                self.step(Input::SetConfiguration(topology));
                // Refused at once, or already in place: answer now.
                let immediate = self.queued[start..].iter().position(|a| {
                    matches!(a, Action::ConfigChangeCompleted { .. } | Action::ConfigChangeFailed { .. })
                });
                match immediate.map(|i| self.queued.remove(start + i)) {
                    Some(Action::ConfigChangeCompleted { index }) => {
                        let _ = reply.send(Ok(index));
                    }
                    Some(Action::ConfigChangeFailed { error }) => {
                        let _ = reply.send(Err(Error::from_config_change(error)));
                    }
                    _ => {
                        if let Some(old) = self.pending_config.replace(reply) {
                            let _ = old.send(Err(Error::ConfigChange(ConfigChangeError::LeaderLost)));
                        }
                    }
                }
            }
            Command::TransferLeadership(to, reply) => {
                let start = self.queued.len();
                self.step(Input::TransferLeadership { to });
                let immediate =
                    self.queued[start..].iter().position(|a| matches!(a, Action::TransferFailed { .. }));
                match immediate.map(|i| self.queued.remove(start + i)) {
                    Some(Action::TransferFailed { error }) => {
                        let _ = reply.send(Err(Error::from_transfer(error)));
                    }
                    _ => {
                        if let Some((_, old)) = self.pending_transfer.replace((to, reply)) {
                            let _ = old.send(Err(Error::Transfer(TransferError::InProgress)));
                        }
                    }
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.node.status());
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn step(&mut self, input: Input) {
        self.node.step_into(input, &mut self.queued);
    }

    /// Every `EXPIRE_TICKS` ticks, while proposals wait, has the apply
    /// thread answer those past their deadline (proposers arm no timer).
    fn expire_proposals(&mut self) {
        self.ticks_since_expiry += 1;
        if self.ticks_since_expiry < EXPIRE_TICKS {
            return;
        }
        self.ticks_since_expiry = 0;
        if self.metrics.0.proposals_inflight.load(Ordering::Relaxed) > 0 || !self.registrations.is_empty() {
            self.send_to_apply(ApplyMsg::Expire(Instant::now()));
        }
    }

    /// Steps the proposals gathered since the last call as one
    /// `Input::Propose` and registers each for its response. If the core
    /// would refuse the batch for a reason that depends on its contents (a
    /// command too large, the uncommitted limit: `Node::proposal_refusal`),
    /// each is stepped on its own so that only the offending ones are
    /// refused.
    fn flush_proposals(&mut self) {
        if self.proposals.is_empty() {
            return;
        }
        let started = Instant::now();
        let count = self.proposals.len() as u64;
        self.proposed_this_round += count;
        let mut proposals = std::mem::take(&mut self.proposals);
        let batch = proposals.len() > 1;
        let refusal = self.node.proposal_refusal(proposals.iter().map(|(data, _, _)| data));
        match refusal {
            Some(ProposeError::TooLarge { .. } | ProposeError::UncommittedLimit { .. }) if batch => {
                for (data, reply, deadline) in proposals.drain(..) {
                    let outcome = self.propose(vec![data]);
                    self.answer_proposals(outcome, started, [(reply, deadline)]);
                }
            }
            _ => {
                // The commands move into the core: no copy kept.
                let commands = proposals.iter_mut().map(|(data, _, _)| std::mem::take(data)).collect();
                let outcome = self.propose(commands);
                let replies = proposals.drain(..).map(|(_, reply, deadline)| (reply, deadline));
                self.answer_proposals(outcome, started, replies)
            }
        }
        // Keep the buffer's capacity for the next round.
        self.proposals = proposals;
    }

    /// Steps `Input::Propose(commands)`: accepted at (term, first index),
    /// refused, or `None` when the core said neither.
    fn propose(&mut self, commands: Vec<Bytes>) -> Option<Result<(Term, Index), ProposeError>> {
        let start = self.queued.len();
        self.step(Input::Propose(commands));
        self.queued[start..].iter().find_map(|a| match a {
            Action::ProposalAccepted { term, first_index, .. } => Some(Ok((*term, *first_index))),
            Action::ProposalRejected { error, .. } => Some(Err(error.clone())),
            _ => None,
        })
    }

    fn answer_proposals(
        &mut self,
        outcome: Option<Result<(Term, Index), ProposeError>>,
        started: Instant,
        replies: impl IntoIterator<Item = (Reply, Instant)>,
    ) {
        let registry = &self.metrics.0;
        let mut count = 0;
        match outcome {
            Some(Ok((term, first))) => {
                for (index, (reply, deadline)) in (first..).zip(replies) {
                    count += 1;
                    self.registrations.push(Registration { index, term, started, deadline, reply });
                }
                registry.proposals_accepted.fetch_add(count, Ordering::Relaxed);
                registry.proposals_inflight.fetch_add(count, Ordering::Relaxed);
            }
            // Counted before the answer, which a caller may act on at once.
            Some(Err(error)) => {
                for (reply, _) in replies {
                    registry.proposals_rejected.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(Error::from_propose(error.clone())));
                }
            }
            None => {
                for (reply, _) in replies {
                    registry.proposals_rejected.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(Error::NoLeader));
                }
            }
        }
    }

    /// Starts what was stepped: actions before the first `Persist` run now,
    /// every `Persist` goes to the storage thread as one batch, and the rest
    /// waits until that batch is durable. False means the storage thread is
    /// gone.
    fn dispatch(&mut self) -> bool {
        if self.proposed_this_round > 0 {
            self.metrics.0.propose_batch.record(std::mem::take(&mut self.proposed_this_round));
        }
        self.metrics.0.commit_index.store(self.node.commit_index(), Ordering::Relaxed);
        if self.in_flight {
            self.release_durable_applies();
            self.send_early_while_writing();
            return true;
        }
        if self.queued.is_empty() {
            return true;
        }
        let mut actions = std::mem::take(&mut self.queued);
        let durable = |a: &Action| matches!(a, Action::Persist(_) | Action::RestoreSnapshot { .. });
        let Some(first_persist) = actions.iter().position(durable) else {
            for action in actions {
                self.execute(action);
            }
            return true;
        };
        let rest = actions.split_off(first_persist);
        for action in actions {
            self.execute(action);
        }
        let mut batch = Vec::new();
        let mut early = EarlySends::new(self.node.id());
        for action in rest {
            // A leader replicates its new entries while it writes them
            // (dissertation 10.2.1), as far as raft-core's rule allows.
            if early.allows(&action) && self.replicate_while_writing {
                if let Action::Send(message) = action {
                    self.send(message);
                }
                continue;
            }
            match action {
                Action::Persist(persist) => {
                    if let Some(from) = persist.truncate_from {
                        self.durable_index = self.durable_index.min(from.saturating_sub(1));
                    }
                    if let Some(last) = persist.entries.last() {
                        self.in_flight_last = Some(last.index);
                    }
                    batch.push(StorageOp::Persist(persist));
                }
                // Buffering a chunk in memory needs no ordering: do it now,
                // so a RestoreSnapshot later in this batch has its data.
                Action::SnapshotChunk { meta, offset, data, done } => {
                    self.store_chunk(*meta, offset, data, done)
                }
                Action::RestoreSnapshot { meta } => {
                    // Saved in this batch, in order; the state machine is
                    // restored once the batch is durable.
                    let Some(data) = self.take_incoming(&meta) else { return false };
                    // The log is replaced: nothing is known durable until
                    // this batch is.
                    self.durable_index = 0;
                    self.in_flight_last = Some(self.in_flight_last.unwrap_or(0).max(meta.index));
                    batch.push(StorageOp::Install((*meta).clone(), data.clone()));
                    self.restoring.push_back(data);
                    self.held.push(Action::RestoreSnapshot { meta });
                }
                other => self.held.push(other),
            }
        }
        if let Some(storage) = &self.inline_storage {
            let started = Instant::now();
            let mut storage = storage.lock();
            if let Err(e) = write_ops(&mut *storage, batch) {
                tracing::error!(node = self.node.id(), "storage failed, stopping the node: {e}");
                return false;
            }
            drop(storage);
            self.metrics.0.fsync.record_duration(started.elapsed());
            self.in_flight = true;
            self.on_durable();
            return true;
        }
        match &self.persist_tx {
            Some(tx) if tx.send(StorageJob::Batch(batch)).is_ok() => {
                self.in_flight = true;
                // The walk goes on over what is stepped during the write.
                self.early = self.replicate_while_writing.then_some(early);
                self.walked = 0;
                true
            }
            _ => false,
        }
    }

    /// While a batch is being written: hands the apply thread the committed
    /// entries that are already durable here, without waiting for the batch
    /// in flight (a leader's acknowledgements for an earlier batch would
    /// otherwise wait one more fsync). Only `Apply`s at the front of the
    /// apply thread's queue order move: the first action that the apply
    /// thread sees, or that changes the log, stops the scan.
    fn release_durable_applies(&mut self) {
        // What the batch in flight holds for the apply thread goes first.
        let apply_thread_action = |a: &Action| {
            matches!(
                a,
                Action::Apply(_)
                    | Action::ProposalLost(_)
                    | Action::SnapshotNeeded { .. }
                    | Action::RestoreSnapshot { .. }
            )
        };
        if self.held.iter().any(apply_thread_action) {
            return;
        }
        let mut i = 0;
        while i < self.queued.len() {
            match &self.queued[i] {
                Action::Apply(entries) => {
                    let last = entries.last().map_or(0, |e| e.index);
                    if last > self.durable_index {
                        return;
                    }
                    if let Action::Apply(entries) = self.queued.remove(i) {
                        if i < self.walked {
                            self.walked -= 1;
                        }
                        self.send_to_apply(ApplyMsg::Entries(entries));
                    }
                }
                Action::Persist(p) if p.truncate_from.is_some() => return,
                Action::ProposalLost(_)
                | Action::SnapshotNeeded { .. }
                | Action::RestoreSnapshot { .. }
                | Action::SnapshotChunk { .. } => return,
                _ => i += 1,
            }
        }
    }

    /// While a batch is being written: runs the actions stepped since
    /// through the walk of raft-core's `EarlySends` that began with the
    /// batch, in order, and sends at once the messages it allows (a
    /// leader's new entries, as when the batch started); everything else
    /// keeps its place in `queued` and waits for the batch.
    fn send_early_while_writing(&mut self) {
        let Some(mut early) = self.early.take() else { return };
        let mut i = self.walked;
        while i < self.queued.len() {
            if !early.allows(&self.queued[i]) {
                i += 1;
            } else if let Action::Send(message) = self.queued.remove(i) {
                self.send(message);
            }
        }
        self.walked = i;
        self.early = Some(early);
    }

    /// Sends `msg` to the apply thread, after the registrations gathered
    /// so far.
    fn send_to_apply(&mut self, msg: ApplyMsg) {
        if let Some(apply) = &self.apply_tx {
            if !self.registrations.is_empty() {
                let _ = apply.send(ApplyMsg::Register(std::mem::take(&mut self.registrations)));
            }
            let _ = apply.send(msg);
        }
    }

    fn on_durable(&mut self) {
        self.in_flight = false;
        self.early = None;
        self.walked = 0;
        if let Some(last) = self.in_flight_last.take() {
            self.durable_index = self.durable_index.max(last);
        }
        for action in std::mem::take(&mut self.held) {
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Send(message) => self.send(message),
            Action::Apply(entries) => {
                self.send_to_apply(ApplyMsg::Entries(entries));
            }
            Action::ProposalLost(lost) => {
                self.send_to_apply(ApplyMsg::Lost(lost));
            }
            Action::ReadReady { id, index } => {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(Ok(index));
                }
            }
            Action::ReadFailed { id, error } => {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(Err(Error::from_read(error)));
                }
            }
            Action::RoleChanged { role, term, leader } => {
                tracing::debug!(node = self.node.id(), ?role, term, ?leader, "role changed");
                let id = self.node.id();
                if self.last_term.is_some_and(|t| t != term) {
                    self.metrics.0.term_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = id, term, previous = self.last_term, "term changed");
                }
                self.last_term = Some(term);
                match role {
                    Role::Leader => {
                        self.metrics.0.elections_won.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = id, term, "elected leader");
                    }
                    Role::Candidate => tracing::info!(node = id, term, "campaigning"),
                    Role::Follower => tracing::info!(node = id, term, ?leader, "following"),
                }
                self.metrics.set_role(role, term, leader);
                self.leader_tx.send_replace(LeaderState { term, leader, is_leader: role == Role::Leader });
                if leader.is_some()
                    && self.pending_transfer.as_ref().is_some_and(|(to, _)| Some(*to) == leader)
                {
                    if let Some((_, reply)) = self.pending_transfer.take() {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Action::ConfigChangeCompleted { index } => {
                if let Some(reply) = self.pending_config.take() {
                    let _ = reply.send(Ok(index));
                }
            }
            Action::ConfigChangeFailed { error } => {
                if let Some(reply) = self.pending_config.take() {
                    let _ = reply.send(Err(Error::from_config_change(error)));
                }
            }
            Action::TransferFailed { error } => {
                if let Some((_, reply)) = self.pending_transfer.take() {
                    let _ = reply.send(Err(Error::from_transfer(error)));
                }
            }
            Action::SnapshotNeeded { meta } => {
                self.send_to_apply(ApplyMsg::TakeSnapshot(*meta));
            }
            Action::SendSnapshotChunk { to, term, meta, offset } => self.send_chunk(to, term, &meta, offset),
            Action::SnapshotChunk { meta, offset, data, done } => self.store_chunk(*meta, offset, data, done),
            Action::RestoreSnapshot { meta } => {
                // Only ever held behind its own durable write (see dispatch).
                let Some(data) = self.restoring.pop_front() else {
                    tracing::error!(node = self.node.id(), index = meta.index, "restore without data");
                    return;
                };
                tracing::info!(
                    node = self.node.id(),
                    index = meta.index,
                    term = meta.term,
                    bytes = data.len(),
                    "snapshot from the leader installed"
                );
                self.metrics.0.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                self.snapshot = Some(LocalSnapshot::new((*meta).clone(), data.clone()));
                self.snapshot_tx.send_replace(meta.index);
                self.send_to_apply(ApplyMsg::Restore(*meta, data));
            }
            Action::MembershipChanged { membership, index } => {
                tracing::info!(node = self.node.id(), index, ?membership, "configuration changed");
                // Stop the senders of nodes that are gone.
                let known = &self.known_peers;
                self.peers.retain(|id, _| membership.contains(*id) || known.contains_key(id));
            }
            // Replied to when stepped; Persists never reach here.
            _ => {}
        }
    }

    /// Sends the chunk of our snapshot at `offset` (the core asks for one
    /// chunk at a time and resumes from what the follower acknowledges).
    fn send_chunk(&mut self, to: NodeId, term: Term, meta: &SnapshotMeta, offset: u64) {
        let Some(snapshot) = self.snapshot.as_ref().filter(|s| s.meta.index == meta.index) else {
            tracing::warn!(
                node = self.node.id(),
                to,
                index = meta.index,
                "asked to send a snapshot it does not hold"
            );
            return;
        };
        let len = snapshot.data.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(self.chunk_max).min(len);
        let done = end == len;
        if offset == 0 {
            tracing::info!(node = self.node.id(), to, index = meta.index, bytes = len, "sending a snapshot");
        }
        if done {
            self.metrics.0.snapshots_sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = self.node.id(), to, index = meta.index, bytes = len, "snapshot sent");
        }
        let body = Body::InstallSnapshot {
            meta: Box::new(snapshot.meta.clone()),
            offset,
            data: snapshot.data.slice(start..end),
            done,
            checksum: snapshot.checksum,
        };
        let from = self.node.id();
        self.send(Message { from, to, term, body });
    }

    fn store_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: Bytes, done: bool) {
        if offset == 0 {
            self.incoming = Some((meta.clone(), Vec::new()));
        }
        match &mut self.incoming {
            Some((current, buffer)) if current.index == meta.index && buffer.len() as u64 == offset => {
                buffer.extend_from_slice(&data);
                if done {
                    tracing::debug!(
                        node = self.node.id(),
                        index = meta.index,
                        bytes = buffer.len(),
                        "snapshot received"
                    );
                }
            }
            _ => tracing::warn!(
                node = self.node.id(),
                index = meta.index,
                offset,
                "out-of-order snapshot chunk dropped"
            ),
        }
    }

    fn take_incoming(&mut self, meta: &SnapshotMeta) -> Option<Bytes> {
        match self.incoming.take() {
            Some((current, buffer)) if current.index == meta.index => Some(Bytes::from(buffer)),
            _ => {
                tracing::error!(
                    node = self.node.id(),
                    index = meta.index,
                    "asked to restore a snapshot it did not receive; stopping"
                );
                None
            }
        }
    }

    fn send(&mut self, message: Message) {
        let to = message.to;
        let address =
            self.node.membership().address(to).or_else(|| self.known_peers.get(&to).map(String::as_str));
        let Some(address) = address else {
            tracing::trace!(node = self.node.id(), to, "no address for recipient: message dropped");
            return;
        };
        let stale = self.peers.get(&to).is_none_or(|(known, _)| known != address);
        if stale {
            let peer = self.connect.connect(to, address);
            self.peers.insert(to, (address.to_owned(), peer));
        }
        if let Some((_, peer)) = self.peers.get(&to) {
            self.metrics.0.messages_sent.fetch_add(1, Ordering::Relaxed);
            peer.send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Connect for Nothing {
        fn connect(&self, _id: NodeId, _address: &str) -> Box<dyn Peer> {
            unreachable!("a one-node cluster sends nothing")
        }
    }

    fn persists(job: StorageJob) -> Vec<Persist> {
        let StorageJob::Batch(ops) = job else { panic!("expected a batch") };
        ops.into_iter()
            .map(|op| match op {
                StorageOp::Persist(p) => p,
                StorageOp::Install(..) => panic!("unexpected snapshot install"),
            })
            .collect()
    }

    struct TestDriver {
        driver: Driver,
        persist_rx: std::sync::mpsc::Receiver<StorageJob>,
        apply_rx: mpsc::UnboundedReceiver<ApplyMsg>,
        leader_rx: watch::Receiver<LeaderState>,
    }

    /// The driver of a one-node cluster, with the storage and apply
    /// threads' ends of its channels in the test's hands.
    fn test_driver(config: Config) -> TestDriver {
        test_driver_with(config, Membership::with_voters([(1, "local")]), Arc::new(Nothing))
    }

    fn test_driver_with(config: Config, membership: Membership, connect: Arc<dyn Connect>) -> TestDriver {
        let node = Node::new(config, Restored::new_cluster(membership)).unwrap();
        let (persist_tx, persist_rx) = std::sync::mpsc::channel();
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (leader_tx, leader_rx) = watch::channel(LeaderState { term: 0, leader: None, is_leader: false });
        let driver = Driver {
            node,
            connect,
            peers: HashMap::new(),
            persist_tx: Some(persist_tx),
            inline_storage: None,
            apply_tx: Some(apply_tx),
            registrations: Vec::new(),
            proposals: Vec::new(),
            leader_tx,
            reads: HashMap::new(),
            next_read: 1,
            in_flight: false,
            held: Vec::new(),
            queued: Vec::new(),
            known_peers: BTreeMap::new(),
            pending_config: None,
            pending_transfer: None,
            chunk_max: 1 << 20,
            snapshot: None,
            snapshot_tx: watch::channel(0).0,
            incoming: None,
            restoring: VecDeque::new(),
            metrics: Metrics::new(),
            last_term: None,
            proposed_this_round: 0,
            durable_index: 0,
            in_flight_last: None,
            replicate_while_writing: true,
            early: None,
            walked: 0,
            ticks_since_expiry: 0,
        };
        TestDriver { driver, persist_rx, apply_rx, leader_rx }
    }

    /// The raft-core contract: nothing that follows a `Persist` runs before
    /// the storage thread reports the batch durable, and every `Persist`
    /// stepped meanwhile joins the next batch.
    #[test]
    fn actions_after_a_persist_wait_until_it_is_durable() {
        let TestDriver { mut driver, persist_rx, mut apply_rx, leader_rx } = test_driver(Config::new(1));
        // Elect: the vote for itself is a Persist, and the RoleChanged after
        // it is held back until that write is acknowledged.
        while driver.node.role() != Role::Leader {
            driver.step(Input::Tick);
            assert!(driver.dispatch());
        }
        assert!(driver.in_flight);
        let first = persists(persist_rx.try_recv().unwrap());
        assert!(first.iter().any(|p| p.hard_state.is_some()));
        assert!(!leader_rx.borrow().is_leader, "role published before the vote was durable");

        // Proposals stepped while that write is in flight wait, and their
        // Persists are grouped into one batch.
        let (reply_a, _wait_a) = oneshot::channel();
        let (reply_b, _wait_b) = oneshot::channel();
        assert!(driver.command(Command::Propose("a".into(), reply_a, far())));
        assert!(driver.command(Command::Propose("b".into(), reply_b, far())));
        driver.flush_proposals();
        assert!(driver.dispatch());
        assert!(persist_rx.try_recv().is_err(), "a second batch started while one is in flight");

        driver.on_durable();
        assert!(leader_rx.borrow().is_leader);
        assert!(driver.dispatch());
        let second = persists(persist_rx.try_recv().unwrap());
        let entries: usize = second.iter().map(|p| p.entries.len()).sum();
        assert!(entries >= 2, "both proposals in one batch: {second:?}");
        let mut applied_early = false;
        while let Ok(msg) = apply_rx.try_recv() {
            applied_early |= matches!(msg, ApplyMsg::Entries(ref e) if e.iter().any(|e| matches!(e.payload, Payload::Command(_))));
        }
        assert!(!applied_early, "commands applied before they were durable");

        driver.on_durable();
        let mut applied = 0;
        while let Ok(msg) = apply_rx.try_recv() {
            if let ApplyMsg::Entries(entries) = msg {
                applied += entries.iter().filter(|e| matches!(e.payload, Payload::Command(_))).count();
            }
        }
        assert_eq!(applied, 2);
    }

    fn elect(driver: &mut Driver, persist_rx: &std::sync::mpsc::Receiver<StorageJob>) {
        while driver.node.role() != Role::Leader {
            driver.step(Input::Tick);
            assert!(driver.dispatch());
        }
        let _ = persist_rx.try_recv().unwrap();
        driver.on_durable();
        assert!(driver.dispatch());
        while let Ok(job) = persist_rx.try_recv() {
            drop(job);
            driver.on_durable();
            assert!(driver.dispatch());
        }
    }

    /// Proposals taken in one round are stepped as one batch: one Persist
    /// holds them all, in the order they came, each registered at its own
    /// index. A command too large for the core is refused on its own while
    /// the rest of its round is accepted.
    #[test]
    fn a_round_of_proposals_is_one_batch_and_a_bad_one_is_refused_alone() {
        let config = Config { bytes_per_message_max: 64, ..Config::new(1) };
        let TestDriver { mut driver, persist_rx, .. } = test_driver(config);
        elect(&mut driver, &persist_rx);

        let mut waits = Vec::new();
        for command in ["a", "b", "c"] {
            let (reply, wait) = oneshot::channel();
            assert!(driver.command(Command::Propose(command.into(), reply, far())));
            waits.push(wait);
        }
        driver.flush_proposals();
        assert!(driver.dispatch());
        let batch = persists(persist_rx.try_recv().unwrap());
        assert_eq!(batch.len(), 1, "one Persist for the round: {batch:?}");
        let payloads: Vec<_> = batch[0].entries.iter().map(|e| e.payload.clone()).collect();
        let expected: Vec<_> = ["a", "b", "c"].map(|c| Payload::Command(Bytes::from(c))).into();
        assert_eq!(payloads, expected);
        let first = batch[0].entries[0].index;
        let indexes: Vec<_> = driver.registrations.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![first, first + 1, first + 2]);
        driver.on_durable();
        assert!(driver.dispatch());

        let (ok_reply, _ok_wait) = oneshot::channel();
        let (big_reply, mut big_wait) = oneshot::channel();
        assert!(driver.command(Command::Propose("fits".into(), ok_reply, far())));
        assert!(driver.command(Command::Propose(Bytes::from(vec![0u8; 65]), big_reply, far())));
        driver.flush_proposals();
        assert!(matches!(
            big_wait.try_recv(),
            Ok(Err(Error::Rejected(ProposeError::TooLarge { size: 65, max: 64 })))
        ));
        assert!(driver.dispatch());
        let batch = persists(persist_rx.try_recv().unwrap());
        let entries: Vec<_> = batch.iter().flat_map(|p| &p.entries).map(|e| e.payload.clone()).collect();
        assert_eq!(entries, vec![Payload::Command(Bytes::from("fits"))]);
    }

    /// Records every message the driver sends, to any node.
    #[derive(Clone, Default)]
    struct Wire(Arc<std::sync::Mutex<Vec<Message>>>);

    impl Wire {
        fn take(&self) -> Vec<Message> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl Peer for Wire {
        fn send(&self, message: Message) {
            self.0.lock().unwrap().push(message);
        }
    }

    impl Connect for Wire {
        fn connect(&self, _id: NodeId, _address: &str) -> Box<dyn Peer> {
            Box::new(self.clone())
        }
    }

    fn appends_carrying(messages: &[Message], command: &str) -> Vec<(NodeId, Index)> {
        messages
            .iter()
            .filter_map(|m| match &m.body {
                Body::AppendEntries { entries, commit, .. }
                    if entries
                        .iter()
                        .any(|e| e.payload == Payload::Command(Bytes::from(command.to_owned()))) =>
                {
                    Some((m.to, *commit))
                }
                _ => None,
            })
            .collect()
    }

    /// A leader replicates entries proposed while an earlier batch is being
    /// written, as raft-core's `EarlySends` allows (its walk goes on over
    /// what was stepped since), and still holds back any message whose
    /// commit index counts its own copy still in flight.
    #[test]
    fn entries_proposed_during_a_write_go_out_before_it_is_durable_unless_they_reveal_a_commit() {
        let membership = Membership::with_voters([(1, "a"), (2, "b"), (3, "c")]);
        let wire = Wire::default();
        let TestDriver { mut driver, persist_rx, .. } =
            test_driver_with(Config::new(1), membership, Arc::new(wire.clone()));
        // Elect node 1: pre-vote, vote (each persisted), no-op committed.
        let answer = |driver: &mut Driver, wire: &Wire| {
            for m in wire.take() {
                let body = match m.body {
                    Body::PreVote { .. } => Body::PreVoteResponse { granted: true },
                    Body::RequestVote { .. } => Body::RequestVoteResponse { granted: true },
                    Body::AppendEntries { prev_index, entries, .. } => {
                        let match_index = prev_index + entries.len() as Index;
                        Body::AppendEntriesResponse(raft_core::AppendResult::Success { match_index })
                    }
                    _ => continue,
                };
                driver.step(Input::Message(Message { from: m.to, to: 1, term: m.term, body }));
            }
        };
        for _ in 0..200 {
            driver.step(Input::Tick);
            assert!(driver.dispatch());
            while persist_rx.try_recv().is_ok() {
                driver.on_durable();
                assert!(driver.dispatch());
            }
            answer(&mut driver, &wire);
            assert!(driver.dispatch());
            while persist_rx.try_recv().is_ok() {
                driver.on_durable();
                assert!(driver.dispatch());
            }
            if driver.node.role() == Role::Leader && driver.node.commit_index() == driver.node.last_index() {
                break;
            }
        }
        assert_eq!(driver.node.role(), Role::Leader);
        let _ = wire.take();
        let durable = driver.node.last_index();

        // "a" starts a write and goes out with it.
        let (reply, _a) = oneshot::channel();
        assert!(driver.command(Command::Propose("a".into(), reply, far())));
        driver.flush_proposals();
        assert!(driver.dispatch());
        assert!(persist_rx.try_recv().is_ok(), "the batch holding a was not started");
        assert_eq!(appends_carrying(&wire.take(), "a").len(), 2);

        // "b", proposed while that write is in flight, goes out at once.
        let (reply, _b) = oneshot::channel();
        assert!(driver.command(Command::Propose("b".into(), reply, far())));
        driver.flush_proposals();
        assert!(driver.dispatch());
        let b = appends_carrying(&wire.take(), "b");
        assert_eq!(b.len(), 2, "b waited for a's write");
        assert!(b.iter().all(|&(_, commit)| commit <= durable));
        assert!(persist_rx.try_recv().is_err(), "a second batch started during the first");

        // Node 2 acks a and b: with the leader's own (in-flight) copy that is
        // a majority, so the commit index now counts a write not yet
        // durable. "c" must then wait for the write.
        let b_index = durable + 2;
        let ack = Body::AppendEntriesResponse(raft_core::AppendResult::Success { match_index: b_index });
        driver.step(Input::Message(Message { from: 2, to: 1, term: driver.node.term(), body: ack }));
        assert!(driver.node.commit_index() > durable);
        let (reply, _c) = oneshot::channel();
        assert!(driver.command(Command::Propose("c".into(), reply, far())));
        driver.flush_proposals();
        assert!(driver.dispatch());
        assert!(
            appends_carrying(&wire.take(), "c").is_empty(),
            "c revealed a commit counting a pending write"
        );
        // a's write done, the next batch (b and c) starts: the commit still
        // counts b, which is in it, so c waits for that one too.
        driver.on_durable();
        assert!(driver.dispatch());
        assert!(persist_rx.try_recv().is_ok(), "the batch holding b and c was not started");
        assert!(
            appends_carrying(&wire.take(), "c").is_empty(),
            "c revealed a commit counting a pending write"
        );
        driver.on_durable();
        assert!(driver.dispatch());
        let c = appends_carrying(&wire.take(), "c");
        assert_eq!(c.len(), 2, "c not sent once the writes were durable: {c:?}");
    }

    /// A proposal deadline the tests never reach.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// The waiters' deque keeps index order whatever order they come and
    /// go in, like the map it replaced.
    #[test]
    fn waiters_stay_sorted_and_are_found_in_any_order() {
        let waiter = |index, term| Registration {
            index,
            term,
            started: Instant::now(),
            deadline: far(),
            reply: oneshot::channel().0,
        };
        let mut waiters = Waiters::default();
        for index in [5, 6, 9, 7, 3] {
            assert!(waiters.insert(waiter(index, 1)).is_none());
        }
        assert!(
            waiters.insert(waiter(6, 2)).is_some_and(|old| old.term == 1),
            "replaced, the old one returned"
        );
        let order: Vec<Index> = waiters.0.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![3, 5, 6, 7, 9]);
        assert!(waiters.remove(4).is_none());
        assert!(waiters.remove(2).is_none());
        assert!(waiters.remove(3).is_some());
        assert!(waiters.remove(7).is_some());
        assert_eq!(waiters.take_if(|w| w.term == 2).len(), 1);
        assert_eq!(waiters.take_through(5).len(), 1);
        let order: Vec<Index> = waiters.0.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![9]);
    }
}
