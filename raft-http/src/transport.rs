//! Ingress: the axum routes other nodes POST their messages to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use raft_core::Message;

use crate::error::Error;
use crate::handle::RaftHandle;
use crate::peer::HttpOptions;

/// The header carrying the cluster id on every request between nodes.
pub const CLUSTER_HEADER: &str = "x-raft-cluster";

/// The HTTP ingress of one node: an axum [`Router`] to mount in the
/// application's server.
///
/// Routes:
/// - `POST /raft/messages`: body is a postcard-encoded `Vec<raft_core::Message>`.
///   Answers 204 when queued, 400 (JSON `{"error": ..}`) when the body does
///   not decode, 401 when the `x-raft-cluster` header or the bearer secret is
///   wrong (logged, messages dropped), 413 when the body exceeds the limit,
///   503 when the node is overloaded or stopped.
/// - `POST /raft/forward`: a follower forwards a proposal, a configuration
///   change or a leadership transfer (postcard-encoded). Authenticated like
///   messages (401 otherwise). The node runs it on itself only (never
///   forwards again) and answers 200 with the postcard-encoded outcome: the
///   result or the typed error (`NotLeader` with its hint if it no longer
///   leads, `Timeout`, `ProposalLost`, `TooLarge`, a refused change, ...).
#[derive(Clone, Debug)]
pub struct Transport {
    handle: RaftHandle,
    cluster_id: String,
    secret: Option<String>,
    body_limit: usize,
}

impl Transport {
    /// Ingress for `handle`, checking the cluster id and secret of `options`
    /// (the same options its peers send with). Body limit: 16 MiB.
    pub fn new(handle: RaftHandle, options: &HttpOptions) -> Self {
        Transport {
            handle,
            cluster_id: options.cluster_id.clone(),
            secret: options.secret.clone(),
            body_limit: 16 << 20,
        }
    }

    /// Sets the largest accepted request body, in bytes.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The routes, ready to serve or to merge into a larger router.
    pub fn router(self) -> Router {
        let limit = self.body_limit;
        Router::new()
            .route("/raft/messages", post(messages))
            .route("/raft/forward", post(forward))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(Arc::new(self))
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let cluster = headers.get(CLUSTER_HEADER).map(HeaderValue::as_bytes);
        if cluster != Some(self.cluster_id.as_bytes()) {
            return Err("wrong or missing cluster id");
        }
        if let Some(secret) = &self.secret {
            let expected = format!("Bearer {secret}");
            let given = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
            if !constant_time_eq(given, expected.as_bytes()) {
                return Err("wrong or missing bearer secret");
            }
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn messages(State(transport): State<Arc<Transport>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(reason) = transport.authorized(&headers) {
        tracing::warn!(node = transport.handle.id(), reason, "refused unauthenticated raft messages");
        return json_error(StatusCode::UNAUTHORIZED, reason);
    }
    let messages: Vec<Message> = match postcard::from_bytes(&body) {
        Ok(messages) => messages,
        Err(e) => {
            tracing::debug!(node = transport.handle.id(), "undecodable raft messages: {e}");
            return json_error(StatusCode::BAD_REQUEST, &format!("cannot decode messages: {e}"));
        }
    };
    match transport.handle.receive(messages) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(Error::Busy) => json_error(StatusCode::SERVICE_UNAVAILABLE, "node is overloaded"),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "node has stopped"),
    }
}

async fn forward(State(transport): State<Arc<Transport>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(reason) = transport.authorized(&headers) {
        tracing::warn!(node = transport.handle.id(), reason, "refused an unauthenticated forwarded request");
        return json_error(StatusCode::UNAUTHORIZED, reason);
    }
    let reply = transport.handle.answer_forwarded(&body).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], reply).into_response()
}
