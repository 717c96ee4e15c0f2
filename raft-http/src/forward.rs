//! Follower-to-leader forwarding: what a follower asks the leader to do on
//! its behalf (a proposal, a configuration change, a leadership transfer),
//! and the leader's typed outcome, in the postcard form that travels as the
//! opaque bytes of [`crate::Connect::forward`] (over HTTP: the body of
//! `POST /raft/forward` and of its reply).

use bytes::Bytes;
use raft_core::{ConfigChangeError, Index, NodeId, ProposeError, Topology, TransferError};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What a follower asks of the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request {
    Propose(Bytes),
    SetConfiguration(Topology),
    TransferLeadership(NodeId),
}

/// What the leader did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The state machine's response to the proposal.
    Applied(Bytes),
    /// The configuration change completed; C_new is at this index.
    Configured(Index),
    /// The target leads now.
    Transferred,
}

#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    NotLeader { leader_hint: NodeId },
    NoLeader,
    Timeout,
    ProposalLost,
    TooLarge { size: usize, max: usize },
    Empty,
    UncommittedLimit { max: usize },
    ConfigInProgress,
    LeaderNotReady,
    NoVoters,
    InvalidNodeId,
    VoterAndLearner(NodeId),
    CatchUpTimeout(NodeId),
    ConfigLeaderLost,
    TransferToSelf,
    TransferToLearner(NodeId),
    TransferUnknownNode(NodeId),
    TransferInProgress,
    TransferTimeout,
    Other(String),
    // New variants go last: postcard numbers them in order.
    ProposeTransferInProgress,
}

impl WireError {
    fn from_error(error: Error) -> WireError {
        use ConfigChangeError as C;
        use TransferError as T;
        match error {
            Error::NotLeader { leader_hint } => WireError::NotLeader { leader_hint },
            // The leader is stopping or overloaded: for the follower, there
            // is no working leader right now.
            Error::NoLeader | Error::Stopped | Error::Busy => WireError::NoLeader,
            Error::Timeout => WireError::Timeout,
            Error::ProposalLost => WireError::ProposalLost,
            Error::Rejected(ProposeError::TooLarge { size, max }) => WireError::TooLarge { size, max },
            Error::Rejected(ProposeError::Empty) => WireError::Empty,
            Error::Rejected(ProposeError::UncommittedLimit { max }) => WireError::UncommittedLimit { max },
            Error::Rejected(ProposeError::TransferInProgress) => WireError::ProposeTransferInProgress,
            Error::ConfigChange(C::ConfigChangeInProgress) => WireError::ConfigInProgress,
            Error::ConfigChange(C::LeaderNotReady) => WireError::LeaderNotReady,
            Error::ConfigChange(C::NoVoters) => WireError::NoVoters,
            Error::ConfigChange(C::InvalidNodeId) => WireError::InvalidNodeId,
            Error::ConfigChange(C::VoterAndLearner(id)) => WireError::VoterAndLearner(id),
            Error::ConfigChange(C::CatchUpTimeout(id)) => WireError::CatchUpTimeout(id),
            Error::ConfigChange(C::LeaderLost) => WireError::ConfigLeaderLost,
            Error::Transfer(T::ToSelf) => WireError::TransferToSelf,
            Error::Transfer(T::ToLearner(id)) => WireError::TransferToLearner(id),
            Error::Transfer(T::UnknownNode(id)) => WireError::TransferUnknownNode(id),
            Error::Transfer(T::InProgress) => WireError::TransferInProgress,
            Error::Transfer(T::Timeout) => WireError::TransferTimeout,
            other => WireError::Other(other.to_string()),
        }
    }

    fn into_error(self) -> Error {
        use ConfigChangeError as C;
        use TransferError as T;
        match self {
            WireError::NotLeader { leader_hint } => Error::NotLeader { leader_hint },
            WireError::NoLeader => Error::NoLeader,
            WireError::Timeout => Error::Timeout,
            WireError::ProposalLost => Error::ProposalLost,
            WireError::TooLarge { size, max } => Error::Rejected(ProposeError::TooLarge { size, max }),
            WireError::Empty => Error::Rejected(ProposeError::Empty),
            WireError::UncommittedLimit { max } => Error::Rejected(ProposeError::UncommittedLimit { max }),
            WireError::ProposeTransferInProgress => Error::Rejected(ProposeError::TransferInProgress),
            WireError::ConfigInProgress => Error::ConfigChange(C::ConfigChangeInProgress),
            WireError::LeaderNotReady => Error::ConfigChange(C::LeaderNotReady),
            WireError::NoVoters => Error::ConfigChange(C::NoVoters),
            WireError::InvalidNodeId => Error::ConfigChange(C::InvalidNodeId),
            WireError::VoterAndLearner(id) => Error::ConfigChange(C::VoterAndLearner(id)),
            WireError::CatchUpTimeout(id) => Error::ConfigChange(C::CatchUpTimeout(id)),
            WireError::ConfigLeaderLost => Error::ConfigChange(C::LeaderLost),
            WireError::TransferToSelf => Error::Transfer(T::ToSelf),
            WireError::TransferToLearner(id) => Error::Transfer(T::ToLearner(id)),
            WireError::TransferUnknownNode(id) => Error::Transfer(T::UnknownNode(id)),
            WireError::TransferInProgress => Error::Transfer(T::InProgress),
            WireError::TransferTimeout => Error::Transfer(T::Timeout),
            WireError::Other(message) => Error::Forward(message),
        }
    }
}

pub(crate) fn encode_request(request: &Request) -> Bytes {
    postcard::to_allocvec(request).expect("requests always encode").into()
}

pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("cannot decode the forwarded request: {e}"))
}

pub(crate) fn encode_outcome(outcome: Result<Reply, Error>) -> Bytes {
    let wire: Result<Reply, WireError> = outcome.map_err(WireError::from_error);
    postcard::to_allocvec(&wire).expect("outcomes always encode").into()
}

pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<Reply, Error> {
    match postcard::from_bytes::<Result<Reply, WireError>>(bytes) {
        Ok(outcome) => outcome.map_err(WireError::into_error),
        Err(e) => Err(Error::Forward(format!("undecodable reply from the leader: {e}"))),
    }
}

/// `<address><path>`, or `http://<address><path>` for a bare `host:port`.
/// `<address><path>`; an address without a scheme gets `scheme`. With
/// `https`, an `http://` address is upgraded too: once TLS is configured,
/// nothing (the secret least of all) goes out in clear.
pub(crate) fn url(scheme: &str, address: &str, path: &str) -> String {
    if let (Some(rest), "https") = (address.strip_prefix("http://"), scheme) {
        format!("https://{}{path}", rest.trim_end_matches('/'))
    } else if address.starts_with("http://") || address.starts_with("https://") {
        format!("{}{path}", address.trim_end_matches('/'))
    } else {
        format!("{scheme}://{address}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_scheme_and_tls_upgrades_plain_addresses() {
        assert_eq!(url("http", "127.0.0.1:7001", "/raft/messages"), "http://127.0.0.1:7001/raft/messages");
        assert_eq!(url("https", "127.0.0.1:7001", "/raft/messages"), "https://127.0.0.1:7001/raft/messages");
        assert_eq!(url("https", "http://a:1/", "/raft/forward"), "https://a:1/raft/forward");
        assert_eq!(url("http", "https://a:1/p", "/raft/forward"), "https://a:1/p/raft/forward");
        assert_eq!(url("http", "http://a:1", "/raft/forward"), "http://a:1/raft/forward");
    }

    #[test]
    fn every_outcome_survives_the_wire() {
        let outcomes = vec![
            Ok(Reply::Applied(Bytes::from("response"))),
            Ok(Reply::Configured(7)),
            Ok(Reply::Transferred),
            Err(Error::NotLeader { leader_hint: 3 }),
            Err(Error::NoLeader),
            Err(Error::Timeout),
            Err(Error::ProposalLost),
            Err(Error::Rejected(ProposeError::TooLarge { size: 10, max: 5 })),
            Err(Error::Rejected(ProposeError::Empty)),
            Err(Error::Rejected(ProposeError::UncommittedLimit { max: 7 })),
            Err(Error::Rejected(ProposeError::TransferInProgress)),
            Err(Error::ConfigChange(ConfigChangeError::ConfigChangeInProgress)),
            Err(Error::ConfigChange(ConfigChangeError::LeaderNotReady)),
            Err(Error::ConfigChange(ConfigChangeError::NoVoters)),
            Err(Error::ConfigChange(ConfigChangeError::InvalidNodeId)),
            Err(Error::ConfigChange(ConfigChangeError::VoterAndLearner(2))),
            Err(Error::ConfigChange(ConfigChangeError::CatchUpTimeout(4))),
            Err(Error::ConfigChange(ConfigChangeError::LeaderLost)),
            Err(Error::Transfer(TransferError::ToSelf)),
            Err(Error::Transfer(TransferError::ToLearner(5))),
            Err(Error::Transfer(TransferError::UnknownNode(6))),
            Err(Error::Transfer(TransferError::InProgress)),
            Err(Error::Transfer(TransferError::Timeout)),
        ];
        for outcome in outcomes {
            let expected = format!("{outcome:?}");
            let back = decode_outcome(&encode_outcome(outcome));
            assert_eq!(format!("{back:?}"), expected);
        }
        assert!(matches!(decode_outcome(&encode_outcome(Err(Error::Busy))), Err(Error::NoLeader)));
        assert!(matches!(decode_outcome(b"\xff\xff"), Err(Error::Forward(_))));
        let request = Request::TransferLeadership(3);
        assert_eq!(decode_request(&encode_request(&request)), Ok(request));
    }
}
