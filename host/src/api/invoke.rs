//! `POST /v1/functions/{name}/invocations`: bytes and content types pass
//! through to the handler, its bytes and content type come back, with the
//! request id, the function version and the model and overhead latencies in
//! headers (SageMaker's ModelLatency and OverheadLatency). The caller is
//! authenticated before the function is looked up.

use super::App;
use super::auth::Invoker;
use super::error::ApiError;
use crate::runtime::Request;
use axum::body::Body;
use axum::extract::{Path, State};
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

fn header_str(headers: &HeaderMap, name: header::HeaderName, default: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or(default).to_owned()
}

pub(super) async fn invoke(
    _: Invoker,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let Some(deployed) = app.registry.get(&name) else {
        return ApiError::not_found(&name).into_response();
    };
    let result = async {
        let limit = deployed.record.config.payload_limit_bytes;
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
        Ok::<_, ApiError>(deployed.pool.invoke(request).await?)
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
            deployed.pool.metrics.record_latency(model, overhead);
            r.headers_mut().insert(MODEL_LATENCY, HeaderValue::from(model.as_micros() as u64));
            r.headers_mut().insert(OVERHEAD_LATENCY, HeaderValue::from(overhead.as_micros() as u64));
            r
        }
        Err(e) => e.into_response(),
    };
    deployed.pool.metrics.record_status(response.status().as_u16());
    response.headers_mut().insert(VERSION, HeaderValue::from(deployed.record.version));
    response
}
