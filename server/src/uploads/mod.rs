//! Resumable photo upload for bad networks: tus 1.0.0 (core, creation, termination) at
//! `/v1/uploads/`. Each PATCH is spooled and kept as its own object in the blob store, with the
//! upload's progress in the database, so an upload survives restarts and can be resumed on any
//! server process. When the last byte arrives the pieces are read back in order through the
//! same verify-and-commit path as a PUT.

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, patch};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use huikan_shared::Sha256Hex;
use uuid::Uuid;

use crate::append_audit;
use crate::audit::Entry;
use crate::auth::Caller;
use crate::blobs::{self, Ingested, UPLOADERS};
use crate::db::BeginWrite;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::on_pool;
use crate::store::spool::SpoolError;

const TUS_VERSION: &str = "1.0.0";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/uploads/", options(capabilities).post(create))
        .route(
            "/v1/uploads/{upload_id}",
            patch(append).head(progress).delete(terminate),
        )
}

#[derive(sqlx::FromRow)]
struct Upload {
    id: Uuid,
    owner: Uuid,
    length: i64,
    received: i64,
    sha256: String,
    completed_at: Option<DateTime<Utc>>,
}

impl Upload {
    /// The audit entry of what became of this upload.
    fn entry(&self, actor: &str, action: &'static str) -> Entry {
        Entry::new(
            actor,
            action,
            format!("upload:{}", self.id),
            serde_json::json!({"upload_id": self.id, "sha256": self.sha256, "length": self.length, "received": self.received}),
        )
    }
}

#[derive(sqlx::FromRow)]
struct Part {
    start: i64,
    len: i64,
    object_key: String,
}

/// Every tus response carries the protocol version.
fn tus(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut response = status.into_response();
    let map = response.headers_mut();
    map.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(*name), HeaderValue::try_from(value)) {
            map.insert(name, value);
        }
    }
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_version(headers: &HeaderMap) -> Result<()> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        other => Err(AppError::problem(
            "tus_version_unsupported",
            format!("Tus-Resumable must be {TUS_VERSION}, got {other:?}"),
        )),
    }
}

/// Adds the tus headers to an error too, so a tus client can read it.
fn tus_error(e: AppError) -> Response {
    let is_version = matches!(&e, AppError::Problem(p) if p.code == "tus_version_unsupported");
    let mut response = e.into_response();
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    if is_version {
        response
            .headers_mut()
            .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    }
    response
}

async fn capabilities(State(state): State<AppState>) -> Response {
    tus(
        StatusCode::NO_CONTENT,
        &[
            ("tus-version", TUS_VERSION.to_owned()),
            ("tus-extension", "creation,termination".to_owned()),
            ("tus-max-size", state.config.max_photo_bytes.to_string()),
        ],
    )
}

/// `Upload-Metadata: key base64,key base64`: the photo's `sha256` (required) and anything else,
/// which is ignored (the type is sniffed from the bytes).
fn expected_sha(headers: &HeaderMap) -> Result<Sha256Hex> {
    let bad = |detail: String| AppError::problem("invalid_upload_metadata", detail);
    let metadata = header_str(headers, "upload-metadata")
        .ok_or_else(|| bad("Upload-Metadata with the photo's sha256 is required".to_owned()))?;
    for pair in metadata.split(',') {
        let mut words = pair.trim().splitn(2, ' ');
        if words.next() != Some("sha256") {
            continue;
        }
        let value = STANDARD
            .decode(words.next().unwrap_or_default().trim())
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| bad("Upload-Metadata sha256 is not base64 of text".to_owned()))?;
        return Sha256Hex::parse(&value).map_err(|e| bad(format!("Upload-Metadata sha256: {e}")));
    }
    Err(bad("Upload-Metadata has no sha256".to_owned()))
}

// The handlers take the caller as a `Result` so that a 401 carries the tus headers too.
async fn create(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    headers: HeaderMap,
) -> Response {
    create_inner(state, caller, headers)
        .await
        .unwrap_or_else(tus_error)
}

async fn create_inner(
    state: AppState,
    caller: Result<Caller, AppError>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller?;
    caller.require(UPLOADERS)?;
    check_version(&headers)?;
    let limit = state.config.max_photo_bytes;
    let length: u64 = header_str(&headers, "upload-length")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        // Too many digits for a u64 is still a length, and over the limit below.
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            AppError::problem(
                "invalid_upload_metadata",
                "Upload-Length must be a positive integer (deferred length is not supported)",
            )
        })?;
    if length > limit {
        return Err(AppError::problem(
            "payload_too_large",
            format!("Upload-Length {length}: a photo may be at most {limit} bytes"),
        ));
    }
    let sha = expected_sha(&headers)?;
    let has_body = header_str(&headers, "content-length").is_some_and(|n| n != "0")
        || headers.contains_key("transfer-encoding");
    if has_body {
        return Err(AppError::invalid_body(
            "creation-with-upload is not supported: create the upload, then PATCH the bytes",
        ));
    }
    let id = Uuid::now_v7();
    let entry = Entry::new(
        &caller.username,
        "upload.created",
        format!("upload:{id}"),
        serde_json::json!({"upload_id": id, "length": length, "sha256": sha.as_str()}),
    );
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query("INSERT INTO uploads (id, owner, length, sha256, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(caller.user_id)
            .bind(length as i64)
            .bind(sha.as_str())
            .bind(crate::db::now())
            .execute(&mut *tx)
            .await?;
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(())
    })?;
    Ok(tus(
        StatusCode::CREATED,
        &[
            ("location", format!("/v1/uploads/{id}")),
            ("upload-offset", "0".to_owned()),
        ],
    ))
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<Upload> {
    let not_found = || AppError::not_found("no such upload");
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let upload: Option<Upload> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT id, owner, length, received, sha256, completed_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await
    })?;
    upload
        .filter(|u| u.owner == caller.user_id)
        .ok_or_else(not_found)
}

fn offset_headers(upload: &Upload, offset: i64) -> Vec<(&'static str, String)> {
    vec![
        ("upload-offset", offset.to_string()),
        ("upload-length", upload.length.to_string()),
        ("cache-control", "no-store".to_owned()),
    ]
}

async fn progress(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    progress_inner(state, caller, id, headers)
        .await
        .unwrap_or_else(|e| {
            // An answer to HEAD, error or not, must not be cached: the offset moves on.
            let mut response = tus_error(e);
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            response
        })
}

async fn progress_inner(
    state: AppState,
    caller: Result<Caller, AppError>,
    id: String,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller?;
    check_version(&headers)?;
    let upload = load(&state, &caller, &id).await?;
    // A finishing PATCH whose server died after the last byte was recorded: finish it now.
    if upload.completed_at.is_none() && upload.received == upload.length {
        finish(&state, &caller, &upload).await?;
    }
    Ok(tus(
        StatusCode::OK,
        &offset_headers(&upload, upload.received),
    ))
}

async fn append(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    blobs::with_drained_body(body, |mut stream| async move {
        let answer = append_inner(state, caller, id, headers, &mut stream).await;
        (answer.unwrap_or_else(tus_error), stream)
    })
    .await
}

async fn append_inner(
    state: AppState,
    caller: Result<Caller, AppError>,
    id: String,
    headers: HeaderMap,
    body: &mut BodyDataStream,
) -> Result<Response> {
    let caller = caller?;
    caller.require(UPLOADERS)?;
    check_version(&headers)?;
    if header_str(&headers, "content-type") != Some(OFFSET_OCTET_STREAM) {
        return Err(AppError::problem(
            "unsupported_media_type",
            format!("a PATCH must be sent as {OFFSET_OCTET_STREAM}"),
        ));
    }
    let offset = header_str(&headers, "upload-offset")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            AppError::problem(
                "invalid_upload_metadata",
                "Upload-Offset must be a non-negative decimal integer",
            )
        })?;
    // An offset too large for any upload is simply not this upload's: a mismatch, below.
    let offset: i64 = offset.parse().unwrap_or(i64::MAX);
    let upload = load(&state, &caller, &id).await?;
    if upload.completed_at.is_some() && offset == upload.length {
        // A retry of the finishing PATCH whose answer was lost.
        return Ok(tus(
            StatusCode::NO_CONTENT,
            &offset_headers(&upload, upload.length),
        ));
    }
    if offset != upload.received {
        return Err(AppError::problem(
            "offset_mismatch",
            format!(
                "Upload-Offset is {offset} but the upload has {} bytes",
                upload.received
            ),
        ));
    }
    let room = (upload.length - upload.received) as u64;
    let spooled = match blobs::spool_body(&state, &headers, body, room).await {
        Ok(spooled) => Some(spooled),
        // Keep what arrived before the connection broke: the client resumes from there.
        Err(SpoolError::Interrupted { partial, error }) => {
            tracing::info!(upload = %upload.id, %error, kept = partial.as_ref().map_or(0, |p| p.len), "PATCH interrupted");
            partial
        }
        Err(SpoolError::TooLarge) => {
            return Err(AppError::problem(
                "payload_too_large",
                format!("the PATCH goes beyond Upload-Length {}", upload.length),
            ));
        }
        Err(SpoolError::Io(e)) => return Err(e.into()),
    };
    let mut received = upload.received;
    if let Some(spooled) = spooled {
        let len = spooled.len as i64;
        let key = format!("uploads/{}/{:020}-{}", upload.id, offset, Uuid::new_v4());
        state.store.commit(&key, spooled.file, spooled.len).await?;
        let advanced = on_pool!(&state.db.write, |p| {
            let mut tx = p.begin_write().await?;
            let advanced = sqlx::query(
                "UPDATE uploads SET received = received + $1 WHERE id = $2 AND received = $3",
            )
            .bind(len)
            .bind(upload.id)
            .bind(offset)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if advanced {
                sqlx::query("INSERT INTO upload_parts (upload_id, start, len, object_key) VALUES ($1, $2, $3, $4)")
                    .bind(upload.id)
                    .bind(offset)
                    .bind(len)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(advanced)
        })?;
        if !advanced {
            state.store.remove(&key).await?;
            return Err(AppError::problem(
                "offset_mismatch",
                "another PATCH of this upload got there first",
            ));
        }
        received += len;
    }
    let mut extra = Vec::new();
    if received == upload.length {
        let blob = finish(&state, &caller, &upload).await?;
        extra.push(("huikan-blob-sha256", blob.sha256));
    }
    let mut headers = offset_headers(&upload, received);
    headers.extend(extra);
    Ok(tus(StatusCode::NO_CONTENT, &headers))
}

async fn parts(state: &AppState, upload: &Upload) -> Result<Vec<Part>> {
    Ok(on_pool!(&state.db.write, |p| {
        sqlx::query_as(
            "SELECT start, len, object_key FROM upload_parts WHERE upload_id = $1 ORDER BY start",
        )
        .bind(upload.id)
        .fetch_all(p)
        .await
    })?)
}

/// Reads the pieces back in order, verifies and commits the photo as a PUT would. A photo that
/// fails verification ends the upload: its pieces are discarded.
async fn finish(state: &AppState, caller: &Caller, upload: &Upload) -> Result<blobs::Blob> {
    let parts = parts(state, upload).await?;
    let contiguous = parts
        .iter()
        .try_fold(0i64, |at, p| (p.start == at).then_some(at + p.len));
    if contiguous != Some(upload.length) {
        return Err(anyhow::anyhow!("upload {} has non-contiguous pieces", upload.id).into());
    }
    let keys: Vec<String> = parts.iter().map(|p| p.object_key.clone()).collect();
    let mut pieces = read_in_order(state.store.clone(), keys);
    let spooled = state
        .spool
        .spool(&mut pieces, upload.length as u64)
        .await
        .map_err(|e| blobs::spool_error(e, upload.length as u64))?;
    let expected = Sha256Hex::parse(&upload.sha256).map_err(anyhow::Error::msg)?;
    let outcome = blobs::ingest(state, caller, &expected, spooled).await;
    let blob = match outcome {
        Ok(Ingested::Created(blob) | Ingested::Existing(blob)) => blob,
        Err(AppError::Problem(problem)) => {
            let refused = upload.entry(&caller.username, "upload.refused");
            discard(state, upload, &parts, true, Some(refused)).await?;
            return Err(AppError::Problem(problem));
        }
        Err(e) => return Err(e),
    };
    let completed = upload.entry(&caller.username, "upload.completed");
    discard(state, upload, &parts, false, Some(completed)).await?;
    Ok(blob)
}

/// The concatenated bytes of the objects, read one after another.
fn read_in_order(
    store: std::sync::Arc<dyn crate::store::BlobStore>,
    keys: Vec<String>,
) -> crate::store::ByteStream {
    let opened = futures::stream::iter(keys).then(move |key| open_piece(store.clone(), key));
    Box::pin(opened.try_flatten())
}

async fn open_piece(
    store: std::sync::Arc<dyn crate::store::BlobStore>,
    key: String,
) -> std::io::Result<crate::store::ByteStream> {
    match store.open(&key).await {
        Ok(Some((stream, _))) => Ok(stream),
        Ok(None) => Err(std::io::Error::other(format!("piece {key} is missing"))),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// Removes an upload's pieces; the upload itself is deleted or marked complete, and `entry`
/// (what became of it) recorded with that.
async fn discard(
    state: &AppState,
    upload: &Upload,
    parts: &[Part],
    delete: bool,
    entry: Option<Entry>,
) -> Result<()> {
    let dialect = state.db.dialect();
    let entries: Vec<Entry> = entry.into_iter().collect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        append_audit!(tx, dialect, &entries);
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(upload.id)
            .execute(&mut *tx)
            .await?;
        if delete {
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(upload.id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE uploads SET completed_at = $1, received = length WHERE id = $2")
                .bind(crate::db::now())
                .bind(upload.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, AppError>(())
    })?;
    for part in parts {
        state.store.remove(&part.object_key).await?;
    }
    Ok(())
}

/// Discards uploads nobody finished within `max_age`, and forgets finished ones after it, so
/// abandoned pieces do not fill the disk or the bucket.
pub async fn sweep(state: &AppState, max_age: chrono::Duration) -> Result<usize> {
    let cutoff = crate::db::now() - max_age;
    let stale: Vec<Upload> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT id, owner, length, received, sha256, completed_at FROM uploads WHERE created_at < $1 LIMIT 1000",
        )
        .bind(cutoff)
        .fetch_all(p)
        .await
    })?;
    for upload in &stale {
        let parts = parts(state, upload).await?;
        // A finished upload is only forgotten: its photo was recorded when it was stored.
        let expired = upload
            .completed_at
            .is_none()
            .then(|| upload.entry("system", "upload.expired"));
        discard(state, upload, &parts, true, expired).await?;
    }
    Ok(stale.len())
}

async fn terminate(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    terminate_inner(state, caller, id, headers)
        .await
        .unwrap_or_else(tus_error)
}

async fn terminate_inner(
    state: AppState,
    caller: Result<Caller, AppError>,
    id: String,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller?;
    check_version(&headers)?;
    let upload = load(&state, &caller, &id).await?;
    let parts = parts(&state, &upload).await?;
    let terminated = upload.entry(&caller.username, "upload.terminated");
    discard(&state, &upload, &parts, true, Some(terminated)).await?;
    Ok(tus(StatusCode::NO_CONTENT, &[]))
}
