//! Shared by the fuzz targets: a tiny in-memory three-node cluster that
//! drives real `raft_core::Node`s (the driver side of the contract: sends,
//! snapshots asked for and sent in chunks, applies checked for order), and
//! the helpers that write fuzzer bytes into a storage directory.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::Arbitrary;
use bytes::Bytes;
use raft_core::{
    Action, Body, Config, Entry, Index, Input, Membership, Message, Node, NodeId, Restored, Role,
    SnapshotMeta,
};

/// Voters 1, 2, 3 with made-up addresses.
pub fn membership() -> Membership {
    Membership::with_voters((1..=3).map(|id| (id, format!("n{id}"))))
}

/// Which role the attacked node is brought into before the fuzz input runs.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Node 2, following leader 1 with a few entries committed.
    Follower,
    /// Node 3, campaigning (when pre-vote lets it get that far).
    Candidate,
    /// Node 1, leading with a few entries committed.
    Leader,
}

/// The snapshot data a node "takes" at `meta`: deterministic bytes, so the
/// chunks a leader sends can be checked by the follower's checksum.
fn snapshot_data(meta: &SnapshotMeta) -> Vec<u8> {
    let mut data = format!("snapshot {} {}", meta.index, meta.term).into_bytes();
    data.resize(300, b'.');
    data
}

/// Three nodes, one queue of messages between them, and a driver that
/// checks each node's invariants after every step and that each node
/// applies entries in order, each once (since its last snapshot restore).
#[derive(Debug)]
pub struct Cluster {
    /// The nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered, oldest first.
    pub queue: VecDeque<Message>,
    /// Highest index each node applied (or restored a snapshot at).
    applied: BTreeMap<NodeId, Index>,
    /// The snapshot each node is receiving, assembled from its
    /// `SnapshotChunk` actions as raft-http's runtime does.
    pub incoming: BTreeMap<NodeId, (SnapshotMeta, Vec<u8>)>,
    /// The data of every snapshot a node was told to restore, in order.
    pub restored: Vec<(NodeId, SnapshotMeta, Vec<u8>)>,
}

impl Cluster {
    /// A new cluster of voters 1..=3; nobody leads yet.
    pub fn new(pre_vote: bool, check_quorum: bool) -> Cluster {
        let nodes = (1..=3)
            .map(|id| {
                let config = Config {
                    pre_vote,
                    check_quorum,
                    seed: id,
                    snapshot_entries_max: 8,
                    bytes_per_message_max: 100,
                    ..Config::new(id)
                };
                let node = Node::new(config, Restored::new_cluster(membership())).expect("valid setup");
                (id, node)
            })
            .collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
            applied: BTreeMap::new(),
            incoming: BTreeMap::new(),
            restored: Vec::new(),
        }
    }

    /// A cluster with node 1 leading, two proposals committed everywhere,
    /// and the node to attack in the role `target`. Returns its id.
    pub fn with_target(target: Target, pre_vote: bool, check_quorum: bool) -> (Cluster, NodeId) {
        let mut cluster = Cluster::new(pre_vote, check_quorum);
        for _ in 0..200 {
            if cluster.nodes[&1].role() != Role::Follower {
                break;
            }
            cluster.step(1, Input::Tick);
        }
        cluster.deliver(10_000);
        cluster.step(1, Input::Propose(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]));
        cluster.deliver(10_000);
        let id = match target {
            Target::Leader => 1,
            Target::Follower => 2,
            Target::Candidate => 3,
        };
        if target == Target::Candidate {
            // Node 3 hears nothing from the leader and campaigns; only its
            // pre-vote exchange is delivered, so it stays a candidate.
            for _ in 0..200 {
                if cluster.nodes[&3].role() == Role::Candidate {
                    break;
                }
                cluster.step(3, Input::Tick);
                let pending: Vec<Message> = cluster.queue.drain(..).collect();
                for m in pending {
                    if matches!(m.body, Body::PreVote { .. } | Body::PreVoteResponse { .. }) {
                        cluster.receive(m);
                    }
                }
            }
            cluster.queue.clear();
        }
        (cluster, id)
    }

    /// Steps node `id` and runs what it asks for.
    ///
    /// # Panics
    ///
    /// When the node breaks one of its invariants, or applies out of order:
    /// that is what the fuzzers look for.
    pub fn step(&mut self, id: NodeId, input: Input) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let actions = node.step(input.clone());
        if let Err(e) = node.invariants() {
            panic!("node {id} broke an invariant after {input:?}: {e}");
        }
        self.execute(id, actions);
    }

    /// Delivers `m` to its recipient, if that is a node of the cluster.
    pub fn receive(&mut self, m: Message) {
        let to = m.to;
        self.step(to, Input::Message(m));
    }

    /// Delivers up to `max` queued messages, oldest first.
    pub fn deliver(&mut self, max: usize) {
        for _ in 0..max {
            let Some(m) = self.queue.pop_front() else { return };
            self.receive(m);
        }
    }

    fn execute(&mut self, id: NodeId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(m) => {
                    if self.queue.len() < 10_000 {
                        self.queue.push_back(m);
                    }
                }
                Action::Apply(entries) => self.check_apply(id, &entries),
                Action::SnapshotChunk { meta, offset, data, done: _ } => {
                    // raft-http's `store_chunk`: a chunk at offset 0 starts
                    // over; anything not at the end of the buffer is dropped.
                    if offset == 0 {
                        self.incoming.insert(id, ((*meta).clone(), Vec::new()));
                    }
                    if let Some((current, buffer)) = self.incoming.get_mut(&id) {
                        if current.index == meta.index && buffer.len() as u64 == offset {
                            buffer.extend_from_slice(&data);
                        }
                    }
                }
                Action::RestoreSnapshot { meta } => {
                    self.applied.insert(id, meta.index);
                    let data = match self.incoming.remove(&id) {
                        Some((current, buffer)) if current.index == meta.index => buffer,
                        _ => panic!("node {id} asked to restore snapshot {} it did not receive", meta.index),
                    };
                    self.restored.push((id, *meta, data));
                }
                Action::SnapshotNeeded { meta } => self.step(id, Input::SnapshotTaken { index: meta.index }),
                Action::SendSnapshotChunk { to, term, meta, offset } => {
                    let data = snapshot_data(&meta);
                    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
                    let end = (start + 100).min(data.len());
                    let body = Body::InstallSnapshot {
                        meta,
                        offset,
                        data: Bytes::copy_from_slice(&data[start..end]),
                        done: end == data.len(),
                        checksum: raft_core::crc32c(0, &data),
                    };
                    self.queue.push_back(Message { from: id, to, term, body });
                }
                _ => {}
            }
        }
    }

    fn check_apply(&mut self, id: NodeId, entries: &[Entry]) {
        let applied = self.applied.entry(id).or_insert(0);
        for e in entries {
            assert_eq!(e.index, *applied + 1, "node {id} applied {} after {applied}", e.index);
            *applied = e.index;
        }
    }
}

/// An inner state machine for `raft_http::Sessions`: its state and its
/// snapshot are any bytes.
#[derive(Debug, Default)]
pub struct Blob(pub Vec<u8>);

impl raft_http::StateMachine for Blob {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Bytes {
        self.0.extend_from_slice(command);
        Bytes::copy_from_slice(command)
    }
    fn snapshot(&mut self) -> Vec<u8> {
        self.0.clone()
    }
    fn restore(&mut self, data: &[u8]) {
        self.0 = data.to_vec();
    }
}

/// A session table that restored must snapshot to bytes that restore to
/// the same table (bytes, not the input: postcard accepts non-minimal
/// varints, so the input need not be canonical).
///
/// # Panics
///
/// When the second restore fails or the table changed on the way.
pub fn sessions_round_trip(sessions: &mut raft_http::Sessions<Blob>) {
    use raft_http::StateMachine;
    let first = sessions.snapshot();
    let mut again = raft_http::Sessions::new(Blob::default(), raft_http::SessionOptions::default())
        .expect("valid options");
    if let Err(e) = again.try_restore(&first) {
        panic!("a session table's own snapshot does not restore: {e}");
    }
    assert_eq!(again.snapshot(), first, "session table changed through snapshot and restore");
    assert_eq!(again.len(), sessions.len());
}

/// A fresh directory for one run, on tmpfs when there is one.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    tempfile::Builder::new().prefix("raft-fuzz-").tempdir_in(base).expect("a scratch directory")
}

/// The file name of WAL segment `seq` (raft-storage `file.rs`).
pub fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

/// The file name of the snapshot at `index` (raft-storage `snapshot.rs`).
pub fn snapshot_name(index: Index) -> String {
    format!("snapshot-{index:020}.snap")
}

/// A valid segment header (raft-storage `record.rs`): magic, version,
/// sequence number, CRC32C of those 20 bytes.
pub fn segment_header(seq: u64, version: u32) -> Vec<u8> {
    let mut buf = b"RAFTWAL\0".to_vec();
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// One record frame around `payload`: length, payload CRC32C, header
/// CRC32C (raft-storage `record.rs`).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = (payload.len() as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&header_crc.to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// A WAL record as raft-storage writes it; same variants in the same order
/// as its private `Record`, so postcard encodes them identically.
#[derive(Debug, serde::Serialize)]
pub enum WireRecord {
    /// Entries appended.
    Append(Vec<Entry>),
    /// Entries from this index on removed.
    Truncate(Index),
    /// The hard state replaced.
    HardState(raft_core::HardState),
    /// A snapshot saved.
    Snapshot {
        /// Its last index.
        index: Index,
        /// Its last term.
        term: raft_core::Term,
        /// Whether the log was discarded.
        discard_log: bool,
    },
}

/// A snapshot file (raft-storage `snapshot.rs`) holding `meta_bytes` as
/// its metadata and `data`, with every length and checksum right.
pub fn snapshot_file(meta_bytes: &[u8], data: &[u8]) -> Vec<u8> {
    let mut buf = b"RAFTSNAP".to_vec();
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&buf), meta_bytes);
    buf.extend_from_slice(&header_crc.to_le_bytes());
    buf.extend_from_slice(meta_bytes);
    buf.extend_from_slice(data);
    buf
}

/// Opens a data directory the fuzzer wrote. It must open or fail with a
/// typed error; when it opens, its snapshot must read or fail with a typed
/// error, it must open again to the same state (recovery is idempotent:
/// the first open cut any torn tail durably), and `Node::new` must accept
/// or refuse that state without a panic.
///
/// # Panics
///
/// When the second open fails or recovers something else.
pub fn open_and_check(dir: &std::path::Path) {
    use raft_storage::{FileStorage, Options, Storage};
    let Ok((storage, recovered)) = FileStorage::open(dir, Options::default()) else { return };
    let first_read = storage.read_snapshot();
    drop(storage);
    let (storage, again) = match FileStorage::open(dir, Options::default()) {
        Ok(opened) => opened,
        Err(e) => panic!("opened once, then failed to open again: {e}"),
    };
    assert_eq!(again.restored, recovered.restored, "the second open recovered another state");
    assert_eq!(storage.read_snapshot().ok(), first_read.ok(), "the snapshot reads differently");
    let _ = Node::new(Config::new(1), recovered.restored);
}
