//! The auditor's endpoints: the log, its verification, and one household's trail.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Chained, Verification, verify};
use crate::auth::{Caller, Role};
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::page::{ApiQuery, PageQuery, Paged};
use crate::on_pool;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/log", get(log))
        .route("/v1/audit/verify", get(verify_chain))
        .route("/v1/audit/households/{household_id}/trail", get(trail))
        .route("/v1/audit/checkpoints", get(checkpoints))
        .route("/v1/audit/exports", post(super::export::export))
}

pub(super) const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
const FEED: &str = "audit";
const COLUMNS: &str = "seq, at, actor, action, subject, household_id, data, prev_hash, hash";

/// An entry as served: its data as JSON.
#[derive(Serialize)]
pub(super) struct Served {
    #[serde(flatten)]
    entry: Chained,
    data: Box<RawValue>,
}

pub(super) fn served(entry: Chained) -> Result<Served> {
    let data = RawValue::from_string(entry.data.clone()).map_err(anyhow::Error::from)?;
    Ok(Served { entry, data })
}

async fn log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Paged<Served>>> {
    caller.require(AUDITORS)?;
    let page = query.parse(FEED)?;
    let rows: Vec<Chained> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(p)
        .await
    })?;
    let items = rows
        .into_iter()
        .map(|r| Ok((r.seq, served(r)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(Paged::from_rows(FEED, &page, items)))
}

async fn verify_chain(State(state): State<AppState>, caller: Caller) -> Result<Json<Verification>> {
    caller.require(AUDITORS)?;
    Ok(Json(verify(&state.db).await?))
}

/// The signed checkpoints of the chain head, oldest first; each names the key that signed it.
async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Paged<super::signing::Signed>>> {
    caller.require(AUDITORS)?;
    let page = query.parse(CHECKPOINT_FEED)?;
    let items = super::checkpoints::list(&state.db, page.after, page.limit + 1).await?;
    let items = items.into_iter().map(|c| (c.statement.seq, c)).collect();
    Ok(Json(Paged::from_rows(CHECKPOINT_FEED, &page, items)))
}

const CHECKPOINT_FEED: &str = "checkpoints";

#[derive(Serialize)]
struct Trail {
    household_id: String,
    items: Vec<Served>,
}

/// Everything that happened to one household, in order: registry versions, visits, the photos
/// they name (stored, processed), findings and decisions as they are recorded.
async fn trail(
    State(state): State<AppState>,
    caller: Caller,
    Path(household_id): Path<String>,
) -> Result<Json<Trail>> {
    caller.require(AUDITORS)?;
    huikan_shared::submission::check_household_id(&household_id)
        .map_err(|e| AppError::problem("invalid_path", e))?;
    // Entries that name the household, and those of the photos its visits name.
    let rows: Vec<Chained> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE household_id = $1
             UNION
             SELECT {COLUMNS} FROM audit_log
             WHERE action IN ('photo.stored', 'photo.processed')
               AND subject IN (SELECT 'blob:' || sp.sha256 FROM submission_photos sp
                               JOIN submissions s ON s.submission_id = sp.submission_id
                               WHERE s.household_id = $1)
             ORDER BY seq"
        ))
        .bind(&household_id)
        .fetch_all(p)
        .await
    })?;
    let items = rows.into_iter().map(served).collect::<Result<Vec<_>>>()?;
    Ok(Json(Trail {
        household_id,
        items,
    }))
}
