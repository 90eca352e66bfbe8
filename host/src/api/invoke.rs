//! `POST /v1/functions/{name}/invocations`: bytes and content types pass
//! through to the handler, its bytes and content type come back, with the
//! request id, the version that served it and the model and overhead
//! latencies in headers (SageMaker's ModelLatency and OverheadLatency). The
//! caller is authenticated before the function is looked up. A request goes
//! to `live` (picked by weight when traffic is split) unless it names a
//! version or alias.

use super::auth::Invoker;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use super::{App, RequestId};
use crate::journal::{Body as Line, Entry, Head, Invocation, Journal, Millis};
use crate::pool::{Pool, Served};
use crate::registry::Target;
use crate::runtime::{Invoked, Output, Request};
use axum::Extension;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// Response header: the request's id (also in the server log).
pub const REQUEST_ID: &str = "x-nimbus-request-id";
/// Response header: microseconds spent inside the handler.
pub const MODEL_LATENCY: &str = "x-nimbus-model-latency-us";
/// Response header: microseconds spent around it (auth, body, instance).
pub const OVERHEAD_LATENCY: &str = "x-nimbus-overhead-latency-us";
/// Response header: the function version that answered.
pub const VERSION: &str = "x-nimbus-function-version";
/// Request header: serve this version, whatever the traffic weights say
/// (SageMaker's `X-Amzn-SageMaker-Target-Variant`).
pub const TARGET_VERSION: &str = "x-nimbus-target-version";

/// `?version=N` or `?alias=NAME`: which version serves the request.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InvokeQuery {
    /// Serve this version (not with `alias`).
    version: Option<u64>,
    /// Serve the version this alias names (not with `version`).
    alias: Option<String>,
}

/// Where the request goes: the pinning header first, then the query, else
/// `live` by weight.
fn target(headers: &HeaderMap, query: InvokeQuery) -> Result<Target, ApiError> {
    if let Some(pin) = headers.get(TARGET_VERSION) {
        let v = pin.to_str().ok().and_then(|v| v.trim().parse().ok());
        return v
            .map(Target::Version)
            .ok_or_else(|| ApiError::bad_request(format!("{TARGET_VERSION} must be a version number, like `3`")));
    }
    match query {
        InvokeQuery { version: Some(_), alias: Some(_) } => {
            Err(ApiError::bad_request("pass either ?version=N or ?alias=NAME, not both"))
        }
        InvokeQuery { version: Some(v), .. } => Ok(Target::Version(v)),
        InvokeQuery { alias: Some(a), .. } => Ok(Target::Alias(a)),
        InvokeQuery { .. } => Ok(Target::Live),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName, default: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or(default).to_owned()
}

/// The request's body, within the function's payload limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over this function's limit of {limit} bytes"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit as usize).await.map_err(|_| too_large())
}

/// Invokes the function: the body and `Content-Type` / `Accept` go to its
/// handler as they are, and its answer comes back as it is.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invocations",
    operation_id = "invoke",
    tag = "invocations",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function"),
        InvokeQuery,
        ("x-nimbus-target-version" = Option<u64>, Header,
            description = "Serve this version, whatever the traffic weights say; wins over the query"),
    ),
    request_body(content_type = "*/*", description = "Whatever the handler reads, in its `Content-Type`"),
    responses(
        (status = 200, description = "The handler's answer, in its content type", content_type = "*/*",
            headers(
                ("x-nimbus-function-version" = u64, description = "The version that answered"),
                ("x-nimbus-model-latency-us" = u64, description = "Microseconds inside the handler"),
                ("x-nimbus-overhead-latency-us" = u64, description = "Microseconds around it"),
            )),
        (status = 400, description = "`bad_input` (the handler's words), `bad_request` (a malformed query or \
            `x-nimbus-target-version`)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the server has an invoke token", body = ErrorBody),
        (status = 404, description = "`not_found`, `version_not_found`, `alias_not_found`", body = ErrorBody),
        (status = 406, description = "`not_acceptable`: the handler cannot answer in any type of `Accept`",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over the function's `payload_limit_bytes`",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the handler does not read this `Content-Type`",
            body = ErrorBody),
        (status = 429, description = "`throttled`: `max_concurrency` stayed busy for `queue_timeout_ms`; \
            `Retry-After` says when to retry", body = ErrorBody),
        (status = 500, description = "`handler_failed`, `handler_trapped`, `memory_exceeded`, \
            `cold_start_failed`, `internal`", body = ErrorBody),
        (status = 503, description = "`at_capacity`, `no_share_here`, `objects_unavailable`; `Retry-After` says \
            when to retry", body = ErrorBody),
        (status = 504, description = "`timeout`: the request ran past `timeout_s`", body = ErrorBody),
    ),
)]
pub(super) async fn invoke(
    _: Invoker,
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<InvokeQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let Some(deployed) = app.registry.get(&name) else {
        return ApiError::not_found(&name).into_response();
    };
    let routed = query
        .map_err(|e| ApiError::bad_request(format!("{}; use ?version=N or ?alias=NAME", e.body_text())))
        .and_then(|Query(q)| target(&headers, q))
        .and_then(|t| Ok(app.registry.route(&deployed, &t)?));
    let (version, pool) = match routed {
        Ok(routed) => routed,
        Err(e) => return e.into_response(),
    };
    let limit = deployed.record.versions[&version].config.payload_limit_bytes;
    let request = |body: Bytes| {
        Ok(Request {
            content_type: header_str(&headers, header::CONTENT_TYPE, ""),
            accept: header_str(&headers, header::ACCEPT, "*/*"),
            body: body.to_vec(),
        })
    };
    let call = Call { app: &app, id: &id, name: &name, version, pool, limit, start };
    call.run(&headers, body, request, answer).await
}

/// The handler's answer as it is: its bytes and content type.
fn answer(result: Result<Invoked, ApiError>) -> Response {
    match result {
        Ok(invoked) => {
            let mut r = (StatusCode::OK, invoked.response.body).into_response();
            if let Ok(ct) = HeaderValue::from_str(&invoked.response.content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

/// One invocation of a version already chosen, however its HTTP request
/// and answer are framed (this API's, or the Open Inference Protocol's).
pub(super) struct Call<'a> {
    pub app: &'a App,
    pub id: &'a str,
    pub name: &'a str,
    pub version: u64,
    pub pool: Arc<Pool>,
    /// The version's payload limit.
    pub limit: u64,
    /// When the HTTP request arrived.
    pub start: Instant,
}

impl Call<'_> {
    /// Reads the body (within the limit), makes it a handler request with
    /// `prepare`, runs it, renders the result with `render`, and keeps the
    /// outcome in the function's log and metrics. Latencies and the version
    /// that answered ride in headers.
    pub async fn run(
        self,
        headers: &HeaderMap,
        body: Body,
        prepare: impl FnOnce(Bytes) -> Result<Request, ApiError>,
        render: impl FnOnce(Result<Invoked, ApiError>) -> Response,
    ) -> Response {
        let Call { app, id, name, version, pool, limit, start } = self;
        let (result, cold, output, bytes_in) = match read_body(headers, body, limit).await.and_then(|body| {
            let bytes_in = body.len() as u64;
            prepare(body).map(|request| (request, bytes_in))
        }) {
            Ok((request, bytes_in)) => {
                let Served { result, cold, output } = pool.invoke(request).await;
                (result.map_err(ApiError::from), cold, output, bytes_in)
            }
            Err(e) => (Err(e), false, Output::default(), 0),
        };
        let latency =
            result.as_ref().ok().map(|invoked| (invoked.handle, start.elapsed().saturating_sub(invoked.handle)));
        let error = result.as_ref().err().map(|e| e.code.to_owned());
        let mut response = render(result);
        let bytes_out = response.body().size_hint().exact().unwrap_or(0);
        if let Some((model, overhead)) = latency {
            response.headers_mut().insert(MODEL_LATENCY, HeaderValue::from(model.as_micros() as u64));
            response.headers_mut().insert(OVERHEAD_LATENCY, HeaderValue::from(overhead.as_micros() as u64));
        }
        let status = response.status().as_u16();
        pool.metrics.record(status, latency);
        let (model, overhead) = latency.unwrap_or_default();
        let outcome = Invocation {
            status,
            model_us: model.as_micros() as u64,
            overhead_us: overhead.as_micros() as u64,
            cold,
            bytes_in,
            bytes_out,
            error,
        };
        log(&app.registry.journals().logs, name, version, id, outcome, output);
        response.headers_mut().insert(VERSION, HeaderValue::from(version));
        response
    }
}

/// Longest guest line a log keeps (a guest chooses how long its lines are;
/// what it writes per request is bounded by the capture, see
/// `runtime::state`).
const LINE_MAX: usize = 16 << 10;

/// A guest line as the log keeps it: cut at [`LINE_MAX`], saying so.
fn clip(mut line: String) -> String {
    if line.len() > LINE_MAX {
        let total = line.len();
        let mut cut = LINE_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(&format!(" [cut: {total} bytes]"));
    }
    line
}

/// Keeps the request's record, then the guest's lines, in the function's log.
fn log(logs: &Journal<Entry>, function: &str, version: u64, id: &str, outcome: Invocation, output: Output) {
    let head = Head { time: Millis::now(), host: String::new(), function: function.to_owned(), version: Some(version) };
    let entry = |body| Entry { head: head.clone(), request_id: id.to_owned(), body };
    let lines = output.stdout.into_iter().map(|line| Line::Stdout { line: clip(line) });
    for body in lines.chain(output.stderr.into_iter().map(|line| Line::Stderr { line: clip(line) })) {
        logs.append(entry(body));
    }
    logs.append(entry(Line::Invocation(outcome)));
}
