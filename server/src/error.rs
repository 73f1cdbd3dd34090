//! One error type for the HTTP boundary, answered as RFC 9457 problem+json with a stable `code`
//! a phone can switch on. Internal errors are logged with their context and answered with a
//! bare 500: their text never reaches a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// A client-facing problem: status, stable code, and a detail naming what is wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Every stable problem code with its status and title.
pub const CODES: &[(&str, u16, &str)] = &[
    (
        "invalid_body",
        400,
        "The request body does not fit the schema",
    ),
    ("invalid_query", 400, "The query string is not valid"),
    ("invalid_path", 400, "The path is not valid"),
    (
        "invalid_upload_metadata",
        400,
        "Upload-Metadata is missing or not valid",
    ),
    (
        "hash_mismatch",
        400,
        "The bytes do not hash to the name given",
    ),
    (
        "incomplete_body",
        400,
        "The body ended before its declared length",
    ),
    ("unauthorized", 401, "Authentication is required"),
    ("forbidden", 403, "This role may not do this"),
    ("not_found", 404, "Not found"),
    ("no_route", 404, "No such endpoint"),
    (
        "method_not_allowed",
        405,
        "Method not allowed on this endpoint",
    ),
    (
        "submission_conflict",
        409,
        "The submission id is taken by different content",
    ),
    ("username_taken", 409, "The username is taken"),
    (
        "offset_mismatch",
        409,
        "Upload-Offset does not match the upload",
    ),
    ("claimed_by_other", 409, "Another reviewer holds the claim"),
    ("state_conflict", 409, "The state is not the one expected"),
    (
        "tus_version_unsupported",
        412,
        "Tus-Resumable must be 1.0.0",
    ),
    ("payload_too_large", 413, "The body is larger than allowed"),
    (
        "unsupported_media_type",
        415,
        "The content is not of a supported type",
    ),
    (
        "missing_blobs",
        422,
        "Photos referenced are not uploaded yet",
    ),
    ("unknown_campaign", 422, "No such campaign"),
    ("rate_limited", 429, "Too many requests"),
    ("internal", 500, "Internal server error"),
    ("not_ready", 503, "A dependency does not answer"),
];

impl Problem {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        let (status, title) = CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, s, t)| (*s, *t))
            .unwrap_or((500, "Internal server error"));
        Problem {
            kind: format!("https://huikan.invalid/problems/{code}"),
            title,
            status,
            detail: detail.into(),
            code,
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[derive(Debug)]
pub enum AppError {
    Problem(Box<Problem>),
    Internal(anyhow::Error),
}

impl AppError {
    pub fn problem(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Problem(Box::new(Problem::new(code, detail)))
    }
    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::problem("invalid_body", detail)
    }
    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::problem("invalid_query", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::problem("not_found", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::problem("forbidden", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::problem("unauthorized", detail)
    }
}

impl From<Problem> for AppError {
    fn from(p: Problem) -> Self {
        AppError::Problem(Box::new(p))
    }
}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::Internal(e.into())
            }
        }
    )*};
}
internal_from!(
    anyhow::Error,
    sqlx::Error,
    std::io::Error,
    tokio::task::JoinError
);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let problem = match self {
            AppError::Problem(p) => *p,
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                Problem::new("internal", "the server failed; the request may be retried")
            }
        };
        problem_response(&problem)
    }
}

pub fn problem_response(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (problem.status(), body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    set_retry_after(problem, &mut response);
    response
}

/// A problem that says when to try again (`retry_after`, whole seconds) says it in the
/// `Retry-After` header too, where HTTP clients look.
pub fn set_retry_after(problem: &Problem, response: &mut Response) {
    if let Some(secs) = problem.extra.get("retry_after").and_then(Value::as_u64) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
