//! The tokio runtime for `raft-core`: it runs a Raft node in an async
//! application, persists through `raft-storage`, talks to other nodes over
//! HTTP, and applies committed commands to the application's
//! [`StateMachine`].
//!
//! - [`RaftNode::start`] opens the data directory and starts the node: one
//!   tokio task owns the `raft_core::Node` and executes its actions in
//!   order; ticks come from a tokio interval ([`Options::tick`], 10 ms by
//!   default); `Persist`s are made durable on a dedicated thread, all those
//!   queued during one fsync going into the next (group commit), and every
//!   action that followed them waits until they are durable, except a
//!   leader's new entries, which go to its followers while it writes them
//!   (`raft_core::EarlySends`, [`Options::replicate_while_writing`]);
//!   committed entries are applied on their own thread.
//! - [`RaftNode::start_in_memory`] is the same node with its log, hard
//!   state and snapshots in memory (`raft_storage::MemStorage`, written by
//!   the node task itself): for tests, and to measure the runtime alone
//!   (`cargo bench -p raft-http --bench inproc`).
//! - [`RaftHandle`] is the application's side: [`RaftHandle::propose`]
//!   returns the state machine's response once applied; on a follower it
//!   forwards the command to the leader ([`Connect::forward`]: over HTTP,
//!   `POST /raft/forward` on the leader's raft address) and hands back the
//!   leader's outcome, typed errors included.
//!   [`RaftHandle::read`] is a linearizable barrier (and
//!   [`RaftHandle::read_with`] a lease read),
//!   [`RaftHandle::set_configuration`], [`RaftHandle::transfer_leadership`],
//!   [`RaftHandle::status`],
//!   [`RaftHandle::leader`] (a watch channel of leader changes),
//!   [`RaftHandle::shutdown`] and [`RaftHandle::shutdown_with`] (a leader
//!   can hand leadership over first, [`ShutdownOptions`]).
//! - Egress is the [`Peer`] trait, made per remote node by a [`Connect`]:
//!   [`HttpConnect`]/[`HttpPeer`] POST postcard-encoded batches, each peer's
//!   sender task over an HTTP/1.1 keep-alive connection it drives itself
//!   (hyper; forwarded requests and snapshot chunks go through reqwest);
//!   [`ChannelNetwork`] delivers in-process, for tests.
//! - Ingress is the [`Transport`]: an axum `Router` with
//!   `POST /raft/messages` and `POST /raft/forward`, checking a cluster id
//!   and a bearer secret.
//! - TLS: [`tls::PeerTls`] is mutual TLS between nodes (rustls): give it to
//!   [`HttpOptions::tls`] and serve the `Transport` through a
//!   [`tls::Listener`]; a peer without a certificate from the cluster's CA
//!   is refused at the handshake. Certificates reload on demand or when
//!   their files change, without a restart.
//!
//! Observability: [`RaftHandle::metrics`] reads the node's [`Metrics`]
//! registry (term, role, commit and applied index, proposals, batch sizes,
//! fsync and proposal latency, peer round trips, proposals in flight) as a
//! [`MetricsSnapshot`], which renders as Prometheus text. Protocol
//! milestones are `tracing` events at info level (elected, term changed,
//! configuration changed, snapshot sent / installed, peer unreachable and
//! reachable again).
//!
//! Membership: [`RaftHandle::set_configuration`] takes the complete
//! topology and goes through joint consensus in the core;
//! [`RaftHandle::transfer_leadership`] hands leadership over. Both work on
//! any node, forwarded like proposals. A node started without
//! `initial_membership` joins an existing cluster: give it the current
//! members' addresses in [`Options::peers`] so it can answer the leader
//! before the configuration reaches it.
//!
//! Snapshots: when the core asks (`Action::SnapshotNeeded`, every
//! `snapshot_entries_max` entries or `snapshot_bytes_max` bytes applied),
//! the apply thread calls [`StateMachine::snapshot`], the storage thread
//! saves it, and the core compacts its log. A follower too far behind gets
//! the snapshot in chunks of `bytes_per_message_max` as ordinary messages;
//! its runtime saves it (ordered like a `Persist`) and calls
//! [`StateMachine::restore`]. A restart restores the newest snapshot and
//! re-applies the log after it. The newest snapshot is also kept in memory
//! to serve followers.
//!
//! A one-node cluster, in-process:
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::{Config, Membership};
//! use raft_http::{ChannelNetwork, Options, RaftNode, StateMachine};
//!
//! struct Counter(u64);
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: u64, _command: &[u8]) -> Bytes {
//!         self.0 += 1;
//!         Bytes::from(self.0.to_string())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), raft_http::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let options = Options::new(Config::new(1), dir.path())
//!     .initial_membership(Membership::with_voters([(1, "local")]));
//! let handle = RaftNode::start(options, Counter(0), ChannelNetwork::new()).await?;
//!
//! let mut leader = handle.leader();
//! leader.wait_for(|state| state.is_leader).await.unwrap();
//! assert_eq!(handle.propose("increment").await?, Bytes::from("1"));
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Client sessions ([`session`]): a write whose outcome is unknown
//! ([`Error::Timeout`], a leader lost mid-forward) may still commit, so
//! retrying it may apply it twice. Wrap the state machine in [`Sessions`]
//! and write through a [`Session`]: every write gets a serial, retries keep
//! it, and the wrapper applies each serial at most once, caching the
//! response for retries; its table is in the snapshots and expires by a
//! policy every replica applies identically (see [`session`]).
//!
//! ```
//! # use bytes::Bytes;
//! # use raft_core::{Config, Membership};
//! # use raft_http::{ChannelNetwork, Options, RaftNode, StateMachine};
//! use raft_http::{Session, SessionOptions, Sessions};
//! # struct Counter(u64);
//! # impl StateMachine for Counter {
//! #     fn apply(&mut self, _index: u64, _command: &[u8]) -> Bytes {
//! #         self.0 += 1;
//! #         Bytes::from(self.0.to_string())
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let options = Options::new(Config::new(1), dir.path())
//! #     .initial_membership(Membership::with_voters([(1, "local")]));
//! let machine = Sessions::new(Counter(0), SessionOptions::default())?;
//! let handle = RaftNode::start(options, machine, ChannelNetwork::new()).await?;
//!
//! let mut session = Session::register(handle.clone()).await?;
//! assert_eq!(session.propose("increment").await?, Bytes::from("1"));
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Over HTTP, each node serves its [`Transport`] and sends through
//! [`HttpConnect`]; membership addresses are `host:port`:
//!
//! ```no_run
//! # use bytes::Bytes;
//! # use raft_core::{Config, Membership};
//! # use raft_http::{HttpConnect, HttpOptions, Options, RaftNode, StateMachine, Transport};
//! # struct Echo;
//! # impl StateMachine for Echo {
//! #     fn apply(&mut self, _index: u64, command: &[u8]) -> Bytes { Bytes::copy_from_slice(command) }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let membership =
//!     Membership::with_voters([(1, "10.0.0.1:7001"), (2, "10.0.0.2:7001"), (3, "10.0.0.3:7001")]);
//! let http = HttpOptions::new("my-cluster").secret("s3cret");
//! let options = Options::new(Config::new(1), "/var/lib/raft").initial_membership(membership);
//! let handle = RaftNode::start(options, Echo, HttpConnect::new(http.clone())?).await?;
//!
//! let app = Transport::new(handle.clone(), &http).router(); // merge with your own routes
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7001").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod metrics;
mod peer;
mod runtime;
pub mod session;
pub mod tls;
mod transport;

pub use error::{Error, RestoreError};
pub use handle::{Handoff, LeaderState, RaftHandle, ShutdownOptions};
pub use metrics::{HistogramSnapshot, Metrics, MetricsSnapshot};
pub use peer::{ChannelNetwork, Connect, Forwarded, HttpConnect, HttpOptions, HttpPeer, Peer};
pub use runtime::{Options, RaftNode, StateMachine};
pub use session::{Session, SessionOptions, Sessions};
pub use transport::{Transport, CLUSTER_HEADER};
