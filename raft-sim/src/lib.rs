//! Deterministic simulator for `raft-core`.
//!
//! `raft-sim` runs many [`raft_core::Node`]s over a simulated network and
//! disk, driven by one event queue and one seeded RNG: the same seed gives
//! the same run, bit for bit. It injects faults drawn from the seed (loss,
//! duplication, reordering, partitions, crashes, pauses, slow disks), checks
//! the safety invariants after every event, checks the clients' history for
//! linearizability at the end, and replays the Raft paper's scenarios.
//!
//! ```
//! use raft_sim::{run_seed, RunOptions};
//!
//! // One random 3-node run: faults during a safety phase, then healing.
//! let report = run_seed(7, &RunOptions { nodes: 3, safety_ms: 1_000, ..RunOptions::default() });
//! assert!(report.violation.is_none(), "{}", report.failure_text());
//! assert!(report.stats.events > 0);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod client;
pub mod disk;
pub mod event;
pub mod faults;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod run;
pub mod scenarios;
pub mod sim;
pub mod trace;

pub use checker::{Checker, Property, Violation};
pub use faults::{FaultKinds, FaultPlan};
pub use run::{run_seed, RunOptions, RunReport};
pub use sim::{Sim, SimOptions};
pub use trace::TraceMode;
