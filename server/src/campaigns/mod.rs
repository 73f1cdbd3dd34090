//! Campaigns: the rounds of the look-back, so phones know them and visits can be checked
//! against their window and required photo kinds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, Utc};
use huikan_shared::limits;
use huikan_shared::{CampaignId, PhotoKind};
use serde::{Deserialize, Serialize};

use crate::append_audit;
use crate::audit::Entry;
use crate::auth::{Caller, Role};
use crate::db::BeginWrite;
use crate::enqueue_jobs;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::jobs::Kind;
use crate::on_pool;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/campaigns/{campaign_id}", put(define))
        .route("/v1/campaigns", axum::routing::get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    name: String,
    starts_at: DateTime<FixedOffset>,
    ends_at: DateTime<FixedOffset>,
    #[serde(deserialize_with = "limits::text::<{ limits::NAME }, _>")]
    timezone: String,
    #[serde(deserialize_with = "limits::list::<{ limits::ENUM_LIST }, _, _>")]
    required_photos: Vec<PhotoKind>,
}

#[derive(Serialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub timezone: String,
    pub required_photos: Vec<PhotoKind>,
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    campaign_id: String,
    name: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    timezone: String,
    required_photos: String,
}

pub async fn define(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
    ApiJson(body): ApiJson<CampaignBody>,
) -> Result<(StatusCode, Json<Campaign>)> {
    caller.require(&[Role::Admin])?;
    let id = CampaignId::parse(&campaign_id).map_err(|e| AppError::problem("invalid_path", e))?;
    if body.name.trim().is_empty() {
        return Err(AppError::invalid_body("name: must not be empty"));
    }
    if body.ends_at <= body.starts_at {
        return Err(AppError::invalid_body("ends_at: must be after starts_at"));
    }
    if body.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(AppError::invalid_body(format!(
            "timezone: {:?} is not an IANA time zone such as Asia/Shanghai",
            body.timezone
        )));
    }
    let mut required: Vec<PhotoKind> = Vec::new();
    for kind in body.required_photos {
        if !required.contains(&kind) {
            required.push(kind);
        }
    }
    let campaign = Campaign {
        campaign_id: id.as_str().to_owned(),
        name: body.name,
        starts_at: body.starts_at.to_utc(),
        ends_at: body.ends_at.to_utc(),
        timezone: body.timezone,
        required_photos: required,
    };
    let required_json =
        serde_json::to_string(&campaign.required_photos).map_err(anyhow::Error::from)?;
    let dialect = state.db.dialect();
    let created = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let existed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM campaigns WHERE campaign_id = $1")
                .bind(&campaign.campaign_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO campaigns (campaign_id, name, starts_at, ends_at, timezone, required_photos, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (campaign_id) DO UPDATE SET name = excluded.name, starts_at = excluded.starts_at,
               ends_at = excluded.ends_at, timezone = excluded.timezone,
               required_photos = excluded.required_photos, updated_at = excluded.updated_at",
        )
        .bind(&campaign.campaign_id)
        .bind(&campaign.name)
        .bind(campaign.starts_at)
        .bind(campaign.ends_at)
        .bind(&campaign.timezone)
        .bind(&required_json)
        .bind(crate::db::now())
        .execute(&mut *tx)
        .await?;
        let entry = Entry::new(
            &caller.username,
            "campaign.defined",
            format!("campaign:{}", campaign.campaign_id),
            serde_json::to_value(&campaign).map_err(anyhow::Error::from)?,
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        // Its visits are judged by its window, zone and required photos: reconciled again.
        let visited: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT household_id FROM submissions WHERE campaign = $1")
                .bind(&campaign.campaign_id)
                .fetch_all(&mut *tx)
                .await?;
        let visited: Vec<&str> = visited.iter().map(String::as_str).collect();
        enqueue_jobs!(tx, Kind::Reconcile, &visited);
        tx.commit().await?;
        Ok::<_, AppError>(existed == 0)
    })?;
    state.jobs.notify();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(campaign)))
}

#[derive(Serialize)]
struct CampaignList {
    items: Vec<Campaign>,
}

async fn list(State(state): State<AppState>, _caller: Caller) -> Result<Json<CampaignList>> {
    Ok(Json(CampaignList {
        items: all(&state).await?,
    }))
}

/// Every campaign, the latest first.
pub async fn all(state: &AppState) -> Result<Vec<Campaign>> {
    let rows: Vec<CampaignRow> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT campaign_id, name, starts_at, ends_at, timezone, required_photos
             FROM campaigns ORDER BY starts_at DESC, campaign_id",
        )
        .fetch_all(p)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let required_photos = serde_json::from_str(&r.required_photos).unwrap_or_default();
            Campaign {
                campaign_id: r.campaign_id,
                name: r.name,
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                timezone: r.timezone,
                required_photos,
            }
        })
        .collect())
}
