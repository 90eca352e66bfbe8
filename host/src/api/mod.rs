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
mod extract;
pub mod front;
mod functions;
mod hosts;
pub use functions::PAGE_MAX;
mod invoke;
mod lanes;
mod metrics;
mod observe;
mod oip;
mod openapi;
mod peers;
mod versions;

pub use auth::Tokens;
pub use error::ApiError;
pub use invoke::{MODEL_LATENCY, OVERHEAD_LATENCY, REQUEST_ID, TARGET_VERSION, VERSION};
pub use openapi::document as openapi_document;

use crate::registry::Registry;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The documented routes, each with its part of the OpenAPI document (see
/// `openapi`): one `routes!` per path, every method of the path in it.
fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi::openapi))
        .routes(routes!(console::root))
        .routes(routes!(console::index))
        .routes(routes!(metrics::metrics))
        .routes(routes!(hosts::list))
        .routes(routes!(functions::put_blob, functions::has_blob))
        .routes(routes!(functions::list))
        .routes(routes!(functions::deploy, functions::describe, functions::delete))
        .routes(routes!(invoke::invoke))
        .routes(routes!(versions::list))
        .routes(routes!(versions::set_alias, versions::delete_alias))
        .routes(routes!(versions::set_traffic))
        .routes(routes!(versions::rollback))
        .routes(routes!(observe::logs))
        .routes(routes!(observe::events))
        .routes(routes!(observe::stats))
        .routes(routes!(observe::summary))
        .routes(routes!(oip::server))
        .routes(routes!(oip::live))
        .routes(routes!(oip::ready))
        .routes(routes!(oip::model_metadata))
        .routes(routes!(oip::model_ready_live))
        .routes(routes!(oip::model_infer))
        .routes(routes!(oip::version_metadata))
        .routes(routes!(oip::version_ready))
        .routes(routes!(oip::version_infer))
}

/// All routes.
pub fn router(app: Arc<App>) -> Router {
    let (documented, _) = routes().split_for_parts();
    documented
        // The console's assets: files of its page, not part of the API (an
        // OpenAPI path parameter cannot span segments as `{*path}` does).
        .route("/console/{*path}", get(console::asset))
        .fallback(|| async {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "no_route", "no such route; see docs/api.md")
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), request_id))
        .with_state(app)
}

/// Whether the server is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = String, content_type = "text/plain", example = "ok")),
)]
async fn healthz() -> &'static str {
    "ok"
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
