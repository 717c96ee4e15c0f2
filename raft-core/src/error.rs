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
    /// Accepting it would exceed `uncommitted_bytes_max`: the cluster is not
    /// keeping up. Retry after some entries commit.
    #[error("uncommitted entries exceed {max} bytes")]
    UncommittedLimit {
        /// The configured limit.
        max: usize,
    },
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
