//! Membership changes (paper section 6) and leadership transfer
//! (dissertation 3.10), as methods of the leader.
//!
//! A configuration takes effect on each node as soon as its entry is
//! appended, not when it commits (the paper's rule; etcd waits for apply).
//! Joint consensus is safe only if every node uses the latest configuration
//! in its log: a leader of C_old,new must need both majorities from the
//! moment the entry exists, or C_old alone could elect a second leader. The
//! simulator checks election safety across changes under partitions.
//!
//! The path to a new topology:
//! 1. voters that are not yet members are added as learners (one entry;
//!    learners do not change any quorum, so no joint phase is needed);
//! 2. once that entry commits and each of them is within
//!    `entries_per_message_max` of the leader's log, the leader appends
//!    C_old,new (or C_new directly when the voters do not change);
//! 3. when C_old,new commits, any leader appends C_new (a new leader that
//!    finds a joint configuration finishes it);
//! 4. when C_new commits, the change is complete; a leader that is not a
//!    voter of C_new steps down.

use super::{Action, Change, Node, Role, Transfer};
use crate::error::{ConfigChangeError, TransferError};
use crate::membership::{Membership, Topology};
use crate::message::{Body, NodeId, Payload};
use crate::progress::Progress;

impl Node {
    pub(super) fn set_configuration(&mut self, target: Topology) {
        let refuse = if self.role != Role::Leader {
            Some(ConfigChangeError::NotLeader { leader_hint: self.leader })
        } else if let Err(e) = target.validate() {
            Some(e)
        } else if self.change.is_some()
            || self.transfer.is_some()
            || self.membership.is_joint()
            || self.membership_index > self.commit
        {
            Some(ConfigChangeError::ConfigChangeInProgress)
        } else if self.log.term_at(self.commit) != Some(self.term) {
            // Section 6 / the 2015 single-server bug: a new leader must
            // commit its own no-op before it changes the configuration.
            Some(ConfigChangeError::LeaderNotReady)
        } else {
            None
        };
        if let Some(error) = refuse {
            return self.emit(Action::ConfigChangeFailed { error });
        }
        if target == self.membership.topology() {
            return self.emit(Action::ConfigChangeCompleted { index: self.membership_index });
        }
        #[cfg(feature = "broken-rules")]
        if crate::broken::direct_config_switch() {
            let next = Membership {
                voters: target.voters.clone(),
                learners: target.learners.clone(),
                old_voters: None,
            };
            self.change = Some(Change { target, elapsed: 0, started: true });
            return self.append_membership(next);
        }
        let newcomers: Vec<(NodeId, String)> = target
            .voters
            .iter()
            .filter(|(id, _)| !self.membership.contains(**id))
            .map(|(&id, a)| (id, a.clone()))
            .collect();
        if !newcomers.is_empty() {
            let mut staged = self.membership.clone();
            staged.learners.extend(newcomers);
            self.append_membership(staged);
        }
        self.change = Some(Change { target, elapsed: 0, started: false });
        self.advance_change();
    }

    /// Moves the change along: from catch-up to the joint configuration, and
    /// from a committed C_new to completion.
    pub(super) fn advance_change(&mut self) {
        let Some(change) = &self.change else { return };
        if self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        if !change.started {
            if self.membership_index > self.commit {
                return; // the learners' entry is not committed yet
            }
            let last = self.log.last_index();
            let slack = self.config.entries_per_message_max as u64;
            // Caught up: holds the configuration that made it a learner, and
            // is within one full message of the leader's last index.
            let since = self.membership_index;
            let behind = change.target.voters.keys().any(|&id| {
                id != me
                    && !self.membership.is_voter(id)
                    && self
                        .progress
                        .get(&id)
                        .is_none_or(|p| p.match_index < since || p.match_index + slack < last)
            });
            if behind {
                return;
            }
            let target = change.target.clone();
            let same_voters = target.voters.keys().eq(self.membership.voters.keys());
            let old_voters = (!same_voters).then(|| self.membership.voters.clone());
            let next = Membership { voters: target.voters, learners: target.learners, old_voters };
            if let Some(c) = &mut self.change {
                c.started = true;
            }
            self.append_membership(next);
        } else if !self.membership.is_joint()
            && self.membership_index <= self.commit
            && self.membership.topology() == change.target
        {
            let index = self.membership_index;
            self.change = None;
            self.emit(Action::ConfigChangeCompleted { index });
        }
    }

    /// A committed configuration moves on: C_old,new to C_new (whoever
    /// leads), and a committed C_new retires members that left.
    pub(super) fn after_commit_membership(&mut self) {
        if self.role != Role::Leader || self.membership_index > self.commit {
            return;
        }
        if self.membership.is_joint() {
            let next = Membership { old_voters: None, ..self.membership.clone() };
            return self.append_membership(next);
        }
        // Runs on every commit: build the member set only when some
        // progress belongs to a node that left.
        if self.progress.keys().any(|&id| !self.membership.contains(id)) {
            let members = self.membership.members();
            self.progress.retain(|id, _| members.contains(id));
        }
        self.advance_change();
        if !self.membership.is_voter(self.config.id) {
            // Section 6: a leader outside C_new steps down once it commits.
            self.become_follower(self.term, None);
        }
    }

    fn append_membership(&mut self, next: Membership) {
        self.append_local(Payload::Membership(Box::new(next)));
        self.maybe_commit();
        self.broadcast_append();
    }

    /// A leader starts replicating to members it did not track yet. Members
    /// that left keep their progress until the configuration without them
    /// commits, so that they learn of it.
    pub(super) fn add_progress_for_members(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        for id in self.membership.members() {
            if id != self.config.id {
                self.progress.get_or_insert_with(id, || Progress::new(next));
            }
        }
    }

    pub(super) fn transfer_leadership(&mut self, to: NodeId) {
        let refuse = if self.role != Role::Leader {
            Some(TransferError::NotLeader { leader_hint: self.leader })
        } else if to == self.config.id {
            Some(TransferError::ToSelf)
        } else if !self.membership.contains(to) {
            Some(TransferError::UnknownNode(to))
        } else if !self.membership.is_voter(to) {
            Some(TransferError::ToLearner(to))
        } else if self.transfer.is_some() || self.change.is_some() {
            Some(TransferError::InProgress)
        } else {
            None
        };
        if let Some(error) = refuse {
            return self.emit(Action::TransferFailed { error });
        }
        self.transfer = Some(Transfer { to, elapsed: 0, timeout_now_sent: false });
        self.maybe_send_timeout_now();
        if self.transfer.is_some_and(|t| !t.timeout_now_sent) {
            self.send_append(to, false);
        }
    }

    /// Once the target holds the whole log, tell it to campaign.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = self.transfer else { return };
        let caught_up = self.progress.get(&t.to).is_some_and(|p| p.match_index == self.log.last_index());
        if !t.timeout_now_sent && caught_up {
            self.send(t.to, Body::TimeoutNow);
            if let Some(t) = &mut self.transfer {
                t.timeout_now_sent = true;
            }
        }
    }
}
