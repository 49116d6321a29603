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
/// 32×32, PNG in an ICO container: what browsers ask `/favicon.ico` for by themselves.
const ICON: &[u8] = include_bytes!("dashboard/favicon.ico");

/// Only this origin's script and style; reports render in a sandboxed frame. Framing by
/// other sites is refused with X-Frame-Options rather than CSP `frame-ancestors`, which the
/// report's `srcdoc` frame would inherit (and then refuse to render in its own page).
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'none'";

fn page(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

pub(crate) async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// The script, given belt-core's event types (`EVENT_TYPES`): the stream names each
/// message's type in its `event:` line, and an EventSource hands a named event only to the
/// listeners of that name, so the page listens to every type.
static SCRIPT_WITH_TYPES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let types = serde_json::to_string(belt_core::EventKind::TYPES).unwrap_or_else(|_| "[]".into());
    SCRIPT.replacen("'use strict';\n", &format!("'use strict';\nconst EVENT_TYPES = {types};\n"), 1)
});

pub(crate) async fn script() -> Response {
    page(SCRIPT_WITH_TYPES.as_str(), "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}

pub(crate) async fn favicon() -> Response {
    let mut r = page(ICON, "image/x-icon");
    // The icon never changes within a version: browsers need not ask again for a day.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_knows_every_event_type_after_its_strict_directive() {
        let script = super::SCRIPT_WITH_TYPES.as_str();
        let at = script.find("const EVENT_TYPES = [").expect("the types are given");
        assert!(script.find("'use strict';").is_some_and(|s| s < at), "after the directive");
        for t in belt_core::EventKind::TYPES {
            assert!(script[at..].contains(&format!("\"{t}\"")), "{t}");
        }
        assert!(script.contains("for (const type of EVENT_TYPES)"), "the page listens to each");
    }
}
