//! The tokio runtime for raft-core: HTTP Transport (axum), HTTP Peer
//! (reqwest) and the `RaftHandle` API.
//!
//! Not built yet (issue 8).
