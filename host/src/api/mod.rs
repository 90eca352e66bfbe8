//! The HTTP API (axum): routes, shared state, graceful shutdown.
//!
//! Flow of an invocation: request id -> `auth` (an extractor per scope) ->
//! `invoke` (lookup, payload limit) -> registry (name -> live version) ->
//! pool -> runtime -> response with latency headers. Every error is JSON
//! with a stable code (see `error`); its internal detail goes to the log
//! with the request id. Documented in docs/api.md.

mod auth;
mod console;
mod error;
pub mod front;
mod functions;
mod hosts;
pub use functions::PAGE_MAX;
mod invoke;
mod metrics;
mod observe;
mod oip;
mod peers;
mod versions;

pub use auth::Tokens;
pub use error::ApiError;
pub use invoke::{MODEL_LATENCY, OVERHEAD_LATENCY, REQUEST_ID, TARGET_VERSION, VERSION};

use crate::registry::Registry;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What every handler shares.
pub struct App {
    /// Functions by name.
    pub registry: Arc<Registry>,
    /// Who may do what.
    pub tokens: Tokens,
    /// The other hosts, for views of the whole cluster.
    peers: peers::Peers,
    ids: AtomicU64,
    id_prefix: u64,
}

impl App {
    /// Shared state over a registry.
    pub fn new(registry: Arc<Registry>, tokens: Tokens) -> Arc<Self> {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Arc::new(App {
            registry,
            tokens,
            peers: peers::Peers::new(),
            ids: AtomicU64::new(0),
            id_prefix: seed ^ u64::from(std::process::id()) << 32,
        })
    }

    fn next_request_id(&self) -> String {
        format!("{:016x}{:08x}", self.id_prefix, self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

/// All routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/console", get(console::root))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::asset))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/blobs/{digest}", put(functions::put_blob).head(functions::has_blob))
        .route("/v1/functions", get(functions::list))
        .route("/v1/functions/{name}", put(functions::deploy).get(functions::describe).delete(functions::delete))
        .route("/v1/functions/{name}/invocations", post(invoke::invoke))
        .route("/v1/functions/{name}/versions", get(versions::list))
        .route("/v1/functions/{name}/aliases/{alias}", put(versions::set_alias).delete(versions::delete_alias))
        .route("/v1/functions/{name}/traffic", put(versions::set_traffic))
        .route("/v1/functions/{name}/rollback", post(versions::rollback))
        .route("/v1/functions/{name}/logs", get(observe::logs))
        .route("/v1/functions/{name}/events", get(observe::events))
        .route("/v1/functions/{name}/stats", get(observe::stats))
        .route("/v1/stats", get(observe::summary))
        .route("/v2", get(oip::server))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::metadata))
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/infer", post(oip::infer))
        .route("/v2/models/{name}/versions/{version}", get(oip::metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(oip::infer))
        .fallback(|| async {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "no_route", "no such route; see docs/api.md")
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), request_id))
        .with_state(app)
}

/// A request's id, for handlers that log under it.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// Gives every request an id (`x-nimbus-request-id`) and logs the detail
/// of an error answer under it.
async fn request_id(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let id = app.next_request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(error::Detail(detail)) = response.extensions_mut().remove::<error::Detail>() {
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::warn!(request_id = %id, %path, status, "{detail}");
        } else {
            tracing::info!(request_id = %id, %path, status, "{detail}");
        }
    }
    response.headers_mut().insert(REQUEST_ID, HeaderValue::from_str(&id).expect("hex id"));
    response
}

/// Serves `app` on `listener` with the front's `limits` until Ctrl-C or
/// SIGTERM, then lets requests in flight finish for a bounded time.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>, limits: front::Limits) -> std::io::Result<()> {
    front::serve(listener, router(app), limits, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
