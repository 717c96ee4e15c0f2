//! Majority arithmetic. Knows nothing about messages or roles: given a set of
//! voters and what each has (a match index, a vote), it says what a majority
//! has. Joint consensus combines two answers in [`crate::Membership`].

use std::collections::BTreeSet;

use crate::message::NodeId;

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

impl VoteResult {
    /// Joint consensus: won only if both halves won, lost if either lost.
    pub fn and(self, other: VoteResult) -> VoteResult {
        match (self, other) {
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            _ => VoteResult::Pending,
        }
    }
}

/// The largest value held by a majority of `values` (one per voter): the
/// (n/2+1)-th largest. An empty voter set imposes no constraint (u64::MAX),
/// so that a joint configuration with an empty half reduces to the other.
pub fn majority_index(scratch: &mut Vec<u64>, values: impl Iterator<Item = u64>) -> u64 {
    scratch.clear();
    scratch.extend(values);
    if scratch.is_empty() {
        return u64::MAX;
    }
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    scratch[scratch.len() / 2]
}

/// The outcome of a vote among `voters`.
pub fn vote_result<'a>(
    voters: impl Iterator<Item = &'a NodeId>,
    granted: &BTreeSet<NodeId>,
    refused: &BTreeSet<NodeId>,
) -> VoteResult {
    let (mut total, mut yes, mut no) = (0usize, 0usize, 0usize);
    for id in voters {
        total += 1;
        if granted.contains(id) {
            yes += 1;
        } else if refused.contains(id) {
            no += 1;
        }
    }
    if total == 0 {
        return VoteResult::Won;
    }
    let majority = total / 2 + 1;
    if yes >= majority {
        VoteResult::Won
    } else if no > total - majority {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_index_table() {
        let mut s = Vec::new();
        let cases: &[(&[u64], u64)] = &[
            (&[5], 5),
            (&[5, 3], 3),
            (&[5, 3, 1], 3),
            (&[1, 5, 3, 2], 2),
            (&[9, 9, 1, 1, 1], 1),
            (&[9, 9, 9, 1, 1], 9),
            (&[4, 4, 4, 4, 1, 1], 4),
            (&[4, 4, 1, 1, 1, 1], 1),
        ];
        for (values, want) in cases {
            assert_eq!(majority_index(&mut s, values.iter().copied()), *want, "{values:?}");
        }
        assert_eq!(majority_index(&mut s, std::iter::empty()), u64::MAX);
    }

    #[test]
    fn vote_result_table() {
        let voters = |n: u64| (1..=n).collect::<Vec<_>>();
        let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<_>>();
        // (cluster size, granted, refused, expected)
        let cases: &[(u64, &[u64], &[u64], VoteResult)] = &[
            (1, &[1], &[], VoteResult::Won),
            (2, &[1], &[], VoteResult::Pending),
            (2, &[1], &[2], VoteResult::Lost),
            (2, &[1, 2], &[], VoteResult::Won),
            (3, &[1], &[], VoteResult::Pending),
            (3, &[1, 2], &[], VoteResult::Won),
            (3, &[1], &[2], VoteResult::Pending),
            (3, &[1], &[2, 3], VoteResult::Lost),
            (4, &[1, 2], &[3], VoteResult::Pending),
            (4, &[1, 2], &[3, 4], VoteResult::Lost),
            (4, &[1, 2, 3], &[], VoteResult::Won),
            (5, &[1, 2], &[3, 4], VoteResult::Pending),
            (5, &[1, 2, 3], &[4, 5], VoteResult::Won),
            (5, &[1, 2], &[3, 4, 5], VoteResult::Lost),
        ];
        for (n, yes, no, want) in cases {
            let v = voters(*n);
            assert_eq!(vote_result(v.iter(), &set(yes), &set(no)), *want, "n={n} yes={yes:?} no={no:?}");
        }
    }
}
