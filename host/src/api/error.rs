//! Every API error is `{"error": {"code": ..., "message": ...}}` with a
//! stable `code` for scripts and a message that says what to do. Internal
//! detail (a host error, a path on the server) is never sent: it rides in
//! the response's extensions as [`Detail`] and the request-id layer logs it
//! with the request id, which the caller gets in `x-nimbus-request-id`.

use crate::pool::PoolError;
use crate::registry::{Refused, RegistryError};
use crate::runtime::{InvokeError, LoadError};
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after_s: Option<u64>,
    pub(crate) detail: Option<String>,
}

/// Every error answer of this API (the Open Inference Protocol's routes
/// under `/v2` answer [`OipErrorBody`] instead).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// Stable, for scripts to branch on (`not_found`, `bad_request`, ...).
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// An error answer of the Open Inference Protocol's routes (`/v2/...`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = OipError)]
pub struct OipErrorBody {
    /// What happened and what to do.
    pub error: String,
}

/// What the server log gets about an error and the caller does not.
#[derive(Debug, Clone)]
pub(crate) struct Detail(pub String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None, detail: None }
    }

    /// The same answer, with `detail` for the server log only.
    pub(crate) fn with_detail(self, detail: impl Into<String>) -> Self {
        ApiError { detail: Some(detail.into()), ..self }
    }

    /// Asks the caller to retry after `seconds`.
    pub(crate) fn retry_after(self, seconds: u64) -> Self {
        ApiError { retry_after_s: Some(seconds), ..self }
    }

    /// Rewrites server paths in the message: the data directory becomes
    /// `$DATA_DIR`, an artifact folder the `/model` the handler sees.
    pub(crate) fn scrubbed(mut self, data_dir: &std::path::Path) -> Self {
        self.message = scrub(&self.message, data_dir);
        self
    }

    pub(crate) fn not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("function `{name}` does not exist; `nimbus list` shows what does"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorInfo { code: self.code.to_owned(), message: self.message.clone() } };
        self.respond(body)
    }
}

impl ApiError {
    /// The answer in the Open Inference Protocol's shape, `{"error": "..."}`,
    /// which its clients read; status, retry and log detail as always.
    pub(crate) fn into_oip_response(self) -> Response {
        let body = OipErrorBody { error: self.message.clone() };
        self.respond(body)
    }

    fn respond(self, body: impl serde::Serialize) -> Response {
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        let detail = self.detail.unwrap_or(self.message);
        response.extensions_mut().insert(Detail(format!("{}: {detail}", self.code)));
        response
    }
}

impl ApiError {
    /// A journal (logs, events) that could not be read.
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the journal could not be read; see the server log")
            .with_detail(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DigestMismatch { .. } => Self::new(StatusCode::BAD_REQUEST, "digest_mismatch", e.to_string()),
            StoreError::MissingBlob(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "missing_blob",
                format!("{e}: upload it with PUT /v1/blobs/{{digest}} first"),
            ),
            StoreError::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string()),
            StoreError::Upload(_) => Self::bad_request(e.to_string()),
            StoreError::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{e}: another host changed the function meanwhile; retry"),
            ),
            StoreError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "records_unavailable",
                "the shared record store (etcd) cannot be reached; functions keep serving, changes wait for it",
            )
            .with_detail(e.to_string())
            .retry_after(1),
            StoreError::ObjectStore(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "objects_unavailable",
                "the object store cannot be reached; functions keep serving what this host has, uploads wait for it",
            )
            .with_detail(e.to_string())
            .retry_after(1),
            StoreError::Io(_) | StoreError::Db(_) | StoreError::Corrupted { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "the server could not store the data; its log has the details under this request's id",
            )
            .with_detail(e.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidName(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_name", m),
            RegistryError::InvalidBundle(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_config", m),
            RegistryError::NotFound(name) => Self::not_found(&name),
            RegistryError::OverCapacity(m) => Self::new(StatusCode::CONFLICT, "over_capacity", m),
            RegistryError::Refused(r) => {
                let (status, code) = match r {
                    Refused::NoVersion(_) => (StatusCode::NOT_FOUND, "version_not_found"),
                    Refused::NoAlias(_) => (StatusCode::NOT_FOUND, "alias_not_found"),
                    Refused::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_change"),
                };
                Self::new(status, code, r.to_string())
            }
            RegistryError::Store(e) => e.into(),
            RegistryError::Load(e) => {
                let code = match &e {
                    LoadError::Invalid(_) => "invalid_component",
                    LoadError::NotAHandler(_) => "not_a_handler",
                    LoadError::Init(_) => "init_failed",
                    LoadError::Artifacts(_) | LoadError::Model(_) => "invalid_model",
                    LoadError::AtCapacity => {
                        return Self::new(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", e.to_string()).retry_after(1);
                    }
                    LoadError::Unavailable(_) => {
                        return Self::new(StatusCode::SERVICE_UNAVAILABLE, "objects_unavailable", e.to_string())
                            .retry_after(1);
                    }
                    LoadError::Internal(_) => {
                        return Self::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "deploy failed on the server; its log has the details under this request's id",
                        )
                        .with_detail(e.to_string());
                    }
                };
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    format!("deploy refused, the previous version (if any) keeps serving: {e}"),
                )
            }
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        // The handler's own words for input problems; the full text otherwise.
        let message = match &e {
            InvokeError::BadInput(m) | InvokeError::UnsupportedMediaType(m) | InvokeError::NotAcceptable(m) => {
                m.clone()
            }
            _ => e.to_string(),
        };
        let (status, code) = match &e {
            InvokeError::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_input"),
            InvokeError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            InvokeError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
            InvokeError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "handler_failed"),
            InvokeError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "handler_trapped"),
            InvokeError::MemoryExceeded(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory_exceeded"),
            InvokeError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            InvokeError::AtCapacity => {
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    "this host is at capacity (instance slots or memory for requests); retry shortly",
                )
                .retry_after(1);
            }
            InvokeError::Internal(_) => {
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed; its log has the details under this request's id",
                )
                .with_detail(e.to_string());
            }
        };
        Self::new(status, code, message)
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Throttled { retry_after_s, .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", e.to_string()).retry_after(retry_after_s)
            }
            // A 503 (not a 429), so a front retries it on another host.
            PoolError::NoShare { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_share_here", e.to_string()).retry_after(1)
            }
            PoolError::Load(LoadError::AtCapacity) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", "this host's memory is in use; retry shortly")
                    .retry_after(1)
                    .with_detail(e.to_string())
            }
            PoolError::Load(LoadError::Unavailable(_)) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "objects_unavailable",
                "the function's files cannot be fetched from the object store now; retry shortly",
            )
            .retry_after(1)
            .with_detail(e.to_string()),
            PoolError::Load(e) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cold_start_failed",
                "the function could not start; its owner sees why in `nimbus describe`, and the server log has \
                 the details under this request's id",
            )
            .with_detail(e.to_string()),
            PoolError::Invoke(e) => e.into(),
        }
    }
}

/// `message` with `data_dir` (and the artifact folders in it) replaced.
pub(crate) fn scrub(message: &str, data_dir: &std::path::Path) -> String {
    let root = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let mut out = message.to_owned();
    for root in [root.display().to_string(), data_dir.display().to_string()] {
        let artifacts = format!("{root}/artifacts/");
        while let Some(at) = out.find(&artifacts) {
            let rest = &out[at + artifacts.len()..];
            let digest_len = rest.find('/').unwrap_or(rest.len());
            out.replace_range(at..at + artifacts.len() + digest_len, "/model");
        }
        if !root.is_empty() {
            out = out.replace(&root, "$DATA_DIR");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: ApiError) -> (u16, serde_json::Value, Option<String>) {
        let r = e.into_response();
        let detail = r.extensions().get::<Detail>().map(|d| d.0.clone());
        let status = r.status().as_u16();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = runtime.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), detail)
    }

    #[test]
    fn host_failures_say_nothing_internal() {
        let (status, json, detail) = body(InvokeError::Internal("/srv/nimbus/compiled/x: EIO".into()).into());
        assert_eq!(status, 500);
        assert_eq!(json["error"]["code"], "internal");
        assert!(!json.to_string().contains("/srv"), "{json}");
        assert!(detail.unwrap().contains("/srv/nimbus/compiled/x: EIO"));

        let load = LoadError::Artifacts("/srv/nimbus/blobs/sha256/ab: missing".into());
        let (status, json, detail) = body(PoolError::Load(load).into());
        assert_eq!((status, json["error"]["code"].as_str()), (500, Some("cold_start_failed")));
        assert!(!json.to_string().contains("/srv"), "{json}");
        assert!(detail.unwrap().contains("missing"));
    }

    #[test]
    fn guest_errors_keep_their_words_and_statuses() {
        let cases = [
            (InvokeError::BadInput("row 1".into()), 400, "bad_input"),
            (InvokeError::UnsupportedMediaType("csv only".into()), 415, "unsupported_media_type"),
            (InvokeError::NotAcceptable("json only".into()), 406, "not_acceptable"),
            (InvokeError::Trap("panicked".into()), 500, "handler_trapped"),
            (InvokeError::Timeout(std::time::Duration::from_secs(2)), 504, "timeout"),
            (InvokeError::AtCapacity, 503, "at_capacity"),
        ];
        for (e, status, code) in cases {
            let (s, json, _) = body(e.into());
            assert_eq!((s, json["error"]["code"].as_str()), (status, Some(code)));
        }
        let (s, json, _) = body(InvokeError::BadInput("row 1, column 3".into()).into());
        assert_eq!((s, json["error"]["message"].as_str()), (400, Some("row 1, column 3")));
    }

    #[test]
    fn throttles_say_when_to_retry() {
        let e = PoolError::Throttled {
            function: "f".into(),
            limit: crate::pool::Limit { max: 2, share: 2, hosts: 1 },
            retry_after_s: 1,
        };
        let r = ApiError::from(e).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
        // No share here: a 503, which a front retries on another host.
        let limit = crate::pool::Limit { max: 2, share: 0, hosts: 3 };
        let (status, json, _) = body(PoolError::NoShare { function: "f".into(), limit }.into());
        assert_eq!((status, json["error"]["code"].as_str()), (503, Some("no_share_here")));
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("admits 2 concurrent requests across 3 live hosts"), "{message}");
    }

    #[test]
    fn server_paths_are_scrubbed() {
        let root = std::path::Path::new("/srv/data");
        let m = "model `x`: Load model from /srv/data/artifacts/sha256-0123/x.onnx failed; cache /srv/data/compiled/k";
        assert_eq!(scrub(m, root), "model `x`: Load model from /model/x.onnx failed; cache $DATA_DIR/compiled/k");
    }
}
