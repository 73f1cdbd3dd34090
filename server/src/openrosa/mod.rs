//! OpenRosa, so that ODK Collect, KoboCollect and Enketo work with huikan unchanged: the form
//! list, each campaign's look-back form with the caller's villages and households as CSV media
//! (`form`), and visits submitted as XForm instances with their photos (`submission`).
//!
//! Two ways in, as ODK Central offers them: `/v1/openrosa` with HTTP Basic (Collect asks for a
//! username and password when it meets the 401), and `/v1/openrosa/key/{token}` with a bearer
//! token in the path, for a server URL handed out as a QR code.

mod form;
mod submission;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::auth::{Caller, Role};
use crate::error::AppError;
use crate::http::{AppState, PeerAddress};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/openrosa/formList", get(form::form_list))
        .route("/v1/openrosa/key/{token}/formList", get(form::form_list))
        .route("/v1/openrosa/forms/{form_id}/form.xml", get(form::form_xml))
        .route(
            "/v1/openrosa/key/{token}/forms/{form_id}/form.xml",
            get(form::form_xml),
        )
        .route("/v1/openrosa/forms/{form_id}/manifest", get(form::manifest))
        .route(
            "/v1/openrosa/key/{token}/forms/{form_id}/manifest",
            get(form::manifest),
        )
        .route(
            "/v1/openrosa/forms/{form_id}/media/{filename}",
            get(form::media),
        )
        .route(
            "/v1/openrosa/key/{token}/forms/{form_id}/media/{filename}",
            get(form::media),
        )
        .route(
            "/v1/openrosa/submission",
            head(submission::probe).post(submission::submit),
        )
        .route(
            "/v1/openrosa/key/{token}/submission",
            head(submission::probe).post(submission::submit),
        )
}

/// An OpenRosa client authenticated by a token in the path, HTTP Basic, or a bearer token.
pub struct OpenRosaCaller {
    pub caller: Caller,
    /// The URL prefix the client used, which every URL we hand it must keep (the token path
    /// carries the credentials).
    pub base: String,
}

impl OpenRosaCaller {
    fn require(&self, roles: &[Role]) -> Result<(), OpenRosaError> {
        Ok(self.caller.require(roles)?)
    }
}

impl FromRequestParts<AppState> for OpenRosaCaller {
    type Rejection = OpenRosaError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, OpenRosaError> {
        let token = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(name, _)| *name == "token")
                    .map(|(_, value)| value.to_owned())
            });
        let origin = origin(&parts.headers);
        if let Some(token) = token {
            let caller = Caller::from_token(state, &token).await?;
            return Ok(OpenRosaCaller {
                caller,
                base: format!("{origin}/v1/openrosa/key/{token}"),
            });
        }
        let Ok(PeerAddress(address)) = PeerAddress::from_request_parts(parts, state).await;
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let caller = match authorization {
            Some(value) if value.len() > 6 && value[..6].eq_ignore_ascii_case("basic ") => {
                basic(state, &value[6..], address).await?
            }
            Some(value) if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") => {
                Caller::from_token(state, value[7..].trim()).await?
            }
            _ => {
                return Err(OpenRosaError(AppError::unauthorized(
                    "sign in with this server's username and password",
                )));
            }
        };
        Ok(OpenRosaCaller {
            caller,
            base: format!("{origin}/v1/openrosa"),
        })
    }
}

/// Where the client reached us, for the absolute URLs the form list and manifest must give: the
/// `Host` it sent, behind a TLS proxy with the scheme it states in `X-Forwarded-Proto`.
fn origin(headers: &HeaderMap) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let scheme = get("x-forwarded-proto")
        .filter(|s| s == "https" || s == "http")
        .unwrap_or_else(|| "http".to_owned());
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}")
}

/// How long a verified Basic credential is trusted before its password is checked again. Collect
/// sends Basic with every request, and an argon2 check per request would cost more than the
/// request; a changed password takes effect within this time.
const BASIC_TRUSTED_FOR: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 10_000;

/// Verified Basic credentials by the hash of `username:password`, with when they were checked.
pub type BasicCache = Mutex<HashMap<[u8; 32], (Caller, Instant)>>;

async fn basic(
    state: &AppState,
    encoded: &str,
    address: std::net::IpAddr,
) -> Result<Caller, OpenRosaError> {
    let bad = || {
        OpenRosaError(AppError::unauthorized(
            "the Authorization header is not Basic base64(username:password)",
        ))
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    // Keyed by the credentials' hash, so the cache holds no password.
    let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    if let Some((caller, at)) = state
        .basic_credentials
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        && at.elapsed() < BASIC_TRUSTED_FOR
    {
        return Ok(caller.clone());
    }
    let caller = crate::auth::check_password(state, username, password.to_owned(), address).await?;
    let mut cache = state
        .basic_credentials
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if cache.len() >= BASIC_CACHE_MAX {
        cache.retain(|_, (_, at)| at.elapsed() < BASIC_TRUSTED_FOR);
        if cache.len() >= BASIC_CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, (caller.clone(), Instant::now()));
    Ok(caller)
}

/// The headers every OpenRosa response carries.
fn openrosa_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert("x-openrosa-version", HeaderValue::from_static("1.0"));
}

/// An XML document as an OpenRosa response.
fn xml_response(status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response();
    openrosa_headers(&mut response);
    response
}

/// `<OpenRosaResponse>` with one message, which Collect shows to the field worker.
fn message_response(status: StatusCode, nature: &str, message: &str) -> Response {
    xml_response(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <OpenRosaResponse xmlns=\"http://openrosa.org/http/response\">\
             <message nature=\"{nature}\">{}</message></OpenRosaResponse>\n",
            escape(message)
        ),
    )
}

/// An error for an OpenRosa client: the problem's status, and its detail as the
/// `OpenRosaResponse` message (with the stable code in `X-Huikan-Problem`); 401 asks for Basic.
pub struct OpenRosaError(pub AppError);

impl<E: Into<AppError>> From<E> for OpenRosaError {
    fn from(e: E) -> Self {
        OpenRosaError(e.into())
    }
}

impl IntoResponse for OpenRosaError {
    fn into_response(self) -> Response {
        let problem = self.0.into_problem();
        let mut response = message_response(problem.status(), "error", &problem.detail);
        crate::error::set_retry_after(&problem, &mut response);
        let headers = response.headers_mut();
        if let Ok(code) = HeaderValue::from_str(problem.code) {
            headers.insert("x-huikan-problem", code);
        }
        if problem.status == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"huikan\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// Text escaped for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}
