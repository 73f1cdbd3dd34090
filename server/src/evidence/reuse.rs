//! The `check_photos` job of one visit, once all its photos are processed: evidence copied from
//! another household is the classic faked visit.
//! - `photo_reused_exact`: a photo whose exact bytes were first evidence for a different household,
//!   raised on the later visit, naming the first one.
//! - `photo_near_duplicate`: a photo within the near-duplicate threshold of a different photo sent
//!   for a different household (recompressed, resized, cropped, brightened), raised on the later of
//!   the two visits, naming the earlier. Photos are processed in any order, so whichever visit is
//!   checked second finds the pair; when that is the earlier one, the finding goes on the other.
//!
//! A household's own photos, sent again or re-shot at its next visit, are neither.

use serde::Serialize;
use uuid::Uuid;

use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::enqueue_jobs;
use crate::error::AppError;
use crate::http::AppState;
use crate::jobs::Kind;
use crate::on_pool;

/// Bumped when what the rule finds changes, so findings say which rule made them.
const RULE_VERSION: i64 = 1;

#[derive(sqlx::FromRow)]
struct Visit {
    household_id: String,
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct Photo {
    sha256: String,
    processed: bool,
    phash: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Other {
    submission_id: Uuid,
    household_id: String,
    seq: i64,
}

/// A visit that sent a photo, and whether it already has a near-duplicate finding on it.
#[derive(sqlx::FromRow)]
struct SentWith {
    #[sqlx(flatten)]
    visit: Other,
    has_finding: bool,
}

/// The `check_photos` job for a batch of visits: their findings stored, and the visits to check
/// again and the households to reconcile enqueued, in one transaction.
pub async fn check_photos(state: &AppState, submission_ids: &[&str]) -> anyhow::Result<()> {
    let mut findings = Vec::new();
    let mut recheck = Vec::new();
    let mut households = Vec::new();
    for submission_id in submission_ids {
        if let Some(household_id) =
            check_visit(state, submission_id, &mut findings, &mut recheck).await?
        {
            households.push(household_id);
        }
    }
    recheck.sort();
    recheck.dedup();
    households.sort();
    households.dedup();
    record(state, &households, &findings, &recheck).await
}

/// One visit's photo findings and visits to recheck; its household once all its photos are
/// processed (until then there is nothing to check: processing the last of them enqueues this
/// job again).
async fn check_visit(
    state: &AppState,
    submission_id: &str,
    findings: &mut Vec<Finding>,
    recheck: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    let id = Uuid::parse_str(submission_id)?;
    let visit: Option<Visit> = on_pool!(&state.db.read, |p| {
        sqlx::query_as("SELECT household_id, seq FROM submissions WHERE submission_id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
    })?;
    let Some(visit) = visit else {
        anyhow::bail!("no submission {submission_id}");
    };
    let photos: Vec<Photo> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT sp.sha256, f.sha256 IS NOT NULL AS processed, f.phash FROM submission_photos sp
             LEFT JOIN photo_facts f ON f.sha256 = sp.sha256
             WHERE sp.submission_id = $1 ORDER BY sp.position",
        )
        .bind(id)
        .fetch_all(p)
        .await
    })?;
    if photos.iter().any(|p| !p.processed) {
        return Ok(None);
    }
    for photo in &photos {
        let first: Option<Other> = on_pool!(&state.db.read, |p| {
            sqlx::query_as(
                "SELECT s.submission_id, s.household_id, s.seq FROM submission_photos sp
                 JOIN submissions s ON s.submission_id = sp.submission_id
                 WHERE sp.sha256 = $1 AND s.seq < $2 ORDER BY s.seq LIMIT 1",
            )
            .bind(&photo.sha256)
            .bind(visit.seq)
            .fetch_optional(p)
            .await
        })?;
        if let Some(earlier) = first.filter(|f| f.household_id != visit.household_id) {
            findings.push(Finding::reused_exact(
                id,
                &visit.household_id,
                &photo.sha256,
                &earlier,
            ));
        }
        if let Some(phash) = photo.phash {
            let this = Other {
                submission_id: id,
                household_id: visit.household_id.clone(),
                seq: visit.seq,
            };
            let near = near_duplicate(state, &this, &photo.sha256, phash as u64).await;
            let (finding, later) = near.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            findings.extend(finding);
            recheck.extend(later.iter().map(Uuid::to_string));
        }
    }
    Ok(Some(visit.household_id))
}

/// Where a photo near this one (or the photo itself) was first sent: if that was a different
/// household's visit, this one copied it. Returns the finding, if any, and the later visits of
/// other households with a photo near this one and no such finding yet: checked before this
/// photo was processed, they could not see it, so they are checked again.
async fn near_duplicate(
    state: &AppState,
    visit: &Other,
    sha256: &str,
    phash: u64,
) -> Result<(Option<Finding>, Vec<Uuid>), AppError> {
    let threshold = state.config.near_duplicate_bits;
    let mut origin: Option<(Other, super::near::Near)> = None;
    let mut recheck = Vec::new();
    for near in super::near::within(&state.db.read, phash, threshold).await? {
        let sent_with: Vec<SentWith> = on_pool!(&state.db.read, |p| {
            sqlx::query_as(
                "SELECT s.submission_id, s.household_id, s.seq,
                        EXISTS (SELECT 1 FROM findings f WHERE f.submission_id = s.submission_id
                                AND f.code = 'photo_near_duplicate' AND f.subject = 'photo:' || $1)
                            AS has_finding
                 FROM submission_photos sp JOIN submissions s ON s.submission_id = sp.submission_id
                 WHERE sp.sha256 = $1",
            )
            .bind(&near.sha256)
            .fetch_all(p)
            .await
        })?;
        for SentWith {
            visit: other,
            has_finding,
        } in sent_with
        {
            if other.seq > visit.seq && other.household_id != visit.household_id && !has_finding {
                recheck.push(other.submission_id);
            }
            if other.seq < visit.seq && origin.as_ref().is_none_or(|(o, _)| other.seq < o.seq) {
                origin = Some((other, near.clone()));
            }
        }
    }
    let finding = origin
        .filter(|(o, near)| o.household_id != visit.household_id && near.sha256 != sha256)
        .map(|(o, near)| Finding::near_duplicate(visit, sha256, &o, &near, threshold));
    Ok((finding, recheck))
}

/// A finding as stored and recorded. Fields in JCS order: it is also the audit entry's data.
#[derive(Serialize)]
struct Finding {
    code: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance: Option<u32>,
    household_id: String,
    other_household_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    other_photo: Option<String>,
    other_submission_id: Uuid,
    rule_version: i64,
    severity: &'static str,
    subject: String,
    submission_id: Uuid,
}

impl Finding {
    fn reused_exact(
        submission_id: Uuid,
        household_id: &str,
        sha256: &str,
        earlier: &Other,
    ) -> Finding {
        Finding {
            code: "photo_reused_exact",
            detail: format!(
                "photo {sha256} is the same file already submitted for household {} (visit {})",
                earlier.household_id, earlier.submission_id
            ),
            distance: None,
            household_id: household_id.to_owned(),
            other_household_id: earlier.household_id.clone(),
            other_photo: None,
            other_submission_id: earlier.submission_id,
            rule_version: RULE_VERSION,
            severity: "critical",
            subject: format!("photo:{sha256}"),
            submission_id,
        }
    }

    fn near_duplicate(
        later: &Other,
        sha256: &str,
        earlier: &Other,
        other_photo: &super::near::Near,
        threshold: u32,
    ) -> Finding {
        Finding {
            code: "photo_near_duplicate",
            detail: format!(
                "photo {sha256} looks like photo {} first sent for household {} (visit {}): their perceptual hashes differ in {} of 64 bits, within the threshold of {threshold}",
                other_photo.sha256,
                earlier.household_id,
                earlier.submission_id,
                other_photo.distance
            ),
            distance: Some(other_photo.distance),
            household_id: later.household_id.clone(),
            other_household_id: earlier.household_id.clone(),
            other_photo: Some(other_photo.sha256.clone()),
            other_submission_id: earlier.submission_id,
            rule_version: RULE_VERSION,
            severity: "critical",
            subject: format!("photo:{sha256}"),
            submission_id: later.submission_id,
        }
    }
}

/// Stores the findings not raised yet, each with its audit entry, enqueues the visits to check
/// again, and the households' reconciliation (their photos' facts are in now), in one
/// transaction.
async fn record(
    state: &AppState,
    households: &[String],
    findings: &[Finding],
    recheck: &[String],
) -> anyhow::Result<()> {
    if findings.is_empty() && recheck.is_empty() && households.is_empty() {
        return Ok(());
    }
    let dialect = state.db.dialect();
    let now = crate::db::now();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut raised = Vec::new();
        for finding in findings {
            let mut data = serde_json::json!({
                "other_submission_id": finding.other_submission_id,
                "other_household_id": finding.other_household_id,
            });
            if let (Some(photo), Some(distance)) = (&finding.other_photo, finding.distance) {
                data["other_photo"] = photo.as_str().into();
                data["distance"] = distance.into();
            }
            let inserted = sqlx::query(
                "INSERT INTO findings (finding_id, submission_id, household_id, code, severity, subject,
                     detail, data, rule_version, raised_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (submission_id, code, subject) DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(finding.submission_id)
            .bind(&finding.household_id)
            .bind(finding.code)
            .bind(finding.severity)
            .bind(&finding.subject)
            .bind(&finding.detail)
            .bind(data.to_string())
            .bind(finding.rule_version)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                raised.push(Entry::presorted(
                    "system",
                    "finding.raised",
                    format!("submission:{}", finding.submission_id),
                    Some(&finding.household_id),
                    finding,
                ));
            }
        }
        append_audit!(tx, dialect, &raised);
        let recheck: Vec<&str> = recheck.iter().map(String::as_str).collect();
        enqueue_jobs!(tx, Kind::CheckPhotos, &recheck);
        let households: Vec<&str> = households.iter().map(String::as_str).collect();
        enqueue_jobs!(tx, Kind::Reconcile, &households);
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    state.jobs.notify();
    Ok(())
}
