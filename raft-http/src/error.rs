//! The runtime's typed errors.

use raft_core::{NodeError, NodeId, ProposeError, ReadError};
use raft_storage::StorageError;

/// Why a [`crate::RaftHandle`] call or [`crate::RaftNode::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader; `leader_hint` is the leader it knows of.
    /// Retry there (follower forwarding is not implemented yet).
    #[error("not the leader (leader hint: {leader_hint})")]
    NotLeader {
        /// The leader this node believes in.
        leader_hint: NodeId,
    },
    /// No leader is known right now (an election is running); retry later.
    #[error("no leader known")]
    NoLeader,
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
    /// The read could not be confirmed.
    #[error("read failed: {0}")]
    Read(ReadError),
    /// The node has stopped (shut down, or a storage failure stopped it).
    #[error("the node has stopped")]
    Stopped,
    /// The node is overloaded: its input queue is full.
    #[error("the node's input queue is full")]
    Busy,
    /// Opening or writing the data directory failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The core refused to start (invalid config or inconsistent state).
    #[error("node: {0}")]
    Node(#[from] NodeError),
}

impl Error {
    pub(crate) fn from_propose(error: ProposeError) -> Error {
        match error {
            ProposeError::NotLeader { leader_hint: Some(leader_hint) } => Error::NotLeader { leader_hint },
            ProposeError::NotLeader { leader_hint: None } => Error::NoLeader,
            other => Error::Rejected(other),
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
