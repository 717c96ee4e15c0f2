//! `raft-kv serve`: one node, with the Raft transport on one listener and the
//! client API on another.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use raft_core::{Config, ConfigChangeError, Membership, Role, Topology, TransferError};
use raft_http::tls::{Listener, PeerTls, Remote, ServerTls};
use raft_http::{Error, HttpConnect, HttpOptions, Options, RaftHandle, RaftNode, Transport};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::{Command, Kv, KvMachine, Op, Outcome};
use crate::{LogFormat, ServeArgs};

/// Longest key, in bytes.
pub(crate) const KEY_MAX: usize = 1024;
/// Largest value `--max-value-bytes` may allow: a command must fit one Raft
/// message (raft-core's `bytes_per_message_max`, 1 MiB) with its key.
const VALUE_LIMIT: usize = (1 << 20) - 4096;

/// `--initial-cluster 1=http://a:7001,2=...` as a membership.
pub(crate) fn parse_initial_cluster(items: &[String]) -> Result<Membership, String> {
    let mut voters = BTreeMap::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (id, url) =
            item.split_once('=').ok_or_else(|| format!("--initial-cluster: {item:?} is not id=url"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("--initial-cluster: bad node id in {item:?}"))?;
        if id == 0 {
            return Err("--initial-cluster: node id 0 is reserved".into());
        }
        if voters.insert(id, url.trim().to_owned()).is_some() {
            return Err(format!("--initial-cluster: node {id} appears twice"));
        }
    }
    if voters.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(Membership::with_voters(voters))
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("--log-level {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// How a node says it could not bind its port (`raft-kv local` looks for it).
pub(crate) const PORT_TAKEN: &str = "is already in use (port taken)";

async fn bind(address: &str, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("{what} address {address} {PORT_TAKEN}")
        } else {
            format!("cannot listen on {what} address {address}: {e}")
        }
    })
}

/// Runs a node until SIGINT/SIGTERM (or stdin closing, with --exit-with-parent).
pub(crate) async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_format, &args.log_level)?;
    if args.id == 0 {
        return Err("--id 0 is reserved: node ids start at 1".into());
    }
    if args.max_value_bytes > VALUE_LIMIT {
        return Err(format!("--max-value-bytes {} exceeds the limit of {VALUE_LIMIT}", args.max_value_bytes));
    }
    // With --join, --initial-cluster (optional) names the current members:
    // the new node needs their addresses to answer the leader before the
    // configuration that adds it reaches it.
    let peers = if args.join && !args.initial_cluster.is_empty() {
        parse_initial_cluster(&args.initial_cluster)?.voters
    } else {
        BTreeMap::new()
    };
    let membership = if args.join {
        None
    } else {
        let membership = parse_initial_cluster(&args.initial_cluster)?;
        if !membership.contains(args.id) {
            return Err(format!("--id {} is not in --initial-cluster (use --join for a new node)", args.id));
        }
        Some(membership)
    };
    let secret = match (&args.cluster_secret, &args.cluster_secret_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--cluster-secret-file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    // Followers forward over the raft port, behind the cluster secret only:
    // without a secret the tokens could be bypassed there.
    let auth = match &args.auth_file {
        Some(_) if secret.as_deref().is_none_or(str::is_empty) => return Err(
            "--auth-file needs a non-empty --cluster-secret (or --cluster-secret-file): without one, anyone \
                        who reaches the raft port could send writes and membership changes through \
                        POST /raft/forward, around the client tokens"
                .into(),
        ),
        Some(path) => Some(crate::auth::Auth::load(path)?),
        None => None,
    };
    if secret.is_none() {
        tracing::warn!("no --cluster-secret: any process that can reach the raft port can join the protocol");
    }
    let tls = args.tls.load()?;
    let raft_listener = bind(&args.listen_raft, "raft").await?;
    let client_listener = bind(&args.listen_client, "client").await?;
    if let Ok(address) = client_listener.local_addr() {
        crate::auth::warn_if_exposed(address, auth.is_some(), tls.client.is_some());
    }
    if let Ok(address) = raft_listener.local_addr() {
        if tls.peer.is_none() && !address.ip().is_loopback() {
            tracing::warn!(%address, "the raft port is plain HTTP beyond loopback: the cluster secret and all data \
                cross the network in clear (use --peer-cert-file, --peer-key-file, --peer-trusted-ca-file)");
        }
    }

    let mut http = HttpOptions::new(args.cluster_id.clone());
    if let Some(peer) = &tls.peer {
        http = http.tls(peer.clone());
    }
    if let Some(secret) = secret {
        http = http.secret(secret);
    }
    // On loopback, connect to peers from the raft address itself, so that
    // nodes on distinct 127.x.y.z addresses can be told apart by source
    // address (the fault harness partitions them with firewall rules).
    if let Ok(address) = raft_listener.local_addr() {
        if address.ip().is_loopback() {
            http = http.local_address(address.ip());
        }
    }
    let connect = HttpConnect::new(http.clone()).map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut config = Config::new(args.id);
    let ticks = |ms: u64, what: &str| -> Result<u32, String> {
        u32::try_from(ms / args.tick_ms.max(1)).map_err(|_| format!("{what} {ms} ms is too long"))
    };
    config.election_ticks_min = ticks(args.election_timeout_ms, "--election-timeout-ms")?;
    config.election_ticks_max = config.election_ticks_min.saturating_mul(2);
    config.heartbeat_ticks = ticks(args.heartbeat_ms, "--heartbeat-ms")?;
    // Lease reads allow the same 20% clock drift as the core's defaults.
    config.lease_drift_ticks = config.election_ticks_min / 5;
    config.snapshot_entries_max = args.snapshot_entries.max(1);
    config.log_tail_entries = config.log_tail_entries.min(args.snapshot_entries / 2);
    config.validate().map_err(|e| {
        format!(
            "{e} (from --tick-ms {}, --election-timeout-ms {}, --heartbeat-ms {})",
            args.tick_ms, args.election_timeout_ms, args.heartbeat_ms
        )
    })?;
    let mut options = Options::new(config, &args.data_dir).tick(Duration::from_millis(args.tick_ms.max(1)));
    if let Some(membership) = membership {
        options = options.initial_membership(membership);
    }
    options = options.peers(peers);
    options.apply_in_task = args.apply_in_task;
    let kv = Arc::new(RwLock::new(Kv::default()));
    let handle = RaftNode::start(options, KvMachine(kv.clone()), connect)
        .await
        .map_err(|e| format!("cannot start node {} in {}: {e}", args.id, args.data_dir.display()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let raft_router = Transport::new(handle.clone(), &http).router();
    let state = Arc::new(AppState {
        handle: handle.clone(),
        kv,
        value_max: args.max_value_bytes,
        metrics: Metrics::default(),
        #[cfg(feature = "jepsen-broken")]
        broken: args.jepsen_broken,
    });
    let mut client_router = client_router(state);
    if let Some(auth) = auth {
        auth.reload_on_sighup();
        client_router = client_router.layer(axum::middleware::from_fn_with_state(auth, crate::auth::check));
    }
    let listener = |tcp, config| Listener::new(tcp, config).map_err(|e| format!("cannot listen: {e}"));
    let raft_listener = listener(raft_listener, tls.peer.as_ref().map(PeerTls::server_config))?;
    let client_listener = listener(client_listener, tls.client.as_ref().map(ServerTls::server_config))?;
    tls.reload_on_change();
    let raft_server = tokio::spawn(serve_until(raft_listener, raft_router, stop_rx.clone()));
    let client_server = tokio::spawn(serve_until(client_listener, client_router, stop_rx));
    tracing::info!(
        id = args.id,
        raft = %args.listen_raft,
        client = %args.listen_client,
        peer_tls = tls.peer.is_some(),
        client_tls = tls.client.is_some(),
        data_dir = %args.data_dir.display(),
        "node started"
    );

    let reason = shutdown_signal(args.exit_with_parent).await;
    tracing::info!(id = args.id, reason, "shutting down");
    stop_tx.send_replace(true);
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let _ = raft_server.await;
        let _ = client_server.await;
    })
    .await;
    Ok(())
}

async fn serve_until(listener: Listener, router: Router, mut stop: watch::Receiver<bool>) {
    // The peer address reaches handlers as ConnectInfo (the auth log names it).
    let result = axum::serve(listener, router.into_make_service_with_connect_info::<Remote>())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|&s| s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("server failed: {e}");
    }
}

/// Runs `reload` on every SIGHUP, for as long as the process runs; if
/// SIGHUP cannot be watched, logs a warning ending with `otherwise`.
pub(crate) fn on_sighup(otherwise: &'static str, reload: impl Fn() + Send + 'static) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        reload();
                    }
                });
            }
            Err(e) => tracing::warn!("cannot watch SIGHUP, {otherwise}: {e}"),
        }
    }
    #[cfg(not(unix))]
    let _ = (otherwise, reload);
}

/// Waits for SIGINT, SIGTERM, or (with `stdin_eof`) standard input closing.
async fn shutdown_signal(stdin_eof: bool) -> &'static str {
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if stdin_eof {
        // A plain thread: a blocking read that ends when the parent goes.
        let _ = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = eof_tx.send(());
        });
    } else {
        std::mem::forget(eof_tx);
    }
    let eof = async {
        if eof_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        signal = crate::local::signal() => signal,
        _ = eof => "standard input closed",
    }
}

/// Counters for /metrics.
#[derive(Debug, Default)]
struct Metrics {
    /// Writes by outcome code ("ok", "cas_mismatch", "timeout", ...).
    writes: Mutex<BTreeMap<&'static str, u64>>,
    reads: AtomicU64,
    read_errors: AtomicU64,
}

impl Metrics {
    fn write(&self, code: &'static str) {
        if let Ok(mut writes) = self.writes.lock() {
            *writes.entry(code).or_default() += 1;
        }
    }
}

#[derive(Debug)]
struct AppState {
    handle: RaftHandle,
    kv: Arc<RwLock<Kv>>,
    value_max: usize,
    metrics: Metrics,
    /// Test-only: a deliberately broken behaviour, to check that the fault
    /// harness (examples/jepsen) catches it.
    #[cfg(feature = "jepsen-broken")]
    broken: Option<crate::Broken>,
}

impl AppState {
    fn kv(&self) -> std::sync::RwLockReadGuard<'_, Kv> {
        self.kv.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn client_router(state: Arc<AppState>) -> Router {
    let limit = state.value_max;
    Router::new()
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete).layer(DefaultBodyLimit::max(limit)))
        .route("/v1/kv/", get(empty_key).put(empty_key).delete(empty_key))
        .route("/v1/status", get(status))
        .route("/v1/cluster", get(cluster_get).put(cluster_put))
        .route("/v1/cluster/transfer-leader", post(transfer_leader))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// The JSON error body of the API: `{"error": code, "message": text}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_with(status, code, message, json!({}))
}

fn error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: serde_json::Value,
) -> Response {
    let mut body = json!({ "error": code, "message": message.into() });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn json_ok(value: serde_json::Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// Maps a runtime error to the API's (code, response).
fn raft_error(e: &Error) -> (&'static str, Response) {
    let (status, code, message) = match e {
        Error::NoLeader | Error::NotLeader { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader is known right now; retry".to_owned())
        }
        Error::ProposalLost => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "the leader changed before the write committed; it was not applied; retry".to_owned(),
        ),
        Error::Read(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("{e}; retry")),
        Error::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "timed out; the outcome is unknown (the write may still apply)".to_owned(),
        ),
        Error::Rejected(raft_core::ProposeError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
        }
        Error::Rejected(_) | Error::Busy => {
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", format!("{e}; retry later"))
        }
        Error::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is stopping".to_owned()),
        // Accepted, maybe sent to followers: it may still commit.
        Error::StoppedInFlight => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the node stopped with the write in flight; the outcome is unknown (the write may still apply)"
                .to_owned(),
        ),
        Error::NotMember => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not_member",
            "this node is not a member of the cluster (joining, or removed); ask a member".to_owned(),
        ),
        Error::Forward(message) => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("forwarding to the leader failed ({message}); the outcome is unknown"),
        ),
        Error::ConfigChange(c) => match c {
            ConfigChangeError::ConfigChangeInProgress => {
                (StatusCode::CONFLICT, "config_change_in_progress", e.to_string())
            }
            ConfigChangeError::NoVoters
            | ConfigChangeError::InvalidNodeId
            | ConfigChangeError::VoterAndLearner(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            ConfigChangeError::CatchUpTimeout(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "catch_up_timeout", e.to_string())
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("{e}; retry")),
        },
        Error::Transfer(t) => match t {
            TransferError::ToLearner(_) | TransferError::UnknownNode(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            TransferError::InProgress => (StatusCode::CONFLICT, "config_change_in_progress", e.to_string()),
            TransferError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "no_leader", format!("{e}; retry")),
        },
        other => (StatusCode::BAD_GATEWAY, "internal", other.to_string()),
    };
    (code, error(status, code, message))
}

/// A request refused before it reaches Raft.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn bad_request(message: impl Into<String>) -> Refused {
        Refused { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    fn response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

fn check_key(key: &str) -> Result<(), Refused> {
    if key.is_empty() {
        return Err(Refused::bad_request("the key is empty"));
    }
    if key.len() > KEY_MAX {
        return Err(Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("the key is {} bytes; the limit is {KEY_MAX}", key.len()),
        });
    }
    Ok(())
}

/// The `Idempotency-Key` header, taken without copying the other headers
/// (axum's `HeaderMap` extractor clones them all, on every write).
struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IdempotencyHeader(parts.headers.get("idempotency-key").cloned()))
    }
}

/// The `cas` and `Idempotency-Key` of a write.
fn write_params(
    key: &str,
    query: &HashMap<String, String>,
    header: &IdempotencyHeader,
) -> Result<(Option<u64>, Option<String>), Refused> {
    check_key(key)?;
    let cas = raft_kv::parse_cas(query).map_err(Refused::bad_request)?;
    let idempotency_key = raft_kv::parse_idempotency_key(header.0.as_ref()).map_err(Refused::bad_request)?;
    Ok((cas, idempotency_key))
}

async fn empty_key() -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", "the key is empty")
}

async fn kv_get(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_key(&key) {
        return refused.response();
    }
    let policy = match raft_kv::parse_consistency(&query) {
        Ok(policy) => policy,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    #[cfg(feature = "jepsen-broken")]
    let policy = if state.broken == Some(crate::Broken::StaleReads) { None } else { policy };
    if let Some(policy) = policy {
        if let Err(e) = state.handle.read_with(policy).await {
            state.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            return raft_error(&e).1;
        }
    }
    state.metrics.reads.fetch_add(1, Ordering::Relaxed);
    let value = state.kv().get(&key);
    match value {
        Some(value) => {
            let mut response = (StatusCode::OK, value.data).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert("x-raft-index", HeaderValue::from(value.modify_index));
            response
        }
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no key {key:?}")),
    }
}

async fn kv_put(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: IdempotencyHeader,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = match body {
        Ok(value) => value,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the value exceeds the limit of {} bytes", state.value_max),
            )
        }
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text()),
    };
    let (cas, idempotency_key) = match write_params(&key, &query, &headers) {
        Ok(params) => params,
        Err(refused) => return refused.response(),
    };
    if value.len() > state.value_max {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the value is {} bytes; the limit is {}", value.len(), state.value_max),
        );
    }
    let command = Command { idempotency_key, op: Op::Put { key, value, cas } };
    #[cfg(feature = "jepsen-broken")]
    if state.broken == Some(crate::Broken::EarlyAck) {
        // Acknowledge before the write commits (and whatever its fate).
        tokio::spawn(async move { write(&state, command).await });
        return json_ok(json!({}));
    }
    write(&state, command).await
}

async fn kv_delete(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: IdempotencyHeader,
) -> Response {
    let (cas, idempotency_key) = match write_params(&key, &query, &headers) {
        Ok(params) => params,
        Err(refused) => return refused.response(),
    };
    write(&state, Command { idempotency_key, op: Op::Delete { key, cas } }).await
}

/// Proposes a write (forwarded to the leader if this node follows) and turns
/// its outcome into a response.
async fn write(state: &AppState, command: Command) -> Response {
    let (Op::Put { key, .. } | Op::Delete { key, .. }) = &command.op;
    let (code, response) = match state.handle.propose(command.encode()).await {
        Ok(bytes) => match Outcome::decode(&bytes) {
            Outcome::Written { index } | Outcome::Deleted { index } => {
                // The hot path: no JSON tree for a one-field answer.
                let body = format!(r#"{{"index":{index}}}"#);
                ("ok", (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
            }
            Outcome::NotFound => {
                ("not_found", error(StatusCode::NOT_FOUND, "not_found", format!("no key {key:?}")))
            }
            Outcome::CasMismatch { current } => (
                "cas_mismatch",
                error_with(
                    StatusCode::CONFLICT,
                    "cas_mismatch",
                    format!("the modify index of {key:?} is {current}"),
                    json!({ "index": current }),
                ),
            ),
            Outcome::KeyReused => (
                "bad_request",
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ),
            ),
            Outcome::Invalid(message) => {
                ("internal", error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message))
            }
        },
        Err(e) => raft_error(&e),
    };
    state.metrics.write(code);
    response
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        _ => "follower",
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    match state.handle.status().await {
        Ok(status) => json_ok(json!({
            "id": status.id,
            "role": role_name(status.role),
            "term": status.term,
            "leader": status.leader,
            "commit": status.commit_index,
            "applied": state.handle.applied_index(),
            "last_index": status.last_index,
            "snapshot_index": state.handle.snapshot_index(),
            "first_index": status.first_index,
            "keys": state.kv().len(),
        })),
        Err(e) => raft_error(&e).1,
    }
}

fn members(map: &BTreeMap<u64, String>) -> serde_json::Value {
    map.iter().map(|(id, address)| json!({ "id": id, "address": address })).collect()
}

async fn cluster_get(State(state): State<Arc<AppState>>) -> Response {
    match state.handle.status().await {
        Ok(status) => {
            let m = &status.membership;
            json_ok(json!({
                "voters": members(&m.voters),
                "learners": members(&m.learners),
                "joint": m.old_voters.is_some(),
                "old_voters": m.old_voters.as_ref().map(members),
                "leader": status.leader,
            }))
        }
        Err(e) => raft_error(&e).1,
    }
}

fn parse_topology(body: &[u8]) -> Result<Topology, Refused> {
    raft_kv::parse_topology(body).map_err(Refused::bad_request)
}

async fn cluster_put(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let topology = match parse_topology(&body) {
        Ok(topology) => topology,
        Err(refused) => return refused.response(),
    };
    tracing::info!(?topology, "configuration change requested");
    match state.handle.set_configuration(topology).await {
        Ok(index) => {
            let status = state.handle.status().await.ok();
            let m = status.map(|s| s.membership).unwrap_or_default();
            json_ok(json!({ "index": index, "voters": members(&m.voters), "learners": members(&m.learners) }))
        }
        Err(e) => raft_error(&e).1,
    }
}

async fn transfer_leader(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let to = match raft_kv::parse_transfer(&body) {
        Ok(to) => to,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    match state.handle.transfer_leadership(to).await {
        Ok(()) => json_ok(json!({ "leader": to })),
        Err(e) => raft_error(&e).1,
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.handle.is_stopped() {
        error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node has stopped")
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let status = match state.handle.status().await {
        Ok(status) => status,
        Err(e) => return raft_error(&e).1,
    };
    let applied = state.handle.applied_index();
    if status.leader.is_none() {
        error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader is known")
    } else if applied < status.commit_index {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching_up",
            format!("applied {applied} of {} committed", status.commit_index),
        )
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write as _;
    let status = match state.handle.status().await {
        Ok(status) => status,
        Err(e) => return raft_error(&e).1,
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge("raft_term", "Current Raft term.", status.term);
    gauge("raft_is_leader", "1 if this node is the leader.", u64::from(status.role == Role::Leader));
    gauge("raft_leader_id", "The leader this node knows of (0 = none).", status.leader.unwrap_or(0));
    gauge("raft_commit_index", "Highest log index known committed.", status.commit_index);
    gauge(
        "raft_applied_index",
        "Highest log index applied to the key-value map.",
        state.handle.applied_index(),
    );
    gauge("raft_last_index", "Last index in the log.", status.last_index);
    gauge("raft_first_index", "First index in the in-memory log (after compaction).", status.first_index);
    gauge("raft_snapshot_index", "Last index in this node's newest snapshot.", state.handle.snapshot_index());
    let (keys, sessions) = {
        let kv = state.kv();
        (kv.len() as u64, kv.sessions() as u64)
    };
    gauge("kv_keys", "Keys stored.", keys);
    gauge("kv_sessions", "Idempotency keys remembered.", sessions);
    let _ = writeln!(out, "# HELP raft_role Current role (1 for the role held).\n# TYPE raft_role gauge");
    for role in ["follower", "candidate", "leader"] {
        let _ = writeln!(out, "raft_role{{role=\"{role}\"}} {}", u64::from(role_name(status.role) == role));
    }
    let _ = writeln!(
        out,
        "# HELP kv_proposals_total Writes (PUT/DELETE) proposed through this node, by outcome.\n# TYPE kv_proposals_total counter"
    );
    if let Ok(writes) = state.metrics.writes.lock() {
        for (code, count) in writes.iter() {
            let _ = writeln!(out, "kv_proposals_total{{outcome=\"{code}\"}} {count}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP kv_reads_total Client reads served by this node.\n# TYPE kv_reads_total counter\nkv_reads_total {}",
        state.metrics.reads.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP kv_read_errors_total Client reads that failed their read barrier.\n# TYPE kv_read_errors_total counter\nkv_read_errors_total {}",
        state.metrics.read_errors.load(Ordering::Relaxed)
    );
    state.handle.metrics().render_prometheus(&mut out); // raft_http_* (batches, fsync, peers)
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_nonsense() {
        let items = vec!["1=http://127.0.0.1:7001".to_owned(), " 2=http://127.0.0.1:7002 ".to_owned()];
        let membership = parse_initial_cluster(&items).unwrap();
        assert_eq!(membership.address(2), Some("http://127.0.0.1:7002"));
        assert!(parse_initial_cluster(&["x=http://a".to_owned()]).is_err());
        assert!(parse_initial_cluster(&["0=http://a".to_owned()]).is_err());
        assert!(parse_initial_cluster(&["1=a".to_owned(), "1=b".to_owned()]).is_err());
        assert!(parse_initial_cluster(&["nothing".to_owned()]).is_err());
        assert!(parse_initial_cluster(&[]).is_err());
    }
}
