//! Session tables (raft-http `session.rs`): a snapshot restored by
//! `Sessions::try_restore` (header, postcard table, inner snapshot), then
//! session commands as they come out of the log (`SessionCommand::decode`
//! inside `apply`). Restore must succeed or refuse with a typed error and
//! leave the table as it was; a table, restored or built by commands, must
//! survive its own snapshot and restore unchanged.
//!
//! Input: a flags byte (bit 0: wrap the snapshot bytes in a valid header,
//! so the fuzzer reaches the table decoder), a u16 LE snapshot length, the
//! snapshot, then commands, each a u8 length and that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_fuzz::{sessions_round_trip, Blob};
use raft_http::{SessionOptions, Sessions, StateMachine};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (snapshot, mut commands) = rest.split_at(len);
    let options =
        SessionOptions::default().sessions_max(4).responses_per_session_max(3).idle_entries_max(Some(40));
    let mut sessions = Sessions::new(Blob::default(), options).expect("valid options");
    let snapshot = if flags & 1 != 0 {
        // b"RSES", version 1, table length, table; the table takes all but
        // the last (flags >> 1) bytes, the rest is the inner snapshot.
        let inner = usize::from(flags >> 1).min(snapshot.len());
        let table_len = snapshot.len() - inner;
        let mut wrapped = b"RSES\x01".to_vec();
        wrapped.extend_from_slice(&(table_len as u64).to_le_bytes());
        wrapped.extend_from_slice(snapshot);
        wrapped
    } else {
        snapshot.to_vec()
    };
    let before = sessions.snapshot();
    if sessions.try_restore(&snapshot).is_err() {
        assert_eq!(sessions.snapshot(), before, "a refused restore changed the table");
    }
    sessions_round_trip(&mut sessions);
    let mut index = 1;
    while let Some((&n, rest)) = commands.split_first() {
        let n = usize::from(n).min(rest.len());
        let _response = sessions.apply(index, &rest[..n]);
        commands = &rest[n..];
        index += 1;
    }
    sessions_round_trip(&mut sessions);
});
