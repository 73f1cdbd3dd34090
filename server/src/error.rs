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
    ("insufficient_storage", 507, "The server's disk is full"),
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
        problem_response(&self.into_problem())
    }
}

impl AppError {
    /// The problem a client is told: its own, or for an internal error, 503/507 when a
    /// dependency failed (see [`unavailable`]) and a bare 500 otherwise, logged with its context.
    pub fn into_problem(self) -> Problem {
        match self {
            AppError::Problem(p) => *p,
            AppError::Internal(e) => match unavailable(&e) {
                Some(problem) => {
                    tracing::warn!(error = ?e, code = problem.code, "a dependency failed");
                    problem
                }
                None => {
                    tracing::error!(error = ?e, "internal error");
                    Problem::new("internal", "the server failed; the request may be retried")
                }
            },
        }
    }
}

/// A failure of what the server stands on rather than of the request: the database or the photo
/// store not answering (503 `not_ready`), the disk full (507 `insufficient_storage`). Nothing of
/// the request was acknowledged, and `Retry-After` says when to try again; the server recovers
/// by itself when the dependency does.
pub fn unavailable(e: &anyhow::Error) -> Option<Problem> {
    let full = || {
        Problem::new(
            "insufficient_storage",
            "the server's disk is full; nothing of this request was stored. Try again later",
        )
        .with("retry_after", 60)
    };
    let not_answering = |what: &str| {
        Problem::new(
            "not_ready",
            format!(
                "{what} does not answer; nothing of this request was stored. Try again shortly"
            ),
        )
        .with("retry_after", 5)
    };
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded)
        {
            return Some(full());
        }
        if cause.is::<crate::store::Unavailable>() {
            return Some(not_answering("the photo store"));
        }
        if let Some(db) = cause.downcast_ref::<sqlx::Error>() {
            match db {
                sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                    return Some(full());
                }
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => return Some(not_answering("the database")),
                sqlx::Error::Database(d) => {
                    let code = d.code().unwrap_or_default();
                    // SQLite's SQLITE_FULL (13); PostgreSQL's disk_full (53100).
                    if code == "13" || code == "53100" {
                        return Some(full());
                    }
                    // PostgreSQL: connection exceptions (08…), shutting down or starting up
                    // (57P01–57P03), too many connections (53300).
                    if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                        return Some(not_answering("the database"));
                    }
                }
                _ => {}
            }
        }
    }
    None
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
