//! Egress: how a node's messages reach other nodes.
//!
//! The runtime asks a [`Connect`] for one [`Peer`] per remote node (by id and
//! the opaque address string of the membership) the first time it sends
//! there, and again if the address changes. [`Peer::send`] must never block:
//! Raft tolerates lost, duplicated and reordered messages, so a peer that
//! cannot keep up drops messages rather than slowing the node down.
//!
//! A [`Connect`] also carries requests from a follower to the leader
//! ([`Connect::forward`]), which is what makes [`RaftHandle::propose`],
//! [`RaftHandle::set_configuration`] and [`RaftHandle::transfer_leadership`]
//! work on any node.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Body, Message, NodeId};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::forward;
use crate::handle::RaftHandle;
use crate::metrics::Metrics;

/// The outcome of [`Connect::forward`]: the leader's encoded reply.
pub type Forwarded = Pin<Box<dyn Future<Output = Result<Bytes, Error>> + Send + 'static>>;

/// The way to one remote node.
pub trait Peer: Send + Sync + 'static {
    /// Queues `message` for delivery. Never blocks; may drop the message.
    fn send(&self, message: Message);
}

/// Makes [`Peer`]s: one per remote node.
pub trait Connect: Send + Sync + 'static {
    /// A peer that delivers to node `id` at `address` (the membership's
    /// opaque address string for it).
    fn connect(&self, id: NodeId, address: &str) -> Box<dyn Peer>;

    /// Delivers a forwarded request to node `id` at `address` (the node
    /// this one believes leads) and returns its reply. Both are opaque bytes
    /// that the runtime encodes and decodes: a proposal, a configuration
    /// change or a leadership transfer, and the leader's typed outcome. The
    /// receiving side hands the bytes to its runtime (the [`crate::Transport`]
    /// does, at `POST /raft/forward`).
    ///
    /// Errors: [`Error::NoLeader`] when the request provably never reached
    /// the leader (connection refused), [`Error::Timeout`] when `timeout`
    /// passed first (the outcome is unknown), [`Error::Forward`] otherwise.
    /// The default cannot forward: it answers [`Error::NotLeader`] with `id`,
    /// so the application sees whom to retry.
    fn forward(&self, id: NodeId, address: &str, request: Bytes, timeout: Duration) -> Forwarded {
        let _ = (address, request, timeout);
        Box::pin(async move { Err(Error::NotLeader { leader_hint: id }) })
    }

    /// Called once by [`crate::RaftNode::start`] before any
    /// [`Connect::connect`], with the node's metrics registry, so that peers
    /// can record their requests ([`Metrics::record_peer_request`]) and drops.
    /// The default ignores it.
    fn attach_metrics(&self, metrics: Metrics) {
        let _ = metrics;
    }
}

/// An in-process network for tests: every node registers its handle, and
/// messages are handed straight to the recipient's input queue.
#[derive(Clone, Default)]
pub struct ChannelNetwork {
    nodes: Arc<Mutex<HashMap<NodeId, RaftHandle>>>,
}

impl fmt::Debug for ChannelNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self.nodes.lock().map(|n| n.keys().copied().collect::<Vec<_>>()).unwrap_or_default();
        f.debug_struct("ChannelNetwork").field("nodes", &nodes).finish()
    }
}

impl ChannelNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes messages for `id` to `handle` (replacing any earlier one).
    pub fn register(&self, id: NodeId, handle: RaftHandle) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(id, handle);
        }
    }

    /// Stops delivering to `id`: its messages are dropped.
    pub fn unregister(&self, id: NodeId) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(&id);
        }
    }
}

impl Connect for ChannelNetwork {
    fn connect(&self, id: NodeId, _address: &str) -> Box<dyn Peer> {
        Box::new(ChannelPeer { id, network: self.clone() })
    }

    /// Hands the request straight to the registered node.
    fn forward(&self, id: NodeId, _address: &str, request: Bytes, timeout: Duration) -> Forwarded {
        let handle = self.nodes.lock().ok().and_then(|nodes| nodes.get(&id).cloned());
        Box::pin(async move {
            let Some(handle) = handle else { return Err(Error::NoLeader) };
            tokio::time::timeout(timeout, handle.answer_forwarded(&request)).await.map_err(|_| Error::Timeout)
        })
    }
}

#[derive(Debug)]
struct ChannelPeer {
    id: NodeId,
    network: ChannelNetwork,
}

impl Peer for ChannelPeer {
    fn send(&self, message: Message) {
        let handle = self.network.nodes.lock().ok().and_then(|nodes| nodes.get(&self.id).cloned());
        if let Some(handle) = handle {
            let _ = handle.receive(vec![message]);
        }
    }
}

/// Settings shared by every [`HttpPeer`] of a node.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Sent as the `x-raft-cluster` header; the receiver checks it.
    pub cluster_id: String,
    /// Sent as `Authorization: Bearer <secret>` if set.
    pub secret: Option<String>,
    /// Deadline of one POST, connection included.
    pub request_timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Messages waiting for one peer; more are dropped.
    pub queue_max: usize,
    /// Most messages coalesced into one request.
    pub batch_messages_max: usize,
    /// Source address of outgoing connections (`None`: the system's choice).
    pub local_address: Option<std::net::IpAddr>,
}

impl HttpOptions {
    /// Defaults for `cluster_id`: no secret, 2 s requests, 1 s connects,
    /// 4096 queued messages, 256 messages a request.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        HttpOptions {
            cluster_id: cluster_id.into(),
            secret: None,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            queue_max: 4096,
            batch_messages_max: 256,
            local_address: None,
        }
    }

    /// Sets the bearer secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Sets the source address of outgoing connections.
    pub fn local_address(mut self, address: std::net::IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }
}

/// Makes [`HttpPeer`]s. An address is `host:port` (or a full `http://` URL);
/// messages are POSTed to `<address>/raft/messages`.
#[derive(Clone, Debug)]
pub struct HttpConnect {
    options: HttpOptions,
    client: reqwest::Client,
    metrics: Arc<OnceLock<Metrics>>,
}

impl HttpConnect {
    /// A connector with its own connection pool.
    pub fn new(options: HttpOptions) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .local_address(options.local_address)
            .build()?;
        Ok(HttpConnect { options, client, metrics: Arc::new(OnceLock::new()) })
    }
}

impl Connect for HttpConnect {
    fn connect(&self, id: NodeId, address: &str) -> Box<dyn Peer> {
        let metrics = self.metrics.get().cloned();
        Box::new(HttpPeer::spawn_with(id, address, self.options.clone(), self.client.clone(), metrics))
    }

    fn attach_metrics(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    /// `POST <address>/raft/forward` with the request as the body,
    /// authenticated like messages; a 200 reply's body is the outcome.
    fn forward(&self, id: NodeId, address: &str, request: Bytes, timeout: Duration) -> Forwarded {
        let mut request = self
            .client
            .post(forward::url(address, "/raft/forward"))
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .header(crate::transport::CLUSTER_HEADER, &self.options.cluster_id)
            .body(request);
        if let Some(secret) = &self.options.secret {
            request = request.bearer_auth(secret);
        }
        Box::pin(async move {
            let response = match request.send().await {
                Ok(response) => response,
                // Never reached the leader: the proposal was not made.
                Err(e) if e.is_connect() => {
                    tracing::debug!(leader = id, "cannot reach the leader to forward: {e}");
                    return Err(Error::NoLeader);
                }
                Err(e) if e.is_timeout() => return Err(Error::Timeout),
                Err(e) => return Err(Error::Forward(error_chain(&e))),
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(e) if e.is_timeout() => return Err(Error::Timeout),
                Err(e) => return Err(Error::Forward(error_chain(&e))),
            };
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(Error::Forward(format!("leader {id} answered {status}: {text}")));
            }
            Ok(body)
        })
    }
}

/// A peer reached over HTTP. One tokio task per peer POSTs its queued
/// messages, coalesced into one postcard-encoded `Vec<Message>` per request,
/// one request at a time: a slow or dead peer fills only its own queue
/// (then drops), never anyone else's. Snapshot chunks (up to
/// `bytes_per_message_max` each) go through a second task, one chunk per
/// request, so that they never hold up heartbeats and votes. Dropping the
/// `HttpPeer` ends both tasks.
#[derive(Debug)]
pub struct HttpPeer {
    queue: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
    metrics: Option<Metrics>,
}

impl HttpPeer {
    /// Starts the sender task for node `id` at `address`. Must be called
    /// inside a tokio runtime.
    pub fn spawn(id: NodeId, address: &str, options: HttpOptions, client: reqwest::Client) -> Self {
        Self::spawn_with(id, address, options, client, None)
    }

    fn spawn_with(
        id: NodeId,
        address: &str,
        options: HttpOptions,
        client: reqwest::Client,
        metrics: Option<Metrics>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(options.queue_max.max(1));
        let (snapshots, snapshot_rx) = mpsc::channel(2);
        let url = forward::url(address, "/raft/messages");
        let chunk_options = HttpOptions { batch_messages_max: 1, ..options.clone() };
        tokio::spawn(sender(id, url.clone(), chunk_options, client.clone(), snapshot_rx, metrics.clone()));
        tokio::spawn(sender(id, url, options, client, rx, metrics.clone()));
        HttpPeer { queue, snapshots, metrics }
    }
}

impl Peer for HttpPeer {
    fn send(&self, message: Message) {
        let queue =
            if matches!(message.body, Body::InstallSnapshot { .. }) { &self.snapshots } else { &self.queue };
        if queue.try_send(message).is_err() {
            if let Some(metrics) = &self.metrics {
                metrics.record_dropped(1);
            }
            tracing::trace!("peer queue full or closed: message dropped");
        }
    }
}

async fn sender(
    id: NodeId,
    url: String,
    options: HttpOptions,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Message>,
    metrics: Option<Metrics>,
) {
    let mut batch = Vec::new();
    // Reported once per outage (warn), and when it ends (info).
    let mut unreachable_since: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < options.batch_messages_max {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let body = match postcard::to_allocvec(&batch) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(peer = id, "cannot encode messages: {e}");
                continue;
            }
        };
        let mut request = client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .header(crate::transport::CLUSTER_HEADER, &options.cluster_id)
            .body(body);
        if let Some(secret) = &options.secret {
            request = request.bearer_auth(secret);
        }
        let sent = Instant::now();
        let result = request.send().await;
        if let Some(metrics) = &metrics {
            metrics.record_peer_request(id, batch.len(), sent.elapsed());
        }
        match result {
            Ok(response) => {
                if let Some(since) = unreachable_since.take() {
                    tracing::info!(peer = id, down_for = ?since.elapsed(), "peer reachable again");
                }
                if !response.status().is_success() {
                    tracing::debug!(peer = id, status = %response.status(), "peer refused messages");
                }
            }
            Err(e) => {
                // What queued up meanwhile is stale; heartbeats and retries
                // regenerate whatever still matters.
                let mut dropped = batch.len();
                while rx.try_recv().is_ok() {
                    dropped += 1;
                }
                if let Some(metrics) = &metrics {
                    metrics.record_dropped(dropped);
                }
                if unreachable_since.is_none() {
                    unreachable_since = Some(Instant::now());
                    tracing::warn!(peer = id, url = %url, "peer unreachable: {}", error_chain(&e));
                } else {
                    tracing::debug!(peer = id, dropped, "sending to peer failed: {e}");
                }
            }
        }
    }
}

/// An error with its sources: reqwest's own message rarely says what failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
