//! Test-only switches that break one protocol rule each (feature
//! `broken-rules`). They exist so that the simulator's checkers can be shown
//! to catch each violation; with the feature on but no switch set, behaviour
//! is unchanged. Switches are per thread so parallel tests do not interfere.

use std::cell::Cell;

/// One deliberately broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokenRule {
    /// Commit an old-term entry by counting its replicas (figure 8 violation).
    CommitOldTermByCounting,
    /// Grant a vote without persisting it.
    ForgetVotePersist,
    /// Grant votes without the log up-to-date check (5.4.1).
    SkipUpToDateCheck,
    /// SetConfiguration switches straight to C_new, skipping the learner
    /// catch-up and the joint configuration (paper figure 10's hazard).
    DirectConfigSwitch,
    /// A follower installing a snapshot that conflicts with its log keeps
    /// the conflicting suffix (paper figure 13, rule 7 broken).
    KeepConflictingSuffix,
    /// A leader answers every read at once from its local state, without
    /// confirming it still leads.
    ReadWithoutConfirmation,
    /// A follower treats every entry it stores as committed and applies it
    /// at once, without waiting for the leader's commit index.
    ApplyBeforeCommit,
    /// A leader's `AppendEntries` go out while its own write of new entries
    /// is in flight even when their commit index counts that unwritten copy
    /// ([`crate::EarlySends`] without its commit check).
    EarlySendRevealsCommit,
}

thread_local! {
    static BROKEN: Cell<u32> = const { Cell::new(0) };
}

fn bit(rule: BrokenRule) -> u32 {
    1 << rule as u32
}

/// Breaks `rule` on this thread until [`repair_all`].
pub fn set(rule: BrokenRule) {
    BROKEN.with(|b| b.set(b.get() | bit(rule)));
}

/// Restores every rule on this thread.
pub fn repair_all() {
    BROKEN.with(|b| b.set(0));
}

fn is(rule: BrokenRule) -> bool {
    BROKEN.with(|b| b.get() & bit(rule) != 0)
}

pub(crate) fn commit_old_term_by_counting() -> bool {
    is(BrokenRule::CommitOldTermByCounting)
}
pub(crate) fn forget_vote_persist() -> bool {
    is(BrokenRule::ForgetVotePersist)
}
pub(crate) fn skip_up_to_date_check() -> bool {
    is(BrokenRule::SkipUpToDateCheck)
}
pub(crate) fn apply_before_commit() -> bool {
    is(BrokenRule::ApplyBeforeCommit)
}
pub(crate) fn read_without_confirmation() -> bool {
    is(BrokenRule::ReadWithoutConfirmation)
}
pub(crate) fn direct_config_switch() -> bool {
    is(BrokenRule::DirectConfigSwitch)
}
pub(crate) fn keep_conflicting_suffix() -> bool {
    is(BrokenRule::KeepConflictingSuffix)
}
pub(crate) fn early_send_reveals_commit() -> bool {
    is(BrokenRule::EarlySendRevealsCommit)
}
