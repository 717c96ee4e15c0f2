//! The body of `POST /raft/messages` as raft-http's Transport decodes it (a
//! postcard `Vec<raft_core::Message>`), then each decoded message stepped
//! into a node in the follower, candidate or leader role, as the runtime
//! does with whatever the Transport accepted. Decoding must fail with an
//! error or succeed; stepping must keep the node's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_core::{Input, Message};
use raft_fuzz::{Cluster, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(messages) = postcard::from_bytes::<Vec<Message>>(data) else { return };
    let target = [Target::Follower, Target::Candidate, Target::Leader][data.len() % 3];
    let (mut cluster, id) = Cluster::with_target(target, data.len() % 2 == 0, true);
    for m in messages.into_iter().take(64) {
        cluster.step(id, Input::Message(m));
    }
    cluster.deliver(1000);
});
