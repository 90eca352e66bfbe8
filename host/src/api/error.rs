//! Every API error is `{"error": {"code": ..., "message": ...}}` with a
//! stable `code` for scripts and a message that says what to do. Internal
//! detail is logged with the request id, not sent.

use crate::pool::PoolError;
use crate::registry::RegistryError;
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
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None }
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
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
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
            StoreError::Io(_) | StoreError::Db(_) => {
                tracing::error!("storage failure: {e}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    "the server could not store the data; see its log",
                )
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidName(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_name", m),
            RegistryError::InvalidBundle(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_config", m),
            RegistryError::NotFound(name) => Self::not_found(&name),
            RegistryError::Store(e) => e.into(),
            RegistryError::Load(e) => {
                let code = match &e {
                    LoadError::Invalid(_) => "invalid_component",
                    LoadError::NotAHandler(_) => "not_a_handler",
                    LoadError::Init(_) => "init_failed",
                    LoadError::Artifacts(_) | LoadError::Model(_) => "invalid_model",
                    LoadError::Internal(_) => {
                        tracing::error!("load failure: {e}");
                        return Self::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "deploy failed on the server; see its log",
                        );
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
            InvokeError::Internal(_) => {
                tracing::error!("invocation failure: {e}");
                return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed; see its log");
            }
        };
        Self::new(status, code, message)
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Throttled { retry_after_s, .. } => ApiError {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", e.to_string())
            },
            PoolError::Load(e) => {
                tracing::error!("cold start failed: {e}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cold_start_failed",
                    format!("the function could not start: {e}"),
                )
            }
            PoolError::Invoke(e) => e.into(),
        }
    }
}
