//! The application's side of a running node.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::{Index, Message, NodeId, ReadPolicy, Status};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::Error;
use crate::peer::Connect;

/// How many times [`RaftHandle::propose`] tries again after a leader change
/// before it gives up with the last error.
const PROPOSE_ATTEMPTS: usize = 8;

/// How long [`RaftHandle::propose`] waits for a leader to be known before it
/// tries again (an election takes 150-300 ms with the default config).
const LEADER_WAIT: Duration = Duration::from_millis(400);

/// What the node task is asked to do.
pub(crate) enum Command {
    Messages(Vec<Message>),
    Propose(Bytes, oneshot::Sender<Result<Bytes, Error>>),
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
    pub(crate) connect: Arc<dyn Connect>,
}

/// A cheap, cloneable handle to a running node (see [`crate::RaftNode`]).
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) leader: watch::Receiver<LeaderState>,
    pub(crate) applied: watch::Receiver<Index>,
    pub(crate) stopped: watch::Receiver<bool>,
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
    /// leader and tries again, a few times.
    ///
    /// Fails with [`Error::Timeout`] after the configured propose timeout
    /// (the command may still commit later), [`Error::ProposalLost`] if a new
    /// leader overwrote it, [`Error::NoLeader`] when no leader turned up.
    /// A follower whose [`crate::Connect`] cannot forward answers
    /// [`Error::NotLeader`].
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        let command = command.into();
        let deadline = Instant::now() + self.shared.propose_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout);
            }
            let outcome = match self.propose_once(command.clone(), remaining).await {
                Err(Error::NotLeader { leader_hint }) if leader_hint != self.shared.id => {
                    self.forward(leader_hint, command.clone(), remaining).await
                }
                other => other,
            };
            match outcome {
                // Definitely not proposed: wait for a (new) leader, then again.
                Err(Error::NoLeader | Error::NotLeader { .. }) if attempt < PROPOSE_ATTEMPTS => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    self.wait_for_leader(remaining.min(LEADER_WAIT)).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes `command` on this node only: a follower answers
    /// [`Error::NotLeader`] with the leader it knows of, or
    /// [`Error::NoLeader`]. This is what a forwarded proposal runs on the
    /// leader.
    pub async fn propose_local(&self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        self.propose_once(command.into(), self.shared.propose_timeout).await
    }

    async fn propose_once(&self, command: Bytes, timeout: Duration) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands.send(Command::Propose(command, tx)).await.map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| Error::Timeout)?
    }

    async fn forward(&self, leader: NodeId, command: Bytes, timeout: Duration) -> Result<Bytes, Error> {
        let status = self.status().await?;
        let Some(address) = status.membership.address(leader) else {
            tracing::debug!(node = self.shared.id, leader, "no address for the leader: cannot forward");
            return Err(Error::NoLeader);
        };
        self.shared.connect.forward(leader, address, command, timeout).await
    }

    /// Waits up to `timeout` for the leader watch to change or show a leader.
    async fn wait_for_leader(&self, timeout: Duration) {
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

    /// The index of the last entry applied to the state machine.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
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
    /// Waiting callers get [`Error::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|&s| s).await;
    }
}
