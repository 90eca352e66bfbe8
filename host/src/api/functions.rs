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
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
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

/// Functions per page of `GET /v1/functions` unless `limit` says otherwise.
pub const PAGE_DEFAULT: usize = 100;
/// Most functions one page may hold.
pub const PAGE_MAX: u16 = 1000;

/// `GET /v1/functions?limit=N&after=NAME`: a page of functions sorted by
/// name, after the cursor `after` (the previous page's `next`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// A page of functions; `next` is the cursor of the following page,
/// absent on the last one.
#[derive(Debug, Serialize)]
pub(super) struct Page {
    functions: Vec<FunctionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

pub(super) async fn list(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("{}; use ?limit=N&after=NAME", e.body_text())))?;
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=usize::from(PAGE_MAX)).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {PAGE_MAX}; got {limit}")));
    }
    let root = app.registry.store().root();
    let (page, more) = app.registry.page(query.after.as_deref(), limit);
    let functions: Vec<FunctionView> = page.iter().map(|d| FunctionView::of(d, root)).collect();
    let next = more.then(|| functions.last().map(|f| f.record.name.clone())).flatten();
    Ok(Json(Page { functions, next }))
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
