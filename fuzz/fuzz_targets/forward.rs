//! Forwarded client requests (raft-http `forward.rs`): the body of
//! `POST /raft/forward` as the leader decodes it, and the leader's reply as
//! the follower decodes it. Both must end in `Ok` or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = raft_http::fuzzing::decode_forward_request(data);
    let _ = raft_http::fuzzing::decode_forward_outcome(data);
});
