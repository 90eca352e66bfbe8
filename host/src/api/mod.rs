//! The HTTP API (axum): routes, shared state, graceful shutdown.
//!
//! Flow of an invocation: `invoke` (auth, payload limit) -> registry (name
//! -> live version) -> runtime (fresh instance, handler) -> response with
//! latency headers. Every error is JSON with a stable code (see `error`).
//! Documented in docs/api.md.

mod auth;
mod error;
mod functions;
mod invoke;
mod metrics;

pub use auth::Tokens;
pub use error::ApiError;
pub use invoke::{MODEL_LATENCY, OVERHEAD_LATENCY, REQUEST_ID, VERSION};

use crate::registry::Registry;
use axum::Router;
use axum::routing::{get, post, put};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What every handler shares.
pub struct App {
    /// Functions by name.
    pub registry: Registry,
    /// Who may do what.
    pub tokens: Tokens,
    ids: AtomicU64,
    id_prefix: u64,
}

impl App {
    /// Shared state over a registry.
    pub fn new(registry: Registry, tokens: Tokens) -> Arc<Self> {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Arc::new(App {
            registry,
            tokens,
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
        .route("/metrics", get(metrics::metrics))
        .route("/v1/blobs/{digest}", put(functions::put_blob).head(functions::has_blob))
        .route("/v1/functions", get(functions::list))
        .route("/v1/functions/{name}", put(functions::deploy).get(functions::describe).delete(functions::delete))
        .route("/v1/functions/{name}/invocations", post(invoke::invoke))
        .fallback(|| async {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "no_route", "no such route; see docs/api.md")
        })
        .with_state(app)
}

/// Serves `app` on `listener` until Ctrl-C or SIGTERM, then lets requests
/// in flight finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let reaper = tokio::spawn(reap(app.clone()));
    let served = axum::serve(listener, router(app)).with_graceful_shutdown(shutdown_signal()).await;
    reaper.abort();
    served
}

/// How often idle pools are checked for scaling down.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

async fn reap(app: Arc<App>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let app = app.clone();
        // Dropping sessions and instances can take a while; not on a worker.
        let _ = tokio::task::spawn_blocking(move || app.registry.reap()).await;
    }
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
