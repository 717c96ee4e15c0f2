//! Client sessions (Raft paper section 8, dissertation 6.3): a wrapper state
//! machine that applies each client write at most once, however often it is
//! retried, and a client-side [`Session`] that retries for you.
//!
//! A proposal whose outcome is unknown ([`Error::Timeout`], a leader lost
//! mid-forward) may still commit; proposing it again may apply it twice.
//! [`Sessions`] wraps the application's [`StateMachine`] so that retries are
//! safe:
//!
//! - A client opens a session with [`SessionCommand::Register`]; its
//!   [`ClientId`] is the log index of that entry (as in the dissertation),
//!   unique and identical on every replica.
//! - Each write is a [`SessionCommand::Request`] carrying the client id, a
//!   serial number the client picks (one per write, kept across retries),
//!   and `first_unacked`: the client no longer needs the responses to its
//!   serials below it.
//! - The wrapper applies a serial once and caches the inner state machine's
//!   response; a duplicate gets the cached response
//!   ([`SessionResponse::Applied`] with `duplicate: true`) and is not
//!   applied again.
//! - Responses are framed ([`SessionResponse`]), so a caller tells the
//!   wrapper's refusals ([`SessionError`]) from the inner response.
//! - The session table is part of [`StateMachine::snapshot`] (framed and
//!   versioned, with the inner snapshot), so a node restored from a
//!   snapshot makes the same decisions as one that applied the whole log.
//!
//! # Expiry policy
//!
//! Every decision is a function of the log alone (entry indexes and
//! contents, and [`SessionOptions`], which must be the same on every
//! replica): no clock, no randomness, and ordered maps only, so every
//! replica expires the same sessions at the same entry.
//!
//! - **Table size**: at most [`SessionOptions::sessions_max`] sessions.
//!   Registering one more first expires the least recently active session
//!   (the smallest last-activity index; ties cannot happen, as activity is
//!   recorded by entry index and one entry touches one session).
//! - **Inactivity** (optional): a session whose last activity is more than
//!   [`SessionOptions::idle_entries_max`] log entries behind the entry being
//!   applied expires. Entries the wrapper never sees (leader no-ops,
//!   configuration changes) count too: the measure is the log index.
//! - **Responses per session**: at most
//!   [`SessionOptions::responses_per_session_max`] cached responses. Past
//!   that the lowest serial's response is dropped, and the session then
//!   answers that serial and anything below with
//!   [`SessionError::StaleSerial`] (never applying it). A client with a
//!   single request in flight (like [`Session`]) never gets there.
//!
//! Consequence: a client whose session expired while a retry was
//! outstanding gets [`SessionError::Expired`] and must treat the outcome of
//! that write as unknown (it applied once, or not at all, but never will
//! twice). It must register a new session to go on. A client that stays
//! active within the limits is never expired; since eviction is by
//! activity, a flood of registrations can push idle clients out, so size
//! `sessions_max` for the number of clients that may be idle at once.
//!
//! # Snapshot format
//!
//! `b"RSES"`, a format version byte (1), the session table's length as a
//! little-endian `u64`, the table (postcard), then the inner state machine's
//! snapshot as is. [`Sessions::try_restore`] refuses anything else with a
//! [`SessionSnapshotError`] (no panic), and the runtime stops the node
//! rather than run on a state it could not rebuild.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use raft_core::{ConfigError, Index};
use serde::{Deserialize, Serialize};

use crate::error::{Error, RestoreError};
use crate::handle::{RaftHandle, LEADER_WAIT};
use crate::runtime::StateMachine;

/// A client session's id: the log index of its [`SessionCommand::Register`]
/// entry.
pub type ClientId = u64;

/// The command a [`Sessions`] state machine expects in the log
/// (postcard-encoded: [`SessionCommand::encode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SessionCommand {
    /// Opens a session; answered by [`SessionResponse::Registered`] with the
    /// new client id (this entry's index).
    Register,
    /// A write within session `client`.
    Request {
        /// The session.
        client: ClientId,
        /// The client's number for this write, the same on every retry.
        /// Distinct writes need distinct serials; they need not be
        /// consecutive or arrive in order.
        serial: u64,
        /// The client has the responses to all its serials below this one
        /// (or gave them up): the session may forget them. Values above
        /// `serial` are taken as `serial`.
        first_unacked: u64,
        /// The inner state machine's command.
        command: Bytes,
    },
    /// Closes session `client`; answered by [`SessionResponse::Unregistered`].
    Unregister {
        /// The session.
        client: ClientId,
    },
    /// A command applied to the inner state machine without deduplication
    /// (for commands that are safe to repeat).
    Unsessioned(Bytes),
}

impl SessionCommand {
    /// The bytes to propose.
    pub fn encode(&self) -> Bytes {
        postcard::to_allocvec(self).expect("session commands always encode").into()
    }

    /// Decodes a proposed command.
    pub fn decode(bytes: &[u8]) -> Result<SessionCommand, SessionError> {
        postcard::from_bytes(bytes).map_err(|e| SessionError::Malformed(format!("session command: {e}")))
    }
}

/// What a [`Sessions`] state machine answers (postcard-encoded:
/// [`SessionResponse::decode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SessionResponse {
    /// A session is open, with this id.
    Registered {
        /// The new session's id.
        client: ClientId,
    },
    /// The inner state machine's response to the request.
    Applied {
        /// The inner response.
        response: Bytes,
        /// True when this entry was a retry of a serial already applied:
        /// `response` is the cached one and nothing was applied now.
        duplicate: bool,
    },
    /// The session is closed.
    Unregistered,
    /// The wrapper refused the command; nothing was applied.
    Rejected(SessionError),
}

impl SessionResponse {
    /// The bytes a [`Sessions`] state machine returns.
    pub fn encode(&self) -> Bytes {
        postcard::to_allocvec(self).expect("session responses always encode").into()
    }

    /// Decodes a [`Sessions`] state machine's response;
    /// [`SessionError::BadResponse`] when it is not one.
    pub fn decode(bytes: &[u8]) -> Result<SessionResponse, SessionError> {
        postcard::from_bytes(bytes).map_err(|e| SessionError::BadResponse(e.to_string()))
    }
}

/// Why a session request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SessionError {
    /// The session does not exist: it expired (see the module docs) or was
    /// never opened. Nothing was applied now; a write retried in it has an
    /// unknown outcome. Register a new session to go on.
    #[error("session {client} expired or does not exist")]
    Expired {
        /// The session asked for.
        client: ClientId,
    },
    /// The session no longer remembers `serial` (its response was
    /// acknowledged or dropped): whether it applied cannot be told, and it
    /// is not applied now.
    #[error("serial {serial} of session {client} is older than the session remembers ({first_kept})")]
    StaleSerial {
        /// The session.
        client: ClientId,
        /// The serial asked for.
        serial: u64,
        /// The lowest serial the session still answers for.
        first_kept: u64,
    },
    /// The command was not a [`SessionCommand`]; nothing was applied.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// The response was not a [`SessionResponse`] (the node's state machine
    /// is not wrapped in [`Sessions`]?); the outcome is unknown.
    #[error("not a session response: {0}")]
    BadResponse(String),
}

/// [`Sessions`]' limits. They are part of the replicated state machine's
/// definition: every replica must use the same values, or their expiry
/// decisions diverge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Most sessions kept (default 4096); registering one more expires the
    /// least recently active.
    pub sessions_max: usize,
    /// Most cached responses per session (default 64).
    pub responses_per_session_max: usize,
    /// Sessions idle for more than this many log entries expire (default
    /// `None`: only `sessions_max` expires sessions).
    pub idle_entries_max: Option<u64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { sessions_max: 4096, responses_per_session_max: 64, idle_entries_max: None }
    }
}

impl SessionOptions {
    /// Sets [`SessionOptions::sessions_max`].
    pub fn sessions_max(mut self, sessions: usize) -> Self {
        self.sessions_max = sessions;
        self
    }

    /// Sets [`SessionOptions::responses_per_session_max`].
    pub fn responses_per_session_max(mut self, responses: usize) -> Self {
        self.responses_per_session_max = responses;
        self
    }

    /// Sets [`SessionOptions::idle_entries_max`].
    pub fn idle_entries_max(mut self, entries: Option<u64>) -> Self {
        self.idle_entries_max = entries;
        self
    }

    /// Checks every limit, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field: &'static str, reason: &str| Err(ConfigError { field, reason: reason.to_owned() });
        if self.sessions_max == 0 {
            return fail("sessions_max", "must be at least 1: no session could be registered");
        }
        if self.responses_per_session_max == 0 {
            return fail("responses_per_session_max", "must be at least 1: no retry could be answered");
        }
        if self.idle_entries_max == Some(0) {
            return fail("idle_entries_max", "must be at least 1 (or None): sessions would expire at once");
        }
        Ok(())
    }
}

/// Why [`Sessions::try_restore`] refused a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionSnapshotError {
    /// The data does not start with the sessions snapshot header.
    #[error("not a sessions snapshot (bad header)")]
    BadHeader,
    /// A format version this code does not read.
    #[error("unsupported sessions snapshot version {0}")]
    UnsupportedVersion(u8),
    /// The data ends before the session table does.
    #[error("sessions snapshot truncated")]
    Truncated,
    /// The session table does not decode, or breaks its invariants.
    #[error("corrupt session table: {0}")]
    Corrupt(String),
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"RSES";
const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 1 + 8;

/// One session's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ClientState {
    /// Index of the last entry that named this session.
    last_active: Index,
    /// Serials below this are forgotten: acknowledged by the client, or
    /// dropped to stay within `responses_per_session_max`.
    first_kept: u64,
    /// Responses to the serials at or above `first_kept` that were applied.
    responses: BTreeMap<u64, Bytes>,
}

/// The session table as stored in a snapshot: sessions by id, responses by
/// serial, both strictly increasing.
#[derive(Serialize, Deserialize)]
struct TableImage {
    sessions: Vec<SessionImage>,
}

#[derive(Serialize, Deserialize)]
struct SessionImage {
    client: ClientId,
    last_active: Index,
    first_kept: u64,
    responses: Vec<(u64, Bytes)>,
}

/// A [`StateMachine`] wrapper that applies each session request at most
/// once (see the [module docs](self) for the protocol and expiry policy).
///
/// Every command in the log must be a [`SessionCommand`]; every response is
/// a [`SessionResponse`]. Use [`Session`] on the client side, or build the
/// commands yourself.
pub struct Sessions<S> {
    inner: S,
    options: SessionOptions,
    clients: BTreeMap<ClientId, ClientState>,
    /// `(last_active, client)` of every session, least recently active
    /// first: the eviction order.
    by_activity: BTreeSet<(Index, ClientId)>,
}

impl<S> fmt::Debug for Sessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("options", &self.options)
            .field("sessions", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> Sessions<S> {
    /// Wraps `inner`; fails when `options` are out of range.
    pub fn new(inner: S, options: SessionOptions) -> Result<Self, ConfigError> {
        options.validate()?;
        Ok(Sessions { inner, options, clients: BTreeMap::new(), by_activity: BTreeSet::new() })
    }

    /// The wrapped state machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Whether session `client` is open.
    pub fn contains(&self, client: ClientId) -> bool {
        self.clients.contains_key(&client)
    }

    /// Applies the session command at `index`; what [`StateMachine::apply`]
    /// does, with the command decoded and the response not yet encoded.
    pub fn apply_command(&mut self, index: Index, command: SessionCommand) -> SessionResponse {
        self.expire_idle(index);
        match command {
            SessionCommand::Register => {
                // Only a corrupt history could reuse an index; never keep two.
                self.remove(index);
                while self.clients.len() >= self.options.sessions_max {
                    let Some((_, oldest)) = self.by_activity.pop_first() else { break };
                    self.clients.remove(&oldest);
                    tracing::debug!(client = oldest, index, "session expired: table full");
                }
                self.clients.insert(
                    index,
                    ClientState { last_active: index, first_kept: 0, responses: BTreeMap::new() },
                );
                self.by_activity.insert((index, index));
                SessionResponse::Registered { client: index }
            }
            SessionCommand::Request { client, serial, first_unacked, command } => {
                self.request(index, client, serial, first_unacked, &command)
            }
            SessionCommand::Unregister { client } => {
                if self.remove(client) {
                    SessionResponse::Unregistered
                } else {
                    SessionResponse::Rejected(SessionError::Expired { client })
                }
            }
            SessionCommand::Unsessioned(command) => {
                SessionResponse::Applied { response: self.inner.apply(index, &command), duplicate: false }
            }
        }
    }

    fn request(
        &mut self,
        index: Index,
        client: ClientId,
        serial: u64,
        first_unacked: u64,
        command: &[u8],
    ) -> SessionResponse {
        let Some(state) = self.clients.get_mut(&client) else {
            return SessionResponse::Rejected(SessionError::Expired { client });
        };
        self.by_activity.remove(&(state.last_active, client));
        state.last_active = state.last_active.max(index);
        self.by_activity.insert((state.last_active, client));

        let first_unacked = first_unacked.min(serial);
        if first_unacked > state.first_kept {
            state.responses = state.responses.split_off(&first_unacked);
            state.first_kept = first_unacked;
        }
        if let Some(response) = state.responses.get(&serial) {
            return SessionResponse::Applied { response: response.clone(), duplicate: true };
        }
        if serial < state.first_kept {
            return SessionResponse::Rejected(SessionError::StaleSerial {
                client,
                serial,
                first_kept: state.first_kept,
            });
        }
        let response = self.inner.apply(index, command);
        state.responses.insert(serial, response.clone());
        while state.responses.len() > self.options.responses_per_session_max {
            let Some((dropped, _)) = state.responses.pop_first() else { break };
            state.first_kept = dropped.saturating_add(1);
        }
        SessionResponse::Applied { response, duplicate: false }
    }

    /// Expires the sessions idle for more than `idle_entries_max` entries
    /// as of `index`.
    fn expire_idle(&mut self, index: Index) {
        let Some(idle_max) = self.options.idle_entries_max else { return };
        while let Some(&(last_active, client)) = self.by_activity.first() {
            if index.saturating_sub(last_active) <= idle_max {
                break;
            }
            self.by_activity.pop_first();
            self.clients.remove(&client);
            tracing::debug!(client, index, last_active, "session expired: idle");
        }
    }

    fn remove(&mut self, client: ClientId) -> bool {
        match self.clients.remove(&client) {
            Some(state) => {
                self.by_activity.remove(&(state.last_active, client));
                true
            }
            None => false,
        }
    }

    fn encode_table(&self) -> Vec<u8> {
        let image = TableImage {
            sessions: self
                .clients
                .iter()
                .map(|(client, s)| {
                    let responses = s.responses.iter().map(|(serial, r)| (*serial, r.clone())).collect();
                    SessionImage {
                        client: *client,
                        last_active: s.last_active,
                        first_kept: s.first_kept,
                        responses,
                    }
                })
                .collect(),
        };
        postcard::to_allocvec(&image).expect("the session table always encodes")
    }

    /// Decodes a snapshot's header and session table; returns the table and
    /// the inner snapshot.
    fn decode_snapshot(
        data: &[u8],
    ) -> Result<(BTreeMap<ClientId, ClientState>, &[u8]), SessionSnapshotError> {
        if data.len() < SNAPSHOT_HEADER_LEN {
            return Err(if data.starts_with(&SNAPSHOT_MAGIC[..data.len().min(4)]) {
                SessionSnapshotError::Truncated
            } else {
                SessionSnapshotError::BadHeader
            });
        }
        let (magic, rest) = data.split_at(SNAPSHOT_MAGIC.len());
        if magic != SNAPSHOT_MAGIC {
            return Err(SessionSnapshotError::BadHeader);
        }
        if rest[0] != SNAPSHOT_VERSION {
            return Err(SessionSnapshotError::UnsupportedVersion(rest[0]));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&rest[1..9]);
        let rest = &rest[9..];
        let table_len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
        if table_len > rest.len() {
            return Err(SessionSnapshotError::Truncated);
        }
        let (table, inner) = rest.split_at(table_len);
        let corrupt = |reason: String| SessionSnapshotError::Corrupt(reason);
        let (image, unread) =
            postcard::take_from_bytes::<TableImage>(table).map_err(|e| corrupt(e.to_string()))?;
        if !unread.is_empty() {
            return Err(corrupt(format!("{} bytes after the table", unread.len())));
        }
        let mut clients = BTreeMap::new();
        for SessionImage { client, last_active, first_kept, responses } in image.sessions {
            if clients.last_key_value().is_some_and(|(previous, _)| *previous >= client) {
                return Err(corrupt(format!("session {client} out of order")));
            }
            if last_active < client {
                return Err(corrupt(format!("session {client} active at {last_active}, before it opened")));
            }
            let mut kept = BTreeMap::new();
            for (serial, response) in responses {
                if serial < first_kept
                    || kept.last_key_value().is_some_and(|(previous, _)| *previous >= serial)
                {
                    return Err(corrupt(format!("session {client}: serial {serial} out of order")));
                }
                kept.insert(serial, response);
            }
            clients.insert(client, ClientState { last_active, first_kept, responses: kept });
        }
        Ok((clients, inner))
    }

    /// [`StateMachine::try_restore`] with the typed error: refuses data that
    /// is not a sessions snapshot (leaving this state machine as it was),
    /// else restores the session table and hands the rest to the inner
    /// state machine's `try_restore`.
    pub fn restore_snapshot(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let (clients, inner) = Self::decode_snapshot(data).map_err(RestoreError::new)?;
        self.inner.try_restore(inner)?;
        self.by_activity = clients.iter().map(|(client, s)| (s.last_active, *client)).collect();
        self.clients = clients;
        Ok(())
    }
}

impl<S: StateMachine> StateMachine for Sessions<S> {
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes {
        let response = match SessionCommand::decode(command) {
            Ok(command) => self.apply_command(index, command),
            Err(e) => SessionResponse::Rejected(e),
        };
        response.encode()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        let table = self.encode_table();
        let inner = self.inner.snapshot();
        let mut data = Vec::with_capacity(SNAPSHOT_HEADER_LEN + table.len() + inner.len());
        data.extend_from_slice(SNAPSHOT_MAGIC);
        data.push(SNAPSHOT_VERSION);
        data.extend_from_slice(&(table.len() as u64).to_le_bytes());
        data.extend_from_slice(&table);
        data.extend_from_slice(&inner);
        data
    }

    /// Logs and ignores data that does not restore; the runtime calls
    /// [`Sessions::try_restore`], which reports it.
    fn restore(&mut self, data: &[u8]) {
        if let Err(e) = self.restore_snapshot(data) {
            tracing::error!("{e}");
        }
    }

    fn try_restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.restore_snapshot(data)
    }
}

/// A client session over a [`RaftHandle`], for a cluster whose state
/// machine is wrapped in [`Sessions`]: [`Session::propose`] gives every
/// write a serial and retries it, with the same serial, while its outcome
/// is unknown, so it applies at most once.
///
/// One write at a time (`&mut self`); open several sessions for
/// concurrency. A write that fails with a retryable error after the last
/// attempt has an unknown outcome; the session gives its serial up (it
/// will not apply after a later write of this session has) and goes on.
#[derive(Debug)]
pub struct Session {
    handle: RaftHandle,
    client: ClientId,
    next_serial: u64,
    first_unacked: u64,
    attempts_max: u32,
}

impl Session {
    /// Opens a session through `handle` (any node). A registration that
    /// times out and is retried may leave an unused session behind; it
    /// expires like any other.
    pub async fn register(handle: RaftHandle) -> Result<Session, Error> {
        let response = handle.propose(SessionCommand::Register.encode()).await?;
        match SessionResponse::decode(&response)? {
            SessionResponse::Registered { client } => Ok(Session::resume(handle, client, 1)),
            SessionResponse::Rejected(e) => Err(Error::Session(e)),
            other => Err(Error::Session(SessionError::BadResponse(format!("{other:?}")))),
        }
    }

    /// A session already registered as `client`, whose next write gets
    /// serial `next_serial` (for a client that keeps its session across
    /// restarts: the serials it used before must not be reused).
    pub fn resume(handle: RaftHandle, client: ClientId, next_serial: u64) -> Session {
        Session { handle, client, next_serial, first_unacked: next_serial, attempts_max: 4 }
    }

    /// Sets how many times [`Session::propose`] tries one write (default
    /// 4, at least 1); each try waits up to the node's propose timeout.
    pub fn attempts_max(mut self, attempts: u32) -> Self {
        self.attempts_max = attempts.max(1);
        self
    }

    /// This session's id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The serial the next write gets.
    pub fn next_serial(&self) -> u64 {
        self.next_serial
    }

    /// Proposes `command` in this session and returns the inner state
    /// machine's response. Retries with the same serial on
    /// [`Error::Timeout`], [`Error::StoppedInFlight`], [`Error::NoLeader`], [`Error::NotLeader`],
    /// [`Error::ProposalLost`], [`Error::Busy`] and [`Error::Forward`], up
    /// to [`Session::attempts_max`] tries; the last such error is returned
    /// (the outcome is then unknown). [`Error::Session`] with
    /// [`SessionError::Expired`] means the session is gone (see the module
    /// docs): an earlier try may have applied.
    pub async fn propose(&mut self, command: impl Into<Bytes>) -> Result<Bytes, Error> {
        // The serial is taken before the first try, so a cancelled call
        // never lends its serial to another command.
        let serial = self.next_serial;
        self.next_serial = serial.saturating_add(1);
        let request = SessionCommand::Request {
            client: self.client,
            serial,
            first_unacked: self.first_unacked,
            command: command.into(),
        }
        .encode();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.handle.propose(request.clone()).await {
                Ok(response) => break Ok(response),
                Err(
                    e @ (Error::Timeout
                    | Error::StoppedInFlight
                    | Error::NoLeader
                    | Error::NotLeader { .. }
                    | Error::ProposalLost
                    | Error::Busy
                    | Error::Forward(_)),
                ) => {
                    if attempt >= self.attempts_max {
                        tracing::debug!(client = self.client, serial, "giving the write up: {e}");
                        break Err(e);
                    }
                    if matches!(e, Error::Forward(_) | Error::Busy) {
                        // The leader just went away or is overloaded: give it
                        // a moment rather than fail at once.
                        self.handle.wait_for_leader(LEADER_WAIT).await;
                    }
                }
                Err(e) => break Err(e),
            }
        };
        // Answered or given up: either way its response is no longer wanted.
        self.first_unacked = self.first_unacked.max(serial.saturating_add(1));
        match SessionResponse::decode(&outcome?)? {
            SessionResponse::Applied { response, .. } => Ok(response),
            SessionResponse::Rejected(e) => Err(Error::Session(e)),
            other => Err(Error::Session(SessionError::BadResponse(format!("{other:?}")))),
        }
    }

    /// Closes the session (its cached responses are dropped at once rather
    /// than when it expires).
    pub async fn unregister(self) -> Result<(), Error> {
        let response =
            self.handle.propose(SessionCommand::Unregister { client: self.client }.encode()).await?;
        match SessionResponse::decode(&response)? {
            SessionResponse::Unregistered => Ok(()),
            SessionResponse::Rejected(e) => Err(Error::Session(e)),
            other => Err(Error::Session(SessionError::BadResponse(format!("{other:?}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it applies; answers `<command>#<how many so far>`.
    #[derive(Debug, Default)]
    struct Log(Vec<(Index, Bytes)>);

    impl StateMachine for Log {
        fn apply(&mut self, index: Index, command: &[u8]) -> Bytes {
            self.0.push((index, Bytes::copy_from_slice(command)));
            let mut response = command.to_vec();
            response.extend_from_slice(format!("#{}", self.0.len()).as_bytes());
            response.into()
        }

        fn snapshot(&mut self) -> Vec<u8> {
            postcard::to_allocvec(&self.0).unwrap()
        }

        fn try_restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
            self.0 = postcard::from_bytes(data).map_err(RestoreError::new)?;
            Ok(())
        }
    }

    fn sessions(options: SessionOptions) -> Sessions<Log> {
        Sessions::new(Log::default(), options).unwrap()
    }

    fn request(client: ClientId, serial: u64, first_unacked: u64, command: &'static str) -> SessionCommand {
        SessionCommand::Request { client, serial, first_unacked, command: Bytes::from(command) }
    }

    fn applied(response: &str, duplicate: bool) -> SessionResponse {
        SessionResponse::Applied { response: Bytes::copy_from_slice(response.as_bytes()), duplicate }
    }

    fn register(s: &mut Sessions<Log>, index: Index) -> ClientId {
        assert_eq!(
            s.apply_command(index, SessionCommand::Register),
            SessionResponse::Registered { client: index }
        );
        index
    }

    // Paper section 8: a retried command is not executed twice.
    #[test]
    fn s1_a_retried_serial_gets_the_cached_response_and_applies_once() {
        let mut s = sessions(SessionOptions::default());
        let client = register(&mut s, 1);

        let first = s.apply(2, &request(client, 1, 1, "inc").encode());
        let retry = s.apply(3, &request(client, 1, 1, "inc").encode());

        assert_eq!(SessionResponse::decode(&first).unwrap(), applied("inc#1", false));
        assert_eq!(SessionResponse::decode(&retry).unwrap(), applied("inc#1", true));
        assert_eq!(s.inner().0.len(), 1);
        // Without the wrapper the same two entries apply twice.
        let mut bare = Log::default();
        bare.apply(2, b"inc");
        bare.apply(3, b"inc");
        assert_eq!(bare.0.len(), 2);
    }

    // Dissertation 6.3: concurrent requests may arrive out of order;
    // first_unacked lets the session forget acknowledged responses.
    #[test]
    fn s2_out_of_order_serials_apply_once_each_and_forgotten_ones_are_stale() {
        let mut s = sessions(SessionOptions::default());
        let c = register(&mut s, 1);

        assert_eq!(s.apply_command(2, request(c, 3, 1, "c")), applied("c#1", false));
        assert_eq!(s.apply_command(3, request(c, 1, 1, "a")), applied("a#2", false));
        assert_eq!(s.apply_command(4, request(c, 2, 1, "b")), applied("b#3", false));
        assert_eq!(s.apply_command(5, request(c, 1, 1, "a")), applied("a#2", true));
        // Responses below 3 are acknowledged: 1 is no longer answered, 3 is.
        assert_eq!(s.apply_command(6, request(c, 4, 3, "d")), applied("d#4", false));
        assert_eq!(
            s.apply_command(7, request(c, 1, 3, "a")),
            SessionResponse::Rejected(SessionError::StaleSerial { client: c, serial: 1, first_kept: 3 })
        );
        assert_eq!(s.apply_command(8, request(c, 3, 3, "c")), applied("c#1", true));
        // first_unacked above serial counts as serial: 5 is applied and kept.
        assert_eq!(s.apply_command(9, request(c, 5, 99, "e")), applied("e#5", false));
        assert_eq!(s.apply_command(10, request(c, 5, 5, "e")), applied("e#5", true));
        let commands: Vec<&[u8]> = s.inner().0.iter().map(|(_, c)| &c[..]).collect();
        assert_eq!(commands, [&b"c"[..], b"a", b"b", b"d", b"e"]);
    }

    #[test]
    fn s3_past_responses_per_session_max_the_lowest_serials_are_dropped() {
        let mut s = sessions(SessionOptions::default().responses_per_session_max(2));
        let c = register(&mut s, 1);
        for (i, serial) in [1, 2, 3].into_iter().enumerate() {
            s.apply_command(2 + i as Index, request(c, serial, 1, "w"));
        }
        assert_eq!(
            s.apply_command(5, request(c, 1, 1, "w")),
            SessionResponse::Rejected(SessionError::StaleSerial { client: c, serial: 1, first_kept: 2 })
        );
        assert_eq!(s.apply_command(6, request(c, 2, 1, "w")), applied("w#2", true));
        assert_eq!(s.inner().0.len(), 3);
    }

    #[test]
    fn s4_unknown_evicted_and_idle_sessions_are_refused_never_reapplied() {
        // Never registered.
        let mut s = sessions(SessionOptions::default());
        assert_eq!(
            s.apply_command(1, request(99, 1, 1, "w")),
            SessionResponse::Rejected(SessionError::Expired { client: 99 })
        );

        // Table full: the least recently active session goes.
        let mut s = sessions(SessionOptions::default().sessions_max(2));
        let a = register(&mut s, 1);
        let b = register(&mut s, 2);
        s.apply_command(3, request(a, 1, 1, "a1"));
        let c = register(&mut s, 4);
        assert!(s.contains(a) && !s.contains(b) && s.contains(c));
        assert_eq!(
            s.apply_command(5, request(b, 1, 1, "b1")),
            SessionResponse::Rejected(SessionError::Expired { client: b })
        );
        assert_eq!(s.apply_command(6, request(a, 1, 1, "a1")), applied("a1#1", true));
        assert_eq!(s.inner().0.len(), 1);

        // Idle for more than idle_entries_max entries (counted by index,
        // whatever the wrapper saw in between).
        let mut s = sessions(SessionOptions::default().idle_entries_max(Some(10)));
        let a = register(&mut s, 1);
        assert_eq!(s.apply_command(5, request(a, 1, 1, "a1")), applied("a1#1", false));
        // Idle for exactly 10 entries is allowed.
        assert_eq!(s.apply_command(15, request(a, 1, 1, "a1")), applied("a1#1", true));
        s.apply_command(26, SessionCommand::Unsessioned(Bytes::from("x")));
        assert!(!s.contains(a));
        assert_eq!(
            s.apply_command(27, request(a, 1, 1, "a1")),
            SessionResponse::Rejected(SessionError::Expired { client: a })
        );

        // Unregister closes it.
        let b = register(&mut s, 28);
        assert_eq!(
            s.apply_command(29, SessionCommand::Unregister { client: b }),
            SessionResponse::Unregistered
        );
        assert_eq!(
            s.apply_command(30, SessionCommand::Unregister { client: b }),
            SessionResponse::Rejected(SessionError::Expired { client: b })
        );
        assert!(s.is_empty());
    }

    /// A seeded workload: registrations, requests with retried, reordered
    /// and stale serials, unregistrations, unsessioned and undecodable
    /// commands, and gaps in the indexes (entries the wrapper never sees).
    fn workload(seed: u64, entries: usize) -> Vec<(Index, Bytes)> {
        let mut state = seed.max(1);
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut clients: Vec<ClientId> = Vec::new();
        let mut index = 0;
        let mut out = Vec::new();
        for i in 0..entries {
            index += 1 + next(3) as Index;
            let command = match next(10) {
                _ if clients.is_empty() => SessionCommand::Register.encode(),
                0 => {
                    clients.push(index);
                    SessionCommand::Register.encode()
                }
                1 if next(4) == 0 => {
                    SessionCommand::Unregister { client: clients[next(clients.len())] }.encode()
                }
                3 => SessionCommand::Unsessioned(Bytes::from(format!("u{i}"))).encode(),
                4 => Bytes::from_static(b"\xff\xff\xff"),
                _ => {
                    // Mostly recent clients, some long gone.
                    let client = match next(8) {
                        0 => clients[next(clients.len())],
                        _ => clients[clients.len() - 1 - next(clients.len().min(10))],
                    };
                    let serial = 1 + next(8) as u64;
                    SessionCommand::Request {
                        client,
                        serial,
                        first_unacked: serial.saturating_sub(next(6) as u64),
                        command: Bytes::from(format!("w{i}")),
                    }
                    .encode()
                }
            };
            if clients.is_empty() {
                clients.push(index);
            }
            out.push((index, command));
        }
        out
    }

    // Every replica, and one restored from a snapshot mid-way, makes the
    // same decisions from the log alone.
    #[test]
    fn s5_expiry_decisions_are_identical_on_every_replica_and_after_a_restore() {
        let options =
            SessionOptions::default().sessions_max(8).responses_per_session_max(4).idle_entries_max(Some(60));
        let log = workload(0x9e37_79b9_7f4a_7c15, 2000);
        let (before, after) = log.split_at(1000);

        let mut a = sessions(options.clone());
        let mut b = sessions(options.clone());
        let mut answers_a = Vec::new();
        for (index, command) in before {
            answers_a.push(a.apply(*index, command));
            b.apply(*index, command);
        }
        let snapshot = b.snapshot();
        let mut c = sessions(options);
        c.try_restore(&snapshot).unwrap();
        assert_eq!(c.snapshot(), snapshot);

        let mut answers_c = Vec::new();
        for (index, command) in after {
            answers_a.push(a.apply(*index, command));
            answers_c.push(c.apply(*index, command));
        }
        assert_eq!(answers_a[before.len()..], answers_c[..]);
        assert_eq!(a.snapshot(), c.snapshot());

        // The workload exercises every decision, or the test proves little.
        let decoded: Vec<SessionResponse> =
            answers_a.iter().map(|r| SessionResponse::decode(r).unwrap()).collect();
        let count = |f: fn(&SessionResponse) -> bool| decoded.iter().filter(|r| f(r)).count();
        assert!(count(|r| matches!(r, SessionResponse::Applied { duplicate: true, .. })) > 20);
        assert!(count(|r| matches!(r, SessionResponse::Applied { duplicate: false, .. })) > 20);
        assert!(count(|r| matches!(r, SessionResponse::Rejected(SessionError::Expired { .. }))) > 20);
        assert!(count(|r| matches!(r, SessionResponse::Rejected(SessionError::StaleSerial { .. }))) > 20);
        assert!(count(|r| matches!(r, SessionResponse::Rejected(SessionError::Malformed(_)))) > 20);
    }

    #[test]
    fn s6_a_snapshot_restored_on_a_fresh_instance_keeps_the_sessions_and_the_inner_state() {
        let mut s = sessions(SessionOptions::default());
        let c = register(&mut s, 1);
        s.apply_command(2, request(c, 1, 1, "a"));
        s.apply_command(3, request(c, 2, 1, "b"));
        let snapshot = s.snapshot();

        let mut fresh = sessions(SessionOptions::default());
        fresh.try_restore(&snapshot).unwrap();
        assert!(fresh.contains(c));
        assert_eq!(fresh.inner().0, s.inner().0);
        assert_eq!(fresh.apply_command(4, request(c, 1, 1, "a")), applied("a#1", true));
        assert_eq!(fresh.apply_command(5, request(c, 3, 1, "c")), applied("c#3", false));
        assert_eq!(fresh.inner().0.len(), 3);
    }

    #[test]
    fn s7_bad_snapshot_bytes_are_errors_not_panics_and_change_nothing() {
        let mut source = sessions(SessionOptions::default());
        let c = register(&mut source, 1);
        for serial in 1..=3 {
            source.apply_command(1 + serial, request(c, serial, 1, "w"));
        }
        let good = source.snapshot();
        let table_end = SNAPSHOT_HEADER_LEN + source.encode_table().len();

        let mut target = sessions(SessionOptions::default());
        let kept = register(&mut target, 7);
        let before = target.snapshot();
        let refused = |target: &mut Sessions<Log>, data: &[u8]| {
            let error = target.try_restore(data).expect_err("bad data restored");
            assert_eq!(target.snapshot(), before, "a refused restore changed the state");
            error.to_string()
        };

        assert!(refused(&mut target, b"").contains("truncated"));
        assert!(refused(&mut target, b"nope, not this").contains("bad header"));
        let mut version = good.clone();
        version[4] = 2;
        assert!(refused(&mut target, &version).contains("version 2"));
        let mut long = good.clone();
        long[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(refused(&mut target, &long).contains("truncated"));
        // Every cut through the header and table.
        for cut in 0..table_end {
            refused(&mut target, &good[..cut]);
        }
        // A table that decodes but breaks its invariants: responses below
        // first_kept.
        let mut broken = sessions(SessionOptions::default());
        broken
            .clients
            .insert(3, ClientState { last_active: 3, first_kept: 5, responses: [(1, Bytes::new())].into() });
        assert!(refused(&mut target, &broken.snapshot()).contains("out of order"));
        // Flipped bytes in the table: refused or, if it still decodes,
        // restored without a panic.
        for i in SNAPSHOT_HEADER_LEN..table_end {
            let mut flipped = good.clone();
            flipped[i] ^= 0xa5;
            let mut scratch = sessions(SessionOptions::default());
            let _ = scratch.try_restore(&flipped);
        }
        // The inner state machine's refusal comes through.
        let mut bad_inner = good[..table_end].to_vec();
        bad_inner.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
        assert!(target.try_restore(&bad_inner).is_err());
        assert!(target.contains(kept));

        target.try_restore(&good).unwrap();
        assert!(target.contains(c) && !target.contains(kept));
    }

    #[test]
    fn s8_commands_that_do_not_decode_are_refused_and_apply_nothing() {
        let mut s = sessions(SessionOptions::default());
        let response = SessionResponse::decode(&s.apply(1, b"\xff\xff\xff")).unwrap();
        assert!(matches!(response, SessionResponse::Rejected(SessionError::Malformed(_))), "{response:?}");
        assert!(s.inner().0.is_empty());
        assert!(matches!(SessionResponse::decode(b"\xff\xff"), Err(SessionError::BadResponse(_))));
    }

    #[test]
    fn s9_options_out_of_range_are_named() {
        let field = |o: SessionOptions| o.validate().unwrap_err().field;
        assert_eq!(field(SessionOptions::default().sessions_max(0)), "sessions_max");
        assert_eq!(
            field(SessionOptions::default().responses_per_session_max(0)),
            "responses_per_session_max"
        );
        assert_eq!(field(SessionOptions::default().idle_entries_max(Some(0))), "idle_entries_max");
        assert!(Sessions::new(Log::default(), SessionOptions::default().sessions_max(0)).is_err());
    }
}
