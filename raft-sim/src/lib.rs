//! Deterministic simulator for raft-core: scenarios, random fault schedules,
//! safety invariants and linearizability checks.
//!
//! Not built yet (issue 3).
