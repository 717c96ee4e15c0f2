//! Follower-to-leader forwarding of proposals: the wire form of a proposal's
//! outcome, shared by the [`crate::Transport`] route that serves
//! `POST /raft/forward` and the [`crate::HttpConnect`] client that calls it.

use bytes::Bytes;
use raft_core::{NodeId, ProposeError};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The postcard-encoded body of a `POST /raft/forward` reply: the leader's
/// `propose` outcome with the typed errors kept.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    Applied(Bytes),
    NotLeader { leader_hint: NodeId },
    NoLeader,
    Timeout,
    ProposalLost,
    TooLarge { size: usize, max: usize },
    Empty,
    UncommittedLimit { max: usize },
    Stopped,
    Busy,
    Other(String),
}

impl ForwardReply {
    pub(crate) fn from_outcome(outcome: Result<Bytes, Error>) -> ForwardReply {
        match outcome {
            Ok(response) => ForwardReply::Applied(response),
            Err(Error::NotLeader { leader_hint }) => ForwardReply::NotLeader { leader_hint },
            Err(Error::NoLeader) => ForwardReply::NoLeader,
            Err(Error::Timeout) => ForwardReply::Timeout,
            Err(Error::ProposalLost) => ForwardReply::ProposalLost,
            Err(Error::Rejected(ProposeError::TooLarge { size, max })) => {
                ForwardReply::TooLarge { size, max }
            }
            Err(Error::Rejected(ProposeError::Empty)) => ForwardReply::Empty,
            Err(Error::Rejected(ProposeError::UncommittedLimit { max })) => {
                ForwardReply::UncommittedLimit { max }
            }
            Err(Error::Rejected(ProposeError::NotLeader { leader_hint: Some(leader_hint) })) => {
                ForwardReply::NotLeader { leader_hint }
            }
            Err(Error::Rejected(ProposeError::NotLeader { leader_hint: None })) => ForwardReply::NoLeader,
            Err(Error::Stopped) => ForwardReply::Stopped,
            Err(Error::Busy) => ForwardReply::Busy,
            Err(other) => ForwardReply::Other(other.to_string()),
        }
    }

    pub(crate) fn into_outcome(self) -> Result<Bytes, Error> {
        match self {
            ForwardReply::Applied(response) => Ok(response),
            ForwardReply::NotLeader { leader_hint } => Err(Error::NotLeader { leader_hint }),
            ForwardReply::NoLeader => Err(Error::NoLeader),
            ForwardReply::Timeout => Err(Error::Timeout),
            ForwardReply::ProposalLost => Err(Error::ProposalLost),
            ForwardReply::TooLarge { size, max } => {
                Err(Error::Rejected(ProposeError::TooLarge { size, max }))
            }
            ForwardReply::Empty => Err(Error::Rejected(ProposeError::Empty)),
            ForwardReply::UncommittedLimit { max } => {
                Err(Error::Rejected(ProposeError::UncommittedLimit { max }))
            }
            // The leader is stopping or overloaded: this node knows no
            // working leader right now; the caller may retry.
            ForwardReply::Stopped | ForwardReply::Busy => Err(Error::NoLeader),
            ForwardReply::Other(message) => Err(Error::Forward(message)),
        }
    }
}

/// `POST <address>/raft/forward`, or `http://<address>/raft/forward` for a
/// bare `host:port`.
pub(crate) fn url(address: &str, path: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        format!("{}{path}", address.trim_end_matches('/'))
    } else {
        format!("http://{address}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_survives_the_wire() {
        let outcomes = vec![
            Ok(Bytes::from("response")),
            Err(Error::NotLeader { leader_hint: 3 }),
            Err(Error::NoLeader),
            Err(Error::Timeout),
            Err(Error::ProposalLost),
            Err(Error::Rejected(ProposeError::TooLarge { size: 10, max: 5 })),
            Err(Error::Rejected(ProposeError::Empty)),
            Err(Error::Rejected(ProposeError::UncommittedLimit { max: 7 })),
        ];
        for outcome in outcomes {
            let expected = format!("{outcome:?}");
            let wire = postcard::to_allocvec(&ForwardReply::from_outcome(outcome)).unwrap();
            let back = postcard::from_bytes::<ForwardReply>(&wire).unwrap().into_outcome();
            assert_eq!(format!("{back:?}"), expected);
        }
        assert!(matches!(ForwardReply::from_outcome(Err(Error::Busy)).into_outcome(), Err(Error::NoLeader)));
    }
}
