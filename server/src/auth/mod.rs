//! Users, roles and bearer tokens: log in, revoke, create users, and the bootstrap admin.
//! Passwords are argon2 hashes; tokens are random and stored only as their SHA-256.

mod caller;
pub mod throttle;

use std::net::IpAddr;

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use huikan_shared::DivisionPrefix;
use huikan_shared::limits;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use caller::{Caller, Role, SESSION_COOKIE, session_cookie};
pub use throttle::LoginThrottle;

use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::db::Db;
use crate::error::{AppError, Problem, Result};
use crate::http::json::ApiJson;
use crate::http::{AppState, PeerAddress};
use crate::on_pool;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/token", post(issue_token))
        .route("/v1/auth/revoke", post(revoke))
        .route("/v1/users", post(create_user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    username: String,
    #[serde(deserialize_with = "limits::text::<{ limits::PASSWORD }, _>")]
    password: String,
    #[serde(
        default,
        deserialize_with = "limits::present_text::<{ limits::ID }, _>"
    )]
    device_id: Option<String>,
}

#[derive(Serialize)]
pub struct TokenIssued {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    user: UserSummary,
}

#[derive(Serialize)]
struct UserSummary {
    id: Uuid,
    username: String,
    role: Role,
    villages: Vec<DivisionPrefix>,
}

#[derive(sqlx::FromRow)]
struct Credentials {
    id: Uuid,
    username: String,
    password_hash: String,
    role: String,
    scope: String,
}

async fn issue_token(
    State(state): State<AppState>,
    PeerAddress(address): PeerAddress,
    ApiJson(login): ApiJson<Login>,
) -> Result<Json<TokenIssued>> {
    Ok(Json(
        self::login(
            &state,
            &login.username,
            login.password,
            login.device_id,
            address,
        )
        .await?,
    ))
}

/// The user these credentials name, if the password is right; 401 `unauthorized` otherwise,
/// and 429 `rate_limited` (checking nothing) while the username or the address is throttled.
/// A missing user costs a hash verification too, so timing does not tell which names exist.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: String,
    address: IpAddr,
) -> Result<Caller> {
    let throttle = &state.login_throttle;
    if let Some((limited, wait)) = throttle.wait(username, Some(address)) {
        let secs = wait.as_secs().max(1);
        let whose = match limited {
            throttle::Limited::User => "this username",
            throttle::Limited::Address => "this address",
        };
        return Err(AppError::from(
            Problem::new(
                "rate_limited",
                format!("too many wrong passwords for {whose}; try again in {secs} s"),
            )
            .with("retry_after", secs),
        ));
    }
    let found: Option<Credentials> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT id, username, password_hash, role, scope FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(p)
        .await
    })?;
    let stored_hash = found.as_ref().map(|c| c.password_hash.clone());
    let verified =
        tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
            .await?;
    let user = match found {
        Some(user) if verified => user,
        _ => {
            if let Some(limited) = throttle.failed(username, Some(address)) {
                audit_throttled(state, username, address, limited).await?;
            }
            return Err(AppError::unauthorized("wrong username or password"));
        }
    };
    throttle.succeeded(username);
    let role =
        Role::parse(&user.role).ok_or_else(|| anyhow::anyhow!("unknown role {:?}", user.role))?;
    let scope: Vec<DivisionPrefix> =
        serde_json::from_str(&user.scope).map_err(anyhow::Error::from)?;
    Ok(Caller {
        user_id: user.id,
        username: user.username,
        role,
        scope,
        token_hash: String::new(),
    })
}

/// Records that wrong passwords reached a limit: the auditor sees every lock, once.
async fn audit_throttled(
    state: &AppState,
    username: &str,
    address: IpAddr,
    limited: throttle::Limited,
) -> Result<()> {
    let policy = state.login_throttle.policy();
    let (subject, failures) = match limited {
        throttle::Limited::User => (format!("user:{username}"), policy.per_user),
        throttle::Limited::Address => (format!("address:{address}"), policy.per_address),
    };
    tracing::warn!(%subject, failures, "login throttled");
    let entry = Entry::new(
        username,
        "login.throttled",
        subject,
        serde_json::json!({
            "address": address.to_string(),
            "failures": failures,
            "window_secs": policy.window.as_secs(),
        }),
    );
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
}

/// Checks a username and password and issues a bearer token (the console keeps it in a cookie).
pub async fn login(
    state: &AppState,
    username: &str,
    password: String,
    device_id: Option<String>,
    address: IpAddr,
) -> Result<TokenIssued> {
    let user = check_password(state, username, password, address).await?;
    let token = new_token();
    let now = crate::db::now();
    let expires_at = now + Duration::hours(state.config.token_ttl_hours);
    let entry = Entry::new(
        &user.username,
        "token.issued",
        format!("user:{}", user.username),
        serde_json::json!({"device_id": device_id, "expires_at": expires_at}),
    );
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, device_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(caller::token_hash(&token))
        .bind(user.user_id)
        .bind(&device_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(())
    })?;
    tracing::info!(user = %user.username, device = ?device_id, "token issued");
    Ok(TokenIssued {
        token,
        expires_at,
        user: UserSummary {
            id: user.user_id,
            username: user.username,
            role: user.role,
            villages: user.scope,
        },
    })
}

/// Revokes the token the caller used (logging out).
pub async fn revoke_own(state: &AppState, caller: &Caller) -> Result<()> {
    let now = crate::db::now();
    let dialect = state.db.dialect();
    let entry = Entry::new(
        &caller.username,
        "token.revoked",
        format!("user:{}", caller.username),
        serde_json::json!({"tokens": 1}),
    );
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&caller.token_hash)
        .execute(&mut *tx)
        .await?;
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(
        default,
        deserialize_with = "limits::present_text::<{ limits::NAME }, _>"
    )]
    username: Option<String>,
}

/// With no body: the caller's own token. With a username (the caller's own, or any for an
/// admin): every token of that user, for a lost phone.
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response> {
    let request: Revoke = if body.iter().all(u8::is_ascii_whitespace) {
        Revoke::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::invalid_body(e.to_string()))?
    };
    let now = crate::db::now();
    let dialect = state.db.dialect();
    let Some(username) = request.username else {
        revoke_own(&state, &caller).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if username != caller.username {
        caller.require(&[Role::Admin])?;
    }
    let user_id: Option<Uuid> = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(&username)
            .fetch_optional(p)
            .await
    })?;
    let user_id = user_id.ok_or_else(|| AppError::not_found(format!("no user {username:?}")))?;
    let revoked = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let entry = Entry::new(
            &caller.username,
            "token.revoked",
            format!("user:{username}"),
            serde_json::json!({"tokens": revoked}),
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(revoked)
    })?;
    tracing::info!(admin = %caller.username, user = %username, revoked, "tokens revoked");
    Ok(Json(serde_json::json!({ "revoked": revoked })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    username: String,
    #[serde(deserialize_with = "limits::text::<{ limits::PASSWORD }, _>")]
    password: String,
    role: Role,
    #[serde(deserialize_with = "limits::list::<{ limits::SCOPE }, _, _>")]
    scope: Vec<DivisionPrefix>,
}

#[derive(Serialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub scope: Vec<DivisionPrefix>,
    pub created_at: DateTime<Utc>,
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>)> {
    caller.require(&[Role::Admin])?;
    let user = insert_user(
        &state.db,
        &caller.username,
        new.username,
        new.password,
        new.role,
        new.scope,
    )
    .await?
    .ok_or_else(|| AppError::problem("username_taken", "that username is taken"))?;
    tracing::info!(admin = %caller.username, user = %user.username, role = user.role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

/// Creates a user; `None` if the username is taken.
pub async fn insert_user(
    db: &Db,
    actor: &str,
    username: String,
    password: String,
    role: Role,
    scope: Vec<DivisionPrefix>,
) -> Result<Option<User>> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(AppError::invalid_body(
            "username: 1 to 64 characters of letters, digits, '_', '.' and '-'",
        ));
    }
    if password.chars().count() < 8 {
        return Err(AppError::invalid_body("password: at least 8 characters"));
    }
    let password_hash = hashing(move || hash_password(&password)).await??;
    let user = User {
        id: Uuid::now_v7(),
        username,
        role,
        scope,
        created_at: crate::db::now(),
    };
    let scope_json = serde_json::to_string(&user.scope).map_err(anyhow::Error::from)?;
    let entry = Entry::new(
        actor,
        "user.created",
        format!("user:{}", user.username),
        serde_json::json!({"id": user.id, "username": user.username, "role": user.role, "scope": user.scope}),
    );
    let dialect = db.dialect();
    let inserted = on_pool!(&db.write, |p| {
        let mut tx = p.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, scope, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO NOTHING",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&password_hash)
        .bind(user.role.as_str())
        .bind(&scope_json)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            append_audit!(tx, dialect, std::slice::from_ref(&entry));
        }
        tx.commit().await?;
        Ok::<_, AppError>(inserted)
    })?;
    Ok((inserted == 1).then_some(user))
}

/// Creates the admin named by `HUIKAN_BOOTSTRAP_ADMIN=name:password` when no admin exists yet.
pub async fn bootstrap_admin(db: &Db, spec: &str) -> anyhow::Result<()> {
    let (name, password) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("HUIKAN_BOOTSTRAP_ADMIN must be name:password"))?;
    let admins: i64 = on_pool!(&db.read, |p| {
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(p)
            .await
    })?;
    if admins > 0 {
        return Ok(());
    }
    match insert_user(
        db,
        "bootstrap",
        name.to_owned(),
        password.to_owned(),
        Role::Admin,
        vec![],
    )
    .await
    {
        Ok(Some(_)) => tracing::info!(admin = name, "bootstrap admin created"),
        Ok(None) => tracing::warn!(
            admin = name,
            "bootstrap admin not created: the username is taken"
        ),
        Err(AppError::Problem(p)) => anyhow::bail!("bootstrap admin: {}", p.detail),
        Err(AppError::Internal(e)) => return Err(e),
    }
    Ok(())
}

/// Password hashes cost ~19 MiB and tens of milliseconds each: at most one per core at a time,
/// so a crowd of phones logging in at once queues instead of exhausting memory.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from))
});

/// Runs password hashing work on a blocking thread, within the hashing limit.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| anyhow::anyhow!("the hashing limit closed: {e}"))?;
    Ok(tokio::task::spawn_blocking(work).await?)
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// A fixed hash verified against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$yT6R8qXo3aC0kHn4wzkBw6zXvY5b0Jm3vV0JY0R3bXA";

fn verify_password(password: &str, stored: Option<&str>) -> bool {
    let Ok(hash) = PasswordHash::new(stored.unwrap_or(DUMMY_HASH)) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
        && stored.is_some()
}
