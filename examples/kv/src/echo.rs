//! `raft-kv echo`: the client API's HTTP stack with nothing behind it. A
//! `PUT /v1/kv/{key}` reads its body and answers `{"index":N}` at once, a
//! `GET` answers a fixed value: no Raft, no disk. Driven by `raft-kv bench`
//! like a real node, it measures the ceiling that HTTP on this machine puts
//! on any store served this way (`bench/compare` runs it beside raft-kv and
//! etcd).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::EchoArgs;

fn router() -> Router {
    let writes = Arc::new(AtomicU64::new(0));
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(|| async {
                let mut response = (StatusCode::OK, Bytes::from_static(b"x")).into_response();
                response.headers_mut().insert("x-raft-index", HeaderValue::from(1u64));
                response
            })
            .put(|State(writes): State<Arc<AtomicU64>>, body: Bytes| async move {
                let _ = body;
                let index = writes.fetch_add(1, Ordering::Relaxed) + 1;
                json(&format!(r#"{{"index":{index}}}"#))
            }),
        )
        .with_state(writes)
}

fn json(body: &str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_owned()).into_response()
}

/// Serves until SIGINT/SIGTERM.
pub(crate) async fn run(args: EchoArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let listener =
        raft_http::tls::Listener::new(listener, None).map_err(|e| format!("cannot listen: {e}"))?;
    eprintln!("echo server on http://{}", args.listen);
    let app = router().into_make_service_with_connect_info::<raft_http::tls::Remote>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            crate::local::signal().await;
        })
        .await
        .map_err(|e| format!("echo server failed: {e}"))
}
