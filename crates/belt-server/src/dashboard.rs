//! The dashboard at `/`: one HTML page with its script and style, embedded in the binary
//! (no CDN, no build step). The page itself holds no data, so it is served without the
//! token; it asks for the token once, keeps it in the browser's localStorage, and calls
//! the API with it (the event stream takes it as `?token=`, as EventSource cannot send
//! headers).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Only this origin's script and style; reports render in a sandboxed frame.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub(crate) async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}
