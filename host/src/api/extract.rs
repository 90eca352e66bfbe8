//! Axum's extractors with this API's JSON errors: axum's own rejections
//! answer `text/plain`, which no client of this API expects (and which the
//! OpenAPI document does not promise).

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `axum::extract::Path`, rejected with a JSON error.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(t)) => Ok(Path(t)),
            Err(e) => Err(rejected(e.status(), e.body_text())),
        }
    }
}

/// A body read whole (`Bytes`), its rejection (over axum's 2 MB default
/// limit, or cut off) as a JSON error.
pub(crate) fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| rejected(e.status(), e.body_text()))
}

fn rejected(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    ApiError::new(status, code, message)
}
