//! The on-disk framing of the write-ahead log: segment headers and records.
//!
//! A record frame is 12 bytes of header then a postcard payload:
//!
//! ```text
//! len: u32 LE | payload_crc: u32 LE | header_crc: u32 LE | payload (len bytes)
//! ```
//!
//! `payload_crc` is CRC32C of the payload; `header_crc` is CRC32C of the
//! first 8 bytes. The separate header checksum matters for recovery: a
//! trustworthy length is what tells a torn tail (the frame runs past the end
//! of the file) from a damaged length field (which must be an error, or a
//! flipped bit could make recovery drop acknowledged records).

use raft_core::{Entry, HardState, Index, Term};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;

/// Current format version of segment files.
pub(crate) const SEGMENT_VERSION: u32 = 1;
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"RAFTWAL\0";
/// magic (8) | version u32 | seq u64 | crc u32 of the first 20 bytes.
pub(crate) const SEGMENT_HEADER_LEN: usize = 24;
pub(crate) const FRAME_HEADER_LEN: usize = 12;

/// A record as written: borrows the caller's entries, no copies.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    Append(&'a [Entry]),
    Truncate(Index),
    HardState(&'a HardState),
    Snapshot { index: Index, term: Term, discard_log: bool },
}

/// A record as read back. Variant order must match [`RecordRef`].
#[derive(Debug, Deserialize)]
pub(crate) enum Record {
    /// Entries appended, contiguous, after the log's last index.
    Append(Vec<Entry>),
    /// Every entry with index >= this one was removed.
    Truncate(Index),
    /// The hard state was replaced.
    HardState(HardState),
    /// A snapshot covering up to `index` was saved; entries up to `index`
    /// are covered, and with `discard_log` every entry is gone (the log did
    /// not hold the snapshot's last entry).
    Snapshot { index: Index, term: Term, discard_log: bool },
}

/// Appends one framed record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, record: &RecordRef<'_>) -> Result<(), StorageError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(record, taken).map_err(|e| StorageError::Encode(e.to_string()))?;
    let len = buf.len() - start - FRAME_HEADER_LEN;
    let len32 = u32::try_from(len).map_err(|_| StorageError::RecordTooLarge { len })?;
    let payload_crc = crc32c::crc32c(&buf[start + FRAME_HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start..start + 8]);
    buf[start + 8..start + 12].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

/// Appends a segment header to `buf`.
pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, seq: u64) {
    let start = buf.len();
    buf.extend_from_slice(SEGMENT_MAGIC);
    buf.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

pub(crate) enum HeaderError {
    Corrupt(String),
    Version(u32),
}

/// Checks a complete segment header.
pub(crate) fn decode_segment_header(header: &[u8], seq: u64) -> Result<(), HeaderError> {
    debug_assert_eq!(header.len(), SEGMENT_HEADER_LEN);
    if &header[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Corrupt("bad magic".into()));
    }
    let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&header[..20]) != crc {
        return Err(HeaderError::Corrupt("header checksum mismatch".into()));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version > SEGMENT_VERSION || version == 0 {
        return Err(HeaderError::Version(version));
    }
    let found = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if found != seq {
        return Err(HeaderError::Corrupt(format!("header says segment {found}, file name says {seq}")));
    }
    Ok(())
}

/// What a frame at some offset turned out to be.
pub(crate) enum Frame<'a> {
    /// A complete frame whose checksums match: its payload and total length.
    Valid { payload: &'a [u8], frame_len: usize },
    /// The data ends inside this frame (or is zero fill): a torn tail if this
    /// is the last segment.
    Torn,
    /// A complete frame that fails a checksum. Torn only if it is the last
    /// frame of the last segment (`at_end`).
    Bad { reason: &'static str, at_end: bool },
}

/// Reads the frame at the start of `data` (which runs to the end of file).
pub(crate) fn read_frame(data: &[u8]) -> Frame<'_> {
    if data.len() < FRAME_HEADER_LEN {
        return Frame::Torn;
    }
    let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    let (len, payload_crc, header_crc) = (word(0) as usize, word(4), word(8));
    if crc32c::crc32c(&data[..8]) != header_crc {
        // Zero fill past the last write is what some file systems expose
        // after a crash: nothing was ever acknowledged there.
        if data.iter().all(|&b| b == 0) {
            return Frame::Torn;
        }
        return Frame::Bad { reason: "frame header checksum mismatch", at_end: false };
    }
    let Some(payload) = data.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Frame::Torn;
    };
    if crc32c::crc32c(payload) != payload_crc {
        let at_end = FRAME_HEADER_LEN + len == data.len();
        return Frame::Bad { reason: "payload checksum mismatch", at_end };
    }
    Frame::Valid { payload, frame_len: FRAME_HEADER_LEN + len }
}

/// Decodes a checksummed payload.
pub(crate) fn decode(payload: &[u8]) -> Result<Record, String> {
    match postcard::take_from_bytes::<Record>(payload) {
        Ok((record, [])) => Ok(record),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the record", rest.len())),
        Err(e) => Err(format!("undecodable record: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft_core::Payload;

    #[test]
    fn frame_round_trips() {
        let entries =
            vec![Entry { term: 2, index: 7, payload: Payload::Command(Bytes::from_static(b"abc")) }];
        let mut buf = Vec::new();
        encode(&mut buf, &RecordRef::Append(&entries)).unwrap();
        encode(&mut buf, &RecordRef::Truncate(5)).unwrap();
        let Frame::Valid { payload, frame_len } = read_frame(&buf) else { panic!("first frame invalid") };
        assert!(matches!(decode(payload).unwrap(), Record::Append(e) if e == entries));
        let Frame::Valid { payload, .. } = read_frame(&buf[frame_len..]) else { panic!("second frame") };
        assert!(matches!(decode(payload).unwrap(), Record::Truncate(5)));
    }

    #[test]
    fn cut_frame_is_torn_and_flipped_length_is_bad() {
        let mut buf = Vec::new();
        encode(&mut buf, &RecordRef::Truncate(5)).unwrap();
        for cut in 0..buf.len() {
            assert!(matches!(read_frame(&buf[..cut]), Frame::Torn), "cut at {cut}");
        }
        buf[0] ^= 0x40;
        assert!(matches!(read_frame(&buf), Frame::Bad { at_end: false, .. }));
    }
}
