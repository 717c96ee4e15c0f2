//! What nodes say to each other, and what they store: entries, messages,
//! hard state. All of it is plain data with serde derives so any driver can
//! put it on a wire or a disk in the encoding it likes.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::membership::Membership;

/// A node's identity. Zero is reserved to mean "nobody".
pub type NodeId = u64;
/// A Raft term (paper section 5.1).
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry carries.
    pub payload: Payload,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The empty entry a new leader appends to commit entries of earlier
    /// terms (paper section 5.4.2). Applied as a no-op.
    Noop,
    /// An application command, opaque to Raft.
    Command(Bytes),
    /// A configuration (paper section 6). Boxed: configurations are rare and
    /// large, and every entry is as big as the largest variant.
    Membership(Box<Membership>),
}

impl Entry {
    /// The fixed per-entry overhead counted by [`Entry::size_bytes`].
    pub const HEADER_BYTES: usize = 24;

    /// An approximation of the entry's encoded size, used for the byte limits
    /// in [`crate::Config`]. Counts the payload plus a fixed header.
    pub fn size_bytes(&self) -> usize {
        Self::HEADER_BYTES
            + match &self.payload {
                Payload::Noop => 0,
                Payload::Command(data) => data.len(),
                Payload::Membership(m) => m.size_bytes(),
            }
    }
}

/// The state that must be durable before a node answers anyone: its current
/// term and the vote it cast in that term (paper figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// The highest term a message may carry. A node never campaigns past it, so
/// `Term::MAX` is never a real term and there is always room for `term + 1`.
pub const TERM_MAX: Term = Term::MAX - 1;

/// The metadata of a snapshot: the last entry it covers and the
/// configuration as of that entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers (0: none).
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// The configuration in force at `index`.
    pub membership: Membership,
}

/// A message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's current term.
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

impl Message {
    /// Whether the message is consistent in itself, whatever the receiver's
    /// state: a correct node could have sent it. A node drops a malformed
    /// message before it changes anything, its term included.
    ///
    /// - the term is at most [`TERM_MAX`];
    /// - a vote or pre-vote request's last log term is at most its term;
    /// - an AppendEntries has contiguous entries from `prev_index + 1` whose
    ///   terms never decrease, start no lower than `prev_term` and never
    ///   exceed the message's term;
    /// - an InstallSnapshot covers at least one entry, below `Index::MAX`,
    ///   with a term from 1 up to the message's (the leader had that entry),
    ///   and a configuration with voters.
    pub fn is_well_formed(&self) -> bool {
        if self.term > TERM_MAX {
            return false;
        }
        match &self.body {
            Body::RequestVote { last_log_term, .. } | Body::PreVote { last_log_term, .. } => {
                *last_log_term <= self.term
            }
            Body::AppendEntries { prev_index, prev_term, entries, .. } => {
                entries_well_formed(*prev_index, *prev_term, entries, self.term)
            }
            Body::InstallSnapshot { meta, .. } => {
                meta.index > 0
                    && meta.index < Index::MAX
                    && (1..=self.term).contains(&meta.term)
                    && !meta.membership.voters.is_empty()
            }
            _ => true,
        }
    }
}

/// Entries contiguous from `prev_index + 1`, with terms that never decrease,
/// start no lower than `prev_term` and never exceed the leader's term.
fn entries_well_formed(prev_index: Index, prev_term: Term, entries: &[Entry], msg_term: Term) -> bool {
    if prev_term > msg_term {
        return false;
    }
    let mut expect = (prev_index, prev_term);
    for e in entries {
        if Some(e.index) != expect.0.checked_add(1) || e.term < expect.1 || e.term > msg_term {
            return false;
        }
        expect = (e.index, e.term);
    }
    true
}

/// The kinds of message. Every response carries enough to be matched to its
/// request without any per-request state on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// A candidate asks for a vote (paper figure 2, RequestVote RPC).
    RequestVote {
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The candidate campaigns because the leader handed over to it
        /// ([`Body::TimeoutNow`]): voters skip the disruption guard.
        transfer: bool,
    },
    /// The answer to a RequestVote.
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// A leader replicates entries, or sends a heartbeat when `entries` is
    /// empty (paper figure 2, AppendEntries RPC).
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to store, starting at `prev_index + 1`. Empty for a heartbeat.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to an AppendEntries.
    AppendEntriesResponse(AppendResult),
    /// Would you vote for me at the message's term? Changes nobody's term
    /// (dissertation 9.6, PreVote).
    PreVote {
        /// Index of the pre-candidate's last log entry.
        last_log_index: Index,
        /// Term of the pre-candidate's last log entry.
        last_log_term: Term,
    },
    /// The answer to a PreVote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// A leader confirms it still leads, for reads (ReadIndex).
    ReadConfirm {
        /// The leader's confirmation round.
        round: u64,
    },
    /// A follower acknowledges a leader's confirmation round.
    ReadConfirmResponse {
        /// The round acknowledged.
        round: u64,
    },
    /// One chunk of the leader's snapshot (paper figure 13, InstallSnapshot).
    /// The leader's driver fills in `data`, `done` and `checksum` from its
    /// snapshot file when the core asks with [`crate::Action::SendSnapshotChunk`].
    InstallSnapshot {
        /// The snapshot: last included index and term, and configuration.
        meta: Box<SnapshotMeta>,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
        /// CRC32C of the whole snapshot ([`crate::crc32c`]).
        checksum: u32,
    },
    /// A follower asks for the snapshot chunk at `next_offset` (after a
    /// chunk it stored, or to resume after a lost one).
    InstallSnapshotResponse {
        /// The snapshot's last included index.
        index: Index,
        /// The next byte the follower wants.
        next_offset: u64,
    },
    /// The leader hands over: campaign now, without waiting for a timeout
    /// (dissertation 3.10, leadership transfer).
    TimeoutNow,
    /// A follower forwards a read to the leader to get a read index.
    ReadIndexRequest {
        /// The follower's read id.
        id: u64,
        /// Whether the leader may answer from its lease.
        lease: bool,
    },
    /// The leader's answer: the index to wait for, or `None` if it could
    /// not confirm the read.
    ReadIndexResponse {
        /// The follower's read id.
        id: u64,
        /// The read index.
        index: Option<Index>,
    },
}

/// The outcome of an AppendEntries at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log now matches the leader's through `match_index`.
    Success {
        /// The highest index the request proved to match (prev + entries).
        match_index: Index,
    },
    /// The follower's log has no entry at `rejected_prev` with the leader's
    /// term. The hint lets the leader skip a whole conflicting term per round
    /// trip (paper section 5.3, the optimization at the end).
    Reject {
        /// The `prev_index` of the rejected request.
        rejected_prev: Index,
        /// Where the leader should look next.
        hint: ConflictHint,
    },
}

/// A rejecting follower's advice on where its log diverges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at `rejected_prev`, or 0 when the
    /// follower's log is shorter than `rejected_prev`.
    pub term: Term,
    /// The first index of `term` in the follower's log, or the follower's
    /// last index + 1 when its log is too short.
    pub index: Index,
}

impl Body {
    /// The message kind as a short name, for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::RequestVote { .. } => "RequestVote",
            Body::RequestVoteResponse { .. } => "RequestVoteResponse",
            Body::AppendEntries { .. } => "AppendEntries",
            Body::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Body::PreVote { .. } => "PreVote",
            Body::TimeoutNow => "TimeoutNow",
            Body::InstallSnapshot { .. } => "InstallSnapshot",
            Body::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::ReadConfirm { .. } => "ReadConfirm",
            Body::ReadConfirmResponse { .. } => "ReadConfirmResponse",
            Body::ReadIndexRequest { .. } => "ReadIndexRequest",
            Body::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

/// The compact trace form: `1->2 AppendEntries t=3 prev=5/2 n=2 commit=5`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {} t={}", self.from, self.to, self.body.kind(), self.term)?;
        match &self.body {
            Body::RequestVote { last_log_index, last_log_term, transfer } => {
                write!(f, " last={last_log_index}/{last_log_term}")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            Body::PreVote { last_log_index, last_log_term } => {
                write!(f, " last={last_log_index}/{last_log_term}")
            }
            Body::TimeoutNow => Ok(()),
            Body::InstallSnapshot { meta, offset, data, done, .. } => write!(
                f,
                " snap={}/{} offset={offset} len={}{}",
                meta.index,
                meta.term,
                data.len(),
                if *done { " done" } else { "" }
            ),
            Body::InstallSnapshotResponse { index, next_offset } => {
                write!(f, " snap={index} next={next_offset}")
            }
            Body::RequestVoteResponse { granted } | Body::PreVoteResponse { granted } => {
                write!(f, " {}", if *granted { "granted" } else { "refused" })
            }
            Body::AppendEntries { prev_index, prev_term, entries, commit } => {
                write!(f, " prev={prev_index}/{prev_term} n={} commit={commit}", entries.len())
            }
            Body::AppendEntriesResponse(AppendResult::Success { match_index }) => {
                write!(f, " ok match={match_index}")
            }
            Body::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
                write!(f, " reject prev={rejected_prev} hint={}/{}", hint.index, hint.term)
            }
            Body::ReadConfirm { round } | Body::ReadConfirmResponse { round } => write!(f, " round={round}"),
            Body::ReadIndexRequest { id, lease } => write!(f, " id={id} lease={lease}"),
            Body::ReadIndexResponse { id, index } => write!(f, " id={id} index={index:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_form_is_compact() {
        let m = Message {
            from: 1,
            to: 2,
            term: 3,
            body: Body::AppendEntries {
                prev_index: 5,
                prev_term: 2,
                entries: vec![
                    Entry { term: 3, index: 6, payload: Payload::Noop },
                    Entry { term: 3, index: 7, payload: Payload::Command(Bytes::from_static(b"x")) },
                ],
                commit: 5,
            },
        };
        assert_eq!(m.to_string(), "1->2 AppendEntries t=3 prev=5/2 n=2 commit=5");
    }
}
