//! Cluster membership as data (paper section 6): the complete topology of
//! voters and learners, each with an opaque address the core never parses,
//! and, during a joint-consensus transition, the outgoing voters.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ConfigChangeError;
use crate::message::NodeId;
use crate::quorum;

/// A complete cluster topology, as an application asks for it with
/// [`crate::Input::SetConfiguration`]: every voter and every learner, each
/// with an opaque address. Whatever is not listed is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Voting members.
    pub voters: BTreeMap<NodeId, String>,
    /// Non-voting members that receive the log.
    pub learners: BTreeMap<NodeId, String>,
}

impl Topology {
    /// Checks that the topology can be a configuration: at least one voter,
    /// no node id 0, no node both voter and learner.
    pub fn validate(&self) -> Result<(), ConfigChangeError> {
        if self.voters.is_empty() {
            return Err(ConfigChangeError::NoVoters);
        }
        if self.voters.contains_key(&0) || self.learners.contains_key(&0) {
            return Err(ConfigChangeError::InvalidNodeId);
        }
        if let Some(&id) = self.learners.keys().find(|id| self.voters.contains_key(id)) {
            return Err(ConfigChangeError::VoterAndLearner(id));
        }
        Ok(())
    }
}

/// A configuration: who votes, who only listens, and how to reach each.
///
/// Outside a transition `old_voters` is `None` and decisions need a majority
/// of `voters`. In the joint configuration C_old,new, `old_voters` holds
/// C_old's voters and every decision needs a majority of both sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voting members (C_new during a transition), with their addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Non-voting members that receive the log.
    pub learners: BTreeMap<NodeId, String>,
    /// C_old's voters while a joint-consensus transition is in progress.
    pub old_voters: Option<BTreeMap<NodeId, String>>,
}

impl Membership {
    /// A configuration of voters only, outside any transition.
    pub fn with_voters<A: Into<String>>(voters: impl IntoIterator<Item = (NodeId, A)>) -> Self {
        Membership {
            voters: voters.into_iter().map(|(id, a)| (id, a.into())).collect(),
            learners: BTreeMap::new(),
            old_voters: None,
        }
    }

    /// The topology this configuration settles on (C_new while joint).
    pub fn topology(&self) -> Topology {
        Topology { voters: self.voters.clone(), learners: self.learners.clone() }
    }

    /// Whether `id` votes in any half of the current configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.old_voters.as_ref().is_some_and(|old| old.contains_key(&id))
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains_key(&id) && !self.is_voter(id)
    }

    /// Whether `id` belongs to the configuration in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains_key(&id)
    }

    /// Whether a joint-consensus transition is in progress.
    pub fn is_joint(&self) -> bool {
        self.old_voters.is_some()
    }

    /// Every member (voters of both halves and learners), in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.keys().copied().collect();
        all.extend(self.learners.keys().copied());
        if let Some(old) = &self.old_voters {
            all.extend(old.keys().copied());
        }
        all
    }

    /// The address of a member, wherever it appears.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.voters
            .get(&id)
            .or_else(|| self.learners.get(&id))
            .or_else(|| self.old_voters.as_ref().and_then(|old| old.get(&id)))
            .map(String::as_str)
    }

    /// The largest index stored on a quorum, given each voter's match index.
    /// During a transition, the smaller of the two halves' answers.
    pub fn committed_index(&self, scratch: &mut Vec<u64>, match_of: impl Fn(NodeId) -> u64) -> u64 {
        let new = quorum::majority_index(scratch, self.voters.keys().map(|&id| match_of(id)));
        match &self.old_voters {
            None => new,
            Some(old) => new.min(quorum::majority_index(scratch, old.keys().map(|&id| match_of(id)))),
        }
    }

    /// The outcome of a vote given who granted and who refused.
    pub fn vote_result(&self, granted: &BTreeSet<NodeId>, refused: &BTreeSet<NodeId>) -> quorum::VoteResult {
        let new = quorum::vote_result(self.voters.keys(), granted, refused);
        match &self.old_voters {
            None => new,
            Some(old) => new.and(quorum::vote_result(old.keys(), granted, refused)),
        }
    }

    pub(crate) fn size_bytes(&self) -> usize {
        let sum = |m: &BTreeMap<NodeId, String>| m.values().map(|a| a.len() + 8).sum::<usize>();
        sum(&self.voters) + sum(&self.learners) + self.old_voters.as_ref().map_or(0, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::VoteResult;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn joint_commit_needs_both_majorities() {
        // Paper figure 11, SCENARIOS B5: C_old={1,2,3}, C_new={3,4,5}.
        let m = Membership {
            voters: [(3, ""), (4, ""), (5, "")].into_iter().map(|(i, a)| (i, a.to_string())).collect(),
            learners: BTreeMap::new(),
            old_voters: Some(
                [(1, ""), (2, ""), (3, "")].into_iter().map(|(i, a)| (i, a.to_string())).collect(),
            ),
        };
        let mut scratch = Vec::new();
        let acked = |ids: &[NodeId]| {
            let s = set(ids);
            move |id: NodeId| if s.contains(&id) { 7 } else { 0 }
        };
        assert_eq!(m.committed_index(&mut scratch, acked(&[1, 2])), 0);
        assert_eq!(m.committed_index(&mut scratch, acked(&[4, 5])), 0);
        assert_eq!(m.committed_index(&mut scratch, acked(&[1, 2, 4, 5])), 7);
        assert_eq!(m.committed_index(&mut scratch, acked(&[2, 3, 4])), 7);
        assert_eq!(m.vote_result(&set(&[1, 2]), &set(&[])), VoteResult::Pending);
        assert_eq!(m.vote_result(&set(&[2, 3, 4]), &set(&[])), VoteResult::Won);
        assert_eq!(m.vote_result(&set(&[1]), &set(&[4, 5])), VoteResult::Lost);
    }
}
