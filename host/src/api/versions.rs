//! Versions, aliases, traffic and rollback (`/v1/functions/{name}/...`).
//! Every change answers with the function's versions as they are after it,
//! so a client sees at once where `live` points and how traffic splits.

use super::App;
use super::auth::Admin;
use super::error::ApiError;
use super::functions::state;
use crate::registry::{Canary, Deployed, LIVE, Version, Weight};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the versions routes answer.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
struct VersionView {
    #[serde(flatten)]
    version: Version,
    aliases: Vec<String>,
    /// Its share of `live` requests, percent (0: reached only by name).
    percent: u8,
    state: &'static str,
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

pub(super) async fn list(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<VersionsView>, ApiError> {
    let d = app.registry.get(&name).ok_or_else(|| ApiError::not_found(&name))?;
    Ok(VersionsView::of(&d))
}

/// `PUT /v1/functions/{name}/aliases/{alias}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AliasBody {
    version: u64,
}

pub(super) async fn set_alias(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<VersionsView>, ApiError> {
    let AliasBody { version } = json_body(&body, "alias, expected {\"version\": N}")?;
    let d = app.registry.set_alias(&name, &alias, version).await?;
    Ok(VersionsView::of(&d))
}

pub(super) async fn delete_alias(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<VersionsView>, ApiError> {
    let d = app.registry.delete_alias(&name, &alias).await?;
    Ok(VersionsView::of(&d))
}

/// `PUT /v1/functions/{name}/traffic` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrafficBody {
    weights: Vec<Weight>,
}

pub(super) async fn set_traffic(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<VersionsView>, ApiError> {
    let TrafficBody { weights } =
        json_body(&body, "traffic, expected {\"weights\": [{\"version\": N, \"percent\": P}, ...]}")?;
    let d = app.registry.set_traffic(&name, &weights).await?;
    Ok(VersionsView::of(&d))
}

/// `POST /v1/functions/{name}/rollback` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    to: Option<u64>,
}

pub(super) async fn rollback(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<VersionsView>, ApiError> {
    let RollbackBody { to } =
        if body.is_empty() { RollbackBody::default() } else { json_body(&body, "rollback, expected {\"to\": N}")? };
    let d = app.registry.rollback(&name, to).await?;
    Ok(VersionsView::of(&d))
}
