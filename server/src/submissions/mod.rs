//! Visits from phones: `POST /v1/submissions`, the batched `POST /v1/sync/push`, reading one
//! back, and the feed through which a phone learns its visits' review state.

mod group_commit;
pub mod ingest;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use group_commit::GroupCommit;
pub use ingest::{Incoming, Outcome, Receipt, ingest};

use crate::auth::{Caller, Role};
use crate::error::{AppError, Problem, Result, problem_response};
use crate::http::AppState;
use crate::http::json::RawJson;
use crate::http::page::{ApiQuery, PageQuery, Paged};
use crate::on_pool;
use crate::privacy::{UnmaskQuery, mask_members, record_full_read};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/submissions", post(submit))
        .route("/v1/submissions/{submission_id}", get(read))
        .route("/v1/sync/push", post(push))
        .route("/v1/sync/submissions", get(feed))
}

/// The most visits one push may carry.
pub const MAX_PUSH: usize = 500;

async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    RawJson(body): RawJson,
) -> Result<Response> {
    caller.require(&[Role::FieldStaff])?;
    let item = Incoming::prepare(&body, caller.user_id, &caller.username)?;
    let outcome = state.submissions.submit(item).await?;
    if matches!(outcome, Outcome::Created(_)) {
        // Its reconciliation (and photo check) were enqueued.
        state.jobs.notify();
    }
    record(&outcome);
    Ok(match outcome {
        Outcome::Created(receipt) => (StatusCode::CREATED, Json(receipt)).into_response(),
        Outcome::Replayed(receipt) => (StatusCode::OK, Json(receipt)).into_response(),
        Outcome::Conflict(problem) | Outcome::MissingBlobs(problem) => problem_response(&problem),
    })
}

pub(crate) fn record(outcome: &Outcome) {
    let label = match outcome {
        Outcome::Created(_) => "created",
        Outcome::Replayed(_) => "replayed",
        Outcome::Conflict(_) => "conflict",
        Outcome::MissingBlobs(_) => "missing_blobs",
    };
    metrics::counter!("submissions_total", "outcome" => label).increment(1);
}

#[derive(Serialize)]
struct PushResult {
    submission_id: Option<String>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<Receipt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
}

#[derive(Serialize)]
struct PushResults {
    results: Vec<PushResult>,
}

async fn push(
    State(state): State<AppState>,
    caller: Caller,
    RawJson(body): RawJson,
) -> Result<Json<PushResults>> {
    caller.require(&[Role::FieldStaff])?;
    let items = match &body {
        Value::Object(map) if map.len() == 1 => match map.get("submissions") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(AppError::invalid_body(
                    "submissions: an array of visits is required",
                ));
            }
        },
        _ => {
            return Err(AppError::invalid_body(
                "the body must be {\"submissions\": [...]} and nothing else",
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_PUSH {
        return Err(AppError::invalid_body(format!(
            "submissions: 1 to {MAX_PUSH} visits per push, got {}",
            items.len()
        )));
    }
    let mut valid: Vec<Incoming> = Vec::with_capacity(items.len());
    let slots: Vec<Result<usize, Problem>> = items
        .iter()
        .map(|raw| {
            Incoming::prepare(raw, caller.user_id, &caller.username).map(|item| {
                valid.push(item);
                valid.len() - 1
            })
        })
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = ingest(&state.db, &valid)
        .await?
        .into_iter()
        .map(Some)
        .collect();
    if !valid.is_empty() {
        // Reconciliations (and photo checks) were enqueued for what was new.
        state.jobs.notify();
    }
    let results = slots
        .into_iter()
        .zip(items)
        .map(|(slot, raw)| {
            let raw_id = raw
                .get("submission_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match slot {
                Err(problem) => PushResult {
                    submission_id: raw_id,
                    outcome: "invalid",
                    receipt: None,
                    problem: Some(problem),
                },
                Ok(index) => {
                    let outcome = outcomes[index].take();
                    if let Some(o) = &outcome {
                        record(o);
                    }
                    let (name, receipt, problem) = match outcome {
                        Some(Outcome::Created(r)) => ("created", Some(r), None),
                        Some(Outcome::Replayed(r)) => ("replayed", Some(r), None),
                        Some(Outcome::Conflict(p)) => ("conflict", None, Some(p)),
                        Some(Outcome::MissingBlobs(p)) => ("missing_blobs", None, Some(p)),
                        None => (
                            "invalid",
                            None,
                            Some(Problem::new("internal", "no outcome")),
                        ),
                    };
                    PushResult {
                        submission_id: Some(valid[index].submission_id.to_string()),
                        outcome: name,
                        receipt,
                        problem,
                    }
                }
            }
        })
        .collect();
    Ok(Json(PushResults { results }))
}

#[derive(sqlx::FromRow)]
struct StoredSubmission {
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    submitted_by: Uuid,
    username: String,
    received_at: DateTime<Utc>,
    seq: i64,
    content_sha256: String,
    content: String,
    duplicate_of: Option<Uuid>,
    review_state: String,
    device_id: Option<String>,
    app_version: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PhotoRow {
    sha256: String,
    kind: String,
    size: i64,
    content_type: String,
    state: Option<String>,
    problem: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    taken_at: Option<String>,
    taken_offset: Option<String>,
    gps_lat: Option<f64>,
    gps_lon: Option<f64>,
    make: Option<String>,
    model: Option<String>,
}

/// A visit's photo with what processing found in it (`state` is `pending` until then).
#[derive(Serialize)]
struct PhotoView {
    sha256: String,
    kind: String,
    size: i64,
    content_type: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    /// EXIF DateTimeOriginal (local time as the camera wrote it) and its offset, if written.
    exif_time: Option<String>,
    exif_offset: Option<String>,
    exif_gps: Option<serde_json::Value>,
    camera: Option<String>,
    thumbnail_url: Option<String>,
    /// From the visit's `photo_near_duplicate` finding on this photo: what it looks like.
    near_duplicates: Vec<Value>,
}

impl From<PhotoRow> for PhotoView {
    fn from(r: PhotoRow) -> PhotoView {
        let camera = match (r.make, r.model) {
            (Some(make), Some(model)) if model.starts_with(&make) => Some(model),
            (Some(make), Some(model)) => Some(format!("{make} {model}")),
            (make, model) => make.or(model),
        };
        PhotoView {
            thumbnail_url: (r.state.as_deref() == Some("processed"))
                .then(|| format!("/v1/blobs/{}/thumbnail", r.sha256)),
            exif_gps: r
                .gps_lat
                .zip(r.gps_lon)
                .map(|(lat, lon)| serde_json::json!({"lat": lat, "lon": lon})),
            sha256: r.sha256,
            kind: r.kind,
            size: r.size,
            content_type: r.content_type,
            state: r.state.unwrap_or_else(|| "pending".to_owned()),
            problem: r.problem,
            width: r.width,
            height: r.height,
            exif_time: r.taken_at,
            exif_offset: r.taken_offset,
            camera,
            near_duplicates: Vec::new(),
        }
    }
}

/// A finding on the visit; `data` names what it points to (the other visit of a reused photo).
#[derive(Serialize, sqlx::FromRow)]
struct FindingView {
    code: String,
    severity: String,
    detail: String,
    subject: String,
    #[serde(serialize_with = "raw_json")]
    data: String,
    rule_version: i64,
}

fn raw_json<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let value: Box<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string(text.to_owned())
            .map_err(serde::ser::Error::custom)?;
    value.serialize(serializer)
}

#[derive(Serialize)]
pub struct SubmissionView {
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    submitted_by: String,
    received_at: DateTime<Utc>,
    seq: i64,
    content_sha256: String,
    duplicate_of: Option<Uuid>,
    review_state: String,
    content: Value,
    device_id: Option<String>,
    app_version: Option<String>,
    photos: Vec<PhotoView>,
    findings: Vec<FindingView>,
    /// The reviewer holding it, while the lease runs.
    claim: Option<ClaimView>,
    /// Every decision on it, oldest first.
    decisions: Vec<DecisionView>,
    comments: Vec<crate::review::Comment>,
    /// The visit whose resurvey request this one answers: the household's latest visit in the
    /// campaign sent back for resurvey before this one arrived.
    answers_resurvey_of: Option<Uuid>,
}

#[derive(Serialize, sqlx::FromRow)]
struct ClaimView {
    reviewer: String,
    lease_expires_at: DateTime<Utc>,
}

#[derive(Serialize, sqlx::FromRow)]
struct DecisionView {
    decision: String,
    from_state: String,
    state: String,
    reason: Option<String>,
    reviewer: String,
    decided_at: DateTime<Utc>,
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(submission_id): Path<String>,
    ApiQuery(query): ApiQuery<UnmaskQuery>,
) -> Result<Json<SubmissionView>> {
    Ok(Json(view(&state, &caller, &submission_id, &query).await?))
}

/// One visit as the caller may see it: its content, photos, findings and review.
pub async fn view(
    state: &AppState,
    caller: &Caller,
    submission_id: &str,
    query: &UnmaskQuery,
) -> Result<SubmissionView> {
    let not_found = || AppError::not_found("no such submission");
    let id = Uuid::parse_str(submission_id).map_err(|_| not_found())?;
    let full_id_numbers = query.sees_full_id_numbers(caller)?;
    let stored: Option<StoredSubmission> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT s.submission_id, s.household_id, s.campaign, s.submitted_by, u.username, s.received_at, s.seq,
                    s.content_sha256, s.content, s.duplicate_of, s.review_state, s.device_id, s.app_version
             FROM submissions s JOIN users u ON u.id = s.submitted_by WHERE s.submission_id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await
    })?;
    let stored = stored.ok_or_else(not_found)?;
    // Field staff see their own visits; reviewers those of households in their scope (a
    // household id begins with its village's code).
    let outside_scope = caller.role == Role::Reviewer && !caller.covers(&stored.household_id);
    if outside_scope || (caller.role == Role::FieldStaff && stored.submitted_by != caller.user_id) {
        return Err(not_found());
    }
    let photos: Vec<PhotoRow> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT sp.sha256, sp.kind, b.size, b.content_type, f.state, f.problem, f.width, f.height,
                    f.taken_at, f.taken_offset, f.gps_lat, f.gps_lon, f.make, f.model
             FROM submission_photos sp JOIN blobs b ON b.sha256 = sp.sha256
             LEFT JOIN photo_facts f ON f.sha256 = sp.sha256
             WHERE sp.submission_id = $1 ORDER BY sp.position",
        )
        .bind(id)
        .fetch_all(p)
        .await
    })?;
    let findings: Vec<FindingView> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT code, severity, detail, subject, data, rule_version FROM findings
             WHERE submission_id = $1 AND cleared_at IS NULL ORDER BY raised_at, code, subject",
        )
        .bind(id)
        .fetch_all(p)
        .await
    })?;
    let now = crate::db::now();
    let (claim, decisions, comments, answers_resurvey_of) = on_pool!(&state.db.read, |p| {
        let claim = sqlx::query_as(
            "SELECT reviewer, lease_expires_at FROM review_claims
             WHERE submission_id = $1 AND lease_expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(p);
        let decisions = sqlx::query_as(
            "SELECT decision, from_state, state, reason, reviewer, decided_at FROM review_decisions
             WHERE submission_id = $1 ORDER BY decided_at",
        )
        .bind(id)
        .fetch_all(p);
        let comments = sqlx::query_as(
            "SELECT comment_id, author, text, created_at FROM review_comments
             WHERE submission_id = $1 ORDER BY created_at",
        )
        .bind(id)
        .fetch_all(p);
        let answers = sqlx::query_scalar(
            "SELECT submission_id FROM submissions
             WHERE household_id = $1 AND campaign = $2 AND review_state = 'resurvey_requested'
               AND submission_id <> $3 AND state_at < $4
             ORDER BY state_at DESC LIMIT 1",
        )
        .bind(&stored.household_id)
        .bind(&stored.campaign)
        .bind(id)
        .bind(stored.received_at)
        .fetch_optional(p);
        tokio::try_join!(claim, decisions, comments, answers)
    })?;
    let mut photos: Vec<PhotoView> = photos.into_iter().map(PhotoView::from).collect();
    for photo in &mut photos {
        let subject = format!("photo:{}", photo.sha256);
        photo.near_duplicates = findings
            .iter()
            .filter(|f| f.code == "photo_near_duplicate" && f.subject == subject)
            .filter_map(|f| serde_json::from_str(&f.data).ok())
            .collect();
    }
    let mut content: Value = serde_json::from_str(&stored.content).map_err(anyhow::Error::from)?;
    if full_id_numbers {
        let data = serde_json::json!({"submission_id": stored.submission_id, "household_id": stored.household_id});
        record_full_read(
            &state.db,
            caller,
            format!("submission:{}", stored.submission_id),
            data,
        )
        .await?;
    } else {
        mask_members(content.pointer_mut("/answers/members"));
    }
    Ok(SubmissionView {
        submission_id: stored.submission_id,
        household_id: stored.household_id,
        campaign: stored.campaign,
        submitted_by: stored.username,
        received_at: stored.received_at,
        seq: stored.seq,
        content_sha256: stored.content_sha256,
        duplicate_of: stored.duplicate_of,
        review_state: stored.review_state,
        content,
        device_id: stored.device_id,
        app_version: stored.app_version,
        photos,
        findings,
        claim,
        decisions,
        comments,
        answers_resurvey_of,
    })
}

#[derive(Serialize, sqlx::FromRow)]
struct FeedItem {
    #[serde(skip)]
    state_seq: i64,
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    review_state: String,
    reason: Option<String>,
    changed_at: DateTime<Utc>,
}

const FEED: &str = "submissions";

async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Paged<FeedItem>>> {
    caller.require(&[Role::FieldStaff])?;
    let page = query.parse(FEED)?;
    let rows: Vec<FeedItem> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT state_seq, submission_id, household_id, campaign, review_state, review_reason AS reason,
                    state_at AS changed_at
             FROM submissions WHERE submitted_by = $1 AND state_seq > $2 ORDER BY state_seq LIMIT $3",
        )
        .bind(caller.user_id)
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(p)
        .await
    })?;
    let rows = rows.into_iter().map(|r| (r.state_seq, r)).collect();
    Ok(Json(Paged::from_rows(FEED, &page, rows)))
}
