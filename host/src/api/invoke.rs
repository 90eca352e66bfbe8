//! `POST /v1/functions/{name}/invocations`: bytes and content types pass
//! through to the handler, its bytes and content type come back, with the
//! request id, the version that served it and the model and overhead
//! latencies in headers (SageMaker's ModelLatency and OverheadLatency). The
//! caller is authenticated before the function is looked up. A request goes
//! to `live` (picked by weight when traffic is split) unless it names a
//! version or alias.

use super::App;
use super::auth::Invoker;
use super::error::ApiError;
use crate::registry::Target;
use crate::runtime::Request;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
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
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InvokeQuery {
    version: Option<u64>,
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

pub(super) async fn invoke(
    _: Invoker,
    State(app): State<Arc<App>>,
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
    let config = &deployed.record.versions[&version].config;
    let result = async {
        let limit = config.payload_limit_bytes;
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
        let body = axum::body::to_bytes(body, limit as usize).await.map_err(|_| too_large())?;
        let request = Request {
            content_type: header_str(&headers, header::CONTENT_TYPE, ""),
            accept: header_str(&headers, header::ACCEPT, "*/*"),
            body: body.to_vec(),
        };
        Ok::<_, ApiError>(pool.invoke(request).await?)
    }
    .await;
    let mut response = match result {
        Ok(invoked) => {
            let model = invoked.handle;
            let mut r = (StatusCode::OK, invoked.response.body).into_response();
            if let Ok(ct) = HeaderValue::from_str(&invoked.response.content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            let overhead = start.elapsed().saturating_sub(model);
            pool.metrics.record_latency(model, overhead);
            r.headers_mut().insert(MODEL_LATENCY, HeaderValue::from(model.as_micros() as u64));
            r.headers_mut().insert(OVERHEAD_LATENCY, HeaderValue::from(overhead.as_micros() as u64));
            r
        }
        Err(e) => e.into_response(),
    };
    pool.metrics.record_status(response.status().as_u16());
    response.headers_mut().insert(VERSION, HeaderValue::from(version));
    response
}
