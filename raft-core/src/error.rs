//! The core's typed errors: small, `Clone + PartialEq`, no I/O.

use thiserror::Error;

use crate::message::{Index, NodeId, Term};

/// A [`crate::Config`] field is out of range.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is wrong.
    pub reason: String,
}

/// [`crate::Node::new`] refused to start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The restored state contradicts itself (a storage bug or corruption).
    #[error("restored state is inconsistent: {0}")]
    Restored(String),
}

/// Why a proposal was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader; `leader_hint` is the leader it last heard of.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// A command is larger than `bytes_per_message_max` and could never be sent.
    #[error("command of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The command's size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The proposal had no commands.
    #[error("empty proposal")]
    Empty,
    /// A leadership transfer is in progress; retry on the new leader.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Accepting it would exceed `uncommitted_bytes_max`: the cluster is not
    /// keeping up. Retry after some entries commit.
    #[error("uncommitted entries exceed {max} bytes")]
    UncommittedLimit {
        /// The configured limit.
        max: usize,
    },
}

/// Why a configuration change was refused or abandoned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigChangeError {
    /// Only the leader changes the configuration.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// Another change (or a leadership transfer) is in progress; one at a time.
    #[error("a configuration change or leadership transfer is already in progress")]
    ConfigChangeInProgress,
    /// A new leader must commit an entry of its own term before it accepts a
    /// change (the 2015 single-server membership bug). Retry shortly.
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// The topology has no voters.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved")]
    InvalidNodeId,
    /// A node is listed both as voter and as learner.
    #[error("node {0} is listed both as voter and as learner")]
    VoterAndLearner(NodeId),
    /// A new voter did not catch up within `catch_up_ticks_max`; it stays a learner.
    #[error("node {0} did not catch up in time; it stays a learner")]
    CatchUpTimeout(NodeId),
    /// Leadership was lost before the change completed. The change may
    /// still complete under the next leader: read the configuration.
    #[error("leadership lost before the change completed")]
    LeaderLost,
}

/// Why a leadership transfer was refused or abandoned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader transfers leadership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// The target is this node.
    #[error("this node already leads")]
    ToSelf,
    /// The target is a learner, which cannot lead.
    #[error("node {0} is a learner")]
    ToLearner(NodeId),
    /// The target is not in the configuration.
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// A transfer or configuration change is already in progress.
    #[error("a leadership transfer or configuration change is in progress")]
    InProgress,
    /// The target did not take over within an election timeout; proposals resume.
    #[error("the target did not take over in time")]
    Timeout,
}

/// A proposal that was accepted but whose entries were later overwritten by
/// another leader's: it will never be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The term the entries were proposed in.
    pub term: Term,
    /// First lost index.
    pub first_index: Index,
    /// Last lost index.
    pub last_index: Index,
}
