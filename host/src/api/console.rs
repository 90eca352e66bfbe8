//! The web console's files, compiled into the binary (see `build.rs`):
//! `/console/` is its page, everything under it a hashed asset that never
//! changes. The console itself calls the API with the token the user
//! signs in with; the files need none.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// (path under `console/dist`, bytes).
static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console.rs"));

/// The console's own rules for the browser: its scripts and styles only
/// (uPlot sizes charts with inline styles), no framing, no referrer.
const POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
                      connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(name, _)| *name == path).map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The web console: redirects to `/console/`.
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "console",
    tag = "console",
    responses((status = 308, description = "To `/console/`", headers(("location" = String)))),
)]
pub(super) async fn root() -> Redirect {
    Redirect::permanent("/console/")
}

/// The web console's page (it signs in with a token and calls this API).
/// Its assets, `/console/{*path}`, are files of the page, not part of the
/// API, and are left out of this document.
#[utoipa::path(
    get,
    path = "/console/",
    operation_id = "console_page",
    tag = "console",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 404, description = "This binary was built without its console", body = String,
            content_type = "text/plain"),
    ),
)]
pub(super) async fn index() -> Response {
    serve("index.html")
}

pub(super) async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let (path, bytes) = match file(path) {
        Some(bytes) => (path, bytes),
        // Any other page of the console is its one page.
        None if !path.starts_with("assets/") => match file("index.html") {
            Some(bytes) => ("index.html", bytes),
            None => return not_built(),
        },
        None => return StatusCode::NOT_FOUND.into_response(),
    };
    let cache = if path == "index.html" { "no-cache" } else { "public, max-age=31536000, immutable" };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn not_built() -> Response {
    let message = "This nimbus binary was built without its console: run `make build` (it builds console/ with npm) \
                   and start the new binary.";
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_typed_by_extension() {
        assert_eq!(super::content_type("assets/index-3f2a.js"), "text/javascript; charset=utf-8");
        assert_eq!(super::content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(super::content_type("blob"), "application/octet-stream");
    }
}
