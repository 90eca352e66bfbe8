//! Bearer tokens. The admin token guards everything that changes or lists
//! functions; invocation is open unless the server was given an invoke
//! token (the admin token is accepted there too). Comparison is constant
//! time, so response timing says nothing about a token's prefix.

use super::error::ApiError;
use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

/// The server's tokens.
#[derive(Clone)]
pub struct Tokens {
    /// Required to deploy, delete, list and describe.
    pub admin: String,
    /// Required to invoke, when set.
    pub invoke: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn unauthorized(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what} needs `Authorization: Bearer <token>`; pass --token or set NIMBUS_TOKEN"),
    )
}

impl Tokens {
    /// Admin access.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if matches(t, &self.admin) => Ok(()),
            _ => Err(unauthorized("this operation")),
        }
    }

    /// Invoke access.
    pub(crate) fn invoke(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.invoke else {
            return Ok(());
        };
        match bearer(headers) {
            Some(t) if matches(t, expected) || matches(t, &self.admin) => Ok(()),
            _ => Err(unauthorized("invocation")),
        }
    }
}
