//! WAL segments (raft-storage `record.rs`, `file.rs`, `replay.rs`): the
//! fuzzer's bytes as the only segment file of a data directory, opened and
//! recovered by `FileStorage::open`. Must give `Ok` or a typed error; see
//! `open_and_check` for what an `Ok` must satisfy. Raw bytes rarely pass
//! the checksums; `wal_records` builds valid frames around fuzzed records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_fuzz::{open_and_check, scratch_dir, segment_name};

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    std::fs::write(dir.path().join(segment_name(1)), data).expect("write the segment");
    open_and_check(dir.path());
});
