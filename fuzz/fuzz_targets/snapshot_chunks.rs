//! The ingress path of InstallSnapshot chunks: a sequence of
//! `POST /raft/messages` bodies as raft-http's chunk sender sends them (a
//! postcard `Vec<Message>`, normally one InstallSnapshot each), decoded and
//! stepped into a follower; the chunks it accepts are assembled as the
//! runtime does, and a snapshot it restores is handed to a
//! `Sessions` state machine's `try_restore`, as raft-kv's would be.
//!
//! Input: a flags byte (bit 0: fix up the checksum of a final chunk so the
//! fuzzer gets past it), then request bodies, each a u16 LE length and
//! that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_core::{Body, Input, Message};
use raft_fuzz::Blob;
use raft_fuzz::{Cluster, Target};
use raft_http::{SessionOptions, Sessions, StateMachine};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let (mut cluster, id) = Cluster::with_target(Target::Follower, flags & 2 != 0, true);
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let Ok(messages) = postcard::from_bytes::<Vec<Message>>(body) else { continue };
        for mut m in messages.into_iter().take(8) {
            if flags & 1 != 0 {
                if let Body::InstallSnapshot { data, done: true, checksum, offset, .. } = &mut m.body {
                    let so_far = cluster.incoming.get(&id).map(|(_, b)| b.as_slice()).unwrap_or_default();
                    if *offset == so_far.len() as u64 {
                        *checksum = raft_core::crc32c(raft_core::crc32c(0, so_far), data);
                    }
                }
            }
            cluster.step(id, Input::Message(m));
        }
    }
    for (_, _, snapshot) in &cluster.restored {
        let mut sessions = Sessions::new(Blob(Vec::new()), SessionOptions::default()).expect("valid options");
        if sessions.try_restore(snapshot).is_ok() {
            raft_fuzz::sessions_round_trip(&mut sessions);
        }
    }
});
