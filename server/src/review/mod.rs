//! Review: the reviewers' queue, claims with a lease that runs out, decisions that reach the
//! phone through `/v1/sync/submissions`, and comments. States as the contract has them:
//! `received` → `in_review` (claimed) → `approved` | `rejected` | `resurvey_requested`.
//!
//! Every transition takes the submission feed's counter lock (as ingest does): it orders the
//! change in the phones' feed and makes two reviewers' transitions on one visit strictly one
//! after the other, so the second sees the first's claim or decision.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use huikan_shared::limits;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::append_audit;
use crate::audit::Entry;
use crate::auth::{Caller, Role};
use crate::db::BeginWrite;
use crate::db::prefix_condition;
use crate::enqueue_jobs;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::http::page::{ApiQuery, PageQuery, Paged};
use crate::jobs::Kind;
use crate::on_pool;

/// Sets a visit's review state, numbered in the phones' feed (a macro: it runs in both arms of
/// `on_pool!`).
macro_rules! move_state {
    ($tx:ident, $id:expr, $to:expr, $reason:expr, $seq:expr, $now:expr) => {
        sqlx::query(
            "UPDATE submissions SET review_state = $1, review_reason = $2, state_seq = $3, state_at = $4
             WHERE submission_id = $5",
        )
        .bind($to)
        .bind($reason)
        .bind($seq)
        .bind($now)
        .bind($id)
        .execute(&mut *$tx)
        .await?
    };
}

/// The visit a transition acts on, read in its transaction; one outside the caller's scope is
/// as absent as one that does not exist.
macro_rules! reviewed_visit {
    ($tx:ident, $id:expr, $caller:expr) => {
        sqlx::query_as::<_, Reviewed>(
            "SELECT household_id, review_state FROM submissions WHERE submission_id = $1",
        )
        .bind($id)
        .fetch_optional(&mut *$tx)
        .await?
        .filter(|v| in_scope($caller, &v.household_id))
        .ok_or_else(|| AppError::not_found("no such submission in your scope"))?
    };
}

/// Refuses the transition while another reviewer's claim on the visit runs.
macro_rules! refuse_others_claim {
    ($tx:ident, $id:expr, $caller:expr, $now:expr) => {
        let holder: Option<Holder> = sqlx::query_as(
            "SELECT reviewer_id, reviewer, lease_expires_at FROM review_claims WHERE submission_id = $1",
        )
        .bind($id)
        .fetch_optional(&mut *$tx)
        .await?;
        if let Some(holder) =
            holder.filter(|h| h.reviewer_id != $caller.user_id && h.lease_expires_at > $now)
        {
            return Err(claimed_by_other(&holder));
        }
    };
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/review/queue", get(queue_route))
        .route("/v1/review/{submission_id}/claim", post(claim_route))
        .route("/v1/review/{submission_id}/decision", post(decision_route))
        .route("/v1/review/{submission_id}/comments", post(comment_route))
}

const FEED: &str = "submissions";
const REVIEWERS: [Role; 2] = [Role::Reviewer, Role::Admin];
const UNDECIDED: [&str; 2] = ["received", "in_review"];
const STATES: [&str; 5] = [
    "received",
    "in_review",
    "approved",
    "rejected",
    "resurvey_requested",
];

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    #[serde(flatten)]
    pub page: PageQuery,
    pub prefix: Option<String>,
    pub finding: Option<String>,
    pub state: Option<String>,
    pub severity: Option<String>,
}

#[derive(Serialize)]
pub struct QueueItem {
    pub submission_id: Uuid,
    pub household_id: String,
    pub campaign: String,
    pub submitted_by: String,
    pub surveyed_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub state: String,
    /// Who holds it, while the lease runs.
    pub claimed_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Open findings by code, and the worst severity among them.
    pub findings: HashMap<String, i64>,
    pub severity: Option<&'static str>,
}

#[derive(sqlx::FromRow)]
struct QueueRow {
    seq: i64,
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    submitted_by: String,
    surveyed_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    review_state: String,
    claimed_by: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// The queue a reviewer works through, oldest first: by default the undecided visits that have
/// open findings, plus the configured share of clean ones (every clean one by default).
pub async fn queue(
    state: &AppState,
    caller: &Caller,
    query: &QueueQuery,
) -> Result<Paged<QueueItem>> {
    caller.require(&REVIEWERS)?;
    let page = query.page.parse("review")?;
    let states: Vec<&str> = match query.state.as_deref() {
        None => UNDECIDED.to_vec(),
        Some(wanted) => {
            let known = STATES.iter().find(|s| **s == wanted).ok_or_else(|| {
                AppError::invalid_query(format!(
                    "state must be one of {}, got {wanted:?}",
                    STATES.join(", ")
                ))
            })?;
            vec![*known]
        }
    };
    let prefix = query
        .prefix
        .as_deref()
        .map(|p| {
            huikan_shared::DivisionPrefix::parse(p)
                .map_err(|e| AppError::invalid_query(format!("prefix: {e}")))
        })
        .transpose()?;
    let finding = query
        .finding
        .as_deref()
        .map(|code| {
            crate::reconcile::rules::known_code(code).ok_or_else(|| {
                AppError::invalid_query(format!("finding: {code:?} is not a finding code"))
            })
        })
        .transpose()?;
    let severity = query
        .severity
        .as_deref()
        .map(|s| {
            ["info", "warning", "critical"]
                .into_iter()
                .find(|known| *known == s)
                .ok_or_else(|| {
                    AppError::invalid_query(format!(
                        "severity must be info, warning or critical, got {s:?}"
                    ))
                })
        })
        .transpose()?;

    let mut conditions = vec![format!(
        "s.review_state IN ({})",
        states
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    conditions.push("s.duplicate_of IS NULL".to_owned());
    if let Some(prefix) = &prefix {
        conditions.push(prefix_condition("s.household_id", &[prefix]));
    }
    if caller.role == Role::Reviewer {
        let scope: Vec<&huikan_shared::DivisionPrefix> = caller.scope.iter().collect();
        conditions.push(prefix_condition("s.household_id", &scope));
    }
    let open =
        "SELECT 1 FROM findings f WHERE f.submission_id = s.submission_id AND f.cleared_at IS NULL";
    if finding.is_some() {
        conditions.push(format!("EXISTS ({open} AND f.code = $3)"));
    }
    if let Some(severity) = severity {
        conditions.push(format!("EXISTS ({open} AND f.severity = '{severity}')"));
    }
    let sample = state.config.review_sample_percent.min(100);
    if query.state.is_none() && sample < 100 {
        // Clean visits enter the queue by a systematic sample of arrival order.
        conditions.push(format!("(EXISTS ({open}) OR s.seq % 100 < {sample})"));
    }
    let sql = format!(
        "SELECT s.seq, s.submission_id, s.household_id, s.campaign, u.username AS submitted_by,
                s.surveyed_at, s.received_at, s.review_state, c.reviewer AS claimed_by,
                c.lease_expires_at
         FROM submissions s JOIN users u ON u.id = s.submitted_by
         LEFT JOIN review_claims c ON c.submission_id = s.submission_id AND c.lease_expires_at > $4
         WHERE s.seq > $1 AND {}
         ORDER BY s.seq LIMIT $2",
        conditions.join(" AND ")
    );
    let now = crate::db::now();
    let rows: Vec<QueueRow> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(&sql)
            .bind(page.after)
            .bind(page.limit + 1)
            .bind(finding.unwrap_or_default())
            .bind(now)
            .fetch_all(p)
            .await
    })?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.submission_id).collect();
    let counts: Vec<(Uuid, String, String, i64)> = if ids.is_empty() {
        Vec::new()
    } else {
        on_pool!(&state.db.read, |p| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT submission_id, code, severity, COUNT(*) FROM findings
                 WHERE cleared_at IS NULL AND submission_id IN (",
            );
            let mut list = q.separated(", ");
            for id in &ids {
                list.push_bind(*id);
            }
            list.push_unseparated(") GROUP BY submission_id, code, severity");
            q.build_query_as().fetch_all(p).await
        })?
    };
    let mut findings: HashMap<Uuid, (HashMap<String, i64>, Option<&'static str>)> = HashMap::new();
    for (id, code, severity, n) in counts {
        let entry = findings.entry(id).or_default();
        *entry.0.entry(code).or_default() += n;
        let rank = |s: Option<&str>| match s {
            Some("critical") => 3,
            Some("warning") => 2,
            Some("info") => 1,
            _ => 0,
        };
        if rank(Some(&severity)) > rank(entry.1) {
            entry.1 = ["info", "warning", "critical"]
                .into_iter()
                .find(|s| *s == severity);
        }
    }
    let items = rows
        .into_iter()
        .map(|row| {
            let (codes, severity) = findings.remove(&row.submission_id).unwrap_or_default();
            (
                row.seq,
                QueueItem {
                    submission_id: row.submission_id,
                    household_id: row.household_id,
                    campaign: row.campaign,
                    submitted_by: row.submitted_by,
                    surveyed_at: row.surveyed_at,
                    received_at: row.received_at,
                    state: row.review_state,
                    claimed_by: row.claimed_by,
                    lease_expires_at: row.lease_expires_at,
                    findings: codes,
                    severity,
                },
            )
        })
        .collect();
    Ok(Paged::from_rows("review", &page, items))
}

async fn queue_route(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<QueueQuery>,
) -> Result<Json<Paged<QueueItem>>> {
    Ok(Json(queue(&state, &caller, &query).await?))
}

#[derive(Serialize)]
pub struct Claim {
    pub submission_id: Uuid,
    pub reviewer: String,
    pub lease_expires_at: DateTime<Utc>,
    pub state: String,
}

/// The visit as a transition sees it, read under the feed lock.
#[derive(sqlx::FromRow)]
struct Reviewed {
    household_id: String,
    review_state: String,
}

#[derive(sqlx::FromRow)]
struct Holder {
    reviewer_id: Uuid,
    reviewer: String,
    lease_expires_at: DateTime<Utc>,
}

fn parse_id(submission_id: &str) -> Result<Uuid> {
    Uuid::parse_str(submission_id).map_err(|_| AppError::not_found("no such submission"))
}

fn claimed_by_other(holder: &Holder) -> AppError {
    AppError::from(
        crate::error::Problem::new(
            "claimed_by_other",
            format!(
                "{} holds this visit until {}",
                holder.reviewer,
                holder.lease_expires_at.to_rfc3339()
            ),
        )
        .with("reviewer", &holder.reviewer)
        .with("lease_expires_at", holder.lease_expires_at),
    )
}

/// Takes (or extends) the claim on a visit for the lease, moving it to `in_review`.
pub async fn claim(state: &AppState, caller: &Caller, submission_id: &str) -> Result<Claim> {
    caller.require(&REVIEWERS)?;
    let id = parse_id(submission_id)?;
    let lease = chrono::Duration::seconds(state.config.review_lease_secs as i64);
    let dialect = state.db.dialect();
    let lock = crate::db::lock_counter_sql(dialect);
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut seq: i64 = sqlx::query_scalar(lock)
            .bind(FEED)
            .fetch_one(&mut *tx)
            .await?;
        let now = crate::db::now();
        let visit = reviewed_visit!(tx, id, caller);
        if !UNDECIDED.contains(&visit.review_state.as_str()) {
            return Err(AppError::from(
                crate::error::Problem::new(
                    "state_conflict",
                    format!(
                        "the visit is already {}; a decided visit cannot be claimed",
                        visit.review_state
                    ),
                )
                .with("state", &visit.review_state),
            ));
        }
        refuse_others_claim!(tx, id, caller, now);
        let lease_expires_at = now + lease;
        sqlx::query(
            "INSERT INTO review_claims (submission_id, reviewer_id, reviewer, claimed_at, lease_expires_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (submission_id) DO UPDATE SET reviewer_id = excluded.reviewer_id,
               reviewer = excluded.reviewer, claimed_at = excluded.claimed_at,
               lease_expires_at = excluded.lease_expires_at",
        )
        .bind(id)
        .bind(caller.user_id)
        .bind(&caller.username)
        .bind(now)
        .bind(lease_expires_at)
        .execute(&mut *tx)
        .await?;
        if visit.review_state == "received" {
            seq += 1;
            move_state!(tx, id, "in_review", None::<&str>, seq, now);
            sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
                .bind(seq)
                .bind(FEED)
                .execute(&mut *tx)
                .await?;
        }
        let entry = Entry::new(
            &caller.username,
            "review.claimed",
            format!("submission:{id}"),
            serde_json::json!({"submission_id": id, "household_id": visit.household_id,
                               "lease_expires_at": lease_expires_at}),
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok(Claim {
            submission_id: id,
            reviewer: caller.username.clone(),
            lease_expires_at,
            state: "in_review".to_owned(),
        })
    })
}

fn in_scope(caller: &Caller, household_id: &str) -> bool {
    caller.role != Role::Reviewer || caller.covers(household_id)
}

async fn claim_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(submission_id): Path<String>,
) -> Result<Json<Claim>> {
    Ok(Json(claim(&state, &caller, &submission_id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    pub decision: String,
    #[serde(
        default,
        deserialize_with = "limits::present_text::<{ limits::TEXT }, _>"
    )]
    pub reason: Option<String>,
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    pub expected_state: String,
}

#[derive(Serialize)]
pub struct Decided {
    pub submission_id: Uuid,
    pub state: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// Decides a visit: approve, reject or send back for resurvey (with a reason), if it is still in
/// the state the reviewer saw and nobody else holds it.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    submission_id: &str,
    body: DecisionBody,
) -> Result<Decided> {
    caller.require(&REVIEWERS)?;
    let id = parse_id(submission_id)?;
    let to = match body.decision.as_str() {
        "approve" => "approved",
        "reject" => "rejected",
        "resurvey" => "resurvey_requested",
        other => {
            return Err(AppError::invalid_body(format!(
                "decision must be approve, reject or resurvey, got {other:?}"
            )));
        }
    };
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    if to != "approved" && reason.is_none() {
        return Err(AppError::invalid_body(format!(
            "reason is required to {}: the field worker reads it",
            body.decision
        )));
    }
    if !STATES.contains(&body.expected_state.as_str()) {
        return Err(AppError::invalid_body(format!(
            "expected_state must be one of {}, got {:?}",
            STATES.join(", "),
            body.expected_state
        )));
    }
    let dialect = state.db.dialect();
    let lock = crate::db::lock_counter_sql(dialect);
    let decided = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let seq: i64 = sqlx::query_scalar(lock)
            .bind(FEED)
            .fetch_one(&mut *tx)
            .await?;
        let now = crate::db::now();
        let visit = reviewed_visit!(tx, id, caller);
        if visit.review_state != body.expected_state
            || !UNDECIDED.contains(&visit.review_state.as_str())
        {
            let detail = if visit.review_state != body.expected_state {
                format!(
                    "the visit is {}, not {}",
                    visit.review_state, body.expected_state
                )
            } else {
                format!("the visit is already {}", visit.review_state)
            };
            return Err(AppError::from(
                crate::error::Problem::new("state_conflict", detail)
                    .with("state", &visit.review_state),
            ));
        }
        refuse_others_claim!(tx, id, caller, now);
        let seq = seq + 1;
        move_state!(tx, id, to, reason.as_deref(), seq, now);
        sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
            .bind(seq)
            .bind(FEED)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO review_decisions (decision_id, submission_id, decision, from_state, state, reason,
                 decided_by, reviewer, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(&body.decision)
        .bind(&visit.review_state)
        .bind(to)
        .bind(reason.as_deref())
        .bind(caller.user_id)
        .bind(&caller.username)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM review_claims WHERE submission_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // The reason is free text a reviewer typed: the trail holds its hash, the decision row
        // the text.
        let entry = Entry::new(
            &caller.username,
            "review.decided",
            format!("submission:{id}"),
            serde_json::json!({"submission_id": id, "household_id": visit.household_id,
                               "decision": body.decision, "from_state": visit.review_state,
                               "state": to,
                               "reason_sha256": reason.as_deref().map(|r| hex::encode(Sha256::digest(r.as_bytes())))}),
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        // The household's current visit may have changed.
        enqueue_jobs!(tx, Kind::Reconcile, &[visit.household_id.as_str()]);
        tx.commit().await?;
        Ok::<_, AppError>(Decided {
            submission_id: id,
            state: to.to_owned(),
            decided_by: caller.username.clone(),
            decided_at: now,
            reason,
        })
    })?;
    state.jobs.notify();
    Ok(decided)
}

async fn decision_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(submission_id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<Decided>> {
    Ok(Json(decide(&state, &caller, &submission_id, body).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    #[serde(deserialize_with = "limits::text::<{ limits::TEXT }, _>")]
    pub text: String,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct Comment {
    pub comment_id: Uuid,
    pub author: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// A note on a visit, for the other reviewers and the record.
pub async fn comment(
    state: &AppState,
    caller: &Caller,
    submission_id: &str,
    body: CommentBody,
) -> Result<Comment> {
    caller.require(&[Role::Reviewer, Role::Auditor, Role::Admin])?;
    let id = parse_id(submission_id)?;
    let text = body.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > 4000 {
        return Err(AppError::invalid_body("text must be 1 to 4,000 characters"));
    }
    let household: Option<String> = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar("SELECT household_id FROM submissions WHERE submission_id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
    })?;
    let household = household
        .filter(|h| in_scope(caller, h))
        .ok_or_else(|| AppError::not_found("no such submission in your scope"))?;
    let comment = Comment {
        comment_id: Uuid::now_v7(),
        author: caller.username.clone(),
        text,
        created_at: crate::db::now(),
    };
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query(
            "INSERT INTO review_comments (comment_id, submission_id, author_id, author, text, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(comment.comment_id)
        .bind(id)
        .bind(caller.user_id)
        .bind(&comment.author)
        .bind(&comment.text)
        .bind(comment.created_at)
        .execute(&mut *tx)
        .await?;
        let entry = Entry::new(
            &caller.username,
            "review.commented",
            format!("submission:{id}"),
            serde_json::json!({"submission_id": id, "household_id": household, "comment_id": comment.comment_id,
                               "text_sha256": hex::encode(Sha256::digest(comment.text.as_bytes()))}),
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        tx.commit().await?;
        Ok::<_, AppError>(())
    })?;
    Ok(comment)
}

async fn comment_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(submission_id): Path<String>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<(StatusCode, Json<Comment>)> {
    Ok((
        StatusCode::CREATED,
        Json(comment(&state, &caller, &submission_id, body).await?),
    ))
}
