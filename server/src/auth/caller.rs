//! Who is calling: the bearer token is looked up by its hash on every request and yields the
//! caller's role and scope, so a revoked token stops working at once, on every server process.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use chrono::Utc;
use huikan_shared::DivisionPrefix;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AppError;
use crate::http::AppState;
use crate::on_pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    FieldStaff,
    Reviewer,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::FieldStaff => "field_staff",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::FieldStaff, Role::Reviewer, Role::Auditor, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    pub scope: Vec<DivisionPrefix>,
    pub token_hash: String,
}

impl Caller {
    /// Allows only the given roles: anyone else is 403 `forbidden`.
    pub fn require(&self, roles: &[Role]) -> Result<(), AppError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "a {} may not do this",
                self.role.as_str()
            )))
        }
    }

    /// Whether a division code (village) lies within the caller's scope.
    pub fn covers(&self, division_code: &str) -> bool {
        self.scope.iter().any(|p| p.covers(division_code))
    }
}

/// Hex SHA-256 of a bearer token: what the database stores instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    username: String,
    role: String,
    scope: String,
    expires_at: chrono::DateTime<Utc>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        // The console's session cookie stands for the token on reads only (the photos its
        // pages show): a cross-site form can then change nothing through the API.
        let reads = matches!(parts.method, Method::GET | Method::HEAD);
        let token = bearer
            .or_else(|| reads.then(|| session_cookie(&parts.headers)).flatten())
            .ok_or_else(|| {
                AppError::unauthorized("an Authorization: Bearer <token> header is required")
            })?;
        Caller::from_token(state, token).await
    }
}

/// The console's session cookie: a bearer token the browser keeps.
pub const SESSION_COOKIE: &str = "huikan_session";

/// The session token in a request's cookies, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

impl Caller {
    /// The user a bearer token stands for, if it is known, unexpired and not revoked.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Caller, AppError> {
        let hash = token_hash(token);
        let row: Option<TokenRow> = on_pool!(&state.db.read, |p| {
            sqlx::query_as(
                "SELECT u.id, u.username, u.role, u.scope, t.expires_at
                 FROM tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            )
            .bind(&hash)
            .fetch_optional(p)
            .await
        })?;
        let row = row
            .filter(|r| r.expires_at > crate::db::now())
            .ok_or_else(|| AppError::unauthorized("the token is unknown, expired or revoked"))?;
        let role = Role::parse(&row.role)
            .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", row.id, row.role))?;
        let scope: Vec<DivisionPrefix> = serde_json::from_str(&row.scope)
            .map_err(|e| anyhow::anyhow!("user {} has a malformed scope: {e}", row.id))?;
        Ok(Caller {
            user_id: row.id,
            username: row.username,
            role,
            scope,
            token_hash: hash,
        })
    }
}
