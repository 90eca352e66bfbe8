//! Versions, aliases, traffic and rollback (`/v1/functions/{name}/...`).
//! Every change answers with the function's versions as they are after it,
//! so a client sees at once where `live` points and how traffic splits.

use super::App;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use super::functions::{PoolState, state};
use super::openapi::error_answers;
use crate::registry::{Canary, Deployed, LIVE, Version, Weight};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use utoipa::IntoResponses;
use utoipa::openapi::RefOr;

/// What the versions routes answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct VersionsView {
    name: String,
    live: u64,
    aliases: BTreeMap<String, u64>,
    traffic: Vec<Weight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<Canary>,
    /// Newest first.
    versions: Vec<VersionView>,
}

/// One retained version with what points at it and how it is doing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct VersionView {
    #[serde(flatten)]
    version: Version,
    aliases: Vec<String>,
    /// Its share of `live` requests, percent (0: reached only by name).
    percent: u8,
    state: PoolState,
    invocations: u64,
    errors_5xx: u64,
}

impl VersionsView {
    fn of(d: &Deployed) -> Json<Self> {
        let r = &d.record;
        let pools: BTreeMap<u64, _> = d.pools().into_iter().collect();
        let routes = r.routes();
        let versions = r
            .versions
            .values()
            .rev()
            .map(|v| {
                let pool = pools.get(&v.version);
                let count = |read: fn(&crate::pool::Metrics) -> &std::sync::atomic::AtomicU64| {
                    pool.map_or(0, |p| read(&p.metrics).load(Ordering::Relaxed))
                };
                VersionView {
                    version: v.clone(),
                    aliases: r.aliases_of(v.version).into_iter().map(str::to_owned).collect(),
                    percent: routes.iter().find(|w| w.version == v.version).map_or(0, |w| w.percent),
                    state: state(pool.map(|p| p.gauges()).unwrap_or_default()),
                    invocations: count(|m| &m.invocations),
                    errors_5xx: count(|m| &m.errors_5xx),
                }
            })
            .collect();
        Json(VersionsView {
            name: r.name.clone(),
            live: r.aliases[LIVE],
            aliases: r.aliases.clone(),
            traffic: routes,
            canary: r.canary.clone(),
            versions,
        })
    }
}

fn json_body<T: for<'a> Deserialize<'a>>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// The function's versions, newest first, with where `live` points.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/versions",
    operation_id = "list_versions",
    tag = "versions",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function")),
    responses(
        (status = 200, description = "The versions", body = VersionsView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<VersionsView>, ApiError> {
    let d = app.registry.get(&name).ok_or_else(|| ApiError::not_found(&name))?;
    Ok(VersionsView::of(&d))
}

/// `PUT /v1/functions/{name}/aliases/{alias}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AliasBody {
    version: u64,
}

/// What a change of aliases, traffic or live version answers besides 200,
/// 400 and 404.
struct VersionChangeErrors;

impl IntoResponses for VersionChangeErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_answers::<ErrorBody>(&[
            ("401", "`unauthorized`"),
            ("409", "`conflict`, `over_capacity`"),
            ("413", "`payload_too_large`"),
            ("500", "`storage_error`"),
            ("503", "`records_unavailable`"),
        ])
    }
}

/// Points an alias at a version (creating it); moving `live` clears a split
/// and cancels a running canary.
#[utoipa::path(
    put,
    path = "/v1/functions/{name}/aliases/{alias}",
    operation_id = "set_alias",
    tag = "versions",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function"),
        ("alias" = String, Path, description = "The alias (a name, not a number)"),
    ),
    request_body(content = AliasBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The versions afterwards", body = VersionsView),
        (status = 400, description = "`bad_request` (not `{\"version\": N}`), `invalid_change`", body = ErrorBody),
        (status = 404, description = "`not_found`, `version_not_found`", body = ErrorBody),
        VersionChangeErrors,
    ),
)]
pub(super) async fn set_alias(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VersionsView>, ApiError> {
    let body = super::extract::bytes(body)?;
    let AliasBody { version } = json_body(&body, "alias, expected {\"version\": N}")?;
    let d = app.registry.set_alias(&name, &alias, version).await?;
    Ok(VersionsView::of(&d))
}

/// Removes an alias (`live` cannot be removed).
#[utoipa::path(
    delete,
    path = "/v1/functions/{name}/aliases/{alias}",
    operation_id = "delete_alias",
    tag = "versions",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function"),
        ("alias" = String, Path, description = "The alias"),
    ),
    responses(
        (status = 200, description = "The versions afterwards", body = VersionsView),
        (status = 400, description = "`invalid_change`: `live` cannot be removed", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`, `alias_not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 500, description = "`storage_error`", body = ErrorBody),
        (status = 503, description = "`records_unavailable`", body = ErrorBody),
    ),
)]
pub(super) async fn delete_alias(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<VersionsView>, ApiError> {
    let d = app.registry.delete_alias(&name, &alias).await?;
    Ok(VersionsView::of(&d))
}

/// `PUT /v1/functions/{name}/traffic` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TrafficBody {
    weights: Vec<Weight>,
}

/// Splits `live` traffic over 1 to 4 kept versions, 100 percent in all.
#[utoipa::path(
    put,
    path = "/v1/functions/{name}/traffic",
    operation_id = "set_traffic",
    tag = "versions",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function")),
    request_body(content = TrafficBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The versions afterwards", body = VersionsView),
        (status = 400, description = "`bad_request` (not `{\"weights\": [...]}`), `invalid_change` (a split that \
            does not add up to 100, names a version twice or more than 4)", body = ErrorBody),
        (status = 404, description = "`not_found`, `version_not_found`", body = ErrorBody),
        VersionChangeErrors,
    ),
)]
pub(super) async fn set_traffic(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VersionsView>, ApiError> {
    let body = super::extract::bytes(body)?;
    let TrafficBody { weights } =
        json_body(&body, "traffic, expected {\"weights\": [{\"version\": N, \"percent\": P}, ...]}")?;
    let d = app.registry.set_traffic(&name, &weights).await?;
    Ok(VersionsView::of(&d))
}

/// `POST /v1/functions/{name}/rollback` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    to: Option<u64>,
}

/// Moves `live` back: to `to`, or to the newest kept version older than the
/// live one; the split clears, a running canary is cancelled.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/rollback",
    operation_id = "rollback",
    tag = "versions",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function")),
    request_body(content = Option<RollbackBody>, content_type = "application/json",
        description = "Optional: no body (or `null`) rolls back to the previous version"),
    responses(
        (status = 200, description = "The versions afterwards", body = VersionsView),
        (status = 400, description = "`bad_request` (not `{\"to\": N}`), `invalid_change` (no older version)",
            body = ErrorBody),
        (status = 404, description = "`not_found`, `version_not_found`", body = ErrorBody),
        VersionChangeErrors,
    ),
)]
pub(super) async fn rollback(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VersionsView>, ApiError> {
    let body = super::extract::bytes(body)?;
    // No body (or `null`): the previous version.
    let RollbackBody { to } = if body.is_empty() {
        RollbackBody::default()
    } else {
        json_body::<Option<RollbackBody>>(&body, "rollback, expected {\"to\": N}")?.unwrap_or_default()
    };
    let d = app.registry.rollback(&name, to).await?;
    Ok(VersionsView::of(&d))
}
