//! Structure-aware WAL recovery: up to three segments of records (appends
//! with indexes and terms near each other or near `u64::MAX`, truncations,
//! hard states, snapshot marks) framed with valid checksums, or with a
//! damaged frame, raw payload bytes, zero fill or a torn tail; optionally
//! a valid snapshot file under them. `FileStorage::open` must give `Ok` or
//! a typed error (see `open_and_check` for what an `Ok` must satisfy).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raft_core::{Entry, HardState, Membership, Payload, SnapshotMeta};
use raft_fuzz::{
    frame, open_and_check, scratch_dir, segment_header, segment_name, snapshot_file, snapshot_name,
    WireRecord,
};

#[derive(Arbitrary, Debug)]
struct Case {
    first_seq: u8,
    segments: Vec<Segment>,
    snapshot: Option<(u8, u8, bool)>,
}

#[derive(Arbitrary, Debug)]
struct Segment {
    header: Header,
    frames: Vec<Frame>,
    tail: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Header {
    Valid,
    Seq(u64),
    Version(u32),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Frame {
    Record(Record),
    Raw(Vec<u8>),
    BadPayloadCrc(Record),
    /// A frame whose length field says this much more or less.
    BadLength(Record, i8),
    Zeros(u8),
}

#[derive(Arbitrary, Debug)]
enum Num {
    Small(u8),
    NearMax(u8),
    Any(u64),
}

impl Num {
    fn get(&self) -> u64 {
        match *self {
            Num::Small(v) => u64::from(v % 32),
            Num::NearMax(d) => u64::MAX - u64::from(d % 4),
            Num::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Record {
    /// `count` contiguous entries from `first`, terms from `term`.
    Append {
        first: Num,
        count: u8,
        term: Num,
        membership: bool,
    },
    /// Arbitrary (index, term) pairs.
    AppendAny(Vec<(Num, Num)>),
    Truncate(Num),
    HardState {
        term: Num,
        vote: Option<u8>,
    },
    Snapshot {
        index: Num,
        term: Num,
        discard_log: bool,
    },
}

impl Record {
    fn wire(&self) -> WireRecord {
        let command = |i: u64| Payload::Command(Bytes::from(i.to_le_bytes().to_vec()));
        match self {
            Record::Append { first, count, term, membership } => {
                let (first, term) = (first.get(), term.get());
                let entries = (0..u64::from(count % 8))
                    .map(|k| Entry {
                        index: first.wrapping_add(k),
                        term,
                        payload: if *membership && k == 0 {
                            Payload::Membership(Box::new(raft_fuzz::membership()))
                        } else {
                            command(k)
                        },
                    })
                    .collect();
                WireRecord::Append(entries)
            }
            Record::AppendAny(pairs) => WireRecord::Append(
                pairs
                    .iter()
                    .take(8)
                    .map(|(i, t)| Entry { index: i.get(), term: t.get(), payload: Payload::Noop })
                    .collect(),
            ),
            Record::Truncate(from) => WireRecord::Truncate(from.get()),
            Record::HardState { term, vote } => {
                WireRecord::HardState(HardState { term: term.get(), vote: vote.map(u64::from) })
            }
            Record::Snapshot { index, term, discard_log } => {
                WireRecord::Snapshot { index: index.get(), term: term.get(), discard_log: *discard_log }
            }
        }
    }

    fn payload(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.wire()).expect("records encode")
    }
}

fuzz_target!(|case: Case| {
    let dir = scratch_dir();
    let first_seq = u64::from(case.first_seq % 4) + 1;
    for (k, segment) in case.segments.iter().take(3).enumerate() {
        let seq = first_seq + k as u64;
        let mut file = match &segment.header {
            Header::Valid => segment_header(seq, 1),
            Header::Seq(other) => segment_header(*other, 1),
            Header::Version(version) => segment_header(seq, *version),
            Header::Raw(bytes) => bytes.clone(),
        };
        for f in segment.frames.iter().take(16) {
            match f {
                Frame::Record(r) => file.extend(frame(&r.payload())),
                Frame::Raw(bytes) => file.extend(frame(bytes)),
                Frame::BadPayloadCrc(r) => {
                    let mut bytes = frame(&r.payload());
                    if let Some(last) = bytes.last_mut() {
                        *last ^= 1;
                    }
                    file.extend(bytes);
                }
                Frame::BadLength(r, delta) => {
                    let mut bytes = frame(&r.payload());
                    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
                    let len = len.wrapping_add_signed(i32::from(*delta));
                    bytes[..4].copy_from_slice(&len.to_le_bytes());
                    let header_crc = crc32c::crc32c(&bytes[..8]);
                    bytes[8..12].copy_from_slice(&header_crc.to_le_bytes());
                    file.extend(bytes);
                }
                Frame::Zeros(n) => file.extend(std::iter::repeat_n(0, usize::from(*n))),
            }
        }
        file.extend_from_slice(&segment.tail);
        std::fs::write(dir.path().join(segment_name(seq)), file).expect("write a segment");
    }
    if let Some((index, term, with_data)) = case.snapshot {
        let meta = SnapshotMeta {
            index: u64::from(index % 32),
            term: u64::from(term % 8),
            membership: Membership::with_voters([(1, "n1")]),
        };
        let meta_bytes = postcard::to_allocvec(&meta).expect("meta encodes");
        let data: &[u8] = if with_data { b"state" } else { b"" };
        std::fs::write(dir.path().join(snapshot_name(meta.index)), snapshot_file(&meta_bytes, data))
            .expect("write the snapshot");
    }
    open_and_check(dir.path());
});
