//! Bearer tokens, checked by one extractor per scope before a handler runs
//! (so before any lookup: an unauthenticated caller learns nothing about
//! what exists):
//! - [`Admin`]: deploy, delete, list, describe, blobs;
//! - [`Invoker`]: invocations, open unless the server has an invoke token
//!   (the admin token is accepted too);
//! - [`MetricsReader`]: `/metrics`, which names every function, so it needs
//!   the metrics token or the admin one unless the server opens it.
//!
//! Comparison is constant time, so response timing says nothing about a
//! token's prefix.

use super::App;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The server's tokens.
#[derive(Clone)]
pub struct Tokens {
    /// Required to deploy, delete, list and describe.
    pub admin: String,
    /// Required to invoke, when set.
    pub invoke: Option<String>,
    /// Accepted for `/metrics`, besides the admin token.
    pub metrics: Option<String>,
    /// Whether `/metrics` needs no token at all (a trusted network).
    pub metrics_open: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("metrics_open", &self.metrics_open).finish_non_exhaustive()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Whether `headers` carry one of `accepted`.
fn allowed<'a>(headers: &HeaderMap, accepted: impl IntoIterator<Item = &'a str>) -> bool {
    bearer(headers).is_some_and(|t| accepted.into_iter().fold(false, |ok, expected| ok | matches(t, expected)))
}

fn unauthorized(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what} needs `Authorization: Bearer <token>`; pass --token or set NIMBUS_TOKEN"),
    )
}

/// The caller holds the admin token.
#[derive(Debug)]
pub(crate) struct Admin;

/// The caller may invoke functions.
#[derive(Debug)]
pub(crate) struct Invoker;

/// The caller may read `/metrics`.
#[derive(Debug)]
pub(crate) struct MetricsReader;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        if allowed(&parts.headers, [app.tokens.admin.as_str()]) {
            Ok(Admin)
        } else {
            Err(unauthorized("this operation"))
        }
    }
}

impl FromRequestParts<Arc<App>> for Invoker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let t = &app.tokens;
        match &t.invoke {
            None => Ok(Invoker),
            Some(invoke) if allowed(&parts.headers, [invoke.as_str(), t.admin.as_str()]) => Ok(Invoker),
            Some(_) => Err(unauthorized("invocation")),
        }
    }
}

impl FromRequestParts<Arc<App>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let t = &app.tokens;
        let accepted = t.metrics.as_deref().into_iter().chain([t.admin.as_str()]);
        if t.metrics_open || allowed(&parts.headers, accepted) {
            Ok(MetricsReader)
        } else {
            Err(unauthorized("/metrics (unless the server runs with --metrics-open)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    #[test]
    fn only_an_exact_bearer_token_is_allowed() {
        assert!(allowed(&headers(Some("abc")), ["abc"]));
        assert!(allowed(&headers(Some("abc")), ["x", "abc"]));
        for wrong in [None, Some("ab"), Some("abcd"), Some("")] {
            assert!(!allowed(&headers(wrong), ["abc"]), "{wrong:?}");
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!allowed(&basic, ["abc"]));
    }
}
