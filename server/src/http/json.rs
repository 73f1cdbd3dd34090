//! Body extractors whose every rejection is our problem+json: malformed JSON or form data, a
//! wrong type, an unknown field, a value over its bound and an oversized body each get a stable
//! code and a detail naming the field.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::AppError;

pub use huikan_shared::de::present;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let bytes = body_bytes(req, state).await?;
        parse_typed(&bytes).map(ApiJson)
    }
}

/// An `application/x-www-form-urlencoded` body (the console's forms), rejected like JSON.
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(AppError::problem(
                "unsupported_media_type",
                "a form is sent as application/x-www-form-urlencoded",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
        serde_path_to_error::deserialize(de)
            .map(ApiForm)
            .map_err(|e| AppError::invalid_body(describe(&e)))
    }
}

/// The raw body as JSON, for endpoints that hash what was received before typing it.
pub struct RawJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let bytes = body_bytes(req, state).await?;
        parse_typed(&bytes).map(RawJson)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::problem("payload_too_large", "the JSON body is larger than allowed")
        } else {
            AppError::invalid_body(format!("the body could not be read: {rejection}"))
        }
    })
}

fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.is_empty() {
        return Err(AppError::invalid_body(
            "the body is empty; a JSON object is expected",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| AppError::invalid_body(describe(&e)))?;
    de.end().map_err(|e| {
        AppError::invalid_body(format!("trailing characters after the JSON value: {e}"))
    })?;
    Ok(value)
}

/// Typing a JSON value already parsed, naming the field that does not fit.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| describe(&e))
}

pub(crate) fn describe<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}
