//! The Raft consensus protocol as a pure, deterministic state machine.
//!
//! `raft-core` holds every rule of Raft (elections, replication, commit,
//! membership) and nothing else: no I/O, no clock, no OS randomness, no
//! threads, no async. A driver feeds it [`Input`]s and executes the
//! [`Action`]s it returns, in order; see [`Node`] for the full contract. The
//! same core runs under the deterministic simulator (`raft-sim`), the tokio
//! HTTP runtime (`raft-http`) and plain threads (`examples/embed`).
//!
//! ```
//! use raft_core::{Action, Config, Input, Membership, Node, Restored};
//!
//! // A one-node cluster elects itself after an election timeout...
//! let membership = Membership::with_voters([(1, "127.0.0.1:7001")]);
//! let mut node = Node::new(Config::new(1), Restored::new_cluster(membership)).unwrap();
//! let mut actions = Vec::new();
//! for _ in 0..30 {
//!     node.step_into(Input::Tick, &mut actions);
//! }
//! assert!(node.role() == raft_core::Role::Leader);
//!
//! // ...and then commits a proposal at once: persist, then apply.
//! actions.clear();
//! node.step_into(Input::Propose(vec!["set x=1".into()]), &mut actions);
//! assert!(matches!(actions[0], Action::Persist(_)));
//! assert!(actions.iter().any(|a| matches!(a, Action::Apply(entries) if entries[0].index == 2)));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod crc;
mod early;
mod error;
mod log;
mod membership;
mod message;
mod node;
mod progress;
pub mod quorum;
mod read;
mod rng;

#[cfg(feature = "broken-rules")]
pub mod broken;

pub use config::Config;
pub use crc::crc32c;
pub use early::EarlySends;
pub use error::{ConfigChangeError, ConfigError, Lost, NodeError, ProposeError, TransferError};
pub use membership::{Membership, Topology};
pub use message::{
    AppendResult, Body, ConflictHint, Entry, HardState, Index, Message, NodeId, Payload, Term, TERM_MAX,
};
pub use node::{Action, Input, Node, Persist, Restored, Role, SnapshotMeta, Status};
pub use progress::{Progress, ProgressState};
pub use read::{ReadError, ReadId, ReadPolicy};
