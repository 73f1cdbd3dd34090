//! Reconciliation: what the visits, the registry and the photos say about each household.
//! The `reconcile` job evaluates every rule ([`rules`]) for all visits of a batch of households,
//! and brings the stored findings in line: new ones raised, ones no longer true cleared, each
//! with its audit entry, in one transaction. It also keeps each household's current visit per
//! campaign, which the roll-ups ([`report`]) read. It runs when a visit arrives, when its photos
//! have been checked, and for the households a registry import changed; running it again
//! changes nothing.

pub mod evidence;
pub mod identity;
pub mod report;
pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use huikan_shared::submission::{Answers, Location, Photo};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use self::rules::{Campaign, Exif, Finding, Registered, Thresholds, Verdict, Visit, VisitPhoto};
use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::on_pool;
use crate::push_in;
use crate::remove_claimed;

/// Everything the rules read about some households, loaded in a few bulk queries.
struct Facts {
    /// By household, in arrival order.
    visits: BTreeMap<String, Vec<Visit>>,
    registered: HashMap<String, Registered>,
    campaigns: HashMap<String, Campaign>,
}

#[derive(Clone, Copy)]
struct Current {
    submission_id: Uuid,
    approved: bool,
    all_ok: bool,
}

/// What reconciliation concludes for one household.
struct Evaluated {
    findings: HashMap<Uuid, Vec<Finding>>,
    /// Per campaign: the current visit, whether it is approved, and whether its every
    /// guarantee holds.
    current: HashMap<String, Current>,
}

fn thresholds(state: &AppState) -> Thresholds {
    Thresholds {
        income_line_yuan: state.config.income_line_yuan,
        photo_time_hours: state.config.photo_time_hours,
        far_metres: state.config.far_metres,
    }
}

#[derive(sqlx::FromRow)]
struct VisitRow {
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    seq: i64,
    review_state: String,
    duplicate_of: Option<Uuid>,
    content: String,
    scope: String,
}

#[derive(sqlx::FromRow)]
struct ExifRow {
    sha256: String,
    taken_at: Option<String>,
    taken_offset: Option<String>,
    gps_lat: Option<f64>,
    gps_lon: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct HouseholdRow {
    household_id: String,
    village_code: String,
    record: String,
    removed: bool,
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    campaign_id: String,
    starts_at: DateTime<Utc>,
    timezone: String,
    required_photos: String,
}

/// The parts of a stored visit's content the rules read. Stored visits were checked against
/// the contract when they arrived.
#[derive(Deserialize)]
struct Content {
    surveyed_at: DateTime<FixedOffset>,
    location: Location,
    answers: Answers,
    photos: Vec<Photo>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    location: Option<RecordLocation>,
    #[serde(default)]
    members: Vec<RecordMember>,
}

#[derive(Deserialize)]
struct RecordLocation {
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct RecordMember {
    id_number: String,
}

async fn load(state: &AppState, households: &[&str]) -> Result<Facts> {
    let db = &state.db.read;
    let visit_rows: Vec<VisitRow> = on_pool!(db, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT s.submission_id, s.household_id, s.campaign, s.seq, s.review_state, s.duplicate_of,
                    s.content, u.scope
             FROM submissions s JOIN users u ON u.id = s.submitted_by WHERE s.household_id",
        );
        push_in!(q, households);
        q.push(" ORDER BY s.seq");
        q.build_query_as().fetch_all(p).await
    })?;
    let exif_rows: Vec<ExifRow> = on_pool!(db, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT DISTINCT f.sha256, f.taken_at, f.taken_offset, f.gps_lat, f.gps_lon
             FROM submissions s JOIN submission_photos sp ON sp.submission_id = s.submission_id
             JOIN photo_facts f ON f.sha256 = sp.sha256 WHERE s.household_id",
        );
        push_in!(q, households);
        q.build_query_as().fetch_all(p).await
    })?;
    let household_rows: Vec<HouseholdRow> = on_pool!(db, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT household_id, village_code, record, removed FROM households WHERE household_id",
        );
        push_in!(q, households);
        q.build_query_as().fetch_all(p).await
    })?;
    let campaign_rows: Vec<CampaignRow> = on_pool!(db, |p| {
        sqlx::query_as("SELECT campaign_id, starts_at, timezone, required_photos FROM campaigns")
            .fetch_all(p)
            .await
    })?;

    // Parsing every visit is CPU work: done off the async workers, so requests are not held up
    // behind a household with many visits.
    tokio::task::block_in_place(|| {
        facts_from_rows(visit_rows, exif_rows, household_rows, campaign_rows)
    })
}

fn facts_from_rows(
    visit_rows: Vec<VisitRow>,
    exif_rows: Vec<ExifRow>,
    household_rows: Vec<HouseholdRow>,
    campaign_rows: Vec<CampaignRow>,
) -> Result<Facts> {
    let exif: HashMap<String, ExifRow> = exif_rows
        .into_iter()
        .map(|row| (row.sha256.clone(), row))
        .collect();
    let mut visits: BTreeMap<String, Vec<Visit>> = BTreeMap::new();
    for row in visit_rows {
        let content: Content = serde_json::from_str(&row.content).map_err(|e| {
            anyhow::anyhow!("stored visit {} does not parse: {e}", row.submission_id)
        })?;
        let surveyor_scope: Vec<String> =
            serde_json::from_str(&row.scope).map_err(anyhow::Error::from)?;
        let photos = content
            .photos
            .into_iter()
            .map(|photo| {
                let sha256 = photo.sha256.as_str().to_owned();
                let exif = exif.get(&sha256).map(|row| Exif {
                    taken_at: row
                        .taken_at
                        .as_deref()
                        .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok()),
                    offset: row.taken_offset.as_deref().and_then(|o| o.parse().ok()),
                    gps: row.gps_lat.zip(row.gps_lon),
                });
                VisitPhoto {
                    sha256,
                    kind: photo.kind,
                    location: photo.location,
                    exif,
                }
            })
            .collect();
        visits
            .entry(row.household_id.clone())
            .or_default()
            .push(Visit {
                submission_id: row.submission_id,
                household_id: row.household_id,
                campaign: row.campaign,
                seq: row.seq,
                review_state: row.review_state,
                duplicate_of: row.duplicate_of,
                surveyor_scope,
                surveyed_at: content.surveyed_at,
                location: content.location,
                answers: content.answers,
                photos,
            });
    }
    let mut registered = HashMap::new();
    for row in household_rows {
        let record: Record = serde_json::from_str(&row.record).map_err(anyhow::Error::from)?;
        registered.insert(
            row.household_id,
            Registered {
                village_code: row.village_code,
                removed: row.removed,
                location: record.location.map(|l| (l.lat, l.lon)),
                member_ids: record.members.into_iter().map(|m| m.id_number).collect(),
            },
        );
    }
    let mut campaigns = HashMap::new();
    for row in campaign_rows {
        // Both were checked when the campaign was defined.
        let timezone = row.timezone.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let required_photos =
            serde_json::from_str(&row.required_photos).map_err(anyhow::Error::from)?;
        campaigns.insert(
            row.campaign_id,
            Campaign {
                starts_at: row.starts_at,
                timezone,
                required_photos,
            },
        );
    }
    Ok(Facts {
        visits,
        registered,
        campaigns,
    })
}

/// Every visit's findings and the current visits of one household.
fn evaluate(
    visits: &[Visit],
    registered: Option<&Registered>,
    campaigns: &HashMap<String, Campaign>,
    thresholds: &Thresholds,
) -> Evaluated {
    let mut findings = HashMap::new();
    let mut verdicts: Vec<(&Visit, Verdict)> = Vec::with_capacity(visits.len());
    // Per campaign, the earliest standing visit of each distinct verdict (at most 2^7): what a
    // later visit may conflict with, without comparing every pair of a much-visited household.
    let mut standing: HashMap<&str, Vec<(&Visit, Verdict)>> = HashMap::new();
    for visit in visits {
        let earlier = standing
            .get(visit.campaign.as_str())
            .map_or(&[][..], Vec::as_slice);
        let found = rules::visit_findings(
            visit,
            registered,
            campaigns.get(&visit.campaign),
            earlier,
            thresholds,
        );
        let guarantees: Vec<Finding> = found
            .iter()
            .filter(|f| rules::GUARANTEE_CODES.contains(&f.code))
            .cloned()
            .collect();
        let verdict = Verdict::from_findings(&guarantees);
        let stands = !matches!(
            visit.review_state.as_str(),
            "rejected" | "resurvey_requested"
        );
        let seen = standing.entry(visit.campaign.as_str()).or_default();
        if stands && !seen.iter().any(|(_, v)| *v == verdict) {
            seen.push((visit, verdict));
        }
        verdicts.push((visit, verdict));
        findings.insert(visit.submission_id, found);
    }
    let mut current: HashMap<String, (&Visit, Verdict)> = HashMap::new();
    for (visit, verdict) in verdicts {
        if let Some(held) = current.get(&visit.campaign)
            && !is_more_current(visit, held.0)
        {
            continue;
        }
        if visit.review_state != "rejected" {
            current.insert(visit.campaign.clone(), (visit, verdict));
        }
    }
    Evaluated {
        findings,
        current: current
            .into_iter()
            .map(|(campaign, (visit, verdict))| {
                let current = Current {
                    submission_id: visit.submission_id,
                    approved: visit.review_state == "approved",
                    all_ok: verdict.all_ok(),
                };
                (campaign, current)
            })
            .collect(),
    }
}

/// The contract's current visit: the latest approved one if any, else the latest not rejected
/// (latest by `surveyed_at`, then by arrival).
fn is_more_current(visit: &Visit, than: &Visit) -> bool {
    let rank = |v: &Visit| (v.review_state == "approved", v.surveyed_at, v.seq);
    rank(visit) > rank(than)
}

/// The `reconcile` job for a batch of households.
/// Reconciles the households of a batch of jobs. With the batch's `claim`, its jobs are removed in
/// the same transaction as the findings it writes; true when that happened (nothing changed
/// means no transaction, and the worker removes them).
pub async fn reconcile_households(
    state: &AppState,
    households: &[&str],
    claim: Option<&crate::jobs::Claim>,
) -> anyhow::Result<bool> {
    reconcile(state, households, claim)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

#[derive(sqlx::FromRow)]
struct StoredFinding {
    finding_id: Uuid,
    submission_id: Uuid,
    household_id: String,
    code: String,
    subject: String,
    severity: String,
    detail: String,
    data: String,
    rule_version: i64,
    cleared: bool,
}

#[derive(sqlx::FromRow, PartialEq)]
struct CurrentRow {
    campaign: String,
    household_id: String,
    submission_id: Uuid,
    /// Where it is registered; none when it is not (or no longer).
    village_code: Option<String>,
    approved: bool,
    all_ok: bool,
}

/// A finding as its audit entry records it. Fields in JCS order.
#[derive(Serialize)]
struct Recorded<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    household_id: &'a str,
    rule_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'a str>,
    subject: &'a str,
    submission_id: Uuid,
}

fn data_text(finding: &Finding) -> String {
    finding
        .data
        .as_ref()
        .map_or_else(|| "{}".to_owned(), |d| d.to_string())
}

async fn reconcile(
    state: &AppState,
    households: &[&str],
    claim: Option<&crate::jobs::Claim>,
) -> Result<bool> {
    let facts = load(state, households).await?;
    let thresholds = thresholds(state);
    let stored: Vec<StoredFinding> = on_pool!(&state.db.read, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT finding_id, submission_id, household_id, code, subject, severity, detail, data,
                    rule_version, cleared_at IS NOT NULL AS cleared
             FROM findings WHERE household_id",
        );
        push_in!(q, households);
        q.build_query_as().fetch_all(p).await
    })?;
    let stored_current: Vec<CurrentRow> = on_pool!(&state.db.read, |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT campaign, household_id, submission_id, village_code, approved, all_ok
             FROM current_visits WHERE household_id",
        );
        push_in!(q, households);
        q.build_query_as().fetch_all(p).await
    })?;

    // What should be: every reconciliation finding of every visit, and the current visits.
    // Evaluated off the async workers, as CPU work.
    let (wanted, current) = tokio::task::block_in_place(|| evaluate_all(&facts, &thresholds));
    reconcile_stored(state, wanted, current, stored, stored_current, claim).await
}

/// Every finding of every visit loaded, and each household's current visits.
fn evaluate_all<'f>(
    facts: &'f Facts,
    thresholds: &Thresholds,
) -> (Vec<(&'f Visit, Finding)>, Vec<CurrentRow>) {
    let mut wanted: Vec<(&Visit, Finding)> = Vec::new();
    let mut current: Vec<CurrentRow> = Vec::new();
    for (household_id, visits) in &facts.visits {
        let registered = facts.registered.get(household_id);
        let evaluated = evaluate(visits, registered, &facts.campaigns, thresholds);
        let village_code = registered
            .filter(|r| !r.removed)
            .map(|r| r.village_code.clone());
        let mut evaluated_findings = evaluated.findings;
        for visit in visits {
            for finding in evaluated_findings
                .remove(&visit.submission_id)
                .unwrap_or_default()
            {
                wanted.push((visit, finding));
            }
        }
        current.extend(
            evaluated
                .current
                .into_iter()
                .map(|(campaign, c)| CurrentRow {
                    campaign,
                    household_id: household_id.clone(),
                    submission_id: c.submission_id,
                    village_code: village_code.clone(),
                    approved: c.approved,
                    all_ok: c.all_ok,
                }),
        );
    }
    (wanted, current)
}

/// Brings the stored findings and current visits in line with what should be.
async fn reconcile_stored(
    state: &AppState,
    wanted: Vec<(&Visit, Finding)>,
    current: Vec<CurrentRow>,
    stored: Vec<StoredFinding>,
    stored_current: Vec<CurrentRow>,
    claim: Option<&crate::jobs::Claim>,
) -> Result<bool> {
    // What is, against it.
    let owned: Vec<&StoredFinding> = stored
        .iter()
        .filter(|f| !rules::PHOTO_CHECK_CODES.contains(&f.code.as_str()))
        .collect();
    let by_key: HashMap<(Uuid, &str, &str), &StoredFinding> = owned
        .iter()
        .map(|f| ((f.submission_id, f.code.as_str(), f.subject.as_str()), *f))
        .collect();
    let mut to_insert = Vec::new();
    let mut to_update = Vec::new();
    let mut wanted_keys = HashSet::new();
    for (visit, finding) in &wanted {
        let key = (visit.submission_id, finding.code, finding.subject.as_str());
        wanted_keys.insert(key);
        match by_key.get(&key) {
            None => to_insert.push((*visit, finding)),
            Some(old) => {
                let data = data_text(finding);
                if old.cleared
                    || old.detail != finding.detail
                    || old.severity != finding.severity
                    || old.data != data
                    || old.rule_version != rules::RULE_VERSION
                {
                    to_update.push((old.finding_id, old.cleared, *visit, finding, data));
                }
            }
        }
    }
    let to_clear: Vec<&StoredFinding> = owned
        .iter()
        .filter(|f| {
            !f.cleared
                && !wanted_keys.contains(&(f.submission_id, f.code.as_str(), f.subject.as_str()))
        })
        .copied()
        .collect();
    let stored_current_keys: HashSet<(&str, &str)> = stored_current
        .iter()
        .map(|c| (c.campaign.as_str(), c.household_id.as_str()))
        .collect();
    let current_keys: HashSet<(&str, &str)> = current
        .iter()
        .map(|c| (c.campaign.as_str(), c.household_id.as_str()))
        .collect();
    let current_changed: Vec<&CurrentRow> = current
        .iter()
        .filter(|c| !stored_current.contains(c))
        .collect();
    let current_gone: Vec<(&str, &str)> = stored_current_keys
        .difference(&current_keys)
        .copied()
        .collect();
    if to_insert.is_empty()
        && to_update.is_empty()
        && to_clear.is_empty()
        && current_changed.is_empty()
        && current_gone.is_empty()
    {
        return Ok(false);
    }

    let dialect = state.db.dialect();
    let now = crate::db::now();
    let writing = std::time::Instant::now();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut entries = Vec::new();
        for chunk in to_insert.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO findings (finding_id, submission_id, household_id, code, severity, subject,
                     detail, data, rule_version, raised_at) ",
            );
            q.push_values(chunk, |mut row, (visit, finding)| {
                row.push_bind(Uuid::now_v7())
                    .push_bind(visit.submission_id)
                    .push_bind(visit.household_id.as_str())
                    .push_bind(finding.code)
                    .push_bind(finding.severity)
                    .push_bind(finding.subject.as_str())
                    .push_bind(finding.detail.as_str())
                    .push_bind(data_text(finding))
                    .push_bind(rules::RULE_VERSION)
                    .push_bind(now);
            });
            // A run racing this one may have raised some already: only what this one raised
            // is recorded.
            q.push(
                " ON CONFLICT (submission_id, code, subject) DO NOTHING
                  RETURNING submission_id, code, subject",
            );
            let raised: Vec<(Uuid, String, String)> =
                q.build_query_as().fetch_all(&mut *tx).await?;
            let raised: HashSet<(Uuid, String, String)> = raised.into_iter().collect();
            for (visit, finding) in chunk {
                let key = (
                    visit.submission_id,
                    finding.code.to_owned(),
                    finding.subject.clone(),
                );
                if raised.contains(&key) {
                    entries.push(raised_entry("finding.raised", visit, finding));
                }
            }
        }
        for (finding_id, was_cleared, visit, finding, data) in &to_update {
            let changed = sqlx::query(
                "UPDATE findings SET severity = $1, detail = $2, data = $3, rule_version = $4,
                        raised_at = CASE WHEN cleared_at IS NULL THEN raised_at ELSE $5 END,
                        cleared_at = NULL
                 WHERE finding_id = $6",
            )
            .bind(finding.severity)
            .bind(&finding.detail)
            .bind(data)
            .bind(rules::RULE_VERSION)
            .bind(now)
            .bind(finding_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                let action = if *was_cleared {
                    "finding.raised"
                } else {
                    "finding.revised"
                };
                entries.push(raised_entry(action, visit, finding));
            }
        }
        for chunk in to_clear.chunks(500) {
            let mut q = sqlx::QueryBuilder::new("UPDATE findings SET cleared_at = ");
            q.push_bind(now);
            q.push(" WHERE cleared_at IS NULL AND finding_id");
            push_in!(q, chunk.iter().map(|f| f.finding_id));
            q.push(" RETURNING finding_id");
            let cleared: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            let cleared: HashSet<Uuid> = cleared.into_iter().collect();
            for finding in chunk.iter().filter(|f| cleared.contains(&f.finding_id)) {
                let data = Recorded {
                    code: &finding.code,
                    data: None,
                    detail: None,
                    household_id: &finding.household_id,
                    rule_version: rules::RULE_VERSION,
                    severity: None,
                    subject: &finding.subject,
                    submission_id: finding.submission_id,
                };
                entries.push(Entry::presorted(
                    "system",
                    "finding.cleared",
                    format!("submission:{}", finding.submission_id),
                    Some(&finding.household_id),
                    &data,
                ));
            }
        }
        for chunk in current_changed.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO current_visits (campaign, household_id, submission_id, village_code, approved, all_ok) ",
            );
            q.push_values(chunk, |mut row, c| {
                row.push_bind(c.campaign.as_str())
                    .push_bind(c.household_id.as_str())
                    .push_bind(c.submission_id)
                    .push_bind(c.village_code.as_deref())
                    .push_bind(c.approved)
                    .push_bind(c.all_ok);
            });
            q.push(
                " ON CONFLICT (campaign, household_id) DO UPDATE
                  SET submission_id = excluded.submission_id, village_code = excluded.village_code,
                      approved = excluded.approved, all_ok = excluded.all_ok",
            );
            q.build().execute(&mut *tx).await?;
        }
        for (campaign, household_id) in &current_gone {
            sqlx::query("DELETE FROM current_visits WHERE campaign = $1 AND household_id = $2")
                .bind(campaign)
                .bind(household_id)
                .execute(&mut *tx)
                .await?;
        }
        append_audit!(tx, dialect, &entries);
        remove_claimed!(tx, claim);
        tx.commit().await?;
        Ok::<_, AppError>(())
    })?;
    // How long the findings held the database's writer (SQLite has one), beside the visits.
    metrics::histogram!("reconcile_write_seconds").record(writing.elapsed());
    Ok(claim.is_some())
}

fn raised_entry(action: &'static str, visit: &Visit, finding: &Finding) -> Entry {
    let data = Recorded {
        code: finding.code,
        data: finding.data.as_ref(),
        detail: Some(&finding.detail),
        household_id: &visit.household_id,
        rule_version: rules::RULE_VERSION,
        severity: Some(finding.severity),
        subject: &finding.subject,
        submission_id: visit.submission_id,
    };
    // `data` may hold any JSON: canonicalised rather than trusted to be presorted.
    let value = serde_json::to_value(&data).unwrap_or_else(|_| json!({}));
    Entry::new(
        "system",
        action,
        format!("submission:{}", visit.submission_id),
        value,
    )
}

/// A household's verdict for one campaign, with the findings behind it.
#[derive(Serialize)]
pub struct HouseholdVerdict {
    /// The campaign judged: the one asked for, else the one that started last (none if no
    /// campaign is defined).
    pub campaign: Option<String>,
    /// The visit judged by: the latest approved one, else the latest not rejected; none: every
    /// guarantee is `unknown`.
    pub submission_id: Option<Uuid>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The findings behind the failing guarantees (the visit's others are on the visit).
    pub findings: Vec<Finding>,
    pub rule_version: i64,
}

/// The campaign a roll-up or verdict is about when none is named: the one that started last.
pub async fn default_campaign(state: &AppState) -> Result<Option<String>> {
    Ok(on_pool!(&state.db.read, |p| {
        sqlx::query_scalar(
            "SELECT campaign_id FROM campaigns ORDER BY starts_at DESC, campaign_id LIMIT 1",
        )
        .fetch_optional(p)
        .await
    })?)
}

/// The verdict as of now: the household's visits evaluated on the spot, so a visit counts the
/// moment it is stored, before its reconcile job has run.
pub async fn household_verdict(
    state: &AppState,
    household_id: &str,
    campaign: Option<&str>,
) -> Result<HouseholdVerdict> {
    let campaign = match campaign {
        Some(campaign) => Some(campaign.to_owned()),
        None => default_campaign(state).await?,
    };
    let unknown = |campaign| HouseholdVerdict {
        campaign,
        submission_id: None,
        verdict: Verdict::UNKNOWN,
        findings: Vec::new(),
        rule_version: rules::RULE_VERSION,
    };
    let Some(campaign_id) = campaign.clone() else {
        return Ok(unknown(None));
    };
    let mut facts = load(state, &[household_id]).await?;
    let visits = facts.visits.remove(household_id).unwrap_or_default();
    let mut evaluated = evaluate(
        &visits,
        facts.registered.get(household_id),
        &facts.campaigns,
        &thresholds(state),
    );
    let Some(Current { submission_id, .. }) = evaluated.current.get(&campaign_id).copied() else {
        return Ok(unknown(campaign));
    };
    let findings: Vec<Finding> = evaluated
        .findings
        .remove(&submission_id)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| rules::GUARANTEE_CODES.contains(&f.code))
        .collect();
    Ok(HouseholdVerdict {
        campaign,
        submission_id: Some(submission_id),
        verdict: Verdict::from_findings(&findings),
        findings,
        rule_version: rules::RULE_VERSION,
    })
}
