//! The application's side of a running node.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::{Index, Message, NodeId, Status};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;

/// What the node task is asked to do.
pub(crate) enum Command {
    Messages(Vec<Message>),
    Propose(Bytes, oneshot::Sender<Result<Bytes, Error>>),
    Read(oneshot::Sender<Result<Index, Error>>),
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
    /// committed and applied on this node. Only the leader accepts
    /// proposals: a follower answers [`Error::NotLeader`] with the leader it
    /// knows of, or [`Error::NoLeader`] (forwarding is not implemented yet).
    /// Fails with [`Error::Timeout`] after the configured propose timeout (the
    /// command may still commit later) and [`Error::ProposalLost`] if a new
    /// leader overwrote it.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands.send(Command::Propose(command.into(), tx)).await.map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        tokio::time::timeout(self.shared.propose_timeout, work).await.map_err(|_| Error::Timeout)?
    }

    /// A linearizable read barrier (ReadIndex): returns once this node's
    /// state machine reflects every write committed before the call, so a
    /// read of the state machine after it is linearizable. Works on
    /// followers too (the core asks the leader).
    pub async fn read(&self) -> Result<Index, Error> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands.send(Command::Read(tx)).await.map_err(|_| Error::Stopped)?;
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
