//! Near-duplicates of a stored photo: the in-memory index ([`super::index`]) asked after catching
//! up with the database, its matches named by photo, and each photo by the visits that sent it.
//! The photo check ([`super::reuse`]) judges with it, and reviewers and auditors ask it directly:
//! `GET /v1/blobs/{sha256}/near-duplicates`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use uuid::Uuid;

use super::phash::PhotoHashes;
use crate::auth::{Caller, Role};
use crate::blobs::parse_sha;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::on_pool;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/blobs/{sha256}/near-duplicates",
        get(get_near_duplicates),
    )
}

/// A visit that sent a photo.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SentWith {
    pub submission_id: Uuid,
    pub household_id: String,
    #[serde(skip)]
    pub seq: i64,
}

/// A stored photo near the one asked about, and the visits that sent it.
#[derive(Debug, Clone)]
pub struct NearPhoto {
    pub sha256: String,
    pub distance: u32,
    pub visits: Vec<SentWith>,
}

/// Every other stored photo within the configured threshold of one with these hashes, nearest
/// first, with everything committed before the call.
pub async fn near_photos(
    state: &AppState,
    sha256: &str,
    hashes: &PhotoHashes,
) -> Result<Vec<NearPhoto>> {
    state.near.catch_up(&state.db).await?;
    let matches = state.near.lookup(hashes, state.config.near_duplicate_bits);
    if matches.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = matches.iter().map(|m| m.hash_seq).collect();
    let named: Vec<(i64, String)> = on_pool!(&state.db.read, |p| {
        let mut q =
            sqlx::QueryBuilder::new("SELECT hash_seq, sha256 FROM photo_facts WHERE hash_seq");
        crate::push_in!(q, &seqs);
        q.build_query_as().fetch_all(p).await
    })?;
    let photos: Vec<&str> = named.iter().map(|(_, s)| s.as_str()).collect();
    let sent: Vec<(String, Uuid, String, i64)> = on_pool!(&state.db.read, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT sp.sha256, s.submission_id, s.household_id, s.seq FROM submission_photos sp
             JOIN submissions s ON s.submission_id = sp.submission_id WHERE sp.sha256",
        );
        crate::push_in!(q, &photos);
        q.push(" ORDER BY s.seq");
        q.build_query_as().fetch_all(p).await
    })?;
    let mut found: Vec<NearPhoto> = matches
        .iter()
        .filter_map(|m| {
            let (_, photo) = named.iter().find(|(seq, _)| *seq == m.hash_seq)?;
            (photo != sha256).then(|| NearPhoto {
                sha256: photo.clone(),
                distance: m.distance,
                visits: sent
                    .iter()
                    .filter(|(s, ..)| s == photo)
                    .map(|(_, submission_id, household_id, seq)| SentWith {
                        submission_id: *submission_id,
                        household_id: household_id.clone(),
                        seq: *seq,
                    })
                    .collect(),
            })
        })
        .collect();
    found.sort_by(|a, b| (a.distance, &a.sha256).cmp(&(b.distance, &b.sha256)));
    Ok(found)
}

/// A photo's hashes as stored, if it is processed and comparable by the current scheme.
pub async fn stored_hashes(state: &AppState, sha256: &str) -> Result<Option<PhotoHashes>> {
    let row: Option<(Option<i64>, Option<Vec<u8>>)> = on_pool!(&state.db.read, |p| {
        sqlx::query_as("SELECT hash_version, hashes FROM photo_facts WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(p)
            .await
    })?;
    Ok(row.and_then(|(version, bytes)| {
        (version == Some(super::phash::HASH_VERSION))
            .then(|| PhotoHashes::from_bytes(bytes.as_deref()?))
            .flatten()
    }))
}

#[derive(Serialize)]
struct NearDuplicates {
    sha256: String,
    /// Whether the photo has hashes to compare by the current scheme (not yet processed, not
    /// decodable, or too flat: no).
    comparable: bool,
    threshold: u32,
    items: Vec<NearItem>,
}

/// One visit that sent a near photo: the other photo, its distance, the visit and household.
#[derive(Serialize)]
struct NearItem {
    photo: String,
    distance: u32,
    submission_id: Uuid,
    household_id: String,
}

/// `GET /v1/blobs/{sha256}/near-duplicates` (reviewer, auditor, admin): the photos within the
/// threshold of this one and the visits that sent them. A reviewer asks about photos of visits in
/// their scope; what matches may lie anywhere, as a finding names it.
async fn get_near_duplicates(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Json<NearDuplicates>> {
    caller.require(&[Role::Reviewer, Role::Auditor, Role::Admin])?;
    let sha = parse_sha(&sha256)?;
    let households: Vec<String> = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar(
            "SELECT s.household_id FROM submission_photos sp
             JOIN submissions s ON s.submission_id = sp.submission_id WHERE sp.sha256 = $1",
        )
        .bind(sha.as_str())
        .fetch_all(p)
        .await
    })?;
    let visible = caller.role != Role::Reviewer || households.iter().any(|h| caller.covers(h));
    if households.is_empty() || !visible {
        return Err(AppError::not_found(
            "no visit in your scope sent a photo with this hash",
        ));
    }
    let hashes = stored_hashes(&state, sha.as_str()).await?;
    let near = match &hashes {
        Some(hashes) => near_photos(&state, sha.as_str(), hashes).await?,
        None => Vec::new(),
    };
    Ok(Json(NearDuplicates {
        sha256: sha.as_str().to_owned(),
        comparable: hashes.is_some(),
        threshold: state.config.near_duplicate_bits,
        items: near
            .into_iter()
            .flat_map(|photo| {
                photo.visits.into_iter().map(move |visit| NearItem {
                    photo: photo.sha256.clone(),
                    distance: photo.distance,
                    submission_id: visit.submission_id,
                    household_id: visit.household_id,
                })
            })
            .collect(),
    }))
}
