//! The application's side of a running node.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::{Index, Message, NodeId, ProposeError, ReadPolicy, Role, Status, Term, Topology};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::Error;
use crate::forward::{self, Reply, Request};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::peer::Connect;

/// How many times [`RaftHandle::propose`] tries again after a leader change
/// before it gives up with the last error.
const PROPOSE_ATTEMPTS: usize = 8;

/// How long [`RaftHandle::propose`] waits for a leader to be known before it
/// tries again (an election takes 150-300 ms with the default config).
pub(crate) const LEADER_WAIT: Duration = Duration::from_millis(400);

/// What the node task is asked to do.
pub(crate) enum Command {
    Messages(Vec<Message>),
    /// A command, its reply, and the deadline by which the node answers
    /// (with [`Error::Timeout`] if it has not applied it by then): the node
    /// keeps every proposal's deadline, so a proposer needs no timer of its
    /// own.
    Propose(Bytes, oneshot::Sender<Result<Bytes, Error>>, std::time::Instant),
    SetConfiguration(Topology, oneshot::Sender<Result<Index, Error>>),
    TransferLeadership(NodeId, oneshot::Sender<Result<(), Error>>),
    Read(ReadPolicy, oneshot::Sender<Result<Index, Error>>),
    Status(oneshot::Sender<Status>),
    Shutdown,
}

/// The role and leader as last reported by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderState {
    /// The node's current term.
    pub term: u64,
    /// The leader it knows of, if any.
    pub leader: Option<NodeId>,
    /// Whether this node is that leader.
    pub is_leader: bool,
}

pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) propose_timeout: Duration,
    pub(crate) read_timeout: Duration,
    /// The longest election timeout (`election_ticks_max` ticks): how long
    /// the core gives a leadership transfer.
    pub(crate) election_timeout: Duration,
    pub(crate) connect: Arc<dyn Connect>,
    /// Addresses to use for nodes the membership does not list (yet).
    pub(crate) peers: BTreeMap<NodeId, String>,
    pub(crate) metrics: Metrics,
}

/// A cheap, cloneable handle to a running node (see [`crate::RaftNode`]).
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) leader: watch::Receiver<LeaderState>,
    pub(crate) applied: watch::Receiver<Index>,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) snapshot: watch::Receiver<Index>,
}

impl fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftHandle")
            .field("id", &self.shared.id)
            .field("leader", &*self.leader.borrow())
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

impl RaftHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Proposes `command` and returns the state machine's response once it is
    /// committed and applied (on the leader; on this node too, if it is the
    /// leader). Works on any node: a follower forwards the command to the
    /// leader it knows of ([`crate::Connect::forward`]) and hands back the
    /// leader's outcome. While no leader is known, or after the leader
    /// changed under a proposal that provably was not made, it waits for a
    /// leader and tries again, a few times; so it does while a leader hands
    /// leadership over (it refuses proposals until the new one leads).
    ///
    /// Fails with [`Error::Timeout`] after the configured propose timeout
    /// (the command may still commit later; the node itself answers, within
    /// a few ticks of the deadline, so that a proposal costs no timer),
    /// [`Error::StoppedInFlight`] if the node stopped with it in flight
    /// (likewise), [`Error::Stopped`] if it stopped before taking it,
    /// [`Error::ProposalLost`] if a new leader overwrote it,
    /// [`Error::NoLeader`] when no leader turned up.
    /// A follower whose [`crate::Connect`] cannot forward answers
    /// [`Error::NotLeader`].
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        match self.run(Request::Propose(command.into())).await? {
            Reply::Applied(response) => Ok(response),
            other => Err(Error::Forward(format!("unexpected reply to a proposal: {other:?}"))),
        }
    }

    /// Proposes `command` on this node only: a follower answers
    /// [`Error::NotLeader`] with the leader it knows of, or
    /// [`Error::NoLeader`].
    pub async fn propose_local(&self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        let deadline = Instant::now() + self.shared.propose_timeout;
        match self.local(Request::Propose(command.into()), deadline).await? {
            Reply::Applied(response) => Ok(response),
            other => Err(Error::Forward(format!("unexpected reply to a proposal: {other:?}"))),
        }
    }

    /// Moves the cluster to `topology`, the complete set of voters and
    /// learners with their addresses (whatever is not listed is removed),
    /// and returns the index of the entry holding the new configuration once
    /// it is committed. New voters first catch up as learners, then the
    /// leader goes through joint consensus (C_old,new, then C_new). Works on
    /// any node (forwarded to the leader like [`RaftHandle::propose`]).
    ///
    /// Fails with [`Error::ConfigChange`] when refused (another change in
    /// progress, a new leader not ready yet, an invalid topology, a new voter
    /// that did not catch up) and [`Error::Timeout`] after the propose
    /// timeout: the change may still complete; read the configuration.
    pub async fn set_configuration(&self, topology: Topology) -> Result<Index, Error> {
        match self.run(Request::SetConfiguration(topology)).await? {
            Reply::Configured(index) => Ok(index),
            other => Err(Error::Forward(format!("unexpected reply to a configuration change: {other:?}"))),
        }
    }

    /// Hands leadership to voter `to` and returns once `to` leads (or this
    /// node learns so). A no-op if `to` already leads. Works on any node.
    /// Fails with [`Error::Transfer`] when refused or when `to` did not take
    /// over within an election timeout.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Error> {
        if self.leader.borrow().leader == Some(to) {
            return Ok(());
        }
        match self.run(Request::TransferLeadership(to)).await {
            Ok(_) | Err(Error::Transfer(raft_core::TransferError::ToSelf)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `request` here if this node leads, else on the leader, retrying
    /// through leader changes while it provably was not carried out.
    async fn run(&self, request: Request) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.shared.propose_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // One clock read per attempt: the first one's is the deadline's.
            if attempt > 1 && Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            let before = self.leader.borrow().leader;
            let mut tried = None;
            let outcome = match self.local(request.clone(), deadline).await {
                Err(Error::NotLeader { leader_hint }) if leader_hint != self.shared.id => {
                    tried = Some(leader_hint);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    self.forward(leader_hint, &request, remaining).await
                }
                other => other,
            };
            match outcome {
                // Definitely not done: try again at once if this node has
                // heard of another leader during the attempt, else wait for
                // news. The watch can lag the core (a term change is
                // published once its vote is durable): a leader it showed
                // before the attempt is no news. A leader handing over
                // refuses proposals until the new one leads: wait for that.
                Err(
                    ref e @ (Error::NoLeader
                    | Error::NotLeader { .. }
                    | Error::Rejected(ProposeError::TransferInProgress)),
                ) if attempt < PROPOSE_ATTEMPTS => {
                    let transferring = matches!(e, Error::Rejected(_));
                    let known = self.leader.borrow().leader;
                    let news = known.is_some() && known != before && known != tried;
                    if transferring || !news {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.wait_for_leader(remaining.min(LEADER_WAIT)).await;
                    }
                }
                other => return other,
            }
        }
    }

    /// Runs `request` on this node only.
    async fn local(&self, request: Request, deadline: Instant) -> Result<Reply, Error> {
        self.local_or(request, deadline, || Error::StoppedInFlight).await
    }

    /// [`RaftHandle::local`], answering `taken_then_stopped()` when the node
    /// stopped after it took the request (which may then still commit).
    async fn local_or(
        &self,
        request: Request,
        deadline: Instant,
        taken_then_stopped: impl Fn() -> Error,
    ) -> Result<Reply, Error> {
        match request {
            Request::Propose(command) => self.propose_here(command, deadline, taken_then_stopped).await,
            Request::SetConfiguration(topology) => {
                let (tx, rx) = oneshot::channel();
                let command = Command::SetConfiguration(topology, tx);
                self.ask(command, rx, deadline, taken_then_stopped).await.map(Reply::Configured)
            }
            Request::TransferLeadership(to) => {
                let (tx, rx) = oneshot::channel();
                let command = Command::TransferLeadership(to, tx);
                self.ask(command, rx, deadline, taken_then_stopped).await.map(|()| Reply::Transferred)
            }
        }
    }

    /// Hands `command` to the node task and waits for its answer on `rx`,
    /// both by `deadline`.
    async fn ask<T>(
        &self,
        command: Command,
        rx: oneshot::Receiver<Result<T, Error>>,
        deadline: Instant,
        taken_then_stopped: impl Fn() -> Error,
    ) -> Result<T, Error> {
        let work = async {
            self.commands.send(command).await.map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| taken_then_stopped())?
        };
        tokio::time::timeout_at(deadline, work).await.map_err(|_| Error::Timeout)?
    }

    /// Proposes on this node. The hot path of every write: no timer is
    /// armed (a tokio timer per proposal cost a fifth of the runtime's CPU
    /// at high concurrency); the node answers by `deadline` itself, with
    /// [`Error::Timeout`] for a proposal it has not applied by then. Only a
    /// full input queue is waited on with a timer.
    async fn propose_here(
        &self,
        command: Bytes,
        deadline: Instant,
        taken_then_stopped: impl Fn() -> Error,
    ) -> Result<Reply, Error> {
        let (tx, rx) = oneshot::channel();
        match self.commands.try_send(Command::Propose(command, tx, deadline.into_std())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(full)) => {
                tokio::time::timeout_at(deadline, self.commands.send(full))
                    .await
                    .map_err(|_| Error::Timeout)?
                    .map_err(|_| Error::Stopped)?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Stopped),
        }
        rx.await.map_err(|_| taken_then_stopped())?.map(Reply::Applied)
    }

    async fn forward(&self, leader: NodeId, request: &Request, timeout: Duration) -> Result<Reply, Error> {
        let status = self.status().await?;
        let address =
            status.membership.address(leader).or_else(|| self.shared.peers.get(&leader).map(String::as_str));
        let Some(address) = address else {
            tracing::debug!(node = self.shared.id, leader, "no address for the leader: cannot forward");
            return Err(Error::NoLeader);
        };
        self.shared.metrics.0.proposals_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reply =
            self.shared.connect.forward(leader, address, forward::encode_request(request), timeout).await?;
        forward::decode_outcome(&reply)
    }

    /// Answers a request forwarded by another node: runs it on this node
    /// only (never forwards again) and returns the encoded outcome.
    pub(crate) async fn answer_forwarded(&self, request: &[u8]) -> Bytes {
        let outcome = match forward::decode_request(request) {
            // A plain Stopped travels as "no leader", which the follower
            // retries: right only if this node never took the request.
            Ok(request) => {
                let stopped = || Error::Forward("the leader stopped with the request in flight".into());
                self.local_or(request, Instant::now() + self.shared.propose_timeout, stopped).await
            }
            Err(message) => Err(Error::Forward(message)),
        };
        forward::encode_outcome(outcome)
    }

    /// Waits up to `timeout` for the leader watch to change or show a leader.
    pub(crate) async fn wait_for_leader(&self, timeout: Duration) {
        let mut leader = self.leader.clone();
        let known = leader.borrow_and_update().leader;
        let _ = tokio::time::timeout(timeout, async {
            if known.is_some() {
                // A leader is known but refused or was unreachable: wait for news.
                let _ = leader.changed().await;
            } else {
                let _ = leader.wait_for(|s| s.leader.is_some()).await;
            }
        })
        .await;
    }

    /// A linearizable read barrier (ReadIndex): returns once this node's
    /// state machine reflects every write committed before the call, so a
    /// read of the state machine after it is linearizable. Works on
    /// followers too (the core asks the leader).
    pub async fn read(&self) -> Result<Index, Error> {
        self.read_with(ReadPolicy::Linearizable).await
    }

    /// A read barrier under `policy`: [`ReadPolicy::Linearizable`] is
    /// [`RaftHandle::read`]; [`ReadPolicy::Lease`] skips the confirmation
    /// round while the leader's lease holds (correct only under bounded
    /// clock drift, see `raft_core::Config::lease_drift_ticks`).
    pub async fn read_with(&self, policy: ReadPolicy) -> Result<Index, Error> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands.send(Command::Read(policy, tx)).await.map_err(|_| Error::Stopped)?;
            let index = rx.await.map_err(|_| Error::Stopped)??;
            self.wait_applied(index).await?;
            Ok(index)
        };
        tokio::time::timeout(self.shared.read_timeout, work).await.map_err(|_| Error::Timeout)?
    }

    /// Waits until the state machine has applied `index`.
    pub async fn wait_applied(&self, index: Index) -> Result<(), Error> {
        let mut applied = self.applied.clone();
        applied.wait_for(|&a| a >= index).await.map(|_| ()).map_err(|_| Error::Stopped)
    }

    /// The last index included in this node's newest snapshot (0: none
    /// beyond the initial configuration).
    pub fn snapshot_index(&self) -> Index {
        *self.snapshot.borrow()
    }

    /// The index of the last entry applied to the state machine.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
    }

    /// The runtime's metrics as of now: role, term, commit and applied
    /// index, proposal counters, batch sizes, storage (fsync) and proposal
    /// latencies, peer round trips. Cheap (atomic loads); render with
    /// [`MetricsSnapshot::to_prometheus`].
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The core's full status.
    pub async fn status(&self) -> Result<Status, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// The current role/leader, and a way to wait for changes
    /// ([`watch::Receiver::changed`]).
    pub fn leader(&self) -> watch::Receiver<LeaderState> {
        self.leader.clone()
    }

    /// Hands messages from other nodes to this node (what a
    /// [`crate::Transport`] calls). Fails with [`Error::Busy`] when the input
    /// queue is full: the messages are dropped, which Raft tolerates.
    pub fn receive(&self, messages: Vec<Message>) -> Result<(), Error> {
        let messages: Vec<Message> = messages.into_iter().filter(|m| m.to == self.shared.id).collect();
        if messages.is_empty() {
            return Ok(());
        }
        self.commands.try_send(Command::Messages(messages)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Busy,
            mpsc::error::TrySendError::Closed(_) => Error::Stopped,
        })
    }

    /// Whether the node has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Stops the node and waits until it has: its pending writes are
    /// finished and the data directory is closed (so it can be reopened).
    /// Waiting callers get [`Error::Stopped`]. A leader just stops: the
    /// others elect a new one after an election timeout. See
    /// [`RaftHandle::shutdown_with`] to hand leadership over first.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|&s| s).await;
    }

    /// [`RaftHandle::shutdown`], with `options`. With
    /// [`ShutdownOptions::transfer_leadership`], a leader first hands
    /// leadership to its most caught-up voter (the core's transfer,
    /// dissertation 3.10: the target gets the whole log, then campaigns at
    /// once) and waits until it leads, so the cluster goes on without
    /// waiting for an election timeout. Then it waits until it has applied
    /// what it had accepted as leader (committed by the new leader), so
    /// that the proposers waiting on it get their responses rather than
    /// [`Error::Stopped`], and stops as [`RaftHandle::shutdown`] does. Both
    /// waits share [`ShutdownOptions::transfer_timeout`]. A transfer that
    /// fails or times out is logged and reported in the returned
    /// [`Handoff`]; the node stops anyway.
    pub async fn shutdown_with(&self, options: ShutdownOptions) -> Handoff {
        let handoff = if options.transfer_leadership {
            let timeout = options.transfer_timeout.unwrap_or(self.shared.election_timeout * 2);
            self.hand_off(timeout).await
        } else {
            Handoff::NotRequested
        };
        self.shutdown().await;
        handoff
    }

    async fn hand_off(&self, timeout: Duration) -> Handoff {
        let deadline = Instant::now() + timeout;
        if !self.leader.borrow().is_leader {
            return Handoff::NotLeader;
        }
        let status = match self.status().await {
            Ok(status) if status.role == Role::Leader => status,
            Ok(_) => return Handoff::NotLeader,
            Err(e) => return Handoff::Failed(e),
        };
        let Some(to) = successor(&status) else {
            tracing::info!(node = self.shared.id, "shutting down: no other voter to hand leadership to");
            return Handoff::NoSuccessor;
        };
        tracing::info!(
            node = self.shared.id,
            to,
            term = status.term,
            "handing leadership over before shutting down"
        );
        // On this node only: had it lost leadership meanwhile, a forwarded
        // transfer would move leadership between the others for nothing.
        if let Err(e) = self.local(Request::TransferLeadership(to), deadline).await {
            tracing::warn!(
                node = self.shared.id,
                to,
                "leadership transfer failed, shutting down anyway: {e}"
            );
            return Handoff::Failed(e);
        }
        let term = self.leader.borrow().term;
        // The target held every entry this node accepted before it took
        // over; they commit with its first entry.
        let last = match self.status().await {
            Ok(status) => status.last_index,
            Err(e) => return Handoff::Failed(e),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, self.wait_applied(last)).await.is_err() {
            tracing::warn!(
                node = self.shared.id,
                last,
                applied = self.applied_index(),
                "leadership handed over, but its last entries did not apply in time: stopping anyway"
            );
        }
        tracing::info!(node = self.shared.id, to, term, "leadership handed over");
        Handoff::Transferred { to, term }
    }
}

/// The voter a leader hands over to: the one with the most of its log (the
/// core catches it up before it campaigns), the lowest id among equals.
fn successor(status: &Status) -> Option<NodeId> {
    status
        .progress
        .iter()
        .filter(|(id, ..)| *id != status.id && status.membership.is_voter(*id))
        .max_by_key(|(id, match_index, ..)| (*match_index, std::cmp::Reverse(*id)))
        .map(|(id, ..)| *id)
}

/// How [`RaftHandle::shutdown_with`] stops a node. The default is
/// [`RaftHandle::shutdown`]'s behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownOptions {
    /// A leader hands leadership over before it stops (default false).
    pub transfer_leadership: bool,
    /// How long a leader waits for its successor to take over and for its
    /// own accepted entries to apply (default: twice the election timeout,
    /// `election_ticks_max` ticks; the core gives the transfer one).
    pub transfer_timeout: Option<Duration>,
}

impl ShutdownOptions {
    /// Sets [`ShutdownOptions::transfer_leadership`].
    pub fn transfer_leadership(mut self, transfer: bool) -> Self {
        self.transfer_leadership = transfer;
        self
    }

    /// Sets [`ShutdownOptions::transfer_timeout`].
    pub fn transfer_timeout(mut self, timeout: Duration) -> Self {
        self.transfer_timeout = Some(timeout);
        self
    }
}

/// What became of leadership in [`RaftHandle::shutdown_with`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Handoff {
    /// No transfer was asked for.
    NotRequested,
    /// This node was not the leader: nothing to hand over.
    NotLeader,
    /// This node was the only voter.
    NoSuccessor,
    /// `to` leads now, in `term`.
    Transferred {
        /// The new leader.
        to: NodeId,
        /// Its term.
        term: Term,
    },
    /// The transfer was refused or timed out; the node stopped anyway and
    /// the others elect a leader after an election timeout.
    Failed(Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelNetwork;

    /// A handle whose node is `commands`' receiver, played by the test.
    fn handle() -> (RaftHandle, mpsc::Receiver<Command>) {
        let (commands, rx) = mpsc::channel(4);
        let shared = Shared {
            id: 1,
            propose_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            election_timeout: Duration::from_millis(300),
            connect: Arc::new(ChannelNetwork::new()),
            peers: BTreeMap::new(),
            metrics: Metrics::new(),
        };
        let leader = LeaderState { term: 1, leader: Some(1), is_leader: true };
        let handle = RaftHandle {
            shared: Arc::new(shared),
            commands,
            leader: watch::channel(leader).1,
            applied: watch::channel(0).1,
            stopped: watch::channel(false).1,
            snapshot: watch::channel(0).1,
        };
        (handle, rx)
    }

    // A proposal the node took may have been appended and sent before the
    // node stopped: the next leader can commit it. "Stopped" would tell the
    // caller it was not carried out, and a retry would apply it twice.
    #[tokio::test]
    async fn a_proposal_the_node_took_before_stopping_has_an_unknown_outcome() {
        let (handle, mut node) = handle();
        tokio::spawn(async move {
            if let Some(Command::Propose(_, reply, _)) = node.recv().await {
                drop(reply); // taken, then the node stopped
            }
        });
        assert!(matches!(handle.propose("x").await, Err(Error::StoppedInFlight)));
    }

    #[tokio::test]
    async fn a_proposal_the_node_never_took_is_refused_as_stopped() {
        let (handle, node) = handle();
        drop(node);
        assert!(matches!(handle.propose("x").await, Err(Error::Stopped)));
    }
}
