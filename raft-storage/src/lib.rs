//! Crash-safe write-ahead log, hard state and snapshot files for raft-core.
//!
//! Not built yet (issue 7): this crate will persist what raft-core's
//! `Action::Persist` asks for, with group commit, and return `Restored`.
