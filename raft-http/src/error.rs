//! The runtime's typed errors.

use raft_core::{ConfigChangeError, NodeError, NodeId, ProposeError, ReadError, TransferError};
use raft_storage::StorageError;

use crate::session::SessionError;

/// Why a [`crate::RaftHandle`] call or [`crate::RaftNode::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader; `leader_hint` is the leader it knows of.
    /// [`crate::RaftHandle::propose`] forwards to it by itself; only
    /// [`crate::RaftHandle::propose_local`] (or a peer that cannot forward)
    /// returns this.
    #[error("not the leader (leader hint: {leader_hint})")]
    NotLeader {
        /// The leader this node believes in.
        leader_hint: NodeId,
    },
    /// No leader is known right now (an election is running); retry later.
    #[error("no leader known")]
    NoLeader,
    /// This node is not in the configuration it has in force: it is joining
    /// and the leader's configuration has not reached it yet, or it learnt
    /// that it was removed. It cannot serve reads; ask a member.
    #[error("this node is not a member of the cluster")]
    NotMember,
    /// The operation did not finish within its deadline. A proposal that
    /// timed out may still commit later.
    #[error("timed out")]
    Timeout,
    /// The proposal was accepted but then overwritten by another leader's
    /// entries: it will never apply.
    #[error("proposal lost to a leader change")]
    ProposalLost,
    /// The core refused the proposal for another reason (too large, too
    /// many uncommitted bytes, ...).
    #[error("proposal rejected: {0}")]
    Rejected(ProposeError),
    /// The configuration change was refused or abandoned (a `NotLeader`
    /// refusal is reported as [`Error::NotLeader`] / [`Error::NoLeader`]).
    #[error("configuration change failed: {0}")]
    ConfigChange(ConfigChangeError),
    /// The leadership transfer was refused or timed out (a `NotLeader`
    /// refusal is reported as [`Error::NotLeader`] / [`Error::NoLeader`]).
    #[error("leadership transfer failed: {0}")]
    Transfer(TransferError),
    /// The read could not be confirmed.
    #[error("read failed: {0}")]
    Read(ReadError),
    /// The node has stopped (shut down, or a storage failure stopped it)
    /// before it took the request: nothing of it was carried out.
    #[error("the node has stopped")]
    Stopped,
    /// The node stopped (shut down, or a storage failure stopped it) after
    /// it took the request and before its outcome was known. The outcome is
    /// unknown, as with [`Error::Timeout`]: a proposal it had accepted, and
    /// perhaps already sent to followers, may still commit under the next
    /// leader.
    #[error("the node stopped with the request in flight; the outcome is unknown")]
    StoppedInFlight,
    /// The node is overloaded: its input queue is full.
    #[error("the node's input queue is full")]
    Busy,
    /// Forwarding to the leader failed after the request may have reached
    /// it: the connection broke mid-request (a leader going down), or the
    /// reply was an HTTP error or did not decode. The outcome is unknown,
    /// as with [`Error::Timeout`]: a proposal may still commit. (A leader
    /// that could not be reached at all is [`Error::NoLeader`], retried.)
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
    /// Opening or writing the data directory failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The core refused to start (invalid config or inconsistent state).
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// The state machine could not restore a snapshot
    /// ([`crate::StateMachine::try_restore`]): [`crate::RaftNode::start`]
    /// fails with it; a running node stops instead of applying entries to a
    /// state it could not rebuild.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A client session refused the request ([`crate::Session`]): the
    /// session expired, the serial is too old, or the response was not a
    /// session response.
    #[error("session: {0}")]
    Session(#[from] SessionError),
}

/// Why a state machine could not restore a snapshot (see
/// [`crate::StateMachine::try_restore`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot restore the snapshot: {source}")]
pub struct RestoreError {
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl RestoreError {
    /// Wraps the reason: any error, or a message (`&str`, `String`).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RestoreError { source: source.into() }
    }
}

impl Error {
    pub(crate) fn from_propose(error: ProposeError) -> Error {
        match error {
            ProposeError::NotLeader { leader_hint: Some(leader_hint) } => Error::NotLeader { leader_hint },
            ProposeError::NotLeader { leader_hint: None } => Error::NoLeader,
            other => Error::Rejected(other),
        }
    }

    pub(crate) fn from_config_change(error: ConfigChangeError) -> Error {
        match error {
            ConfigChangeError::NotLeader { leader_hint: Some(leader_hint) } => {
                Error::NotLeader { leader_hint }
            }
            ConfigChangeError::NotLeader { leader_hint: None } => Error::NoLeader,
            other => Error::ConfigChange(other),
        }
    }

    pub(crate) fn from_transfer(error: TransferError) -> Error {
        match error {
            TransferError::NotLeader { leader_hint: Some(leader_hint) } => Error::NotLeader { leader_hint },
            TransferError::NotLeader { leader_hint: None } => Error::NoLeader,
            other => Error::Transfer(other),
        }
    }

    pub(crate) fn from_read(error: ReadError) -> Error {
        match error {
            ReadError::NoLeader => Error::NoLeader,
            ReadError::Timeout => Error::Timeout,
            other => Error::Read(other),
        }
    }
}
