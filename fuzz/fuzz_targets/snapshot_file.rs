//! Snapshot files (raft-storage `snapshot.rs`): the fuzzer's bytes as the
//! newest snapshot file of a data directory that also holds a valid empty
//! segment, opened by `FileStorage::open` and read back. Must give `Ok` or
//! a typed error.
//!
//! Input: a flags byte, then the file. Flag bit 0: the rest is
//! `u16 LE meta length | meta | data` and the harness writes the header
//! with every length and checksum right, so the fuzzer reaches the
//! metadata decoder and the checks after it. Bits 1..: the snapshot's index
//! in the file name (0 to 127).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_fuzz::{open_and_check, scratch_dir, segment_header, segment_name, snapshot_file, snapshot_name};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let file = if flags & 1 != 0 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else { return };
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (meta, data) = rest.split_at(len);
        snapshot_file(meta, data)
    } else {
        rest.to_vec()
    };
    let dir = scratch_dir();
    let index = u64::from(flags >> 1);
    std::fs::write(dir.path().join(snapshot_name(index)), file).expect("write the snapshot");
    std::fs::write(dir.path().join(segment_name(1)), segment_header(1, 1)).expect("write the segment");
    open_and_check(dir.path());
});
