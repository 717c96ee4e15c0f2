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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Body, Message, NodeId};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::forward;
use crate::handle::RaftHandle;
use crate::metrics::Metrics;
use crate::tls::{PeerTls, Stream};

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
    /// Bumped by every register and unregister, so that peers can keep the
    /// recipient's handle and look it up again only when it changed.
    version: Arc<AtomicU64>,
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
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Stops delivering to `id`: its messages are dropped.
    pub fn unregister(&self, id: NodeId) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(&id);
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// The current handle of `id`, and the version it was read at.
    fn lookup(&self, id: NodeId) -> (u64, Option<RaftHandle>) {
        match self.nodes.lock() {
            Ok(nodes) => (self.version.load(Ordering::Acquire), nodes.get(&id).cloned()),
            Err(_) => (u64::MAX, None),
        }
    }
}

impl Connect for ChannelNetwork {
    fn connect(&self, id: NodeId, _address: &str) -> Box<dyn Peer> {
        Box::new(ChannelPeer { id, network: self.clone(), cached: Mutex::new(None) })
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
    /// The recipient's handle as of a network version.
    cached: Mutex<Option<(u64, Option<RaftHandle>)>>,
}

impl Peer for ChannelPeer {
    fn send(&self, message: Message) {
        let Ok(mut cached) = self.cached.lock() else { return };
        let version = self.network.version.load(Ordering::Acquire);
        if cached.as_ref().is_none_or(|(seen, _)| *seen != version) {
            *cached = Some(self.network.lookup(self.id));
        }
        if let Some((_, Some(handle))) = cached.as_ref() {
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
    /// After a failed request, messages to that peer are dropped (Raft sends
    /// again what still matters) until a backoff has passed: 5 ms, doubling
    /// up to this. Keep it below the election timeout, so that a peer that
    /// comes back is reached again within one (default 100 ms).
    pub reconnect_backoff_max: Duration,
    /// Mutual TLS to the peers (`None`: plain HTTP). With it, an address
    /// without a scheme means `https://`.
    pub tls: Option<PeerTls>,
}

impl HttpOptions {
    /// Defaults for `cluster_id`: no secret, 2 s requests, 1 s connects,
    /// 4096 queued messages, 256 messages a request, reconnection backoff up
    /// to 100 ms.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        HttpOptions {
            cluster_id: cluster_id.into(),
            secret: None,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            queue_max: 4096,
            batch_messages_max: 256,
            local_address: None,
            reconnect_backoff_max: Duration::from_millis(100),
            tls: None,
        }
    }

    /// Sets the bearer secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Speaks TLS to the peers with `tls` (serve the [`Transport`] through
    /// a [`Listener`](crate::tls::Listener) with the same `tls`).
    ///
    /// [`Transport`]: crate::Transport
    pub fn tls(mut self, tls: PeerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// `http` or `https`: what an address without a scheme means.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
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
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .local_address(options.local_address);
        if let Some(tls) = &options.tls {
            // The configuration's resolver and verifier read the reloaded
            // files: this client follows certificate rotations.
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls.client_config()));
        }
        let client = builder.build()?;
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
            .post(forward::url(self.options.scheme(), address, "/raft/forward"))
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
/// (then drops), never anyone else's. That task owns its HTTP/1.1
/// keep-alive connection and drives it itself (no connection task, no pool:
/// each request and response costs no hop between tasks). Snapshot chunks
/// (up to `bytes_per_message_max` each) go through a second task, one chunk
/// per request through the `reqwest::Client`, so that they never hold up
/// heartbeats and votes. Dropping the `HttpPeer` ends both tasks.
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
        let url = forward::url(options.scheme(), address, "/raft/messages");
        let chunk_options = HttpOptions { batch_messages_max: 1, ..options.clone() };
        tokio::spawn(sender(id, url.clone(), chunk_options, client, snapshot_rx, metrics.clone()));
        tokio::spawn(connection_sender(id, url, options, rx, metrics.clone()));
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

/// One peer's link as its sender task sees it: it reports an outage once
/// (warn) and its end (info), drops what queued up during a failed request
/// (stale by now; heartbeats and retries regenerate whatever still matters),
/// and after a failure holds new attempts off for a backoff that doubles up
/// to [`HttpOptions::reconnect_backoff_max`].
struct Link {
    id: NodeId,
    url: String,
    metrics: Option<Metrics>,
    backoff_max: Duration,
    unreachable_since: Option<Instant>,
    /// No new attempt before `.0`; `.1` is the current delay.
    backoff: Option<(Instant, Duration)>,
}

impl Link {
    fn new(id: NodeId, url: &str, options: &HttpOptions, metrics: Option<Metrics>) -> Link {
        let backoff_max = options.reconnect_backoff_max;
        Link { id, url: url.to_owned(), metrics, backoff_max, unreachable_since: None, backoff: None }
    }

    /// Fills `batch` with `first` (the message that just arrived; `None`:
    /// the queue closed, so is the result) and whatever queued behind it,
    /// up to `max`, and encodes it; `Some(None)` when there is nothing to
    /// send after all (dropped during a backoff, or not encodable).
    fn next_batch(
        &mut self,
        first: Option<Message>,
        rx: &mut mpsc::Receiver<Message>,
        batch: &mut Vec<Message>,
        max: usize,
    ) -> Option<Option<Bytes>> {
        let first = first?;
        batch.clear();
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if self.backoff.is_some_and(|(retry_at, _)| Instant::now() < retry_at) {
            self.dropped(batch.len());
            return Some(None);
        }
        match postcard::to_allocvec(batch) {
            Ok(body) => Some(Some(Bytes::from(body))),
            Err(e) => {
                tracing::warn!(peer = self.id, "cannot encode messages: {e}");
                Some(None)
            }
        }
    }

    fn dropped(&self, count: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.record_dropped(count);
        }
    }

    /// A request of `messages` messages sent at `sent` got `status`.
    fn answered(&mut self, messages: usize, sent: Instant, status: hyper::StatusCode) {
        self.record(messages, sent);
        self.backoff = None;
        if let Some(since) = self.unreachable_since.take() {
            tracing::info!(peer = self.id, down_for = ?since.elapsed(), "peer reachable again");
        }
        if !status.is_success() {
            tracing::debug!(peer = self.id, %status, "peer refused messages");
        }
    }

    /// A request of `messages` messages sent at `sent` failed with `error`.
    fn failed(&mut self, messages: usize, sent: Instant, error: &str, rx: &mut mpsc::Receiver<Message>) {
        self.record(messages, sent);
        let delay = self.backoff.map_or(RECONNECT_BACKOFF_MIN, |(_, delay)| delay * 2).min(self.backoff_max);
        self.backoff = Some((Instant::now() + delay, delay));
        let mut dropped = messages;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        self.dropped(dropped);
        if self.unreachable_since.is_none() {
            self.unreachable_since = Some(Instant::now());
            tracing::warn!(peer = self.id, url = %self.url, "peer unreachable: {error}");
        } else {
            tracing::debug!(peer = self.id, dropped, "sending to peer failed: {error}");
        }
    }

    fn record(&self, messages: usize, sent: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.record_peer_request(self.id, messages, sent.elapsed());
        }
    }
}

/// The sender of snapshot chunks, one per request, through `client`.
async fn sender(
    id: NodeId,
    url: String,
    options: HttpOptions,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Message>,
    metrics: Option<Metrics>,
) {
    let mut batch = Vec::new();
    let mut link = Link::new(id, &url, &options, metrics);
    loop {
        let first = rx.recv().await;
        let Some(body) = link.next_batch(first, &mut rx, &mut batch, options.batch_messages_max) else {
            break;
        };
        let Some(body) = body else { continue };
        let mut request = client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .header(crate::transport::CLUSTER_HEADER, &options.cluster_id)
            .body(body);
        if let Some(secret) = &options.secret {
            request = request.bearer_auth(secret);
        }
        let sent = Instant::now();
        match request.send().await {
            Ok(response) => link.answered(batch.len(), sent, response.status()),
            Err(e) => link.failed(batch.len(), sent, &error_chain(&e), &mut rx),
        }
    }
}

/// The first reconnection backoff (see [`HttpOptions::reconnect_backoff_max`]).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Where a [`connection_sender`] connects and what it sends there.
struct Target {
    /// `host:port`, resolved at each (re)connection.
    authority: String,
    /// The host alone: the name the peer's TLS certificate must carry.
    host: String,
    /// TLS to speak, for an `https` URL.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Path of the messages route (with the address's own prefix, if any).
    path: hyper::Uri,
    /// Every request's headers: host, content type, cluster id, secret.
    headers: hyper::HeaderMap,
}

impl Target {
    fn new(url: &str, options: &HttpOptions) -> Result<Target, String> {
        use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let tls = match (parsed.scheme(), &options.tls) {
            ("http", _) => None,
            ("https", Some(tls)) => Some(tls.client_config()),
            ("https", None) => return Err("an https address needs HttpOptions::tls".into()),
            (scheme, _) => return Err(format!("unsupported scheme {scheme}")),
        };
        let host = parsed.host_str().ok_or("no host")?;
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = parsed.path().parse().map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
        let value = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
        let mut headers = hyper::HeaderMap::new();
        headers.insert(HOST, value(&authority)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(crate::transport::CLUSTER_HEADER, value(&options.cluster_id)?);
        if let Some(secret) = &options.secret {
            let mut bearer = value(&format!("Bearer {secret}"))?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
        // `host_str` keeps an IPv6 address's brackets; resolution wants them too.
        Ok(Target { authority: format!("{host}:{port}"), host: host.to_owned(), tls, path, headers })
    }
}

type RequestBody = http_body_util::Full<Bytes>;
type Io = hyper_util::rt::TokioIo<Stream>;

/// An open HTTP/1.1 connection: the handle requests go through and the
/// connection's own future, which must be polled for anything to move.
struct Connection {
    requests: hyper::client::conn::http1::SendRequest<RequestBody>,
    driver: Pin<Box<hyper::client::conn::http1::Connection<Io, RequestBody>>>,
}

impl Connection {
    async fn open(target: &Target, options: &HttpOptions) -> Result<Connection, String> {
        let connect = async {
            let mut last = format!("{} resolves to no address", target.authority);
            let candidates =
                tokio::net::lookup_host(target.authority.as_str()).await.map_err(|e| e.to_string())?;
            for address in candidates {
                let socket = if address.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                };
                let attempt = async {
                    let socket = socket?;
                    if let Some(local) = options.local_address {
                        if local.is_ipv4() != address.is_ipv4() {
                            return Err(std::io::Error::other("local address of another family"));
                        }
                        socket.bind(std::net::SocketAddr::new(local, 0))?;
                    }
                    let stream = socket.connect(address).await?;
                    stream.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(stream)
                };
                match attempt.await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = format!("{address}: {e}"),
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| "connect timed out".to_owned())??;
        let stream = match &target.tls {
            Some(config) => tokio::time::timeout(
                options.connect_timeout,
                crate::tls::connect(config.clone(), &target.host, stream),
            )
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())??,
            None => Stream::Plain(stream),
        };
        let (requests, driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(Connection { requests, driver: Box::pin(driver) })
    }

    /// Runs `work` while polling the connection (which does the I/O); fails
    /// if the connection ends first.
    async fn drive<F: Future>(&mut self, work: F) -> Result<F::Output, String> {
        drive(&mut self.driver, work).await
    }

    /// POSTs `body` and reads the whole response; returns its status.
    async fn post(&mut self, target: &Target, body: Bytes) -> Result<hyper::StatusCode, String> {
        use http_body_util::BodyExt;
        drive(&mut self.driver, self.requests.ready()).await?.map_err(|e| error_chain(&e))?;
        let mut request = hyper::Request::new(RequestBody::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = target.path.clone();
        *request.headers_mut() = target.headers.clone();
        let sent = self.requests.send_request(request);
        let response = self.drive(sent).await?.map_err(|e| error_chain(&e))?;
        let status = response.status();
        // Read the body (none for 204) so the connection can be reused.
        self.drive(response.into_body().collect()).await?.map_err(|e| error_chain(&e))?;
        Ok(status)
    }
}

/// Runs `work` while polling `driver`, the connection's future.
async fn drive<F: Future>(
    driver: &mut Pin<Box<hyper::client::conn::http1::Connection<Io, RequestBody>>>,
    work: F,
) -> Result<F::Output, String> {
    tokio::select! {
        biased;
        output = work => Ok(output),
        ended = driver.as_mut() => Err(match ended {
            Ok(()) => "connection closed".to_owned(),
            Err(e) => error_chain(&e),
        }),
    }
}

/// The sender of ordinary messages: like [`sender`], over a connection it
/// owns and drives itself, opened on demand and dropped on any error.
async fn connection_sender(
    id: NodeId,
    url: String,
    options: HttpOptions,
    mut rx: mpsc::Receiver<Message>,
    metrics: Option<Metrics>,
) {
    let target = match Target::new(&url, &options) {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(peer = id, url = %url, "cannot send to this address: {e}");
            while let Some(_message) = rx.recv().await {
                if let Some(metrics) = &metrics {
                    metrics.record_dropped(1);
                }
            }
            return;
        }
    };
    let mut batch = Vec::new();
    let mut connection: Option<Connection> = None;
    let mut link = Link::new(id, &url, &options, metrics);
    loop {
        // While idle, keep polling the connection so that a close by the
        // server is noticed before the next request.
        let first = match &mut connection {
            Some(open) => match open.drive(rx.recv()).await {
                Ok(first) => first,
                Err(_) => {
                    connection = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(body) = link.next_batch(first, &mut rx, &mut batch, options.batch_messages_max) else {
            break;
        };
        let Some(body) = body else { continue };
        let sent = Instant::now();
        let result = tokio::time::timeout(options.request_timeout, async {
            // A kept-alive connection may have been closed by the server
            // just now: try once more on a new one (the peer may get the
            // messages twice, which Raft tolerates).
            if let Some(open) = &mut connection {
                match open.post(&target, body.clone()).await {
                    Ok(status) => return Ok(status),
                    Err(e) => tracing::debug!(peer = id, "request on a kept-alive connection failed: {e}"),
                }
            }
            let open = connection.insert(Connection::open(&target, &options).await?);
            open.post(&target, body).await
        })
        .await
        .unwrap_or_else(|_| Err("request timed out".to_owned()));
        match result {
            Ok(status) => link.answered(batch.len(), sent, status),
            Err(e) => {
                connection = None;
                link.failed(batch.len(), sent, &e, &mut rx);
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
