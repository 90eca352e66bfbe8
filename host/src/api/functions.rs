//! Managing functions: blobs up, bundles in, listing, describing, deleting.
//! A deploy is two steps, like an image registry: the client uploads each
//! blob it has not uploaded before (`PUT /v1/blobs/{digest}`, idempotent,
//! verified against its digest), then sends the bundle manifest naming them
//! (`PUT /v1/functions/{name}`).

use super::App;
use super::auth::Admin;
use super::error::ApiError;
use crate::pool::{Gauges, Percentiles};
use crate::registry::{Bundle, Deployed as Live, Deployment, FunctionRecord};
use crate::store::Digest;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Largest single blob (a model file).
const BLOB_LIMIT: u64 = 8 << 30;

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(ApiError::bad_request)
}

pub(super) async fn has_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = digest(&d)?;
    Ok(if app.registry.store().blobs.contains(&d) { StatusCode::OK } else { StatusCode::NOT_FOUND })
}

pub(super) async fn put_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let d = digest(&d)?;
    let blobs = &app.registry.store().blobs;
    let size = match blobs.size(&d) {
        Some(size) => size,
        None => blobs.put_stream(&d, body.into_data_stream(), BLOB_LIMIT).await?,
    };
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "digest": d, "size": size }))))
}

/// What `GET /v1/functions/{name}` answers.
#[derive(Debug, Serialize)]
pub struct FunctionView {
    #[serde(flatten)]
    record: FunctionRecord,
    state: &'static str,
    invocations: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    throttles: u64,
    cold_starts: u64,
    instances: Gauges,
    latency: Percentiles,
    /// Why the function could not load, when its last load failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
}

impl FunctionView {
    pub(super) fn of(d: &Live, data_dir: &std::path::Path) -> Self {
        let m = &d.pool.metrics;
        let instances = d.pool.gauges();
        FunctionView {
            record: d.record.clone(),
            state: if instances.loaded { "warm" } else { "scaled-to-zero" },
            invocations: m.invocations.load(Ordering::Relaxed),
            errors_4xx: m.errors_4xx.load(Ordering::Relaxed),
            errors_5xx: m.errors_5xx.load(Ordering::Relaxed),
            throttles: m.throttles.load(Ordering::Relaxed),
            cold_starts: m.cold_starts.load(Ordering::Relaxed),
            instances,
            latency: m.percentiles(),
            load_error: d.pool.load_error().map(|e| super::error::scrub(&e, data_dir)),
        }
    }
}

pub(super) async fn deploy(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let bundle: Bundle =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid bundle: {e}")))?;
    let (record, deployment) = app
        .registry
        .deploy(&name, bundle)
        .await
        .map_err(|e| ApiError::from(e).scrubbed(app.registry.store().root()))?;
    let status = if deployment == Deployment::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Deployed { record, deployment })))
}

/// What `PUT /v1/functions/{name}` answers: the live record and whether
/// the deploy `created`, `updated` or left it `unchanged`.
#[derive(Debug, Serialize)]
pub(super) struct Deployed {
    #[serde(flatten)]
    record: FunctionRecord,
    deployment: Deployment,
}

pub(super) async fn list(_: Admin, State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let root = app.registry.store().root();
    let functions: Vec<FunctionView> = app.registry.list().iter().map(|d| FunctionView::of(d, root)).collect();
    Ok(Json(serde_json::json!({ "functions": functions })))
}

pub(super) async fn describe(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let d = app.registry.get(&name).ok_or_else(|| ApiError::not_found(&name))?;
    Ok(Json(FunctionView::of(&d, app.registry.store().root())))
}

pub(super) async fn delete(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
