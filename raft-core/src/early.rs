//! Replicating new entries while the leader writes them (dissertation
//! 10.2.1): the one exception to "a `Persist` is durable before any later
//! action", written once here so every driver applies the same rule.
//!
//! A leader's `Persist` of new entries is usually followed by the
//! `AppendEntries` that carry them. Waiting for the leader's own fsync before
//! sending puts two fsyncs in a row on every commit's path (the leader's,
//! then the followers'). The dissertation observes that the leader's write
//! can overlap the followers': the leader is just one of the servers whose
//! copy counts towards a majority, and its copy must only be durable before
//! anyone *learns* that the entry is committed on the strength of it.
//!
//! The core counts the leader's own copy when it appends, so its commit
//! index may run ahead of what is durable while the write is in flight. That
//! is safe as long as nothing reveals such a commit: [`EarlySends`] lets only
//! `AppendEntries` from this node through early, only while the pending
//! writes merely append (no term, vote or truncation to wait for), and only
//! when the message's commit index is already durable here. Every other
//! action (applies, replies, read confirmations, other messages) still waits.

use crate::message::{Body, Index, NodeId};
use crate::node::Action;

/// Decides which actions that follow a pending [`Action::Persist`] a driver
/// may run before that `Persist` is durable.
///
/// Feed it, in order, the actions starting at the first `Persist` that is
/// not yet durable (everything before it already ran, every earlier
/// `Persist` is durable); run at once each one [`EarlySends::allows`], hold
/// the rest in order until the `Persist`s before them are durable, as the
/// [`crate::Node`] contract says. Start a new `EarlySends` for each such
/// walk.
///
/// ```
/// use raft_core::{Action, Body, EarlySends, Entry, Message, Payload, Persist};
///
/// let entry = Entry { index: 8, term: 3, payload: Payload::Command("x".into()) };
/// let write = Action::Persist(Persist { entries: vec![entry.clone()], ..Persist::default() });
/// let append = |commit| {
///     Action::Send(Message {
///         from: 1,
///         to: 2,
///         term: 3,
///         body: Body::AppendEntries {
///             prev_index: 7,
///             prev_term: 3,
///             entries: vec![entry.clone()],
///             commit,
///         },
///     })
/// };
/// let mut early = EarlySends::new(1);
/// assert!(!early.allows(&write)); // the write itself
/// assert!(early.allows(&append(7))); // replicate while writing
/// assert!(!early.allows(&append(8))); // would reveal a commit counting our copy
/// ```
#[derive(Clone, Debug)]
pub struct EarlySends {
    me: NodeId,
    /// Every pending `Persist` so far only appends entries.
    appends_only: bool,
    /// The log is durable up to here: the entry before the first pending
    /// one (unknown until a pending `Persist` with entries is seen).
    durable_last: Option<Index>,
}

impl EarlySends {
    /// A walk over the pending actions of node `me`.
    pub fn new(me: NodeId) -> Self {
        EarlySends { me, appends_only: true, durable_last: None }
    }

    /// Whether `action`, the next one in order, may run now, before the
    /// pending `Persist`s seen so far are durable.
    pub fn allows(&mut self, action: &Action) -> bool {
        match action {
            Action::Persist(p) => {
                // A new term, a vote or a truncation must be durable before
                // any message that depends on it: close the walk.
                self.appends_only &= p.hard_state.is_none() && p.truncate_from.is_none();
                if self.durable_last.is_none() {
                    self.durable_last = p.entries.first().map(|e| e.index - 1);
                }
                false
            }
            Action::RestoreSnapshot { .. } => {
                self.appends_only = false;
                false
            }
            Action::Send(m) => {
                let Body::AppendEntries { commit, .. } = &m.body else { return false };
                let Some(durable_last) = self.durable_last else { return false };
                self.appends_only && m.from == self.me && (*commit <= durable_last || reveal_commits())
            }
            _ => false,
        }
    }
}

#[cfg(feature = "broken-rules")]
fn reveal_commits() -> bool {
    crate::broken::early_send_reveals_commit()
}

#[cfg(not(feature = "broken-rules"))]
fn reveal_commits() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Entry, HardState, Message, Payload};
    use crate::node::Persist;

    fn entries(first: Index, last: Index) -> Vec<Entry> {
        (first..=last).map(|index| Entry { index, term: 2, payload: Payload::Noop }).collect()
    }

    fn append(from: NodeId, commit: Index) -> Action {
        let body = Body::AppendEntries { prev_index: 4, prev_term: 2, entries: entries(5, 6), commit };
        Action::Send(Message { from, to: 2, term: 2, body })
    }

    fn persist(truncate_from: Option<Index>, hard_state: Option<HardState>) -> Action {
        Action::Persist(Persist { truncate_from, entries: entries(5, 6), hard_state })
    }

    #[test]
    fn appends_go_early_only_with_a_durable_commit() {
        let mut early = EarlySends::new(1);
        assert!(!early.allows(&persist(None, None)));
        assert!(early.allows(&append(1, 4)));
        assert!(!early.allows(&append(1, 5)), "commit 5 counts the pending copy");
        assert!(!early.allows(&append(3, 4)), "not ours");
    }

    #[test]
    fn nothing_but_appends_goes_early() {
        let mut early = EarlySends::new(1);
        assert!(!early.allows(&persist(None, None)));
        let vote = Message { from: 1, to: 2, term: 2, body: Body::RequestVoteResponse { granted: true } };
        assert!(!early.allows(&Action::Send(vote)));
        assert!(!early.allows(&Action::Apply(entries(1, 4))));
        assert!(!early.allows(&Action::ReadReady { id: 1, index: 4 }));
    }

    #[test]
    fn a_term_vote_or_truncation_closes_the_walk() {
        let hard_state = HardState { term: 3, vote: Some(1) };
        for closing in [persist(None, Some(hard_state)), persist(Some(5), None)] {
            let mut early = EarlySends::new(1);
            assert!(!early.allows(&persist(None, None)));
            assert!(!early.allows(&closing));
            assert!(!early.allows(&append(1, 0)));
        }
    }

    #[test]
    fn nothing_goes_early_before_a_write_with_entries() {
        let mut early = EarlySends::new(1);
        assert!(!early.allows(&append(1, 0)));
    }
}
