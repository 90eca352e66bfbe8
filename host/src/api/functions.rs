//! Managing functions: blobs up, bundles in, listing, describing, deleting.
//! A deploy is two steps, like an image registry: the client uploads each
//! blob it has not uploaded before (`PUT /v1/blobs/{digest}`, idempotent,
//! verified against its digest), then sends the bundle manifest naming them
//! (`PUT /v1/functions/{name}`).

use super::App;
use super::auth::Admin;
use super::error::ApiError;
use crate::pool::{Gauges, Metrics, Percentiles};
use crate::registry::{Bundle, Canary, Deployed as Live, Deployment, LIVE, Version, Weight};
use crate::store::{BLOB_LIMIT, Digest};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(ApiError::bad_request)
}

pub(super) async fn has_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = digest(&d)?;
    let stored = app.registry.store().blobs.size(&d).await?.is_some();
    Ok(if stored { StatusCode::OK } else { StatusCode::NOT_FOUND })
}

pub(super) async fn put_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let d = digest(&d)?;
    let blobs = &app.registry.store().blobs;
    let size = match blobs.size(&d).await? {
        Some(size) => size,
        None => blobs.put_stream(&d, body.into_data_stream(), BLOB_LIMIT).await?,
    };
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "digest": d, "size": size }))))
}

/// What `GET /v1/functions/{name}` answers: the live version, what points
/// where, and the function's counters over all its versions.
#[derive(Debug, Serialize)]
pub struct FunctionView {
    name: String,
    /// Unix seconds of the first deploy.
    created_at: u64,
    #[serde(flatten)]
    live: Version,
    aliases: BTreeMap<String, u64>,
    traffic: Vec<Weight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<Canary>,
    versions_kept: usize,
    state: &'static str,
    invocations: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    throttles: u64,
    cold_starts: u64,
    instances: Gauges,
    /// The live version's recent latencies.
    latency: Percentiles,
    /// Why the live version could not load, when its last load failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
}

impl FunctionView {
    pub(super) fn of(d: &Live, data_dir: &std::path::Path) -> Self {
        let pools = d.pools();
        let sum = |read: fn(&Metrics) -> &AtomicU64| -> u64 {
            pools.iter().map(|(_, p)| read(&p.metrics).load(Ordering::Relaxed)).sum()
        };
        let instances = pools.iter().fold(Gauges::default(), |g, (_, p)| g.plus(p.gauges()));
        let live = d.live_pool();
        let r = &d.record;
        FunctionView {
            name: r.name.clone(),
            created_at: r.created_at,
            live: r.live().clone(),
            aliases: r.aliases.clone(),
            traffic: r.routes(),
            canary: r.canary.clone(),
            versions_kept: r.versions.len(),
            state: state(instances),
            invocations: sum(|m| &m.invocations),
            errors_4xx: sum(|m| &m.errors_4xx),
            errors_5xx: sum(|m| &m.errors_5xx),
            throttles: sum(|m| &m.throttles),
            cold_starts: sum(|m| &m.cold_starts),
            instances,
            latency: live.metrics.percentiles(),
            load_error: live.load_error().map(|e| super::error::scrub(&e, data_dir)),
        }
    }
}

/// A pool's (or a function's) state in one word.
pub(super) fn state(g: Gauges) -> &'static str {
    match (g.loaded, g.busy_instances) {
        (false, _) => "scaled-to-zero",
        (true, 0) => "warm",
        (true, _) => "busy",
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
    let (d, number, deployment) = app
        .registry
        .deploy(&name, bundle)
        .await
        .map_err(|e| ApiError::from(e).scrubbed(app.registry.store().root()))?;
    let status = if deployment == Deployment::Created { StatusCode::CREATED } else { StatusCode::OK };
    let version = d.record.versions[&number].clone();
    let answer = Deployed { name, version, live: d.record.aliases[LIVE], canary: d.record.canary.clone(), deployment };
    Ok((status, Json(answer)))
}

/// What `PUT /v1/functions/{name}` answers: the version the deploy stands
/// for (new, or the live one when `unchanged`), where `live` points, and
/// whether the deploy `created`, `updated` or left it `unchanged`.
#[derive(Debug, Serialize)]
pub(super) struct Deployed {
    name: String,
    #[serde(flatten)]
    version: Version,
    live: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<Canary>,
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
    let next = more.then(|| functions.last().map(|f| f.name.clone())).flatten();
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
