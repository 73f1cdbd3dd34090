//! The household registry: imports from the county's files (`POST /v1/registry/imports` and
//! `huikan registry import`), the delta feed phones pull before walking out of signal, and one
//! household read within the caller's scope.

mod import;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use huikan_shared::division::upper_bound;
use huikan_shared::submission::Datum;
use huikan_shared::{CampaignId, DivisionPrefix};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

pub use import::{ImportReport, import_file};

use huikan_registry_file as file;
use huikan_registry_file::rows;

use crate::auth::{Caller, Role};
use crate::blobs::with_drained_body;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::page::{ApiQuery, PageQuery, Paged};
use crate::on_pool;
use crate::privacy::{UnmaskQuery, mask_members, record_full_read};
use crate::store::spool::SpoolError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/registry/imports", post(import_upload))
        .route("/v1/sync/registry", get(sync))
        .route("/v1/households/{household_id}", get(household))
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[derive(Deserialize)]
struct ImportQuery {
    #[serde(default)]
    datum: Option<String>,
}

pub fn parse_datum(datum: Option<&str>) -> Result<Datum> {
    match datum {
        None | Some("wgs84") => Ok(Datum::Wgs84),
        Some("gcj02") => Ok(Datum::Gcj02),
        Some("bd09") => Ok(Datum::Bd09),
        Some(other) => Err(AppError::invalid_query(format!(
            "datum must be wgs84, gcj02 or bd09, got {other:?}"
        ))),
    }
}

async fn import_upload(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    ApiQuery(query): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ImportReport>)> {
    with_drained_body(body, |mut stream| async move {
        let answer = async {
            let caller = caller?;
            caller.require(&[Role::Admin])?;
            let datum = parse_datum(query.datum.as_deref())?;
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::trim)
                .unwrap_or_default();
            if !matches!(content_type, "text/csv" | XLSX | "application/octet-stream") {
                return Err(AppError::problem(
                    "unsupported_media_type",
                    format!("send the registry as text/csv or {XLSX}, not {content_type:?}"),
                ));
            }
            let limit = state.config.max_import_bytes;
            let spooled = state.spool.spool(&mut stream, limit).await.map_err(|e| match e {
                SpoolError::TooLarge => AppError::problem(
                    "payload_too_large",
                    format!("a registry file may be at most {limit} bytes; use `huikan registry import` for larger"),
                ),
                other => crate::blobs::spool_error(other, limit),
            })?;
            let path = spooled.file.to_path_buf();
            let report = import_file(&state.db, path, datum, Some(caller.user_id), &caller.username, "http").await?;
            drop(spooled);
            // The changed households' visits are reconciled again.
            state.jobs.notify();
            Ok((StatusCode::CREATED, Json(report)))
        }
        .await;
        (answer, stream)
    })
    .await
}

#[derive(sqlx::FromRow)]
struct HouseholdRow {
    household_id: String,
    village_code: String,
    record: String,
    version: i64,
    removed: bool,
    change_seq: i64,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "household_id, village_code, record, version, removed, change_seq, updated_at";

/// A household as served: its record with `version`, `removed` and `updated_at` added; removed
/// households in the feed are only `{"household_id","deleted":true,"version"}`.
fn served(row: &HouseholdRow, tombstone_only: bool, gone: bool) -> Result<Box<RawValue>> {
    let text = if (row.removed || gone) && tombstone_only {
        serde_json::json!({"household_id": row.household_id, "deleted": true, "version": row.version}).to_string()
    } else {
        // The record is a JSON object: add the fields at its front without re-parsing it.
        let body = row
            .record
            .strip_prefix('{')
            .ok_or_else(|| anyhow::anyhow!("household record is not an object"))?;
        let sep = if body.starts_with('}') { "" } else { "," };
        format!(
            "{{\"removed\":{},\"updated_at\":{},\"version\":{}{sep}{body}",
            row.removed,
            serde_json::to_string(&row.updated_at).map_err(anyhow::Error::from)?,
            row.version
        )
    };
    Ok(RawValue::from_string(text).map_err(anyhow::Error::from)?)
}

/// `GET /v1/sync/registry`: the caller's villages' households changed since the cursor, in feed
/// order. A page reads a committed snapshot, and an import numbers its changes under the feed
/// lock, so a phone paging while an import lands misses nothing.
async fn sync(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Paged<Box<RawValue>>>> {
    caller.require(&[Role::FieldStaff])?;
    let page = query.parse(import::FEED)?;
    if caller.scope.is_empty() {
        return Ok(Json(Paged::from_rows(import::FEED, &page, Vec::new())));
    }
    // Two index-friendly halves rather than one OR, which planners may answer with a scan:
    // households now in the villages, and those that moved out of them.
    let villages = scope_villages(&caller.scope);
    // Each half is limited on its own too, so a page never sorts more than it returns.
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS} FROM households WHERE change_seq > $1 AND village_code IN ({villages})
                        ORDER BY change_seq LIMIT $2) AS current
         UNION ALL
         SELECT * FROM (SELECT {COLUMNS} FROM households WHERE change_seq > $1 AND moved_from IN ({villages})
                          AND village_code NOT IN ({villages}) ORDER BY change_seq LIMIT $2) AS former
         ORDER BY change_seq LIMIT $2"
    );
    let rows: Vec<HouseholdRow> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(&sql)
            .bind(page.after)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await
    })?;
    // A household that moved out of the caller's villages is, for this phone, removed.
    let items = rows
        .iter()
        .map(|r| {
            let gone_from_here = !caller.covers(&r.village_code);
            served(r, true, gone_from_here).map(|v| (r.change_seq, v))
        })
        .collect::<Result<Vec<_>>>()?;
    // The page carries full ID numbers: audited once per request, not once per number.
    if !items.is_empty() {
        let data = serde_json::json!({"households": items.len().min(page.limit as usize), "after": page.after});
        record_full_read(
            &state.db,
            &caller,
            format!("registry:{}", caller.username),
            data,
        )
        .await?;
    }
    Ok(Json(Paged::from_rows(import::FEED, &page, items)))
}

/// SQL for the villages within these prefixes, as a list of villages: each is then
/// one seek on the (village_code, change_seq) index, so a delta pull costs what it returns
/// whether the scope is a village or a county. The prefixes are inlined as literals: each was
/// validated as 2 to 12 digits when it entered the system.
pub(crate) fn scope_villages(scope: &[DivisionPrefix]) -> String {
    let terms: Vec<String> = scope
        .iter()
        .map(|p| {
            let p = p.as_str();
            debug_assert!(p.bytes().all(|b| b.is_ascii_digit()));
            match (p.len(), upper_bound(p)) {
                (12, _) => format!("'{p}'"),
                (_, Some(upper)) => format!(
                    "SELECT village_code FROM registry_villages WHERE village_code >= '{p}' AND village_code < '{upper}'"
                ),
                (_, None) => format!("SELECT village_code FROM registry_villages WHERE village_code >= '{p}'"),
            }
        })
        .collect();
    let (villages, ranges): (Vec<String>, Vec<String>) =
        terms.into_iter().partition(|t| t.starts_with('\''));
    let mut sets = ranges;
    if !villages.is_empty() {
        sets.push(format!(
            "SELECT village_code FROM registry_villages WHERE village_code IN ({})",
            villages.join(", ")
        ));
    }
    sets.join(" UNION ")
}

/// `GET /v1/households/{id}`: the record within the caller's scope (404 outside it, so
/// existence does not leak); 身份证号 masked for reviewers and auditors unless `unmask=true`.
#[derive(serde::Deserialize, Default)]
pub struct HouseholdQuery {
    #[serde(flatten)]
    pub unmask: UnmaskQuery,
    pub campaign: Option<String>,
}

/// `GET /v1/households/{household_id}`: the registry record and its verdict for a campaign.
async fn household(
    State(state): State<AppState>,
    caller: Caller,
    Path(household_id): Path<String>,
    ApiQuery(query): ApiQuery<HouseholdQuery>,
) -> Result<Json<Value>> {
    if let Some(campaign) = &query.campaign {
        CampaignId::parse(campaign)
            .map_err(|e| AppError::invalid_query(format!("campaign: {e}")))?;
    }
    Ok(Json(
        household_view(&state, &caller, &household_id, &query).await?,
    ))
}

/// A household's record as the caller may see it, with its verdict.
pub async fn household_view(
    state: &AppState,
    caller: &Caller,
    household_id: &str,
    query: &HouseholdQuery,
) -> Result<Value> {
    let full_id_numbers = query.unmask.sees_full_id_numbers(caller)?;
    let row: Option<HouseholdRow> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM households WHERE household_id = $1"
        ))
        .bind(household_id)
        .fetch_optional(p)
        .await
    })?;
    let visible = |r: &HouseholdRow| match caller.role {
        Role::FieldStaff | Role::Reviewer => caller.covers(&r.village_code),
        Role::Auditor | Role::Admin => true,
    };
    let row = row
        .filter(visible)
        .ok_or_else(|| AppError::not_found("no such household in your scope"))?;
    let mut value: Value =
        serde_json::from_str(served(&row, false, false)?.get()).map_err(anyhow::Error::from)?;
    if full_id_numbers {
        let data = serde_json::json!({"household_id": row.household_id, "version": row.version});
        record_full_read(
            &state.db,
            caller,
            format!("household:{}", row.household_id),
            data,
        )
        .await?;
    } else {
        mask_members(value.get_mut("members"));
    }
    let verdict =
        crate::reconcile::household_verdict(state, &row.household_id, query.campaign.as_deref())
            .await?;
    value["verdict"] = serde_json::to_value(verdict).map_err(anyhow::Error::from)?;
    Ok(value)
}
