//! The replicated key-value state machine and its command encoding.
//!
//! Keys are small integers, values are `u64`. Every write remembers the log
//! index that made it (its *modify index*); compare-and-set succeeds only if
//! the key's modify index is the expected one. Client sessions carry a serial
//! number so that a retried command applies at most once: a repeat of the
//! last serial returns the remembered output.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use raft_core::Index;

/// What a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read the key (through the log, hence linearizable).
    Read,
    /// Set the key to this value.
    Write(u64),
    /// Set the key to `new` if its modify index is `expect_mod`.
    Cas {
        /// The modify index the client last saw (0: never written).
        expect_mod: Index,
        /// The value to install.
        new: u64,
    },
}

/// One client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// Client session id; 0 means no session (scripted commands).
    pub client: u32,
    /// Per-client serial number, increasing.
    pub serial: u64,
    /// The key.
    pub key: u8,
    /// The operation.
    pub op: Op,
}

/// The result of applying a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The key's value and modify index (0/0 if never written).
    Read {
        /// Value.
        value: u64,
        /// Modify index.
        mod_index: Index,
    },
    /// A write or successful compare-and-set took effect at `mod_index`.
    Written {
        /// The new modify index.
        mod_index: Index,
    },
    /// The compare-and-set did not match.
    CasFailed {
        /// The key's current modify index.
        mod_index: Index,
    },
}

pub(crate) const ENCODED_LEN: usize = 1 + 4 + 8 + 1 + 8 + 8;

impl Command {
    /// A compact fixed-size binary form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(ENCODED_LEN);
        let (tag, a, c) = match self.op {
            Op::Read => (0u8, 0, 0),
            Op::Write(v) => (1, v, 0),
            Op::Cas { expect_mod, new } => (2, new, expect_mod),
        };
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&self.client.to_le_bytes());
        b.extend_from_slice(&self.serial.to_le_bytes());
        b.extend_from_slice(&[self.key]);
        b.extend_from_slice(&a.to_le_bytes());
        b.extend_from_slice(&c.to_le_bytes());
        b.freeze()
    }

    /// Parses [`Command::encode`]'s form.
    pub fn decode(b: &[u8]) -> Option<Command> {
        if b.len() != ENCODED_LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let client = u32::from_le_bytes(b[1..5].try_into().expect("4 bytes"));
        let (serial, key, a, c) = (u64_at(5), b[13], u64_at(14), u64_at(22));
        let op = match b[0] {
            0 => Op::Read,
            1 => Op::Write(a),
            2 => Op::Cas { expect_mod: c, new: a },
            _ => return None,
        };
        Some(Command { client, serial, key, op })
    }
}

/// The key-value state machine of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    data: BTreeMap<u8, (u64, Index)>,
    /// Per client: the last applied serial and its output.
    sessions: BTreeMap<u32, (u64, Output)>,
}

impl Kv {
    /// Applies `cmd`, committed at log `index`. Returns `None` for a stale
    /// serial (an older retry that arrived after a newer command).
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Option<Output> {
        if cmd.client != 0 {
            if let Some(&(serial, out)) = self.sessions.get(&cmd.client) {
                if cmd.serial == serial {
                    return Some(out);
                }
                if cmd.serial < serial {
                    return None;
                }
            }
        }
        let slot = self.data.entry(cmd.key).or_insert((0, 0));
        let out = match cmd.op {
            Op::Read => Output::Read { value: slot.0, mod_index: slot.1 },
            Op::Write(v) => {
                *slot = (v, index);
                Output::Written { mod_index: index }
            }
            Op::Cas { expect_mod, new } => {
                if slot.1 == expect_mod {
                    *slot = (new, index);
                    Output::Written { mod_index: index }
                } else {
                    Output::CasFailed { mod_index: slot.1 }
                }
            }
        };
        if cmd.client != 0 {
            self.sessions.insert(cmd.client, (cmd.serial, out));
        }
        Some(out)
    }

    /// The local value and modify index of `key`, without consulting anyone.
    pub fn get(&self, key: u8) -> (u64, Index) {
        self.data.get(&key).copied().unwrap_or((0, 0))
    }

    /// Snapshot contents: every key and every client session, in a fixed
    /// binary form (same state, same bytes).
    pub fn to_snapshot(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(8 + self.data.len() * 17 + self.sessions.len() * 29);
        b.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        for (&k, &(v, m)) in &self.data {
            b.extend_from_slice(&[k]);
            b.extend_from_slice(&v.to_le_bytes());
            b.extend_from_slice(&m.to_le_bytes());
        }
        b.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (&c, &(serial, out)) in &self.sessions {
            let (tag, x, y) = match out {
                Output::Read { value, mod_index } => (0u8, value, mod_index),
                Output::Written { mod_index } => (1, 0, mod_index),
                Output::CasFailed { mod_index } => (2, 0, mod_index),
            };
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&serial.to_le_bytes());
            b.extend_from_slice(&[tag]);
            b.extend_from_slice(&x.to_le_bytes());
            b.extend_from_slice(&y.to_le_bytes());
        }
        b.freeze()
    }

    /// Parses [`Kv::to_snapshot`]'s form.
    pub fn from_snapshot(b: &[u8]) -> Option<Kv> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
        let mut kv = Kv::default();
        for _ in 0..u32_of(take(4)?) {
            let k = take(1)?[0];
            let (v, m) = (u64_of(take(8)?), u64_of(take(8)?));
            kv.data.insert(k, (v, m));
        }
        for _ in 0..u32_of(take(4)?) {
            let c = u32_of(take(4)?);
            let serial = u64_of(take(8)?);
            let tag = take(1)?[0];
            let (x, y) = (u64_of(take(8)?), u64_of(take(8)?));
            let out = match tag {
                0 => Output::Read { value: x, mod_index: y },
                1 => Output::Written { mod_index: y },
                2 => Output::CasFailed { mod_index: y },
                _ => return None,
            };
            kv.sessions.insert(c, (serial, out));
        }
        (at == b.len()).then_some(kv)
    }

    /// A cheap hash of the whole state (keys and sessions), for the checker.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
        for (&k, &(v, m)) in &self.data {
            eat(u64::from(k));
            eat(v);
            eat(m);
        }
        for (&c, &(serial, out)) in &self.sessions {
            eat(u64::from(c) << 32);
            eat(serial);
            eat(match out {
                Output::Read { value, mod_index } => value ^ (mod_index << 1),
                Output::Written { mod_index } => mod_index.wrapping_mul(3),
                Output::CasFailed { mod_index } => mod_index.wrapping_mul(5),
            });
        }
        h
    }

    /// Keys and sessions held (snapshot size measurements).
    pub fn len(&self) -> usize {
        self.data.len() + self.sessions.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for op in [Op::Read, Op::Write(7), Op::Cas { expect_mod: 3, new: 9 }] {
            let c = Command { client: 4, serial: 11, key: 2, op };
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn retried_write_applies_once_and_cas_uses_modify_index() {
        let mut kv = Kv::default();
        let w = Command { client: 1, serial: 1, key: 0, op: Op::Write(5) };
        assert_eq!(kv.apply(3, &w), Some(Output::Written { mod_index: 3 }));
        let other = Command { client: 2, serial: 1, key: 0, op: Op::Write(6) };
        kv.apply(4, &other);
        // The retry of client 1's write is answered from the session.
        assert_eq!(kv.apply(5, &w), Some(Output::Written { mod_index: 3 }));
        assert_eq!(kv.get(0), (6, 4));
        let cas = Command { client: 1, serial: 2, key: 0, op: Op::Cas { expect_mod: 3, new: 8 } };
        assert_eq!(kv.apply(6, &cas), Some(Output::CasFailed { mod_index: 4 }));
        let cas = Command { client: 1, serial: 3, key: 0, op: Op::Cas { expect_mod: 4, new: 8 } };
        assert_eq!(kv.apply(7, &cas), Some(Output::Written { mod_index: 7 }));
        let stale = Command { client: 1, serial: 2, key: 0, op: Op::Write(1) };
        assert_eq!(kv.apply(8, &stale), None);
    }
}
