//! Photos, content-addressed by SHA-256: `HEAD`/`PUT`/`GET /v1/blobs/{sha256}`. A body is
//! streamed to a temporary file while hashed, verified, sniffed, committed to the blob store,
//! and only then recorded, so a recorded photo always has its bytes. The resumable tus upload
//! (`crate::uploads`) ends in the same [`ingest`].

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};
use huikan_shared::Sha256Hex;
use serde::Serialize;

use crate::append_audit;
use crate::audit::Entry;
use crate::auth::{Caller, Role};
use crate::db::BeginWrite;
use crate::enqueue_jobs;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::jobs::Kind;
use crate::on_pool;
use crate::store::blob_key;
use crate::store::spool::{self, SpoolError, Spooled};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/blobs/{sha256}",
            put(put_blob).get(get_blob).head(head_blob),
        )
        .route("/v1/blobs/{sha256}/thumbnail", get(get_thumbnail))
}

/// Roles that upload photos.
pub const UPLOADERS: &[Role] = &[Role::FieldStaff, Role::Admin];

#[derive(Serialize, sqlx::FromRow, Clone, Debug)]
pub struct Blob {
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub created_at: DateTime<Utc>,
}

pub fn parse_sha(s: &str) -> Result<Sha256Hex> {
    Sha256Hex::parse(s).map_err(|e| AppError::problem("invalid_path", e))
}

/// The image type, from the bytes themselves; `None` if not a supported image.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if infer::image::is_jpeg(head) {
        Some("image/jpeg")
    } else if infer::image::is_png(head) {
        Some("image/png")
    } else if infer::image::is_webp(head) {
        Some("image/webp")
    } else if infer::image::is_heif(head) {
        Some("image/heic")
    } else {
        None
    }
}

/// A client-facing error for a body that could not be spooled.
pub fn spool_error(e: SpoolError, limit: u64) -> AppError {
    match e {
        SpoolError::TooLarge => AppError::problem(
            "payload_too_large",
            format!("a photo may be at most {limit} bytes"),
        ),
        SpoolError::Interrupted { partial, error } => AppError::problem(
            "incomplete_body",
            format!(
                "the body broke off after {} bytes: {error}",
                partial.map_or(0, |p| p.len)
            ),
        ),
        SpoolError::Io(e) => AppError::Internal(e.into()),
    }
}

/// Spools a request body of at most `limit` bytes, refusing a declared length over it before
/// reading a byte.
pub async fn spool_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &mut BodyDataStream,
    limit: u64,
) -> Result<Spooled, SpoolError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(SpoolError::TooLarge),
        _ => state.spool.spool(body, limit).await,
    }
}

/// Runs a handler that reads a large body, then drains (within bounds) whatever it left unread
/// when it refused the request early: a client still sending only reads our error if we read
/// on, instead of meeting a broken pipe.
pub async fn with_drained_body<F, T>(body: Body, handler: impl FnOnce(BodyDataStream) -> F) -> T
where
    F: Future<Output = (T, BodyDataStream)>,
{
    let (answer, mut rest) = handler(body.into_data_stream()).await;
    spool::drain(&mut rest).await;
    answer
}

pub enum Ingested {
    Created(Blob),
    Existing(Blob),
}

/// Verifies spooled bytes against the name they were sent under, sniffs their type, commits
/// them to the blob store and records them, for a PUT or a finished tus upload.
pub async fn ingest(
    state: &AppState,
    caller: &Caller,
    expected: &Sha256Hex,
    spooled: Spooled,
) -> Result<Ingested> {
    if spooled.sha256 != *expected {
        return Err(AppError::problem(
            "hash_mismatch",
            format!(
                "the {} bytes received hash to {}, not {expected}; nothing was kept",
                spooled.len, spooled.sha256
            ),
        ));
    }
    let content_type = sniff(&spooled.head).ok_or_else(|| {
        AppError::problem(
            "unsupported_media_type",
            "the bytes are not a JPEG, PNG, WebP or HEIC image",
        )
    })?;
    if find(state, expected.as_str()).await?.is_none() {
        state
            .store
            .commit(&blob_key(expected.as_str()), spooled.file, spooled.len)
            .await?;
    }
    let blob = Blob {
        sha256: expected.to_string(),
        size: spooled.len as i64,
        content_type: content_type.to_owned(),
        created_at: crate::db::now(),
    };
    let dialect = state.db.dialect();
    let created = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let created = sqlx::query(
            "INSERT INTO blobs (sha256, size, content_type, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&blob.sha256)
        .bind(blob.size)
        .bind(&blob.content_type)
        .bind(blob.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        sqlx::query(
            "INSERT INTO blob_uploaders (sha256, user_id) VALUES ($1, $2)
             ON CONFLICT (sha256, user_id) DO NOTHING",
        )
        .bind(&blob.sha256)
        .bind(caller.user_id)
        .execute(&mut *tx)
        .await?;
        if created {
            let entry = Entry::new(
                &caller.username,
                "photo.stored",
                format!("blob:{}", blob.sha256),
                serde_json::json!({"sha256": blob.sha256, "size": blob.size, "content_type": blob.content_type}),
            );
            append_audit!(tx, dialect, std::slice::from_ref(&entry));
            enqueue_jobs!(tx, Kind::ProcessPhoto, &[blob.sha256.as_str()]);
        }
        tx.commit().await?;
        Ok::<_, AppError>(created)
    })?;
    if created {
        state.jobs.notify();
        metrics::counter!("photos_stored_total").increment(1);
        metrics::counter!("photo_bytes_stored_total").increment(spooled.len);
        Ok(Ingested::Created(blob))
    } else {
        Ok(Ingested::Existing(
            find(state, expected.as_str()).await?.unwrap_or(blob),
        ))
    }
}

pub async fn find(state: &AppState, sha256: &str) -> Result<Option<Blob>> {
    Ok(on_pool!(&state.db.read, |p| {
        sqlx::query_as("SELECT sha256, size, content_type, created_at FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(p)
            .await
    })?)
}

async fn put_blob(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    with_drained_body(body, |mut stream| async move {
        let answer = store_photo(&state, caller, &sha256, &headers, &mut stream).await;
        (answer, stream)
    })
    .await
}

async fn store_photo(
    state: &AppState,
    caller: Result<Caller, AppError>,
    sha256: &str,
    headers: &HeaderMap,
    body: &mut BodyDataStream,
) -> Result<Response> {
    let caller = caller?;
    caller.require(UPLOADERS)?;
    let expected = parse_sha(sha256)?;
    let limit = state.config.max_photo_bytes;
    let spooled = spool_body(state, headers, body, limit)
        .await
        .map_err(|e| spool_error(e, limit))?;
    Ok(match ingest(state, &caller, &expected, spooled).await? {
        Ingested::Created(blob) => (StatusCode::CREATED, axum::Json(blob)).into_response(),
        Ingested::Existing(blob) => (StatusCode::OK, axum::Json(blob)).into_response(),
    })
}

async fn head_blob(
    State(state): State<AppState>,
    _caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response> {
    let sha = parse_sha(&sha256)?;
    let blob = find(&state, sha.as_str())
        .await?
        .ok_or_else(|| AppError::not_found("no such photo"))?;
    Ok((
        [
            (header::CONTENT_TYPE, blob.content_type),
            (header::CONTENT_LENGTH, blob.size.to_string()),
        ],
        Body::empty(),
    )
        .into_response())
}

/// Whether a field worker uploaded this photo or used it in one of their own visits.
async fn field_staff_may_read(state: &AppState, caller: &Caller, sha256: &str) -> Result<bool> {
    let n: i64 = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM blob_uploaders WHERE sha256 = $1 AND user_id = $2)
                  + (SELECT COUNT(*) FROM submission_photos sp
                     JOIN submissions s ON s.submission_id = sp.submission_id
                     WHERE sp.sha256 = $1 AND s.submitted_by = $2)",
        )
        .bind(sha256)
        .bind(caller.user_id)
        .fetch_one(p)
        .await
    })?;
    Ok(n > 0)
}

/// The blob named in the path, if the caller may read it: reviewers, auditors and admins read
/// every blob, field staff those they uploaded; anything else is 404, as if absent.
async fn readable(state: &AppState, caller: &Caller, sha256: &str) -> Result<(Sha256Hex, Blob)> {
    let sha = parse_sha(sha256)?;
    let not_found = || AppError::not_found("no such photo");
    let blob = find(state, sha.as_str()).await?.ok_or_else(not_found)?;
    if caller.role == Role::FieldStaff && !field_staff_may_read(state, caller, sha.as_str()).await?
    {
        return Err(not_found());
    }
    Ok((sha, blob))
}

async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response> {
    let (sha, blob) = readable(&state, &caller, &sha256).await?;
    serve_object(
        &state,
        &blob_key(sha.as_str()),
        &blob.content_type,
        sha.as_str(),
    )
    .await
}

/// `GET /v1/blobs/{sha256}/thumbnail`: a JPEG of at most 320 px on its long side, once the photo
/// is processed; readable by whoever may read the photo.
async fn get_thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response> {
    let (sha, blob) = readable(&state, &caller, &sha256).await?;
    // A processed photo, and only that, has a thumbnail.
    let facts: Option<String> = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar("SELECT state FROM photo_facts WHERE sha256 = $1")
            .bind(sha.as_str())
            .fetch_optional(p)
            .await
    })?;
    match facts {
        None => Err(AppError::not_found(
            "no thumbnail yet: the photo is not processed yet; try again shortly",
        )),
        Some(state_name) if state_name != "processed" => Err(AppError::not_found(format!(
            "no thumbnail: the photo is {state_name}"
        ))),
        Some(_) => {
            crate::evidence::ensure_thumbnail(&state, sha.as_str(), &blob.content_type).await?;
            let key = crate::evidence::thumbnail_key(sha.as_str());
            serve_object(&state, &key, "image/jpeg", &format!("{sha}-thumbnail")).await
        }
    }
}

/// An immutable stored object as a response: a redirect to a presigned URL where the store has
/// them, else the bytes.
async fn serve_object(
    state: &AppState,
    key: &str,
    content_type: &str,
    etag: &str,
) -> Result<Response> {
    let ttl = std::time::Duration::from_secs(state.config.presign_ttl_secs);
    if let Some(url) = state.store.presigned_get(key, content_type, ttl).await? {
        let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::try_from(url).map_err(anyhow::Error::from)?,
        );
        return Ok(response);
    }
    let (stream, len) = state
        .store
        .open(key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{key} is recorded but its bytes are missing"))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ETAG, format!("\"{etag}\"")),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_owned(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
