//! Errors: [`ServerError`] for starting the server, [`ApiError`] for what a request gets back.
//!
//! Every API error is a JSON object `{"error": {"code": "...", "message": "..."}}` with the
//! HTTP status that fits; the message says what was wrong and how to fix it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {addr} without an explicit API token: anyone who can reach that address \
         could start paid runs. Set BELT_API_TOKEN, or listen on 127.0.0.1"
    )]
    TokenRequired { addr: String },
    #[error("cannot read or write the API token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
    #[error("the API token in {path} is empty; delete the file to have a new one generated")]
    EmptyTokenFile { path: String },
    #[error("cannot generate an API token: {0}")]
    Random(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the MCP session failed: {0}")]
    Mcp(String),
    #[error("the server stopped with an error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a request gets when it cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("missing or wrong API token: send `Authorization: Bearer <token>` (see `belt serve` output)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no run has the id `{0}`; GET /v1/runs lists the runs")]
    UnknownRun(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no such endpoint: {0}; GET /openapi.json lists them")]
    NoRoute(String),
    #[error("{message}")]
    TooMany { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("the request body is too large ({0}); the limit is 1 MiB unless the server sets another")]
    TooLarge(String),
    #[error("the server is shutting down; retry on another instance or after it restarts")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownRun(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(_) => "invalid",
            ApiError::UnknownRun(_) => "unknown_run",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoRoute(_) => "no_route",
            ApiError::TooMany { .. } => "too_many_requests",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMedia(_) => "unsupported_media_type",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response =
            (status, Json(Body { error: Detail { code: self.code(), message: self.to_string() } }))
                .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooMany { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<belt_core::store::StoreError> for ApiError {
    fn from(e: belt_core::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// axum's JSON rejections in our error shape: syntax errors are 400 with the parse error,
/// a body of the wrong shape (unknown or missing fields) 422, an oversized body 413, a body
/// that is not declared JSON 415.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        let status = r.status();
        let text = r.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(text),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMedia(format!(
                "{text}; send the body as JSON with Content-Type: application/json"
            )),
            _ => ApiError::BadRequest(text),
        }
    }
}
