//! The Open Inference Protocol (KServe's v2 protocol; Triton's, Seldon
//! MLServer's and OpenVINO Model Server's HTTP/REST API), so clients that
//! already speak it (`tritonclient`, KServe's `InferenceRESTClient`) call
//! Nimbus unchanged. It serves model-only deploys: their handler, the
//! built-in one, reads and writes the protocol's tensors inside the sandbox,
//! so a request's parsing is confined like any handler's work.
//!
//! The host's part is the framing. Health and metadata come from the
//! version's record (signatures read at deploy), so they need nothing
//! loaded. An infer call is an ordinary invocation (pool, limits, log,
//! metrics); the binary-data extension's `Inference-Header-Content-Length`
//! header travels to the handler as a content-type parameter and back.
//! Errors are the protocol's `{"error": "..."}`.

use super::auth::Invoker;
use super::error::ApiError;
use super::invoke::Call;
use super::{App, RequestId};
use crate::pool::Pool;
use crate::registry::{Deployed, Target};
use crate::runtime::{Invoked, Request};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The binary-data extension's header: the JSON part's length in bytes.
pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";
/// How a request or answer with binary tensors travels between the host and
/// the built-in handler: `application/vnd.nimbus.oip-binary; header-length=N`.
const BINARY: &str = "application/vnd.nimbus.oip-binary";

/// `GET /v2/health/live`.
pub(super) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: the server serves from the moment it listens
/// (functions load on their first request).
pub(super) async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "ready": true }))
}

/// `GET /v2`: the server's metadata.
pub(super) async fn server() -> Json<serde_json::Value> {
    Json(json!({ "name": "nimbus", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }))
}

/// `/v2/models/{name}` or `/v2/models/{name}/versions/{version}`: a version
/// number, or an alias.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ModelPath {
    name: String,
    version: Option<String>,
}

/// The version a protocol request names and its pool, if it speaks the
/// protocol.
fn resolve(app: &App, path: &ModelPath) -> Result<(Arc<Deployed>, u64, Arc<Pool>), ApiError> {
    let deployed = app.registry.get(&path.name).ok_or_else(|| ApiError::not_found(&path.name))?;
    let target = match path.version.as_deref() {
        None => Target::Live,
        Some(v) => v.parse().map_or_else(|_| Target::Alias(v.to_owned()), Target::Version),
    };
    let (version, pool) = app.registry.route(&deployed, &target)?;
    if !deployed.record.versions[&version].builtin {
        return Err(ApiError::bad_request(format!(
            "version {version} of `{}` runs a handler of its own; the Open Inference Protocol serves model-only \
             deploys (`nimbus deploy {} --model-dir DIR` without --wasm): call this one at \
             /v1/functions/{}/invocations",
            path.name, path.name, path.name
        )));
    }
    Ok((deployed, version, pool))
}

/// `GET /v2/models/{name}[/versions/{version}]`: inputs and outputs of the
/// graph, as read at deploy (-1 for dynamic dimensions; a ZipMap output
/// lists its classes).
pub(super) async fn metadata(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    Path(path): Path<ModelPath>,
) -> Response {
    let answer = auth.and_then(|_| resolve(&app, &path)).map(|(deployed, version, _)| {
        let v = &deployed.record.versions[&version];
        let signature = v.graphs.values().next().cloned().unwrap_or_default();
        let versions: Vec<String> = deployed.record.versions.keys().map(u64::to_string).collect();
        Json(json!({
            "name": path.name,
            "versions": versions,
            "platform": "onnxruntime_onnx",
            "inputs": signature.inputs,
            "outputs": signature.outputs,
        }))
    });
    answer.map_or_else(ApiError::into_oip_response, IntoResponse::into_response)
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: a version at zero is
/// ready too; its first request loads it.
pub(super) async fn model_ready(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    Path(path): Path<ModelPath>,
) -> Response {
    match auth.and_then(|_| resolve(&app, &path)) {
        Ok(_) => Json(json!({ "name": path.name, "ready": true })).into_response(),
        Err(e) => e.into_oip_response(),
    }
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub(super) async fn infer(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    Path(path): Path<ModelPath>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let (deployed, version, pool) = match auth.and_then(|_| resolve(&app, &path)) {
        Ok(resolved) => resolved,
        Err(e) => return e.into_oip_response(),
    };
    let limit = deployed.record.versions[&version].config.payload_limit_bytes;
    let json_length = headers.get(HEADER_LENGTH).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request(format!("{HEADER_LENGTH} must be the JSON part's length in bytes")))
    });
    let prepare = |body: Bytes| {
        let content_type = match json_length.transpose()? {
            None => "application/json".to_owned(),
            Some(n) if n <= body.len() as u64 => format!("{BINARY}; header-length={n}"),
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "{HEADER_LENGTH} is {n}, but the body has only {} bytes",
                    body.len()
                )));
            }
        };
        Ok(Request { content_type, accept: "application/json".to_owned(), body: body.to_vec() })
    };
    let call = Call { app: &app, id: &id, name: &path.name, version, pool, limit, start };
    call.run(&headers, body, prepare, render).await
}

/// The handler's answer in the protocol's framing.
fn render(result: Result<Invoked, ApiError>) -> Response {
    let invoked = match result {
        Ok(invoked) => invoked,
        Err(e) => return e.into_oip_response(),
    };
    let json_length = binary_header_length(&invoked.response.content_type);
    let mut response = (StatusCode::OK, invoked.response.body).into_response();
    let headers = response.headers_mut();
    match json_length {
        Some(n) => {
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    response
}

/// The JSON part's length of a binary answer's content type.
fn binary_header_length(content_type: &str) -> Option<u64> {
    let (media, params) = content_type.split_once(';')?;
    (media.trim() == BINARY).then_some(())?;
    params.split(';').find_map(|p| p.trim().strip_prefix("header-length=")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_answers_say_their_json_length() {
        assert_eq!(binary_header_length("application/vnd.nimbus.oip-binary; header-length=42"), Some(42));
        assert_eq!(binary_header_length("application/vnd.nimbus.oip-binary;header-length=7"), Some(7));
        assert_eq!(binary_header_length("application/json"), None);
        assert_eq!(binary_header_length("application/vnd.nimbus.oip-binary; header-length=x"), None);
        assert_eq!(binary_header_length("text/plain; header-length=3"), None);
    }
}
