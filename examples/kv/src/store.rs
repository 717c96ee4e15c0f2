//! The replicated state machine: a key-value map with modify indexes and
//! client sessions for `Idempotency-Key`.
//!
//! Every write is a postcard-encoded [`Command`] in the Raft log; applying
//! it returns a postcard-encoded [`Outcome`]. Everything here is a pure
//! function of the log, so every node reaches the same map and the same
//! session table, and a restarted node (which re-applies its log from the
//! last snapshot) rebuilds both. Snapshots ([`Kv::snapshot`]) hold the map,
//! the sessions in their order and the applied index.
//!
//! # Sessions (`Idempotency-Key`)
//!
//! A command may carry a client-chosen idempotency key. The first time a key
//! is applied its outcome is remembered with a CRC32C of the operation; a
//! later command with the same key is not applied again: it gets the stored
//! outcome (or [`Outcome::KeyReused`] if the operation differs). Expiry: the
//! table keeps the [`SESSIONS_MAX`] most recently *created* keys, ordered by
//! the log index that created them; older keys are forgotten, and a retry
//! that arrives after that many newer keyed writes would apply again. Being
//! ordered by log index, eviction is identical on every node.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use raft_http::StateMachine;
use serde::{Deserialize, Serialize};

/// How many idempotency keys are remembered (see the module docs).
pub(crate) const SESSIONS_MAX: usize = 10_000;

/// A write, as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The client's `Idempotency-Key`, if any.
    pub(crate) idempotency_key: Option<String>,
    pub(crate) op: Op,
}

/// What a write does. `cas`: only if the key's modify index is this (0 =
/// only if absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    Put { key: String, value: Bytes, cas: Option<u64> },
    Delete { key: String, cas: Option<u64> },
}

/// The result of applying a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// Stored; `index` is the key's new modify index (this entry's index).
    Written { index: u64 },
    /// Deleted at `index`.
    Deleted { index: u64 },
    /// A delete without `cas` of a key that does not exist.
    NotFound,
    /// The `cas` did not match: the key's modify index is `current` (0 =
    /// absent). Nothing changed.
    CasMismatch { current: u64 },
    /// The idempotency key was used before for a different operation.
    KeyReused,
    /// The entry did not decode (never produced by this program).
    Invalid(String),
}

impl Command {
    pub(crate) fn encode(&self) -> Bytes {
        postcard::to_allocvec(self).expect("commands always encode").into()
    }
}

impl Outcome {
    pub(crate) fn decode(bytes: &[u8]) -> Outcome {
        postcard::from_bytes(bytes).unwrap_or_else(|e| Outcome::Invalid(format!("undecodable outcome: {e}")))
    }
}

/// A stored value and the log index of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Value {
    pub(crate) data: Bytes,
    pub(crate) modify_index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Session {
    digest: u32,
    outcome: Outcome,
}

/// The map, the sessions and the last applied index.
#[derive(Debug, Default)]
pub(crate) struct Kv {
    map: HashMap<String, Value>,
    sessions: HashMap<String, Session>,
    /// Keys of `sessions`, oldest first.
    session_order: VecDeque<String>,
    applied: u64,
}

impl Kv {
    pub(crate) fn get(&self, key: &str) -> Option<Value> {
        self.map.get(key).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    #[cfg(test)]
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// The whole state, postcard-encoded.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let image = Image {
            applied: self.applied,
            map: self.map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            sessions: self
                .session_order
                .iter()
                .filter_map(|k| Some((k.as_str(), self.sessions.get(k)?)))
                .collect(),
        };
        postcard::to_allocvec(&image).expect("the state always encodes")
    }

    /// Replaces the state with a [`Kv::snapshot`].
    pub(crate) fn restore(&mut self, data: &[u8]) -> Result<(), postcard::Error> {
        let image: OwnedImage = postcard::from_bytes(data)?;
        self.applied = image.applied;
        self.map = image.map.into_iter().collect();
        self.session_order = image.sessions.iter().map(|(k, _)| k.clone()).collect();
        self.sessions = image.sessions.into_iter().collect();
        Ok(())
    }

    /// Applies the entry at `index`.
    pub(crate) fn apply(&mut self, index: u64, bytes: &[u8]) -> Outcome {
        self.applied = index;
        let command: Command = match postcard::from_bytes(bytes) {
            Ok(command) => command,
            Err(e) => return Outcome::Invalid(format!("undecodable command: {e}")),
        };
        let Some(key) = command.idempotency_key else { return self.execute(index, &command.op) };
        let digest = crc32c::crc32c(&postcard::to_allocvec(&command.op).unwrap_or_default());
        if let Some(session) = self.sessions.get(&key) {
            return if session.digest == digest { session.outcome.clone() } else { Outcome::KeyReused };
        }
        let outcome = self.execute(index, &command.op);
        self.sessions.insert(key.clone(), Session { digest, outcome: outcome.clone() });
        self.session_order.push_back(key);
        while self.session_order.len() > SESSIONS_MAX {
            if let Some(old) = self.session_order.pop_front() {
                self.sessions.remove(&old);
            }
        }
        outcome
    }

    fn execute(&mut self, index: u64, op: &Op) -> Outcome {
        match op {
            Op::Put { key, value, cas } => {
                let current = self.map.get(key).map_or(0, |v| v.modify_index);
                if cas.is_some_and(|cas| cas != current) {
                    return Outcome::CasMismatch { current };
                }
                self.map.insert(key.clone(), Value { data: value.clone(), modify_index: index });
                Outcome::Written { index }
            }
            Op::Delete { key, cas } => {
                let current = self.map.get(key).map_or(0, |v| v.modify_index);
                match cas {
                    Some(cas) if *cas != current => Outcome::CasMismatch { current },
                    _ if current == 0 => Outcome::NotFound,
                    _ => {
                        self.map.remove(key);
                        Outcome::Deleted { index }
                    }
                }
            }
        }
    }
}

#[derive(Serialize)]
struct Image<'a> {
    applied: u64,
    map: Vec<(&'a str, &'a Value)>,
    /// Oldest first.
    sessions: Vec<(&'a str, &'a Session)>,
}

#[derive(Deserialize)]
struct OwnedImage {
    applied: u64,
    map: Vec<(String, Value)>,
    sessions: Vec<(String, Session)>,
}

/// The [`StateMachine`] raft-http applies to: a shared [`Kv`] that the HTTP
/// handlers read.
#[derive(Clone, Debug, Default)]
pub(crate) struct KvMachine(pub(crate) Arc<RwLock<Kv>>);

impl StateMachine for KvMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Bytes {
        let outcome = match self.0.write() {
            Ok(mut kv) => kv.apply(index, command),
            Err(poisoned) => poisoned.into_inner().apply(index, command),
        };
        postcard::to_allocvec(&outcome).expect("outcomes always encode").into()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        match self.0.read() {
            Ok(kv) => kv.snapshot(),
            Err(poisoned) => poisoned.into_inner().snapshot(),
        }
    }

    fn restore(&mut self, data: &[u8]) {
        let mut kv = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A snapshot this program wrote and whose checksum was verified: if
        // it does not decode, continuing would serve wrong data.
        if let Err(e) = kv.restore(data) {
            panic!("cannot restore the key-value snapshot: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, cas: Option<u64>, idem: Option<&str>) -> Bytes {
        Command {
            idempotency_key: idem.map(str::to_owned),
            op: Op::Put { key: key.into(), value: Bytes::from(value.to_owned()), cas },
        }
        .encode()
    }

    fn delete(key: &str, cas: Option<u64>) -> Bytes {
        Command { idempotency_key: None, op: Op::Delete { key: key.into(), cas } }.encode()
    }

    #[test]
    fn puts_record_modify_indexes_and_cas_guards_them() {
        let mut kv = Kv::default();
        assert_eq!(kv.apply(2, &put("a", "1", Some(0), None)), Outcome::Written { index: 2 });
        assert_eq!(kv.apply(3, &put("a", "2", Some(0), None)), Outcome::CasMismatch { current: 2 });
        assert_eq!(kv.apply(4, &put("a", "3", Some(2), None)), Outcome::Written { index: 4 });
        assert_eq!(kv.get("a"), Some(Value { data: "3".into(), modify_index: 4 }));
        assert_eq!(kv.apply(5, &put("a", "4", None, None)), Outcome::Written { index: 5 });
        assert_eq!(kv.apply(6, &delete("a", Some(4))), Outcome::CasMismatch { current: 5 });
        assert_eq!(kv.apply(7, &delete("a", Some(5))), Outcome::Deleted { index: 7 });
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.apply(8, &delete("a", None)), Outcome::NotFound);
        assert_eq!(kv.apply(9, &put("a", "5", Some(0), None)), Outcome::Written { index: 9 });
        assert_eq!(kv.applied(), 9);
        assert!(matches!(kv.apply(10, b"\xff\xff\xff"), Outcome::Invalid(_)));
    }

    #[test]
    fn a_retried_keyed_write_applies_once() {
        let mut kv = Kv::default();
        assert_eq!(kv.apply(2, &put("k", "v1", None, Some("req-1"))), Outcome::Written { index: 2 });
        assert_eq!(kv.apply(3, &put("k", "v2", None, None)), Outcome::Written { index: 3 });
        // The retry gets the first answer and changes nothing.
        assert_eq!(kv.apply(4, &put("k", "v1", None, Some("req-1"))), Outcome::Written { index: 2 });
        assert_eq!(kv.get("k").unwrap().data, Bytes::from("v2"));
        // Same key, different operation.
        assert_eq!(kv.apply(5, &put("k", "other", None, Some("req-1"))), Outcome::KeyReused);
        // A cas failure is remembered as such.
        assert_eq!(kv.apply(6, &put("k", "x", Some(0), Some("req-2"))), Outcome::CasMismatch { current: 3 });
        assert_eq!(kv.apply(7, &put("k", "x", Some(0), Some("req-2"))), Outcome::CasMismatch { current: 3 });
    }

    #[test]
    fn a_snapshot_restores_the_map_and_the_sessions_in_order() {
        let mut kv = Kv::default();
        kv.apply(2, &put("a", "1", None, Some("s1")));
        kv.apply(3, &put("b", "2", None, None));
        kv.apply(4, &put("a", "3", None, Some("s2")));
        kv.apply(5, &delete("b", None));
        let mut copy = Kv::default();
        copy.restore(&kv.snapshot()).unwrap();
        assert_eq!(copy.get("a"), kv.get("a"));
        assert_eq!(copy.get("b"), None);
        assert_eq!((copy.len(), copy.sessions(), copy.applied()), (1, 2, 5));
        assert_eq!(copy.session_order, kv.session_order);
        // The sessions still deduplicate after the restore.
        assert_eq!(copy.apply(6, &put("a", "1", None, Some("s1"))), Outcome::Written { index: 2 });
        assert!(copy.restore(b"\xff").is_err());
    }

    #[test]
    fn sessions_expire_oldest_first() {
        let mut kv = Kv::default();
        for i in 0..SESSIONS_MAX as u64 + 5 {
            kv.apply(i + 1, &put("k", "v", None, Some(&format!("id-{i}"))));
        }
        assert_eq!(kv.sessions(), SESSIONS_MAX);
        // id-0 was forgotten: a retry applies again; the newest is remembered.
        let next = SESSIONS_MAX as u64 + 10;
        assert_eq!(kv.apply(next, &put("k", "v", None, Some("id-0"))), Outcome::Written { index: next });
        let newest = format!("id-{}", SESSIONS_MAX + 4);
        assert_eq!(
            kv.apply(next + 1, &put("k", "v", None, Some(&newest))),
            Outcome::Written { index: SESSIONS_MAX as u64 + 5 }
        );
    }
}
