//! `GET /metrics` in Prometheus text format, per function version (see
//! `pool::render` for the families). It names every function, so it is
//! behind a token unless the server opens it (see `auth`).

use super::App;
use super::auth::MetricsReader;
use super::error::ErrorBody;
use crate::pool::Series;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::Arc;

/// Prometheus metrics, per function version and for the host.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: the metrics or admin token is needed unless the server runs \
            with `--metrics-open`", body = ErrorBody),
    ),
)]
pub(super) async fn metrics(_: MetricsReader, State(app): State<Arc<App>>) -> impl IntoResponse {
    let functions = app.registry.list();
    let pools: Vec<_> = functions.iter().flat_map(|d| d.pools().into_iter().map(move |(v, p)| (d, v, p))).collect();
    let series: Vec<Series> = pools
        .iter()
        .map(|(d, version, pool)| Series {
            function: &d.record.name,
            version: *version,
            metrics: &pool.metrics,
            gauges: pool.gauges(),
        })
        .collect();
    let mut out = crate::pool::render(&series);
    let one = |name: &str, kind: &str, help: &str, value: u64| {
        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
    };
    let host = |name: &str, help: &str, value: u64| one(name, "gauge", help, value);
    let runtime = app.registry.runtime();
    let (slots_used, slots_total) = runtime.slots();
    out.push_str(&host("nimbus_functions", "Functions deployed.", functions.len() as u64));
    out.push_str(&host("nimbus_instance_slots_used", "Instance slots in use (busy and pre-made).", slots_used.into()));
    if let Some(total) = slots_total {
        out.push_str(&host("nimbus_instance_slots_total", "Instance slots for all functions.", total.into()));
    }
    out.push_str(&host(
        "nimbus_held_memory_bytes",
        "Memory held for requests and loaded functions' sessions, against --memory-budget-mb.",
        runtime.memory().used(),
    ));
    let journals = app.registry.journals();
    out.push_str(&one(
        "nimbus_log_records_dropped_total",
        "counter",
        "Log records and events dropped because the journal's writer was behind.",
        journals.logs.dropped() + journals.events.dropped(),
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
