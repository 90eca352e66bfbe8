//! Managing functions: blobs up, bundles in, listing, describing, deleting.
//! A deploy is two steps, like an image registry: the client uploads each
//! blob it has not uploaded before (`PUT /v1/blobs/{digest}`, idempotent,
//! verified against its digest), then sends the bundle manifest naming them
//! (`PUT /v1/functions/{name}`).

use super::App;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use super::openapi::Binary;
use crate::pool::{Gauges, Metrics, Percentiles};
use crate::registry::{Bundle, Canary, Deployed as Live, Deployment, LIVE, Version, Weight};
use crate::store::{BLOB_LIMIT, Digest};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(ApiError::bad_request)
}

/// Whether a blob is stored (in a cluster: in the object store).
#[utoipa::path(
    head,
    path = "/v1/blobs/{digest}",
    operation_id = "has_blob",
    tag = "blobs",
    security(("bearer" = [])),
    params(("digest" = Digest, Path, description = "The blob's sha256")),
    responses(
        (status = 200, description = "Stored (no body)"),
        (status = 404, description = "Not stored (no body)"),
        (status = 400, description = "`bad_request`: not a sha256 digest (a HEAD answer has no body)"),
        (status = 401, description = "`unauthorized` (a HEAD answer has no body)"),
        (status = 500, description = "`storage_error` (a HEAD answer has no body)"),
        (status = 503, description = "`objects_unavailable`: the object store cannot be reached (a HEAD answer \
            has no body)"),
    ),
)]
pub(super) async fn has_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = digest(&d)?;
    let stored = app.registry.store().blobs.size(&d).await?.is_some();
    Ok(if stored { StatusCode::OK } else { StatusCode::NOT_FOUND })
}

/// Uploads a blob: stored only if the bytes hash to `digest`; idempotent.
#[utoipa::path(
    put,
    path = "/v1/blobs/{digest}",
    operation_id = "put_blob",
    tag = "blobs",
    security(("bearer" = [])),
    params(("digest" = Digest, Path, description = "The blob's sha256")),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The bytes"),
    responses(
        (status = 201, description = "Stored (or already was)", body = BlobStored),
        (status = 400, description = "`bad_request` (not a sha256 digest, an interrupted upload), \
            `digest_mismatch` (the bytes hash to another digest)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over the largest blob", body = ErrorBody),
        (status = 500, description = "`storage_error`", body = ErrorBody),
        (status = 503, description = "`objects_unavailable`: the object store cannot be reached", body = ErrorBody),
    ),
)]
pub(super) async fn put_blob(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(d): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<BlobStored>), ApiError> {
    let d = digest(&d)?;
    let blobs = &app.registry.store().blobs;
    let size = match blobs.size(&d).await? {
        Some(size) => size,
        None => blobs.put_stream(&d, body.into_data_stream(), BLOB_LIMIT).await?,
    };
    Ok((StatusCode::CREATED, Json(BlobStored { digest: d, size })))
}

/// What `PUT /v1/blobs/{digest}` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct BlobStored {
    digest: Digest,
    /// Bytes.
    size: u64,
}

/// What `GET /v1/functions/{name}` answers: the live version, what points
/// where, and the function's counters over all its versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    state: PoolState,
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
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(super) enum PoolState {
    /// Nothing loaded.
    ScaledToZero,
    /// Loaded, no request running.
    Warm,
    /// Serving requests.
    Busy,
}

/// A pool's (or a function's) state in one word.
pub(super) fn state(g: Gauges) -> PoolState {
    match (g.loaded, g.busy_instances) {
        (false, _) => PoolState::ScaledToZero,
        (true, 0) => PoolState::Warm,
        (true, _) => PoolState::Busy,
    }
}

/// Deploys a bundle (its blobs uploaded first) as the function's next version.
#[utoipa::path(
    put,
    path = "/v1/functions/{name}",
    operation_id = "deploy",
    tag = "functions",
    security(("bearer" = [])),
    params(("name" = String, Path,
        description = "1-63 letters, digits and hyphens, not starting or ending with a hyphen")),
    request_body(content = Bundle, content_type = "application/json"),
    responses(
        (status = 201, description = "A new function", body = Deployed),
        (status = 200, description = "A new version, or none (`unchanged`)", body = Deployed),
        (status = 400, description = "`bad_request` (not a bundle), `invalid_name`, `invalid_config`, \
            `missing_blob`, `invalid_change`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`over_capacity` (provisioned memory over the budget), `conflict` (another \
            host changed the function meanwhile; retry)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "Deploy refused, the previous version keeps serving: `invalid_component`, \
            `not_a_handler`, `init_failed`, `invalid_model`", body = ErrorBody),
        (status = 500, description = "`internal`, `storage_error`", body = ErrorBody),
        (status = 503, description = "`at_capacity`, `records_unavailable`, `objects_unavailable`; `Retry-After` \
            says when to retry", body = ErrorBody),
    ),
)]
pub(super) async fn deploy(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let body = super::extract::bytes(body)?;
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Functions per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The previous page's `next`.
    after: Option<String>,
}

/// A page of functions; `next` is the cursor of the following page,
/// absent on the last one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Page {
    functions: Vec<FunctionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A page of functions, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/functions",
    operation_id = "list_functions",
    tag = "functions",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page; the last one has no `next`", body = Page),
        (status = 400, description = "`bad_request`: a malformed query or `limit` out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
)]
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

/// The function: its live version, aliases, traffic and counters.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    operation_id = "describe",
    tag = "functions",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function")),
    responses(
        (status = 200, description = "The function", body = FunctionView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub(super) async fn describe(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let d = app.registry.get(&name).ok_or_else(|| ApiError::not_found(&name))?;
    Ok(Json(FunctionView::of(&d, app.registry.store().root())))
}

/// Deletes the function, every version of it.
#[utoipa::path(
    delete,
    path = "/v1/functions/{name}",
    operation_id = "delete",
    tag = "functions",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: another host changed the function meanwhile; retry",
            body = ErrorBody),
        (status = 500, description = "`storage_error`", body = ErrorBody),
        (status = 503, description = "`records_unavailable`, `objects_unavailable`", body = ErrorBody),
    ),
)]
pub(super) async fn delete(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
