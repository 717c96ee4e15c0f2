//! The private wire decoders, exposed for the `fuzz/` targets only (feature
//! `fuzzing`). Not a stable API: each function runs the real decoder and
//! throws the decoded value away, so nothing private leaks out.

/// Decodes the body of `POST /raft/forward` as the leader does; `Ok` when it
/// is a well-formed forwarded request.
pub fn decode_forward_request(bytes: &[u8]) -> Result<(), String> {
    crate::forward::decode_request(bytes).map(drop)
}

/// Decodes the leader's reply to a forwarded request as the follower does;
/// the typed error is what the follower's caller would see.
pub fn decode_forward_outcome(bytes: &[u8]) -> Result<(), crate::Error> {
    crate::forward::decode_outcome(bytes).map(drop)
}

/// Encodes `bytes` as a forwarded proposal, then the leader's reply carrying
/// `response`: real encodings for the seed corpus.
pub fn forward_seeds(bytes: &[u8]) -> Vec<Vec<u8>> {
    use crate::forward::{encode_outcome, encode_request, Reply, Request};
    let topology = raft_core::Topology {
        voters: [(1, "http://127.0.0.1:7001".to_owned()), (2, "127.0.0.1:7002".to_owned())].into(),
        learners: [(3, "n3".to_owned())].into(),
    };
    vec![
        encode_request(&Request::Propose(bytes::Bytes::copy_from_slice(bytes))).to_vec(),
        encode_request(&Request::SetConfiguration(topology)).to_vec(),
        encode_request(&Request::TransferLeadership(2)).to_vec(),
        encode_outcome(Ok(Reply::Applied(bytes::Bytes::copy_from_slice(bytes)))).to_vec(),
        encode_outcome(Ok(Reply::Configured(7))).to_vec(),
        encode_outcome(Err(crate::Error::NotLeader { leader_hint: 3 })).to_vec(),
        encode_outcome(Err(crate::Error::Forward("x".into()))).to_vec(),
    ]
}
