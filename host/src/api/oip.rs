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
use super::error::{ApiError, OipErrorBody};
use super::extract::Path;
use super::invoke::Call;
use super::openapi::{Binary, error_answers};
use super::{App, RequestId};
use crate::nn::Port;
use crate::pool::Pool;
use crate::registry::{Deployed, Target};
use crate::runtime::{Invoked, Request};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use utoipa::IntoResponses;
use utoipa::openapi::RefOr;

/// The binary-data extension's header: the JSON part's length in bytes.
pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";
/// How a request or answer with binary tensors travels between the host and
/// the built-in handler: `application/vnd.nimbus.oip-binary; header-length=N`.
const BINARY: &str = "application/vnd.nimbus.oip-binary";

/// `GET /v2/health/live` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Live {
    live: bool,
}

/// `GET /v2/health/ready` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    ready: bool,
}

/// `GET /v2/health/live`.
#[utoipa::path(
    get,
    path = "/v2/health/live",
    operation_id = "oip_live",
    tag = "oip",
    responses((status = 200, description = "The server is live", body = Live)),
)]
pub(super) async fn live() -> Json<Live> {
    Json(Live { live: true })
}

/// `GET /v2/health/ready`: the server serves from the moment it listens
/// (functions load on their first request).
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    operation_id = "oip_ready",
    tag = "oip",
    responses((status = 200, description = "The server is ready", body = Ready)),
)]
pub(super) async fn ready() -> Json<Ready> {
    Json(Ready { ready: true })
}

/// What `GET /v2` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    /// The protocol's extensions served.
    extensions: Vec<&'static str>,
}

/// `GET /v2`: the server's metadata.
#[utoipa::path(
    get,
    path = "/v2",
    operation_id = "oip_server",
    tag = "oip",
    responses((status = 200, description = "The server's metadata", body = ServerMetadata)),
)]
pub(super) async fn server() -> Json<ServerMetadata> {
    Json(ServerMetadata { name: "nimbus", version: env!("CARGO_PKG_VERSION"), extensions: vec!["binary_tensor_data"] })
}

/// `/v2/models/{name}` or `/v2/models/{name}/versions/{version}`: a version
/// number, or an alias.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ModelPath {
    name: String,
    version: Option<String>,
}

/// What `GET /v2/models/{name}[/versions/{version}]` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ModelMetadata {
    name: String,
    /// Every kept version's number.
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
}

/// What `GET /v2/models/{name}[/versions/{version}]/ready` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ModelReady {
    name: String,
    ready: bool,
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
async fn metadata(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    let answer = auth.and(path).and_then(|Path(path)| {
        let (deployed, version, _) = resolve(&app, &path)?;
        let v = &deployed.record.versions[&version];
        let signature = v.graphs.values().next().cloned().unwrap_or_default();
        let versions: Vec<String> = deployed.record.versions.keys().map(u64::to_string).collect();
        Ok(Json(ModelMetadata {
            name: path.name,
            versions,
            platform: "onnxruntime_onnx",
            inputs: signature.inputs,
            outputs: signature.outputs,
        }))
    });
    answer.map_or_else(ApiError::into_oip_response, IntoResponse::into_response)
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: a version at zero is
/// ready too; its first request loads it.
async fn model_ready(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    let answer = auth.and(path).and_then(|Path(path)| {
        resolve(&app, &path)?;
        Ok(Json(ModelReady { name: path.name, ready: true }))
    });
    answer.map_or_else(ApiError::into_oip_response, IntoResponse::into_response)
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
async fn infer(
    auth: Result<Invoker, ApiError>,
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    path: Result<Path<ModelPath>, ApiError>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let resolved = auth.and(path).and_then(|Path(path)| Ok((resolve(&app, &path)?, path)));
    let ((deployed, version, pool), path) = match resolved {
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

// The routes, one handler each (a version in the path or not: the same
// work), documented for the OpenAPI document. Errors are the protocol's.

/// What a model's metadata and readiness answer besides 200 and 404.
struct ModelErrors;

impl IntoResponses for ModelErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_answers::<OipErrorBody>(&[
            ("400", "The version runs a handler of its own (not a model-only deploy)"),
            ("401", "The server has an invoke token"),
        ])
    }
}

/// What inference answers besides 200 and 404.
struct InferErrors;

impl IntoResponses for InferErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_answers::<OipErrorBody>(&[
            ("400", "A malformed request, or a version that runs a handler of its own"),
            ("401", "The server has an invoke token"),
            ("406", "The handler cannot answer JSON"),
            ("413", "Over the function's `payload_limit_bytes`"),
            ("415", "The handler does not read the request"),
            ("429", "Throttled at `max_concurrency`; `Retry-After` says when to retry"),
            ("500", "The model or handler failed"),
            ("503", "At capacity, or no share of the function here; `Retry-After` says when to retry"),
            ("504", "Past the function's `timeout_s`"),
        ])
    }
}

/// A model's metadata: its live version's inputs and outputs.
#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    operation_id = "oip_model_metadata",
    tag = "oip",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "The function (a model-only deploy)")),
    responses(
        (status = 200, description = "The graph's inputs and outputs, as read at deploy", body = ModelMetadata),
        ModelErrors,
        (status = 404, description = "No such function", body = OipErrorBody),
    ),
)]
pub(super) async fn model_metadata(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    metadata(auth, state, path).await
}

/// A model version's metadata.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    operation_id = "oip_version_metadata",
    tag = "oip",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function (a model-only deploy)"),
        ("version" = String, Path, description = "A version number, or an alias"),
    ),
    responses(
        (status = 200, description = "The graph's inputs and outputs, as read at deploy", body = ModelMetadata),
        ModelErrors,
        (status = 404, description = "No such function, version or alias", body = OipErrorBody),
    ),
)]
pub(super) async fn version_metadata(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    metadata(auth, state, path).await
}

/// Whether a model is ready (a version scaled to zero is: its first request loads it).
#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    operation_id = "oip_model_ready",
    tag = "oip",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "The function (a model-only deploy)")),
    responses(
        (status = 200, description = "Ready", body = ModelReady),
        ModelErrors,
        (status = 404, description = "No such function", body = OipErrorBody),
    ),
)]
pub(super) async fn model_ready_live(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    model_ready(auth, state, path).await
}

/// Whether a model version is ready.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    operation_id = "oip_version_ready",
    tag = "oip",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function (a model-only deploy)"),
        ("version" = String, Path, description = "A version number, or an alias"),
    ),
    responses(
        (status = 200, description = "Ready", body = ModelReady),
        ModelErrors,
        (status = 404, description = "No such function, version or alias", body = OipErrorBody),
    ),
)]
pub(super) async fn version_ready(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    model_ready(auth, state, path).await
}

/// Runs the model's live version (picked by weight when traffic is split).
#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    operation_id = "oip_model_infer",
    tag = "oip",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function (a model-only deploy)"),
        ("inference-header-content-length" = Option<u64>, Header,
            description = "Binary data extension: the JSON part's length; binary tensors follow it"),
    ),
    request_body(content(
        (InferenceRequest = "application/json"),
        (Binary = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs; with binary outputs, `application/octet-stream` whose first \
            `inference-header-content-length` bytes are the JSON part",
            content((InferenceResponse = "application/json"), (Binary = "application/octet-stream")),
            headers(("inference-header-content-length" = u64,
                description = "With binary outputs: the JSON part's length"))),
        InferErrors,
        (status = 404, description = "No such function", body = OipErrorBody),
    ),
)]
pub(super) async fn model_infer(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    path: Result<Path<ModelPath>, ApiError>,
    body: Body,
) -> Response {
    infer(auth, state, request_id, headers, path, body).await
}

/// Runs a model version.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    operation_id = "oip_version_infer",
    tag = "oip",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "The function (a model-only deploy)"),
        ("version" = String, Path, description = "A version number, or an alias"),
        ("inference-header-content-length" = Option<u64>, Header,
            description = "Binary data extension: the JSON part's length; binary tensors follow it"),
    ),
    request_body(content(
        (InferenceRequest = "application/json"),
        (Binary = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs; with binary outputs, `application/octet-stream` whose first \
            `inference-header-content-length` bytes are the JSON part",
            content((InferenceResponse = "application/json"), (Binary = "application/octet-stream")),
            headers(("inference-header-content-length" = u64,
                description = "With binary outputs: the JSON part's length"))),
        InferErrors,
        (status = 404, description = "No such function, version or alias", body = OipErrorBody),
    ),
)]
pub(super) async fn version_infer(
    auth: Result<Invoker, ApiError>,
    state: State<Arc<App>>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    path: Result<Path<ModelPath>, ApiError>,
    body: Body,
) -> Response {
    infer(auth, state, request_id, headers, path, body).await
}

/// An inference request, as the protocol defines it (the built-in handler
/// reads it, inside the sandbox; the host passes it through).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct InferenceRequest {
    id: Option<String>,
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    inputs: Vec<RequestInput>,
    outputs: Option<Vec<RequestOutput>>,
}

/// An input tensor.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct RequestInput {
    name: String,
    shape: Vec<i64>,
    /// `FP32`, `INT64`, `BOOL`, `BYTES`, ...
    datatype: String,
    /// `binary_data_size` for a tensor in the binary part.
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// The elements, row-major (flat or nested); absent for a tensor in the binary part.
    data: Option<serde_json::Value>,
}

/// An output asked for.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct RequestOutput {
    name: String,
    /// `binary_data: true` asks for it in the binary part.
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An inference response, as the protocol defines it (written by the
/// built-in handler).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct InferenceResponse {
    model_name: String,
    model_version: Option<String>,
    id: Option<String>,
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    outputs: Vec<ResponseOutput>,
}

/// An output tensor.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct ResponseOutput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// `binary_data_size` for a tensor in the binary part.
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// The elements, row-major; absent for a tensor in the binary part.
    data: Option<serde_json::Value>,
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
