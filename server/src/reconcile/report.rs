//! What reconciliation adds up to, for the people who act on it: the coverage roll-up a
//! township supervisor reads each morning (`GET /v1/reports/coverage`, also as CSV for the
//! county office), and the households list reviewers and auditors filter by finding and verdict
//! (`GET /v1/households`). Both read the current visits the reconcile job keeps.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use huikan_shared::DivisionPrefix;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rules;
use crate::auth::{Caller, Role};
use crate::db::prefix_condition;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::page::{ApiQuery, PageQuery, Paged};
use crate::on_pool;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reports/coverage", get(coverage))
        .route("/v1/households", get(households))
}

/// The campaign asked for (404 if undefined), else the one that started last.
async fn campaign(state: &AppState, asked: Option<&str>) -> Result<String> {
    match asked {
        Some(id) => {
            let known: Option<String> = on_pool!(&state.db.read, |p| {
                sqlx::query_scalar("SELECT campaign_id FROM campaigns WHERE campaign_id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await
            })?;
            known.ok_or_else(|| AppError::not_found(format!("no campaign {id:?}")))
        }
        None => super::default_campaign(state)
            .await?
            .ok_or_else(|| AppError::not_found("no campaign is defined yet")),
    }
}

/// SQL restricting `column` (a division code, or a household id, which begins with its
/// village's) to the prefix asked for and, for a reviewer, to their villages.
fn within(caller: &Caller, prefix: Option<&DivisionPrefix>, column: &str) -> String {
    let mut conditions = Vec::new();
    if let Some(prefix) = prefix {
        conditions.push(prefix_condition(column, &[prefix]));
    }
    if caller.role == Role::Reviewer {
        let scope: Vec<&DivisionPrefix> = caller.scope.iter().collect();
        conditions.push(prefix_condition(column, &scope));
    }
    if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

fn parse_prefix(prefix: Option<&str>) -> Result<Option<DivisionPrefix>> {
    prefix
        .map(|p| {
            DivisionPrefix::parse(p).map_err(|e| AppError::invalid_query(format!("prefix: {e}")))
        })
        .transpose()
}

#[derive(Deserialize, Default)]
pub struct CoverageQuery {
    pub campaign: Option<String>,
    pub level: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Serialize)]
pub struct Coverage {
    pub campaign: String,
    pub level: &'static str,
    pub items: Vec<Unit>,
    pub unknown_household_visits: i64,
}

#[derive(Serialize)]
pub struct Unit {
    pub code: String,
    pub name: String,
    pub registered: i64,
    pub surveyed: i64,
    pub approved: i64,
    pub all_ok: i64,
    pub open_findings: BTreeMap<String, i64>,
}

/// What the roll-up's five queries answer.
type CoverageRows = (
    Vec<(String, i64)>,
    Vec<Surveyed>,
    Vec<UnitFindings>,
    Vec<VillageNames>,
    i64,
);

/// A unit's open findings of one code: (unit, code, count).
type UnitFindings = (String, String, i64);
/// (village code, township name, village name).
type VillageNames = (String, Option<String>, Option<String>);

#[derive(sqlx::FromRow)]
struct Surveyed {
    code: String,
    surveyed: i64,
    approved: i64,
    all_ok: i64,
}

/// `GET /v1/reports/coverage`: per township or village, households registered, surveyed,
/// approved and with every guarantee ok, and the open findings on their current visits.
async fn coverage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CoverageQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let report = coverage_report(&state, &caller, &query).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if wants_csv {
        csv_response(&report)
    } else {
        Ok(Json(report).into_response())
    }
}

/// The roll-up for the caller's scope.
pub async fn coverage_report(
    state: &AppState,
    caller: &Caller,
    query: &CoverageQuery,
) -> Result<Coverage> {
    caller.require(&[Role::Reviewer, Role::Auditor, Role::Admin])?;
    let (level, digits) = match query.level.as_deref() {
        None | Some("township") => ("township", 9),
        Some("village") => ("village", 12),
        Some(other) => {
            return Err(AppError::invalid_query(format!(
                "level must be township or village, got {other:?}"
            )));
        }
    };
    let prefix = parse_prefix(query.prefix.as_deref())?;
    let campaign = campaign(state, query.campaign.as_deref()).await?;
    let villages = within(caller, prefix.as_ref(), "village_code");
    let visits = within(caller, prefix.as_ref(), "s.household_id");

    let current = within(caller, prefix.as_ref(), "cv.village_code");
    // Each count reads one partial index: registered households by village, current visits by
    // campaign and village, open findings by visit, visits by campaign and household.
    let registered_sql = format!(
        "SELECT substr(village_code, 1, {digits}), COUNT(*) FROM households
         WHERE removed = FALSE AND {villages} GROUP BY substr(village_code, 1, {digits})"
    );
    let surveyed_sql = format!(
        "SELECT substr(cv.village_code, 1, {digits}) AS code, COUNT(*) AS surveyed,
                COALESCE(SUM(CASE WHEN cv.approved THEN 1 ELSE 0 END), 0) AS approved,
                COALESCE(SUM(CASE WHEN cv.all_ok THEN 1 ELSE 0 END), 0) AS all_ok
         FROM current_visits cv
         WHERE cv.campaign = $1 AND cv.village_code IS NOT NULL AND {current}
         GROUP BY substr(cv.village_code, 1, {digits})"
    );
    let findings_sql = format!(
        "SELECT substr(cv.village_code, 1, {digits}), f.code, COUNT(*)
         FROM current_visits cv
         JOIN findings f ON f.submission_id = cv.submission_id AND f.cleared_at IS NULL
         WHERE cv.campaign = $1 AND cv.village_code IS NOT NULL AND {current}
         GROUP BY substr(cv.village_code, 1, {digits}), f.code"
    );
    let names_sql =
        format!("SELECT village_code, township, village FROM registry_villages WHERE {villages}");
    let unknown_sql = format!(
        "SELECT COUNT(*) FROM submissions s
         WHERE s.campaign = $1 AND s.duplicate_of IS NULL AND {visits}
           AND s.household_id NOT IN (SELECT household_id FROM households WHERE removed = FALSE)"
    );
    let (registered, surveyed, counts, names, unknown): CoverageRows =
        on_pool!(&state.db.read, |p| {
            let registered = sqlx::query_as(&registered_sql).fetch_all(p);
            let surveyed = sqlx::query_as(&surveyed_sql).bind(&campaign).fetch_all(p);
            let counts = sqlx::query_as(&findings_sql).bind(&campaign).fetch_all(p);
            let names = sqlx::query_as(&names_sql).fetch_all(p);
            let unknown = sqlx::query_scalar(&unknown_sql)
                .bind(&campaign)
                .fetch_one(p);
            tokio::try_join!(registered, surveyed, counts, names, unknown)
        })?;
    let mut surveyed: HashMap<String, Surveyed> =
        surveyed.into_iter().map(|s| (s.code.clone(), s)).collect();

    let mut unit_names: HashMap<String, String> = HashMap::new();
    for (village_code, township, village) in names {
        let (code, name) = if digits == 9 {
            (
                village_code.get(..9).unwrap_or_default().to_owned(),
                township,
            )
        } else {
            (village_code, village)
        };
        if let Some(name) = name {
            unit_names.entry(code).or_insert(name);
        }
    }
    let mut open: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for (code, finding, n) in counts {
        open.entry(code).or_default().insert(finding, n);
    }
    let mut items: Vec<Unit> = registered
        .into_iter()
        .map(|(code, registered)| {
            let counted = surveyed.remove(&code);
            Unit {
                name: unit_names.remove(&code).unwrap_or_default(),
                open_findings: open.remove(&code).unwrap_or_default(),
                registered,
                surveyed: counted.as_ref().map_or(0, |c| c.surveyed),
                approved: counted.as_ref().map_or(0, |c| c.approved),
                all_ok: counted.as_ref().map_or(0, |c| c.all_ok),
                code,
            }
        })
        .collect();
    items.sort_by(|a, b| a.code.cmp(&b.code));
    Ok(Coverage {
        campaign,
        level,
        items,
        unknown_household_visits: unknown,
    })
}

/// The roll-up as the county office opens it in Excel: Chinese headers, a UTF-8 byte-order
/// mark (without it Excel reads UTF-8 as the local code page), a column per finding code and a
/// total row.
pub fn csv_response(report: &Coverage) -> Result<Response> {
    let unit = if report.level == "township" {
        "乡镇"
    } else {
        "行政村"
    };
    let mut out = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    let mut header = vec![
        format!("{unit}代码"),
        format!("{unit}名称"),
        "登记户数".to_owned(),
        "已走访户数".to_owned(),
        "审核通过户数".to_owned(),
        "各项保障均达标户数".to_owned(),
    ];
    header.extend(
        rules::CODES
            .iter()
            .map(|(code, name)| format!("{name} ({code})")),
    );
    header.push("未匹配登记户的走访数".to_owned());
    let csv_error = |e: csv::Error| AppError::from(anyhow::Error::from(e));
    out.write_record(&header).map_err(csv_error)?;
    let mut totals = [0i64; 4];
    let mut finding_totals = [0i64; rules::CODES.len()];
    for unit in &report.items {
        let counts = [unit.registered, unit.surveyed, unit.approved, unit.all_ok];
        let mut record = vec![unit.code.clone(), unit.name.clone()];
        for (total, n) in totals.iter_mut().zip(counts) {
            *total += n;
            record.push(n.to_string());
        }
        for (total, (code, _)) in finding_totals.iter_mut().zip(rules::CODES) {
            let n = unit.open_findings.get(code).copied().unwrap_or(0);
            *total += n;
            record.push(n.to_string());
        }
        record.push(String::new());
        out.write_record(&record).map_err(csv_error)?;
    }
    let mut record = vec![String::new(), "合计".to_owned()];
    record.extend(totals.iter().chain(&finding_totals).map(i64::to_string));
    record.push(report.unknown_household_visits.to_string());
    out.write_record(&record).map_err(csv_error)?;
    let body = out
        .into_inner()
        .map_err(|e| AppError::from(anyhow::anyhow!("{e}")))?;
    let filename = format!("coverage-{}-{}.csv", report.campaign, report.level);
    let disposition = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        filename.replace(['"', '\\'], "_")
    ))
    .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    page: PageQuery,
    campaign: Option<String>,
    prefix: Option<String>,
    finding: Option<String>,
    verdict: Option<String>,
}

#[derive(Serialize)]
struct Listed {
    household_id: String,
    village_code: String,
    township: String,
    village: String,
    head_name: String,
    /// The visit the verdict is read from; none: not surveyed in the campaign.
    current_submission_id: Option<Uuid>,
    review_state: Option<String>,
    /// `ok` (every guarantee holds), `failing` (one or more fails) or `unknown` (no visit).
    verdict: &'static str,
    open_findings: BTreeMap<String, i64>,
}

#[derive(sqlx::FromRow)]
struct ListRow {
    household_id: String,
    village_code: String,
    record: String,
    submission_id: Option<Uuid>,
    all_ok: Option<bool>,
    review_state: Option<String>,
}

#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    township: String,
    #[serde(default)]
    village: String,
    #[serde(default)]
    head_name: String,
}

const LISTING: &str = "households";

/// `GET /v1/households`: registered households in household-id order, filtered by prefix, by an
/// open finding on the current visit, and by verdict, a page at a time.
async fn households(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Paged<Listed>>> {
    caller.require(&[Role::Reviewer, Role::Auditor, Role::Admin])?;
    let (after, limit) = query.page.parse_keyed(LISTING)?;
    let prefix = parse_prefix(query.prefix.as_deref())?;
    let finding = query
        .finding
        .as_deref()
        .map(|code| {
            rules::known_code(code).ok_or_else(|| {
                AppError::invalid_query(format!("finding: {code:?} is not a finding code"))
            })
        })
        .transpose()?;
    let verdict = match query.verdict.as_deref() {
        None => "",
        Some("ok") => " AND cv.all_ok = TRUE",
        Some("failing") => " AND cv.all_ok = FALSE",
        Some("unknown") => " AND cv.submission_id IS NULL",
        Some(other) => {
            return Err(AppError::invalid_query(format!(
                "verdict must be ok, failing or unknown, got {other:?}"
            )));
        }
    };
    let campaign = campaign(&state, query.campaign.as_deref()).await?;
    let households = within(&caller, prefix.as_ref(), "h.village_code");
    let with_finding = if finding.is_some() {
        " AND EXISTS (SELECT 1 FROM findings f WHERE f.submission_id = cv.submission_id
                      AND f.code = $4 AND f.cleared_at IS NULL)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT h.household_id, h.village_code, h.record, cv.submission_id, cv.all_ok, s.review_state
         FROM households h
         LEFT JOIN current_visits cv ON cv.campaign = $1 AND cv.household_id = h.household_id
         LEFT JOIN submissions s ON s.submission_id = cv.submission_id
         WHERE h.removed = FALSE AND h.household_id > $2 AND {households}{verdict}{with_finding}
         ORDER BY h.household_id LIMIT $3"
    );
    let rows: Vec<ListRow> = on_pool!(&state.db.read, |p| {
        let mut q = sqlx::query_as(&sql)
            .bind(&campaign)
            .bind(&after)
            .bind(limit + 1);
        if let Some(code) = finding {
            q = q.bind(code);
        }
        q.fetch_all(p).await
    })?;
    let visits: Vec<Uuid> = rows.iter().filter_map(|r| r.submission_id).collect();
    let counts: Vec<(Uuid, String, i64)> = if visits.is_empty() {
        Vec::new()
    } else {
        on_pool!(&state.db.read, |p| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT submission_id, code, COUNT(*) FROM findings
                 WHERE cleared_at IS NULL AND submission_id IN (",
            );
            let mut list = q.separated(", ");
            for id in &visits {
                list.push_bind(*id);
            }
            list.push_unseparated(") GROUP BY submission_id, code");
            q.build_query_as().fetch_all(p).await
        })?
    };
    let mut open: HashMap<Uuid, BTreeMap<String, i64>> = HashMap::new();
    for (id, code, n) in counts {
        open.entry(id).or_default().insert(code, n);
    }
    let items = rows
        .into_iter()
        .map(|row| {
            let names: Names = serde_json::from_str(&row.record).map_err(anyhow::Error::from)?;
            let verdict = match row.all_ok {
                None => "unknown",
                Some(true) => "ok",
                Some(false) => "failing",
            };
            let key = row.household_id.clone();
            Ok((
                key,
                Listed {
                    open_findings: row
                        .submission_id
                        .and_then(|id| open.remove(&id))
                        .unwrap_or_default(),
                    household_id: row.household_id,
                    village_code: row.village_code,
                    township: names.township,
                    village: names.village,
                    head_name: names.head_name,
                    current_submission_id: row.submission_id,
                    review_state: row.review_state,
                    verdict,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(Paged::from_keyed_rows(LISTING, &after, limit, items)))
}
