//! Roles and step dispatch: the Raft state machine itself.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::{ConfigChangeError, Lost, NodeError, ProposeError, TransferError};
use crate::log::Log;
use crate::membership::{Membership, Topology};
pub use crate::message::SnapshotMeta;
use crate::message::{
    AppendResult, Body, ConflictHint, Entry, HardState, Index, Message, NodeId, Payload, Term, TERM_MAX,
};
use crate::progress::{PeerMap, Progress, ProgressState};
use crate::quorum::VoteResult;
use crate::read::{Forwarded, Origin, ReadError, ReadId, ReadPolicy, ReadQueue};
use crate::rng::Rng;

mod reconfig;
mod snapshot;

use snapshot::Receiving;

/// A node's role (paper section 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Passive: answers leaders and candidates.
    Follower,
    /// Campaigning for votes.
    Candidate,
    /// Handles proposals and replicates the log.
    Leader,
}

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// One unit of logical time passed. The only clock the core has.
    Tick,
    /// A message from another node arrived.
    Message(Message),
    /// The application proposes commands (a batch; accepted or rejected as one).
    Propose(Vec<Bytes>),
    /// The application wants a linearizable read; answered by
    /// [`Action::ReadReady`] or [`Action::ReadFailed`] with the same id.
    Read {
        /// The driver's name for this read.
        id: ReadId,
        /// ReadIndex or lease.
        policy: ReadPolicy,
    },
    /// Move the cluster to this complete topology (paper section 6): new
    /// voters first catch up as learners, then the leader goes through the
    /// joint configuration C_old,new to C_new. Answered by
    /// [`Action::ConfigChangeCompleted`] or [`Action::ConfigChangeFailed`].
    SetConfiguration(Topology),
    /// The application saved a snapshot of its state machine at `index`
    /// (asked for by [`Action::SnapshotNeeded`]; durable, with the meta the
    /// action gave). The core compacts its log up to it, keeping
    /// [`crate::Config::log_tail_entries`] before it.
    SnapshotTaken {
        /// The snapshot's last included index.
        index: Index,
    },
    /// Hand leadership to `to` (dissertation 3.10). Proposals are refused
    /// meanwhile; the transfer is abandoned after an election timeout.
    TransferLeadership {
        /// The voter that should lead.
        to: NodeId,
    },
}

/// What the driver must do, in the order given. See [`Node`] for the contract.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Make this durable before executing any later action.
    Persist(Persist),
    /// Send a message (after every earlier `Persist` is durable).
    Send(Message),
    /// Apply these committed entries to the state machine, in order.
    Apply(Vec<Entry>),
    /// A proposal was appended at `first_index ..= last_index` in `term`.
    /// It is not committed yet: wait for its entries in [`Action::Apply`].
    ProposalAccepted {
        /// The leader's term.
        term: Term,
        /// Index of the first command of the batch.
        first_index: Index,
        /// Index of the last command of the batch.
        last_index: Index,
    },
    /// A proposal of `count` commands was refused.
    ProposalRejected {
        /// How many commands the refused batch held.
        count: usize,
        /// Why.
        error: ProposeError,
    },
    /// Entries this node accepted as leader were overwritten by a later
    /// leader's: they will never apply. Report failure to their clients.
    ProposalLost(Lost),
    /// The read `id` is confirmed: once the state machine has applied
    /// `index` (wait for it on a follower), reading it is linearizable.
    ReadReady {
        /// The read's id.
        id: ReadId,
        /// The index the state machine must have applied first.
        index: Index,
    },
    /// The read `id` could not be confirmed; retry, perhaps elsewhere.
    ReadFailed {
        /// The read's id.
        id: ReadId,
        /// Why.
        error: ReadError,
    },
    /// Take a snapshot of the state machine as of `meta.index` (everything
    /// applied so far), save it durably with `meta`, then report
    /// [`Input::SnapshotTaken`]. Not asked again until then.
    SnapshotNeeded {
        /// Index, term and configuration to store with the snapshot.
        meta: Box<SnapshotMeta>,
    },
    /// Send `to` the chunk of the snapshot at `meta.index` that starts at
    /// `offset`: a [`Body::InstallSnapshot`] message of this `term` carrying
    /// at most `bytes_per_message_max` bytes, `done` if it is the last, and
    /// the CRC32C of the whole snapshot. One chunk is in flight at a time.
    SendSnapshotChunk {
        /// The follower.
        to: NodeId,
        /// The term to put on the message.
        term: Term,
        /// The snapshot to send from.
        meta: Box<SnapshotMeta>,
        /// Byte offset of the chunk.
        offset: u64,
    },
    /// Store this chunk of an incoming snapshot at `offset` (offset 0 starts
    /// a new one). Chunks arrive in order; the core has checked them.
    SnapshotChunk {
        /// The snapshot being received.
        meta: Box<SnapshotMeta>,
        /// Byte offset of `data`.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// Whether this completes the snapshot (its checksum verified).
        done: bool,
    },
    /// Replace the state machine with the snapshot just received, and save
    /// it durably with `meta` (the storage drops the log it covers, keeping
    /// entries after it if they match). Like a `Persist`: durable before any
    /// later action. Applying resumes after `meta.index`.
    RestoreSnapshot {
        /// The snapshot installed.
        meta: Box<SnapshotMeta>,
    },
    /// The configuration in force on this node changed (appended, or undone
    /// by a log truncation). Drivers connect to new members here.
    MembershipChanged {
        /// The configuration now in force.
        membership: Box<Membership>,
        /// Index of the entry that carries it.
        index: Index,
    },
    /// The change this leader was asked for is committed in C_new.
    ConfigChangeCompleted {
        /// Index of the entry that carries C_new.
        index: Index,
    },
    /// The change this node was asked for was refused or abandoned.
    ConfigChangeFailed {
        /// Why.
        error: ConfigChangeError,
    },
    /// A leadership transfer was refused or timed out.
    TransferFailed {
        /// Why.
        error: TransferError,
    },
    /// The node's role or its idea of the leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: Term,
        /// The known leader, if any.
        leader: Option<NodeId>,
    },
}

/// A change to durable state. Apply the parts in field order: drop the log
/// suffix from `truncate_from`, append `entries`, then write `hard_state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// Remove every stored entry with index >= this one.
    pub truncate_from: Option<Index>,
    /// Append these entries (contiguous, after any truncation).
    pub entries: Vec<Entry>,
    /// Replace the stored term and vote.
    pub hard_state: Option<HardState>,
}

impl Persist {
    fn is_empty(&self) -> bool {
        self.truncate_from.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// What a node needs to (re)start: exactly what the persistence contract
/// made durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Term and vote.
    pub hard_state: HardState,
    /// The snapshot the log continues from. A new cluster starts from the
    /// empty snapshot at index 0 carrying the initial configuration.
    pub snapshot: SnapshotMeta,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Restored {
    /// The state of a brand-new member of a brand-new cluster.
    pub fn new_cluster(membership: Membership) -> Self {
        Restored { snapshot: SnapshotMeta { index: 0, term: 0, membership }, ..Restored::default() }
    }

    /// The state of a node that joins an existing cluster: it knows no
    /// configuration, never campaigns, and learns everything from a leader.
    pub fn joining() -> Self {
        Restored::default()
    }
}

/// A read-only snapshot of a node's state, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// Its vote in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index handed to [`Action::Apply`].
    pub applied_index: Index,
    /// First index in the in-memory log.
    pub first_index: Index,
    /// Last index in the log.
    pub last_index: Index,
    /// Term of the last entry.
    pub last_term: Term,
    /// The configuration in force.
    pub membership: Membership,
    /// On a leader: each follower's (id, match, next, state).
    pub progress: Vec<(NodeId, Index, Index, ProgressState)>,
    /// On a leader: the topology a configuration change is moving to.
    pub config_change: Option<Topology>,
    /// On a leader: the target of a leadership transfer in progress.
    pub transfer_to: Option<NodeId>,
}

/// A range of entries this node proposed as leader that have not applied yet.
#[derive(Clone, Copy, Debug)]
struct Proposed {
    term: Term,
    first: Index,
    last: Index,
}

/// A configuration change driven by this leader.
#[derive(Clone, Debug)]
struct Change {
    target: Topology,
    /// Ticks spent waiting for new voters to catch up.
    elapsed: u32,
    /// Whether the joint (or final) entry has been appended.
    started: bool,
}

/// A leadership transfer driven by this leader.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    to: NodeId,
    elapsed: u32,
    timeout_now_sent: bool,
}

/// One Raft node as a pure state machine.
///
/// # Contract
///
/// A driver feeds [`Input`]s one at a time to [`Node::step`] (or
/// [`Node::step_into`] with a reused buffer) and executes the returned
/// [`Action`]s **in order**:
///
/// 1. [`Action::Persist`] must be durable before any later action of the same
///    step runs. In particular a vote, a term change and appended entries are
///    on disk before the message that depends on them leaves the node. A
///    driver may group the `Persist`s of several steps into one fsync as long
///    as it holds back every later `Send`, `Apply` and reply until that fsync
///    completes. The one exception: a leader may send the `AppendEntries`
///    that carry new entries while its own write of them is in flight
///    (dissertation 10.2.1), exactly as far as [`crate::EarlySends`] allows.
/// 2. [`Action::Send`] may be lost, duplicated, delayed or reordered: the
///    protocol tolerates all of it.
/// 3. [`Action::Apply`] hands over committed entries in index order, each
///    exactly once since the node was created from [`Restored`]. After a
///    restart the driver restores its state machine from the snapshot and
///    entries are applied again from the snapshot's index + 1.
///
/// The node reads no clock and no OS randomness: time is [`Input::Tick`] and
/// election timeouts come from a PRNG seeded by [`Config::seed`]. The same
/// config, restored state and inputs give the same actions, bit for bit.
///
/// ```
/// use raft_core::{Action, Config, Input, Membership, Node, Restored, Role};
///
/// let membership = Membership::with_voters([(1, "n1")]);
/// let mut node = Node::new(Config::new(1), Restored::new_cluster(membership)).unwrap();
/// while node.role() != Role::Leader {
///     node.step(Input::Tick);
/// }
/// let actions = node.step(Input::Propose(vec!["hello".into()]));
/// assert!(actions.iter().any(|a| matches!(a, Action::Apply(e) if e.len() == 1)));
/// ```
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: Rng,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: Log,
    commit: Index,
    applied: Index,
    /// The configuration in force: the latest in the log (paper section 6).
    membership: Membership,
    /// Index of the entry that carried `membership` (the snapshot's index if
    /// it came from there).
    membership_index: Index,
    /// The configuration in force at the log's boundary (the first index
    /// minus one).
    boundary_membership: Membership,
    /// The latest snapshot taken or installed.
    snapshot: SnapshotMeta,
    /// A snapshot being received from the leader.
    receiving: Option<Receiving>,
    /// A snapshot has been asked for and not reported yet.
    snapshot_requested: bool,
    /// Bytes of entries applied since the last snapshot.
    applied_bytes_since_snapshot: u64,
    election_elapsed: u32,
    election_timeout: u32,
    heartbeat_elapsed: u32,
    votes_granted: BTreeSet<NodeId>,
    votes_refused: BTreeSet<NodeId>,
    /// A follower whose pre-vote round (dissertation 9.6) is running.
    pre_candidate: bool,
    /// Ticks since the node was created: the leader's lease clock.
    ticks: u64,
    /// Leader: ticks since the last CheckQuorum.
    quorum_check_elapsed: u32,
    /// Leader: bytes of entries after the commit index.
    uncommitted_bytes: usize,
    reads: ReadQueue,
    forwarded: Forwarded,
    /// Leader: the configuration change in progress.
    change: Option<Change>,
    /// Leader: the leadership transfer in progress.
    transfer: Option<Transfer>,
    /// The membership in force changed during this step.
    membership_changed: bool,
    progress: PeerMap,
    proposed: VecDeque<Proposed>,
    /// Durable changes accumulated during this step, flushed as one
    /// [`Action::Persist`] before the next action of any other kind.
    pending: Persist,
    out: Vec<Action>,
    scratch: Vec<u64>,
}

impl Node {
    /// Creates a node from its configuration and durable state. It starts as
    /// a follower (paper section 5.2) with the restored term, vote and log.
    pub fn new(config: Config, restored: Restored) -> Result<Node, NodeError> {
        config.validate()?;
        let Restored { hard_state, snapshot, entries } = restored;
        let log = Log::new(snapshot.index, snapshot.term, entries);
        log.check().map_err(NodeError::Restored)?;
        if hard_state.term > TERM_MAX {
            return Err(NodeError::Restored(format!(
                "stored term {} is above the highest usable term {TERM_MAX}",
                hard_state.term
            )));
        }
        if log.last_term() > hard_state.term {
            return Err(NodeError::Restored(format!(
                "last entry's term {} is above the stored term {}",
                log.last_term(),
                hard_state.term
            )));
        }
        let mut node = Node {
            rng: Rng::new(config.seed, config.id),
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            commit: snapshot.index,
            applied: snapshot.index,
            membership: snapshot.membership.clone(),
            membership_index: snapshot.index,
            boundary_membership: snapshot.membership.clone(),
            snapshot,
            receiving: None,
            snapshot_requested: false,
            applied_bytes_since_snapshot: 0,
            log,
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            votes_granted: BTreeSet::new(),
            votes_refused: BTreeSet::new(),
            pre_candidate: false,
            ticks: 0,
            quorum_check_elapsed: 0,
            uncommitted_bytes: 0,
            reads: ReadQueue::default(),
            forwarded: Forwarded::default(),
            change: None,
            transfer: None,
            membership_changed: false,
            progress: PeerMap::default(),
            proposed: VecDeque::new(),
            pending: Persist::default(),
            out: Vec::new(),
            scratch: Vec::new(),
            config,
        };
        node.reload_membership();
        node.reset_election_timer();
        Ok(node)
    }

    /// Steps one input and returns the actions to execute, in order.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.step_into(input, &mut out);
        out
    }

    /// Like [`Node::step`], appending to `out` so a driver can reuse one buffer.
    pub fn step_into(&mut self, input: Input, out: &mut Vec<Action>) {
        std::mem::swap(&mut self.out, out);
        let before = (self.role, self.leader);
        match input {
            Input::Tick => self.tick(),
            Input::Message(m) => self.receive(m),
            Input::Propose(commands) => self.propose(commands),
            Input::Read { id, policy } => self.read(id, policy),
            Input::SetConfiguration(target) => self.set_configuration(target),
            Input::TransferLeadership { to } => self.transfer_leadership(to),
            Input::SnapshotTaken { index } => self.snapshot_taken(index),
        }
        self.fail_orphaned_reads(before);
        if before.0 == Role::Leader && self.role != Role::Leader {
            self.transfer = None;
            if self.change.take().is_some() {
                self.emit(Action::ConfigChangeFailed { error: ConfigChangeError::LeaderLost });
            }
        }
        if std::mem::take(&mut self.membership_changed) {
            let action = Action::MembershipChanged {
                membership: Box::new(self.membership.clone()),
                index: self.membership_index,
            };
            self.emit(action);
        }
        self.flush();
        if (self.role, self.leader) != before {
            self.out.push(Action::RoleChanged { role: self.role, term: self.term, leader: self.leader });
        }
        std::mem::swap(&mut self.out, out);
        #[cfg(debug_assertions)]
        if let Err(broken) = self.invariants() {
            panic!("node {} broke an invariant: {broken}", self.config.id);
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }
    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Its term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The leader it knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Its commit index.
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    /// The highest index handed to [`Action::Apply`].
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// The last index in its log.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The term of the entry at `index`, if it is in the log (or is the
    /// snapshot's last entry).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }
    /// The entry at `index`, if it is in the in-memory log.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The configuration in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// The durable state as of now.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote }
    }
    /// A leader's view of `peer`'s log.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// Everything at once, for operators.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit_index: self.commit,
            applied_index: self.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            membership: self.membership.clone(),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| (id, p.match_index, p.next_index, p.state))
                .collect(),
            config_change: self.change.as_ref().map(|c| c.target.clone()),
            transfer_to: self.transfer.map(|t| t.to),
        }
    }

    /// Checks the node's internal invariants; `Err` names the first broken one.
    /// Run after every step in debug builds.
    pub fn invariants(&self) -> Result<(), String> {
        let last = self.log.last_index();
        if self.commit > last {
            return Err(format!("commit {} beyond last index {last}", self.commit));
        }
        if self.applied > self.commit {
            return Err(format!("applied {} beyond commit {}", self.applied, self.commit));
        }
        if self.log.last_term() > self.term {
            return Err(format!("last log term {} above current term {}", self.log.last_term(), self.term));
        }
        if self.log.snapshot_index() > self.snapshot.index || self.snapshot.index > self.applied {
            return Err(format!(
                "log boundary {} <= snapshot {} <= applied {} does not hold",
                self.log.snapshot_index(),
                self.snapshot.index,
                self.applied
            ));
        }
        match self.role {
            Role::Leader => {
                if self.vote != Some(self.config.id) || self.leader != Some(self.config.id) {
                    return Err("leader has not voted for itself or does not know it leads".into());
                }
                for (id, p) in self.progress.iter() {
                    if p.match_index > last || p.next_index <= p.match_index {
                        return Err(format!("progress of {id} inconsistent: {p:?}, last {last}"));
                    }
                }
            }
            Role::Candidate => {
                if self.vote != Some(self.config.id) || self.leader.is_some() {
                    return Err("candidate has not voted for itself, or knows a leader".into());
                }
            }
            Role::Follower => {
                if !self.progress.is_empty() {
                    return Err("follower tracks progress".into());
                }
            }
        }
        if !self.pending.is_empty() {
            return Err("persist left unflushed after a step".into());
        }
        Ok(())
    }

    // ----- time -----

    fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::Candidate => {
                for id in self.forwarded.tick(self.config.election_ticks_max) {
                    self.emit(Action::ReadFailed { id, error: ReadError::Timeout });
                }
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    if self.config.pre_vote {
                        self.pre_campaign();
                    } else {
                        self.campaign();
                    }
                }
            }
        }
    }

    /// Whether this node heard from a live leader within the minimum election
    /// timeout; such a node refuses to help depose it (paper section 6,
    /// dissertation 9.6). A leader is always in its own lease.
    fn heard_from_leader_recently(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_ticks_min
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.quorum_check_elapsed += 1;
        if self.quorum_check_elapsed >= self.config.election_ticks_min {
            self.quorum_check_elapsed = 0;
            let me = self.config.id;
            let progress = &self.progress;
            let active = |id: NodeId| id == me || progress.get(&id).is_some_and(|p| p.recent_active);
            let quorum_active =
                self.membership.committed_index(&mut self.scratch, |id| u64::from(active(id))) > 0;
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
            if self.config.check_quorum && !quorum_active {
                // CheckQuorum: a leader cut off from a quorum steps down so
                // that its clients go elsewhere.
                self.become_follower(self.term, None);
                return;
            }
        }
        let stall_ticks = 2 * self.config.heartbeat_ticks;
        let last = self.log.last_index();
        let mut stalled = Vec::new();
        let mut resend_chunk = Vec::new();
        for (&id, p) in self.progress.iter_mut() {
            if p.state == ProgressState::Snapshot {
                p.stalled_ticks += 1;
                if p.stalled_ticks >= stall_ticks {
                    // A chunk or its answer was lost: ask for it again.
                    resend_chunk.push(id);
                }
            } else if p.state == ProgressState::Replicate && p.match_index < last && !p.inflight.is_empty() {
                p.stalled_ticks += 1;
                if p.stalled_ticks >= stall_ticks {
                    // Messages were lost: start again from what is known to match.
                    p.become_probe(p.match_index + 1);
                    stalled.push(id);
                }
            }
        }
        for id in stalled {
            self.send_append(id, false);
        }
        for id in resend_chunk {
            self.send_snapshot_chunk(id);
        }
        if let Some(t) = &mut self.transfer {
            t.elapsed += 1;
            if t.elapsed >= self.config.election_ticks_max {
                // The target did not take over: resume accepting proposals.
                self.transfer = None;
                self.emit(Action::TransferFailed { error: TransferError::Timeout });
            }
        }
        if let Some(c) = &mut self.change {
            if !c.started {
                c.elapsed += 1;
                if c.elapsed > self.config.catch_up_ticks_max {
                    let me = self.config.id;
                    let lagging =
                        c.target.voters.keys().copied().find(|&id| id != me && !self.membership.is_voter(id));
                    self.change = None;
                    let error = ConfigChangeError::CatchUpTimeout(lagging.unwrap_or(0));
                    self.emit(Action::ConfigChangeFailed { error });
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            if self.reads.round_in_flight() {
                // Re-send a confirmation round that may have been lost.
                let round = self.reads.round_started;
                let lagging: Vec<NodeId> = self
                    .progress
                    .iter()
                    .filter(|(&id, p)| p.read_round < round && self.membership.is_voter(id))
                    .map(|(&id, _)| id)
                    .collect();
                for peer in lagging {
                    self.send(peer, Body::ReadConfirm { round });
                }
            }
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout =
            self.rng.range(self.config.election_ticks_min, self.config.election_ticks_max);
    }

    // ----- role transitions -----

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.pending.hard_state = Some(self.hard_state());
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.pre_candidate = false;
        self.progress.clear();
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.reset_election_timer();
    }

    /// Dissertation 9.6: ask whether a majority would vote for us at the next
    /// term, without changing any term; campaign only if so.
    fn pre_campaign(&mut self) {
        if !self.membership.is_voter(self.config.id) || self.term >= TERM_MAX {
            self.reset_election_timer();
            return;
        }
        self.role = Role::Follower;
        self.leader = None;
        self.pre_candidate = true;
        self.reset_election_timer();
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.votes_granted.insert(self.config.id);
        if self.membership.vote_result(&self.votes_granted, &self.votes_refused) == VoteResult::Won {
            self.campaign();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.membership.members() {
            if peer != self.config.id && self.membership.is_voter(peer) {
                let body = Body::PreVote { last_log_index, last_log_term };
                let m = Message { from: self.config.id, to: peer, term: self.term + 1, body };
                self.emit(Action::Send(m));
            }
        }
    }

    fn on_pre_vote(&mut self, from: NodeId, term: Term, last_log_index: Index, last_log_term: Term) {
        let granted = term > self.term
            && !self.heard_from_leader_recently()
            && self.log.is_up_to_date(last_log_index, last_log_term);
        // A grant echoes the asked-for term; a refusal carries ours, so a
        // pre-candidate behind us learns our term.
        let reply_term = if granted { term } else { self.term };
        let body = Body::PreVoteResponse { granted };
        self.emit(Action::Send(Message { from: self.config.id, to: from, term: reply_term, body }));
    }

    fn on_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if !granted && term > self.term {
            self.become_follower(term, None);
            return;
        }
        if !self.pre_candidate
            || !self.membership.is_voter(from)
            || (granted && Some(term) != self.term.checked_add(1))
        {
            return;
        }
        if granted {
            self.votes_granted.insert(from);
        } else {
            self.votes_refused.insert(from);
        }
        match self.membership.vote_result(&self.votes_granted, &self.votes_refused) {
            VoteResult::Won => self.campaign(),
            VoteResult::Lost => self.pre_candidate = false,
            VoteResult::Pending => {}
        }
    }

    /// Paper section 5.2: increment the term, vote for self, ask everyone.
    fn campaign(&mut self) {
        self.campaign_with(false);
    }

    /// Campaigns; `transfer` marks a campaign the leader asked for, which
    /// voters let through their disruption guard.
    fn campaign_with(&mut self, transfer: bool) {
        if !self.membership.is_voter(self.config.id) || self.term >= TERM_MAX {
            // Learners and nodes outside the configuration never campaign;
            // nor does anyone at the last usable term (there is no next one).
            self.reset_election_timer();
            return;
        }
        self.term += 1;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.pre_candidate = false;
        self.pending.hard_state = Some(self.hard_state());
        self.reset_election_timer();
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.votes_granted.insert(self.config.id);
        if self.membership.vote_result(&self.votes_granted, &self.votes_refused) == VoteResult::Won {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.membership.members() {
            if peer != self.config.id && self.membership.is_voter(peer) {
                self.send(peer, Body::RequestVote { last_log_index, last_log_term, transfer });
            }
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.pre_candidate = false;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.quorum_check_elapsed = 0;
        self.reads = ReadQueue::default();
        self.progress.clear();
        let next = self.log.last_index() + 1;
        for peer in self.membership.members() {
            if peer != self.config.id {
                self.progress.insert(peer, Progress::new(next));
            }
        }
        // Paper section 5.4.2 / 8: a no-op of the new term lets earlier
        // entries commit.
        self.append_local(Payload::Noop);
        self.uncommitted_bytes = if self.commit < self.log.last_index() {
            self.log.range(self.commit + 1, self.log.last_index()).map(Entry::size_bytes).sum()
        } else {
            0
        };
        self.maybe_commit();
        self.broadcast_append();
    }

    // ----- messages -----

    fn send(&mut self, to: NodeId, body: Body) {
        let m = Message { from: self.config.id, to, term: self.term, body };
        self.emit(Action::Send(m));
    }

    /// Pushes an action, first flushing pending durable changes so that they
    /// always precede whatever depends on them.
    fn emit(&mut self, action: Action) {
        self.flush();
        self.out.push(action);
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            self.out.push(Action::Persist(p));
        }
    }

    fn receive(&mut self, m: Message) {
        if m.to != self.config.id || m.from == self.config.id || m.from == 0 {
            return;
        }
        if !m.is_well_formed() {
            // Bad input changes nothing, not even the term: adopting the
            // term of a message no correct node could send would let one
            // malformed packet depose a leader or persist a state the node
            // cannot restart from.
            return;
        }
        // Pre-votes never change anyone's term.
        match m.body {
            Body::PreVote { last_log_index, last_log_term } => {
                return self.on_pre_vote(m.from, m.term, last_log_index, last_log_term);
            }
            Body::PreVoteResponse { granted } => return self.on_pre_vote_response(m.from, m.term, granted),
            _ => {}
        }
        if m.term > self.term {
            if matches!(m.body, Body::RequestVote { transfer: false, .. })
                && self.config.check_quorum
                && self.heard_from_leader_recently()
            {
                // Paper section 6: a live leader's followers (and the leader
                // itself) ignore vote requests, so removed or partitioned
                // servers cannot disrupt it.
                return;
            }
            let leader = matches!(
                m.body,
                Body::AppendEntries { .. } | Body::ReadConfirm { .. } | Body::InstallSnapshot { .. }
            )
            .then_some(m.from);
            self.become_follower(m.term, leader);
        } else if m.term < self.term {
            // Paper section 5.1: reject stale requests with our term so the
            // sender steps down; ignore stale responses.
            match m.body {
                Body::RequestVote { .. } => self.send(m.from, Body::RequestVoteResponse { granted: false }),
                Body::AppendEntries { prev_index, .. } => {
                    let hint = ConflictHint { term: 0, index: self.log.last_index() + 1 };
                    self.send(
                        m.from,
                        Body::AppendEntriesResponse(AppendResult::Reject { rejected_prev: prev_index, hint }),
                    );
                }
                Body::ReadConfirm { .. } => self.send(m.from, Body::ReadConfirmResponse { round: 0 }),
                Body::InstallSnapshot { meta, .. } => {
                    self.send(m.from, Body::InstallSnapshotResponse { index: meta.index, next_offset: 0 })
                }
                Body::ReadIndexRequest { id, .. } => {
                    self.send(m.from, Body::ReadIndexResponse { id, index: None })
                }
                _ => {}
            }
            return;
        }
        if self.role == Role::Leader {
            if let Some(p) = self.progress.get_mut(&m.from) {
                p.recent_active = true;
            }
        }
        match m.body {
            Body::RequestVote { last_log_index, last_log_term, .. } => {
                self.on_request_vote(m.from, last_log_index, last_log_term)
            }
            Body::RequestVoteResponse { granted } => self.on_vote_response(m.from, granted),
            Body::AppendEntries { prev_index, prev_term, entries, commit } => {
                self.on_append(m.from, prev_index, prev_term, entries, commit)
            }
            Body::AppendEntriesResponse(result) => self.on_append_response(m.from, result),
            Body::ReadConfirm { round } => self.on_read_confirm(m.from, round),
            Body::InstallSnapshot { meta, offset, data, done, checksum } => {
                self.on_install_snapshot(m.from, *meta, offset, data, done, checksum)
            }
            Body::InstallSnapshotResponse { index, next_offset } => {
                self.on_install_snapshot_response(m.from, index, next_offset)
            }
            Body::TimeoutNow => {
                // Dissertation 3.10: the leader hands over; campaign at once,
                // skipping PreVote (the leader has stopped, so no one will
                // refuse for having heard from it recently).
                if self.role != Role::Leader && self.membership.is_voter(self.config.id) {
                    self.heard_from_leader(m.from);
                    self.campaign_with(true);
                }
            }
            Body::ReadConfirmResponse { round } => self.on_read_confirm_response(m.from, round),
            Body::ReadIndexRequest { id, lease } => {
                if self.role == Role::Leader {
                    let policy = if lease { ReadPolicy::Lease } else { ReadPolicy::Linearizable };
                    self.leader_read(Origin::Remote(m.from, id), policy);
                } else {
                    self.send(m.from, Body::ReadIndexResponse { id, index: None });
                }
            }
            Body::ReadIndexResponse { id, index } => {
                if self.forwarded.take(id) {
                    self.emit(match index {
                        Some(index) => Action::ReadReady { id, index },
                        None => Action::ReadFailed { id, error: ReadError::LeaderLost },
                    });
                }
            }
            Body::PreVote { .. } | Body::PreVoteResponse { .. } => {}
        }
    }

    fn on_request_vote(&mut self, candidate: NodeId, last_log_index: Index, last_log_term: Term) {
        // One vote per term, first come first served (paper 5.2), only for a
        // log at least as up to date as ours (5.4.1).
        let can_vote = self.vote == Some(candidate) || (self.vote.is_none() && self.leader.is_none());
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(feature = "broken-rules")]
        let up_to_date = up_to_date || crate::broken::skip_up_to_date_check();
        let granted = can_vote && up_to_date;
        if granted {
            self.vote = Some(candidate);
            #[cfg(feature = "broken-rules")]
            let forget = crate::broken::forget_vote_persist();
            #[cfg(not(feature = "broken-rules"))]
            let forget = false;
            if !forget {
                self.pending.hard_state = Some(self.hard_state());
            }
            self.reset_election_timer();
        }
        self.send(candidate, Body::RequestVoteResponse { granted });
    }

    fn on_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate || !self.membership.is_voter(voter) {
            return;
        }
        if granted {
            self.votes_granted.insert(voter);
        } else {
            self.votes_refused.insert(voter);
        }
        match self.membership.vote_result(&self.votes_granted, &self.votes_refused) {
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn on_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen (election safety); a
            // message claiming so is bad input.
            return;
        }
        self.heard_from_leader(from);

        let proven = prev_index + entries.len() as Index;
        let (mut prev, mut prev_term) = (prev_index, prev_term);
        if prev < self.commit {
            // Committed entries match the leader's (leader completeness):
            // skip the prefix we already hold as committed.
            let skip = (self.commit - prev).min(entries.len() as Index);
            entries.drain(..skip as usize);
            prev += skip;
            if entries.is_empty() {
                // Everything the message proves is already committed here.
                self.send(from, Body::AppendEntriesResponse(AppendResult::Success { match_index: proven }));
                return;
            }
            // Now prev == commit, whose term is always known.
            let Some(t) = self.log.term_at(prev) else { return };
            prev_term = t;
        }
        if self.log.term_at(prev) != Some(prev_term) {
            let hint = self.conflict_hint(prev);
            self.send(
                from,
                Body::AppendEntriesResponse(AppendResult::Reject { rejected_prev: prev_index, hint }),
            );
            return;
        }
        // Paper figure 2, receiver rules 3 and 4: drop the log from the first
        // conflicting entry, append what is new; identical entries cause no write.
        let last = self.log.last_index();
        let first_new =
            entries.iter().position(|e| e.index > last || self.log.term_at(e.index) != Some(e.term));
        if let Some(k) = first_new {
            let at = entries[k].index;
            if at <= last {
                if at <= self.commit {
                    // A leader contradicting our committed log: bad input.
                    return;
                }
                self.truncate_from(at);
            }
            self.pending.entries.reserve(entries.len() - k);
            for e in entries.drain(k..) {
                self.append_entry(e);
            }
        }
        // Rule 5: commit = min(leaderCommit, index of last new entry).
        #[cfg(feature = "broken-rules")]
        let leader_commit = if crate::broken::apply_before_commit() { proven } else { leader_commit };
        let new_commit = leader_commit.min(proven);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed();
        }
        self.send(from, Body::AppendEntriesResponse(AppendResult::Success { match_index: proven }));
    }

    /// A message from the leader of our term: follow it.
    fn heard_from_leader(&mut self, from: NodeId) {
        if self.role == Role::Candidate {
            // Paper 5.2: a candidate that hears from a leader of its term yields.
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.pre_candidate = false;
        self.election_elapsed = 0;
    }

    fn conflict_hint(&self, prev: Index) -> ConflictHint {
        match self.log.term_at(prev) {
            None => ConflictHint { term: 0, index: self.log.last_index() + 1 },
            Some(term) => {
                let floor = self.commit + 1;
                ConflictHint { term, index: self.log.first_index_of_term_run(prev, term, floor) }
            }
        }
    }

    fn on_append_response(&mut self, from: NodeId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return };
        match result {
            AppendResult::Success { match_index } => {
                if match_index > last {
                    return;
                }
                if p.acked(match_index) {
                    // An ack at or below the commit index cannot move it:
                    // raising one voter's match to m <= commit raises no
                    // majority above commit.
                    if match_index > self.commit {
                        self.maybe_commit();
                    }
                    self.advance_change();
                    self.maybe_send_timeout_now();
                }
                self.send_append(from, false);
            }
            AppendResult::Reject { rejected_prev, hint } => {
                let stale = match p.state {
                    ProgressState::Replicate => rejected_prev <= p.match_index,
                    // checked: a bad rejected_prev of u64::MAX overflowed here
                    // (found by tests/bad_input_proptest.rs).
                    ProgressState::Probe => rejected_prev.checked_add(1) != Some(p.next_index),
                    // A snapshot is on its way; rejections of older appends are stale.
                    ProgressState::Snapshot => true,
                };
                if stale {
                    return;
                }
                let next = match self.log.last_index_of_term(hint.term) {
                    Some(i) if hint.term != 0 => i + 1,
                    _ => hint.index,
                };
                let p = self.progress.get_mut(&from).expect("checked above");
                // Clamped to last + 1: a bad hint beyond our log left nothing to
                // probe from, starving the follower (tests/bad_input_proptest.rs).
                p.become_probe(next.min(rejected_prev).min(last + 1).max(1));
                self.send_append(from, false);
            }
        }
    }

    // ----- replication -----

    /// Whether `Input::Propose(commands)` would be refused now, and why:
    /// the check [`Input::Propose`] makes, for a driver that wants to know
    /// before it hands the commands over (to keep them for a retry one by
    /// one if the batch as a whole is refused). Changes nothing.
    pub fn proposal_refusal<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a Bytes>,
    ) -> Option<ProposeError> {
        if self.role != Role::Leader {
            return Some(ProposeError::NotLeader { leader_hint: self.leader });
        }
        if self.transfer.is_some() {
            return Some(ProposeError::TransferInProgress);
        }
        let max = self.config.bytes_per_message_max;
        let (mut count, mut bytes) = (0, 0);
        for c in commands {
            if c.len() > max {
                return Some(ProposeError::TooLarge { size: c.len(), max });
            }
            count += 1;
            bytes += c.len() + Entry::HEADER_BYTES;
        }
        if count == 0 {
            return Some(ProposeError::Empty);
        }
        let limit = self.config.uncommitted_bytes_max;
        (self.uncommitted_bytes + bytes > limit).then_some(ProposeError::UncommittedLimit { max: limit })
    }

    fn propose(&mut self, commands: Vec<Bytes>) {
        let count = commands.len();
        let reject = self.proposal_refusal(&commands);
        if let Some(error) = reject {
            self.emit(Action::ProposalRejected { count, error });
            return;
        }
        let first_index = self.log.last_index() + 1;
        self.pending.entries.reserve(commands.len());
        for c in commands {
            self.append_local(Payload::Command(c));
        }
        let last_index = self.log.last_index();
        self.proposed.push_back(Proposed { term: self.term, first: first_index, last: last_index });
        self.emit(Action::ProposalAccepted { term: self.term, first_index, last_index });
        self.maybe_commit();
        self.broadcast_append();
    }

    /// Appends a new entry of the current term (leader only).
    fn append_local(&mut self, payload: Payload) {
        let entry = Entry { term: self.term, index: self.log.last_index() + 1, payload };
        self.uncommitted_bytes += entry.size_bytes();
        self.append_entry(entry);
    }

    fn append_entry(&mut self, entry: Entry) {
        if let Payload::Membership(m) = &entry.payload {
            self.membership = (**m).clone();
            self.membership_index = entry.index;
            self.membership_changed = true;
            self.add_progress_for_members();
        }
        self.pending.entries.push(entry.clone());
        self.log.push(entry);
    }

    fn truncate_from(&mut self, index: Index) {
        if !self.pending.entries.is_empty() || self.pending.truncate_from.is_some() {
            self.flush();
        }
        self.pending.truncate_from = Some(index);
        self.log.truncate_from(index);
        if self.membership_index >= index {
            self.reload_membership();
        }
        while let Some(p) = self.proposed.back_mut() {
            if p.last < index {
                break;
            }
            let lost = Lost { term: p.term, first_index: p.first.max(index), last_index: p.last };
            if p.first >= index {
                self.proposed.pop_back();
            } else {
                p.last = index - 1;
            }
            self.out.push(Action::ProposalLost(lost));
        }
    }

    /// The configuration in force is the latest one in the log (paper 6).
    fn reload_membership(&mut self) {
        let mut found = None;
        let mut i = self.log.last_index();
        while i > self.log.snapshot_index() {
            if let Some(Entry { payload: Payload::Membership(m), .. }) = self.log.entry(i) {
                found = Some(((**m).clone(), i));
                break;
            }
            i -= 1;
        }
        let (m, i) = found.unwrap_or_else(|| (self.boundary_membership.clone(), self.log.snapshot_index()));
        if (&m, i) != (&self.membership, self.membership_index) {
            self.membership_changed = true;
        }
        self.membership = m;
        self.membership_index = i;
    }

    /// Paper 5.3/5.4.2: commit the highest index on a quorum, but only by
    /// counting replicas of an entry from the current term (figure 8).
    fn maybe_commit(&mut self) {
        let (me, last) = (self.config.id, self.log.last_index());
        let progress = &self.progress;
        let quorum = self
            .membership
            .committed_index(&mut self.scratch, |id| {
                if id == me {
                    last
                } else {
                    progress.get(&id).map_or(0, |p| p.match_index)
                }
            })
            .min(last);
        #[cfg(feature = "broken-rules")]
        let current_term_only = !crate::broken::commit_old_term_by_counting();
        #[cfg(not(feature = "broken-rules"))]
        let current_term_only = true;
        if quorum > self.commit && (!current_term_only || self.log.term_at(quorum) == Some(self.term)) {
            self.commit = quorum;
            self.apply_committed();
            if self.log.term_at(self.commit) == Some(self.term) {
                // Reads held back until this term's first commit can go now.
                while let Some((origin, policy)) = self.reads.awaiting_commit.pop_front() {
                    self.leader_read(origin, policy);
                }
            }
            // Tell followers at once rather than at the next heartbeat.
            self.broadcast_append();
            self.after_commit_membership();
        }
    }

    fn apply_committed(&mut self) {
        if self.commit <= self.applied {
            return;
        }
        let entries: Vec<Entry> = self.log.range(self.applied + 1, self.commit).cloned().collect();
        let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
        if self.role == Role::Leader {
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
        self.applied = self.commit;
        while let Some(p) = self.proposed.front_mut() {
            if p.last <= self.applied {
                self.proposed.pop_front();
            } else {
                p.first = p.first.max(self.applied + 1);
                break;
            }
        }
        self.emit(Action::Apply(entries));
        self.maybe_request_snapshot(bytes as u64);
    }

    /// The follower after `after` in id order (the first one for `None`):
    /// walks the progress map without collecting its keys on the hot path.
    fn next_peer(&self, after: Option<NodeId>) -> Option<NodeId> {
        self.progress.next_after(after)
    }

    fn broadcast_append(&mut self) {
        let mut next = self.next_peer(None);
        while let Some(peer) = next {
            self.send_append(peer, false);
            next = self.next_peer(Some(peer));
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let mut next = self.next_peer(None);
        while let Some(peer) = next {
            next = self.next_peer(Some(peer));
            if let Some(p) = self.progress.get_mut(&peer) {
                if p.state == ProgressState::Probe {
                    // A lost probe is re-sent once per heartbeat interval.
                    p.probe_sent = false;
                }
            }
            self.send_append(peer, true);
        }
    }

    /// Sends what `peer` lacks, as flow control allows. With `or_empty`, a
    /// peer that needs nothing (or cannot take more now) gets an empty
    /// AppendEntries: a heartbeat carrying the commit index. Without it, an
    /// empty AppendEntries goes only to a follower whose known commit lags.
    fn send_append(&mut self, peer: NodeId, or_empty: bool) {
        let last = self.log.last_index();
        let (max_entries, max_bytes, max_inflight, max_inflight_bytes) = (
            self.config.entries_per_message_max,
            self.config.bytes_per_message_max,
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let mut sent_any = false;
        loop {
            let Some(p) = self.progress.get(&peer) else { return };
            let probing = p.state == ProgressState::Probe;
            if !p.can_send(max_inflight, max_inflight_bytes)
                || (p.next_index > last && !(probing && or_empty && !sent_any))
            {
                break;
            }
            let from = p.next_index;
            let prev = from - 1;
            let Some(prev_term) = self.log.term_at(prev) else {
                // The entries it needs were compacted away (section 7).
                return self.start_snapshot_transfer(peer);
            };
            let mut entries = Vec::new();
            let mut bytes = 0;
            for e in self.log.range(from, last).take(max_entries) {
                let size = e.size_bytes();
                if !entries.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                entries.push(e.clone());
            }
            let sent_last = prev + entries.len() as Index;
            let commit = self.commit;
            let p = self.progress.get_mut(&peer).expect("checked above");
            p.sent(sent_last, bytes);
            p.commit_conveyed = p.commit_conveyed.max(commit.min(sent_last));
            self.send(
                peer,
                Body::AppendEntries { prev_index: prev, prev_term, entries, commit: self.commit },
            );
            sent_any = true;
            if probing {
                break;
            }
        }
        let Some(p) = self.progress.get_mut(&peer) else { return };
        // A follower that holds committed entries it does not know are
        // committed hears so now rather than at the next heartbeat.
        let commit_behind =
            p.state == ProgressState::Replicate && self.commit.min(p.match_index) > p.commit_conveyed;
        if !sent_any && (or_empty || commit_behind) {
            // Empty AppendEntries at the known match: it cannot be rejected
            // by a correct follower and proves the follower's commit bound.
            let prev = p.match_index;
            p.commit_conveyed = p.commit_conveyed.max(self.commit.min(prev));
            let Some(prev_term) = self.log.term_at(prev) else { return };
            self.send(
                peer,
                Body::AppendEntries { prev_index: prev, prev_term, entries: Vec::new(), commit: self.commit },
            );
        }
    }
}

impl Node {
    // ----- reads (dissertation 6.4) -----

    fn read(&mut self, id: ReadId, policy: ReadPolicy) {
        if self.role == Role::Leader {
            return self.leader_read(Origin::Local(id), policy);
        }
        let Some(leader) = self.leader else {
            return self.emit(Action::ReadFailed { id, error: ReadError::NoLeader });
        };
        if self.forwarded.reads.len() >= self.config.reads_pending_max {
            return self.emit(Action::ReadFailed { id, error: ReadError::TooManyPending });
        }
        self.forwarded.reads.push_back((id, 0));
        self.send(leader, Body::ReadIndexRequest { id, lease: policy == ReadPolicy::Lease });
    }

    fn leader_read(&mut self, origin: Origin, policy: ReadPolicy) {
        if self.reads.len() >= self.config.reads_pending_max {
            return self.read_failed(origin, ReadError::TooManyPending);
        }
        if self.log.term_at(self.commit) != Some(self.term) {
            // A new leader does not know what is committed until its own
            // no-op commits (dissertation 6.4, step 1).
            self.reads.awaiting_commit.push_back((origin, policy));
            return;
        }
        let lease_holds = policy == ReadPolicy::Lease && self.ticks < self.reads.lease_until;
        #[cfg(feature = "broken-rules")]
        let lease_holds = lease_holds || crate::broken::read_without_confirmation();
        let (me, scratch) = (self.config.id, &mut self.scratch);
        let alone = self.membership.committed_index(scratch, |id| if id == me { 1 } else { 0 }) > 0;
        if lease_holds || alone {
            return self.read_ready(origin, self.commit);
        }
        self.reads.push(origin, self.commit);
        if !self.reads.round_in_flight() {
            self.start_read_round();
        }
    }

    fn start_read_round(&mut self) {
        let round = self.reads.start_round(self.ticks);
        let voters: Vec<NodeId> =
            self.progress.keys().copied().filter(|&id| self.membership.is_voter(id)).collect();
        for peer in voters {
            self.send(peer, Body::ReadConfirm { round });
        }
    }

    fn on_read_confirm(&mut self, from: NodeId, round: u64) {
        if self.role == Role::Leader {
            return;
        }
        self.heard_from_leader(from);
        self.send(from, Body::ReadConfirmResponse { round });
    }

    fn on_read_confirm_response(&mut self, from: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.read_round = p.read_round.max(round);
        let (me, progress) = (self.config.id, &self.progress);
        let confirmed = self.membership.committed_index(&mut self.scratch, |id| {
            if id == me {
                u64::MAX
            } else {
                progress.get(&id).map_or(0, |p| p.read_round)
            }
        });
        let lease_ticks = u64::from(self.config.election_ticks_min - self.config.lease_drift_ticks);
        for read in self.reads.confirm(confirmed, lease_ticks) {
            self.read_ready(read.origin, read.index);
        }
        if self.reads.needs_round() && !self.reads.round_in_flight() {
            self.start_read_round();
        }
    }

    fn read_ready(&mut self, origin: Origin, index: Index) {
        match origin {
            Origin::Local(id) => self.emit(Action::ReadReady { id, index }),
            Origin::Remote(node, id) => self.send(node, Body::ReadIndexResponse { id, index: Some(index) }),
        }
    }

    fn read_failed(&mut self, origin: Origin, error: ReadError) {
        match origin {
            Origin::Local(id) => self.emit(Action::ReadFailed { id, error }),
            Origin::Remote(node, id) => self.send(node, Body::ReadIndexResponse { id, index: None }),
        }
    }

    /// Reads whose confirmation depended on a leadership this step ended.
    fn fail_orphaned_reads(&mut self, (role_before, leader_before): (Role, Option<NodeId>)) {
        if role_before == Role::Leader && self.role != Role::Leader {
            for origin in self.reads.drain_all() {
                self.read_failed(origin, ReadError::LeaderLost);
            }
        }
        if leader_before != self.leader && !self.forwarded.reads.is_empty() {
            let ids: Vec<ReadId> = self.forwarded.reads.drain(..).map(|(id, _)| id).collect();
            for id in ids {
                self.emit(Action::ReadFailed { id, error: ReadError::LeaderLost });
            }
        }
    }
}
