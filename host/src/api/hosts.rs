//! `GET /v1/hosts`: the hosts serving now, as the membership last read
//! them (one host on its own outside a cluster).

use super::App;
use super::auth::Admin;
use super::error::ErrorBody;
use crate::members::HostInfo;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;

/// The answer: every live host, and which one answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HostsView {
    /// Whether hosts share records and blobs (etcd, an object store).
    cluster: bool,
    /// The id of the host that answered.
    me: String,
    hosts: Vec<HostInfo>,
}

/// The hosts serving now.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "list_hosts",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every live host (one alone outside a cluster)", body = HostsView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
)]
pub(super) async fn list(_: Admin, State(app): State<Arc<App>>) -> Json<HostsView> {
    let registry = &app.registry;
    let members = registry.members();
    let me = registry.about();
    let mut hosts: Vec<HostInfo> = members.hosts().into_iter().filter(|h| h.id != me.id).collect();
    // This host's own line is as of now, not as of the last registration.
    hosts.push(me);
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    Json(HostsView { cluster: registry.store().records.etcd().is_some(), me: members.me().to_owned(), hosts })
}
