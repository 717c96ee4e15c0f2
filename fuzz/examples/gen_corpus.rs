//! Writes the seed corpus of the byte-level targets from real encodings:
//! `cargo run --example gen_corpus` in `fuzz/` (stable is fine). Files are
//! named by content, so running it again changes nothing. The
//! structure-aware targets (`node_inputs`, `wal_records`) start from what
//! the fuzzer found, minimized with `cargo fuzz cmin`.

use std::path::Path;

use bytes::Bytes;
use raft_core::{
    AppendResult, Body, ConflictHint, Entry, HardState, Membership, Message, Payload, Persist, SnapshotMeta,
};
use raft_fuzz::{snapshot_file, Blob};
use raft_http::session::SessionCommand;
use raft_http::{SessionOptions, Sessions, StateMachine};
use raft_storage::{FileStorage, Options, Storage};

fn put(target: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{:08x}", crc32c::crc32c(data))), data).unwrap();
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, payload: Payload::Command(Bytes::from(format!("cmd{index}"))) }
}

fn membership() -> Membership {
    let mut m = raft_fuzz::membership();
    m.learners.insert(4, "n4".into());
    m
}

fn bodies() -> Vec<Body> {
    let meta = SnapshotMeta { index: 5, term: 2, membership: membership() };
    vec![
        Body::RequestVote { last_log_index: 3, last_log_term: 2, transfer: false },
        Body::RequestVoteResponse { granted: true },
        Body::AppendEntries {
            prev_index: 3,
            prev_term: 1,
            entries: vec![
                entry(4, 2),
                Entry { index: 5, term: 2, payload: Payload::Noop },
                Entry { index: 6, term: 2, payload: Payload::Membership(Box::new(membership())) },
            ],
            commit: 3,
        },
        Body::AppendEntries { prev_index: 3, prev_term: 2, entries: vec![], commit: 3 },
        Body::AppendEntriesResponse(AppendResult::Success { match_index: 3 }),
        Body::AppendEntriesResponse(AppendResult::Reject {
            rejected_prev: 5,
            hint: ConflictHint { term: 1, index: 2 },
        }),
        Body::PreVote { last_log_index: 3, last_log_term: 2 },
        Body::PreVoteResponse { granted: false },
        Body::ReadConfirm { round: 7 },
        Body::ReadConfirmResponse { round: 7 },
        Body::InstallSnapshot {
            meta: Box::new(meta),
            offset: 0,
            data: Bytes::from_static(b"data"),
            done: true,
            checksum: raft_core::crc32c(0, b"data"),
        },
        Body::InstallSnapshotResponse { index: 5, next_offset: 4 },
        Body::TimeoutNow,
        Body::ReadIndexRequest { id: 9, lease: true },
        Body::ReadIndexResponse { id: 9, index: Some(3) },
    ]
}

/// A session table with two clients and cached responses, over inner data.
fn sessions_snapshot() -> Vec<u8> {
    let mut sessions = Sessions::new(Blob(b"inner".to_vec()), SessionOptions::default()).unwrap();
    let commands = [
        SessionCommand::Register,
        SessionCommand::Register,
        SessionCommand::Request {
            client: 1,
            serial: 1,
            first_unacked: 1,
            command: Bytes::from_static(b"w1"),
        },
        SessionCommand::Request {
            client: 2,
            serial: 5,
            first_unacked: 3,
            command: Bytes::from_static(b"w2"),
        },
        SessionCommand::Unsessioned(Bytes::from_static(b"u")),
    ];
    for (k, c) in commands.iter().enumerate() {
        sessions.apply(k as u64 + 1, &c.encode());
    }
    sessions.snapshot()
}

fn main() {
    // raft_messages: every body kind, one per batch, and one batch of all.
    let all: Vec<Message> =
        bodies().into_iter().map(|body| Message { from: 1, to: 2, term: 2, body }).collect();
    for m in &all {
        put("raft_messages", &postcard::to_allocvec(&vec![m.clone()]).unwrap());
    }
    put("raft_messages", &postcard::to_allocvec(&all).unwrap());

    // forward: requests and replies as raft-http encodes them.
    for seed in raft_http::fuzzing::forward_seeds(b"PUT k v") {
        put("forward", &seed);
    }

    // snapshot_chunks: a session snapshot sent in 3 chunks from leader 1 at
    // term 2, with and without checksum fix-up; and a lone final chunk.
    let snapshot = sessions_snapshot();
    let meta = SnapshotMeta { index: 10, term: 2, membership: raft_fuzz::membership() };
    let checksum = raft_core::crc32c(0, &snapshot);
    let third = snapshot.len().div_ceil(3);
    for flags in [0u8, 1] {
        let mut input = vec![flags];
        for (k, chunk) in snapshot.chunks(third).enumerate() {
            let body = Body::InstallSnapshot {
                meta: Box::new(meta.clone()),
                offset: (k * third) as u64,
                data: Bytes::copy_from_slice(chunk),
                done: (k + 1) * third >= snapshot.len(),
                checksum,
            };
            let request = postcard::to_allocvec(&vec![Message { from: 1, to: 2, term: 2, body }]).unwrap();
            input.extend_from_slice(&(request.len() as u16).to_le_bytes());
            input.extend_from_slice(&request);
        }
        put("snapshot_chunks", &input);
    }

    // session_table: the real snapshot, raw; and its table with the header
    // built by the harness (flags bit 0; inner length 5 in the upper bits).
    let mut input = vec![0u8];
    input.extend_from_slice(&(snapshot.len() as u16).to_le_bytes());
    input.extend_from_slice(&snapshot);
    put("session_table", &input);
    let mut input = vec![1u8 | (5 << 1)];
    input.extend_from_slice(&((snapshot.len() - 13) as u16).to_le_bytes());
    input.extend_from_slice(&snapshot[13..]);
    for c in [SessionCommand::Register, SessionCommand::Unregister { client: 1 }] {
        let c = c.encode();
        input.push(c.len() as u8);
        input.extend_from_slice(&c);
    }
    put("session_table", &input);

    // wal_segment and snapshot_file: what FileStorage itself writes.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = FileStorage::open(dir.path(), Options::default()).unwrap();
        storage.save_snapshot(&SnapshotMeta { index: 0, term: 0, membership: membership() }, b"").unwrap();
        let batch = [
            Persist {
                truncate_from: None,
                entries: vec![],
                hard_state: Some(HardState { term: 1, vote: Some(1) }),
            },
            Persist {
                truncate_from: None,
                entries: (1..=4).map(|i| entry(i, 1)).collect(),
                hard_state: None,
            },
            Persist {
                truncate_from: Some(4),
                entries: vec![entry(4, 2)],
                hard_state: Some(HardState { term: 2, vote: None }),
            },
        ];
        storage.write_batch(&batch).unwrap();
        storage
            .save_snapshot(&SnapshotMeta { index: 3, term: 1, membership: membership() }, b"state")
            .unwrap();
    }
    for item in std::fs::read_dir(dir.path()).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        if name.starts_with("wal-") {
            // The target names its file segment 1: patch the header's seq.
            let mut bytes = bytes;
            let seq: u64 = name[4..24].parse().unwrap();
            if seq != 1 {
                let header = raft_fuzz::segment_header(1, 1);
                bytes[..header.len()].copy_from_slice(&header);
            }
            put("wal_segment", &bytes);
        } else if name == "snapshot-00000000000000000003.snap" {
            let mut input = vec![3 << 1];
            input.extend_from_slice(&bytes);
            put("snapshot_file", &input);
        }
    }
    let meta = postcard::to_allocvec(&SnapshotMeta { index: 3, term: 1, membership: membership() }).unwrap();
    let mut input = vec![1 | (3 << 1)];
    input.extend_from_slice(&(meta.len() as u16).to_le_bytes());
    input.extend_from_slice(&meta);
    input.extend_from_slice(b"state");
    put("snapshot_file", &input);
    // And a raw file built by the harness helper, at index 7 with no data.
    let meta = postcard::to_allocvec(&SnapshotMeta { index: 7, term: 2, membership: membership() }).unwrap();
    let mut input = vec![7 << 1];
    input.extend_from_slice(&snapshot_file(&meta, b""));
    put("snapshot_file", &input);
}
