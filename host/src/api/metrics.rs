//! `GET /metrics` in Prometheus text format, per function (see
//! `pool::render` for the families). It names every function, so it is
//! behind a token unless the server opens it (see `auth`).

use super::App;
use super::auth::MetricsReader;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::Arc;

pub(super) async fn metrics(_: MetricsReader, State(app): State<Arc<App>>) -> impl IntoResponse {
    let functions = app.registry.list();
    let rows: Vec<_> = functions.iter().map(|d| (d.record.name.as_str(), &d.pool.metrics, d.pool.gauges())).collect();
    let mut out = crate::pool::render(&rows);
    out.push_str(&format!(
        "# HELP nimbus_functions Functions deployed.\n# TYPE nimbus_functions gauge\nnimbus_functions {}\n",
        functions.len()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
