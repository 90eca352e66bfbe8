//! `GET /metrics` in Prometheus text format, per function.

use super::App;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One counter family: name, help, and how to read it from a function.
type Family = (
    &'static str,
    &'static str,
    fn(&crate::registry::Counters) -> u64,
);

pub(super) async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut out = String::new();
    let functions = app.registry.list();
    let families: [Family; 3] = [
        ("nimbus_invocations_total", "Requests received.", |c| {
            c.invocations.load(Ordering::Relaxed)
        }),
        (
            "nimbus_invocation_4xx_errors_total",
            "Requests answered with a 4xx status.",
            |c| c.errors_4xx.load(Ordering::Relaxed),
        ),
        (
            "nimbus_invocation_5xx_errors_total",
            "Requests answered with a 5xx status.",
            |c| c.errors_5xx.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for d in &functions {
            let _ = writeln!(
                out,
                "{name}{{function=\"{}\"}} {}",
                d.record.name,
                read(&d.counters)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP nimbus_functions Functions deployed.\n# TYPE nimbus_functions gauge"
    );
    let _ = writeln!(out, "nimbus_functions {}", functions.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
