//! Snapshot files: `snapshot-<index>.snap`, written whole to a temporary
//! file, fsynced, renamed into place, then the directory fsynced.
//!
//! ```text
//! magic "RAFTSNAP" | version u32 | meta_len u32 | data_len u64 | data_crc u32
//! | header_crc u32 (CRC32C of the preceding 28 bytes and the meta bytes)
//! | meta (postcard SnapshotMeta) | data
//! ```

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft_core::{Index, SnapshotMeta};

use crate::error::{io_err, StorageError};

const MAGIC: &[u8; 8] = b"RAFTSNAP";
const VERSION: u32 = 1;
const FIXED_LEN: usize = 32;

/// Where a snapshot's application data lives on disk.
///
/// The data is the byte range `offset .. offset + len` of `path`, and its
/// CRC32C is `crc`. [`SnapshotLocation::read`] reads and verifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotLocation {
    /// The snapshot file.
    pub path: PathBuf,
    /// Byte offset of the data within the file.
    pub offset: u64,
    /// Length of the data in bytes.
    pub len: u64,
    /// CRC32C of the data.
    pub crc: u32,
}

impl SnapshotLocation {
    /// Reads the snapshot data and checks it against its checksum.
    pub fn read(&self) -> Result<Vec<u8>, StorageError> {
        let mut file = File::open(&self.path).map_err(io_err(&self.path))?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io_err(&self.path))?;
        let len = usize::try_from(self.len).map_err(|_| self.corrupt("data larger than memory"))?;
        let mut data = Vec::with_capacity(len);
        file.take(self.len).read_to_end(&mut data).map_err(io_err(&self.path))?;
        if data.len() != len {
            return Err(self.corrupt("file shorter than its header says"));
        }
        if crc32c::crc32c(&data) != self.crc {
            return Err(self.corrupt("data checksum mismatch"));
        }
        Ok(data)
    }

    fn corrupt(&self, reason: &str) -> StorageError {
        StorageError::CorruptSnapshot { file: self.path.clone(), reason: reason.into() }
    }
}

pub(crate) fn file_name(index: Index) -> String {
    format!("snapshot-{index:020}.snap")
}

pub(crate) fn parse_file_name(name: &str) -> Option<Index> {
    name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse().ok()
}

/// Writes a snapshot durably: temp file, fsync, rename, directory fsync.
pub(crate) fn write(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<SnapshotLocation, StorageError> {
    let path = dir.join(file_name(meta.index));
    let tmp = dir.join(format!("{}.tmp", file_name(meta.index)));
    let meta_bytes = postcard::to_stdvec(meta).map_err(|e| StorageError::Encode(e.to_string()))?;
    let crc = crc32c::crc32c(data);
    let mut header = Vec::with_capacity(FIXED_LEN + meta_bytes.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    let meta_len = u32::try_from(meta_bytes.len())
        .map_err(|_| StorageError::RecordTooLarge { len: meta_bytes.len() })?;
    header.extend_from_slice(&meta_len.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&header), &meta_bytes);
    header.extend_from_slice(&header_crc.to_le_bytes());
    header.extend_from_slice(&meta_bytes);

    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&header).map_err(io_err(&tmp))?;
    file.write_all(data).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(SnapshotLocation { path, offset: header.len() as u64, len: data.len() as u64, crc })
}

/// Reads a snapshot file's metadata and verifies its data checksum.
pub(crate) fn open(path: &Path, index: Index) -> Result<(SnapshotMeta, SnapshotLocation), StorageError> {
    let corrupt = |reason: String| StorageError::CorruptSnapshot { file: path.to_path_buf(), reason };
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut fixed = [0u8; FIXED_LEN];
    file.read_exact(&mut fixed).map_err(|_| corrupt("shorter than its header".into()))?;
    if &fixed[..8] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let (version, meta_len, data_crc, header_crc) = (u32_at(8), u32_at(12), u32_at(24), u32_at(28));
    let data_len = u64::from_le_bytes(fixed[16..24].try_into().expect("8 bytes"));
    let data_offset = FIXED_LEN as u64 + u64::from(meta_len);
    if data_offset.checked_add(data_len) != Some(file_len) {
        return Err(corrupt(format!(
            "file is {file_len} bytes, header says {} + {data_len}",
            FIXED_LEN as u64 + u64::from(meta_len)
        )));
    }
    let mut meta_bytes = vec![0u8; meta_len as usize];
    file.read_exact(&mut meta_bytes).map_err(io_err(path))?;
    if crc32c::crc32c_append(crc32c::crc32c(&fixed[..28]), &meta_bytes) != header_crc {
        return Err(corrupt("header checksum mismatch".into()));
    }
    if version > VERSION || version == 0 {
        return Err(StorageError::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    let meta: SnapshotMeta =
        postcard::from_bytes(&meta_bytes).map_err(|e| corrupt(format!("metadata: {e}")))?;
    if meta.index != index {
        return Err(corrupt(format!("metadata says index {}, file name says {index}", meta.index)));
    }
    let mut crc = 0;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
    }
    if crc != data_crc {
        return Err(corrupt("data checksum mismatch".into()));
    }
    let location =
        SnapshotLocation { path: path.to_path_buf(), offset: data_offset, len: data_len, crc: data_crc };
    Ok((meta, location))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}
