//! Simulated clients: one operation at a time, sent to the node they believe
//! leads, retried on timeout or redirect with the same session serial (so a
//! retried write applies once), abandoned as *unknown outcome* after a few
//! timeouts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use raft_core::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::event::Time;
use crate::kv::{Command, Op, Output};
use crate::linearizability::{Operation, RegOp};

/// How one read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadVia {
    /// A read command proposed through the log and answered when it applies.
    Log,
    /// `Input::Read` with `ReadPolicy::Linearizable` (ReadIndex, dissertation
    /// 6.4): answered from the local state machine once the node applied the
    /// confirmed read index.
    ReadIndex,
    /// `Input::Read` with `ReadPolicy::Lease` (dissertation 6.4.1).
    Lease,
}

/// How a run's clients read (the CLI's `--reads`; `mixed` draws one from
/// the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Every read goes through the log.
    Log,
    /// Every read is a ReadIndex read.
    ReadIndex,
    /// Every read is a lease read.
    Lease,
    /// Each read draws log, read-index or lease.
    EachOp,
}

impl ReadMode {
    /// Whether some reads rely on leases (and so on bounded clock drift).
    pub fn uses_lease(self) -> bool {
        matches!(self, ReadMode::Lease | ReadMode::EachOp)
    }
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadMode::Log => "log",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
            ReadMode::EachOp => "each-op",
        })
    }
}

impl FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(ReadMode::Log),
            "read-index" | "readindex" => Ok(ReadMode::ReadIndex),
            "lease" => Ok(ReadMode::Lease),
            "each-op" => Ok(ReadMode::EachOp),
            other => {
                Err(format!("unknown read mode {other:?}: use log, read-index, lease, each-op or mixed"))
            }
        }
    }
}

/// An operation in flight.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The command (same serial on every retry).
    pub cmd: Command,
    /// For a compare-and-set: the value that goes with the expected modify index.
    pub expect_value: u64,
    /// Invocation time.
    pub call: Time,
    /// Sends so far.
    pub attempt: u32,
    /// Timeouts so far.
    pub timeouts: u32,
    /// How a read is served (`Log` for writes).
    pub via: ReadVia,
}

/// What a node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Applied (or answered from the session) with this output.
    Done(Output),
    /// Not the leader; maybe it knows who is.
    NotLeader(Option<NodeId>),
    /// The proposal was overwritten and will never apply as sent.
    Lost,
}

/// One simulated client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Session id (1-based).
    pub id: u32,
    serial: u64,
    /// The operation in flight, if any.
    pub pending: Option<Pending>,
    leader_guess: NodeId,
    nodes: usize,
    /// Last (value, modify index) this client saw per key.
    seen: BTreeMap<u8, (u64, u64)>,
}

impl Client {
    /// Client `id` of a cluster of `nodes`.
    pub fn new(id: u32, nodes: usize) -> Self {
        Client {
            id,
            serial: 0,
            pending: None,
            leader_guess: (id as usize % nodes) as NodeId + 1,
            nodes,
            seen: BTreeMap::new(),
        }
    }

    /// Starts a random operation on one of `keys` keys; a read is served
    /// as `mode` says. `read_only`: every operation is a read.
    pub fn start(
        &mut self,
        now: Time,
        keys: u8,
        mode: ReadMode,
        read_only: bool,
        rng: &mut ChaCha8Rng,
    ) -> Command {
        self.serial += 1;
        let key = rng.gen_range(0..keys);
        // Unique per write: the linearizability check relies on it.
        let value = (u64::from(self.id) << 40) | self.serial;
        let kind = if read_only { 0 } else { rng.gen_range(0..10) };
        let (op, expect_value) = match kind {
            0..=3 => (Op::Read, 0),
            4..=6 => (Op::Write(value), 0),
            _ => {
                let (v, m) = self.seen.get(&key).copied().unwrap_or((0, 0));
                (Op::Cas { expect_mod: m, new: value }, v)
            }
        };
        let via = match (op, mode) {
            (Op::Read, ReadMode::ReadIndex) => ReadVia::ReadIndex,
            (Op::Read, ReadMode::Lease) => ReadVia::Lease,
            (Op::Read, ReadMode::EachOp) => {
                [ReadVia::Log, ReadVia::ReadIndex, ReadVia::Lease][rng.gen_range(0..3)]
            }
            _ => ReadVia::Log,
        };
        let cmd = Command { client: self.id, serial: self.serial, key, op };
        self.pending = Some(Pending { cmd, expect_value, call: now, attempt: 0, timeouts: 0, via });
        cmd
    }

    /// The node to send to next.
    pub fn target(&self) -> NodeId {
        self.leader_guess
    }

    /// Moves on to another node (after a timeout or a redirect without hint).
    pub fn try_next(&mut self, hint: Option<NodeId>) {
        self.leader_guess = hint.unwrap_or(self.leader_guess % self.nodes as NodeId + 1);
    }

    /// The pending operation completed with `out` at `now`.
    pub fn complete(&mut self, now: Time, out: Output) -> Option<Operation> {
        let p = self.pending.take()?;
        let key = p.cmd.key;
        let (op, mod_index) = match (p.cmd.op, out) {
            (Op::Read, Output::Read { value, mod_index }) => (RegOp::Read { value }, Some(mod_index)),
            (Op::Write(value), Output::Written { mod_index }) => (RegOp::Write { value }, Some(mod_index)),
            (Op::Cas { new, .. }, Output::Written { mod_index }) => {
                (RegOp::CasOk { expect: p.expect_value, new }, Some(mod_index))
            }
            (Op::Cas { .. }, Output::CasFailed { .. }) => (RegOp::CasFail { expect: p.expect_value }, None),
            // A mismatched answer: record something the checker will reject.
            _ => (RegOp::Read { value: u64::MAX }, None),
        };
        match op {
            RegOp::Read { value } | RegOp::Write { value } | RegOp::CasOk { new: value, .. } => {
                if let Some(m) = mod_index {
                    self.seen.insert(key, (value, m));
                }
            }
            _ => {}
        }
        Some(Operation { client: self.id, key, call: p.call, ret: Some(now), op, mod_index })
    }

    /// Gives up on the pending operation: its outcome is unknown. Reads are
    /// dropped from the history (they change nothing).
    pub fn abandon(&mut self) -> Option<Operation> {
        let p = self.pending.take()?;
        let op = match p.cmd.op {
            Op::Read => return None,
            Op::Write(value) => RegOp::WriteUnknown { value },
            Op::Cas { new, .. } => RegOp::CasUnknown { expect: p.expect_value, new },
        };
        Some(Operation { client: self.id, key: p.cmd.key, call: p.call, ret: None, op, mod_index: None })
    }
}
