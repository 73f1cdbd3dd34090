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
//!
//! Near-duplicates are judged again whenever either photo's hashes change (a new hashing scheme):
//! a pair no longer near is cleared, a new one raised, a different one revised, each audited. A
//! finding whose other photo still awaits its new hashes is kept until that photo has them.

use serde::Serialize;
use uuid::Uuid;

use super::lookup::{self, NearPhoto, SentWith};
use super::phash::{HASH_VERSION, PhotoHashes};
use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::enqueue_jobs;
use crate::error::AppError;
use crate::http::AppState;
use crate::jobs::Kind;
use crate::on_pool;

/// Bumped when what the rule finds changes, so findings say which rule made them: 2 judges
/// near-duplicates by the views of [`super::phash`].
const RULE_VERSION: i64 = 2;

#[derive(sqlx::FromRow)]
struct Photo {
    sha256: String,
    processed: bool,
    hash_version: Option<i64>,
    hashes: Option<Vec<u8>>,
}

/// What one check decided about its visits: the findings that should be, the photos whose
/// near-duplicate finding was judged (so a stored one not among them is cleared), the visits to
/// check again and the households to reconcile.
#[derive(Default)]
struct Judged {
    findings: Vec<Finding>,
    near_judged: Vec<(Uuid, String, String)>,
    recheck: Vec<String>,
    households: Vec<String>,
}

/// The `check_photos` job for a batch of visits: their findings stored, and the visits to check
/// again and the households to reconcile enqueued, in one transaction.
pub async fn check_photos(state: &AppState, submission_ids: &[&str]) -> anyhow::Result<()> {
    let mut judged = Judged::default();
    for submission_id in submission_ids {
        check_visit(state, submission_id, &mut judged).await?;
    }
    judged.recheck.sort();
    judged.recheck.dedup();
    judged.households.sort();
    judged.households.dedup();
    record(state, &judged).await
}

/// One visit's photo findings and visits to recheck, and its household, once all its photos are
/// processed (until then there is nothing to check: processing the last of them enqueues this
/// job again).
async fn check_visit(
    state: &AppState,
    submission_id: &str,
    judged: &mut Judged,
) -> anyhow::Result<()> {
    let id = Uuid::parse_str(submission_id)?;
    let visit: Option<(String, i64)> = on_pool!(&state.db.read, |p| {
        sqlx::query_as("SELECT household_id, seq FROM submissions WHERE submission_id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
    })?;
    let Some((household_id, seq)) = visit else {
        anyhow::bail!("no submission {submission_id}");
    };
    let visit = SentWith {
        submission_id: id,
        household_id,
        seq,
    };
    let photos: Vec<Photo> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT sp.sha256, f.sha256 IS NOT NULL AS processed, f.hash_version, f.hashes
             FROM submission_photos sp LEFT JOIN photo_facts f ON f.sha256 = sp.sha256
             WHERE sp.submission_id = $1 ORDER BY sp.position",
        )
        .bind(id)
        .fetch_all(p)
        .await
    })?;
    if photos.iter().any(|p| !p.processed) {
        return Ok(());
    }
    for photo in &photos {
        let first: Option<SentWith> = on_pool!(&state.db.read, |p| {
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
            judged
                .findings
                .push(Finding::reused_exact(&visit, &photo.sha256, &earlier));
        }
        // A photo awaiting its hashes by the current scheme is judged once it has them.
        if photo.hash_version != Some(HASH_VERSION) {
            continue;
        }
        judged.near_judged.push((
            id,
            "photo_near_duplicate".to_owned(),
            format!("photo:{}", photo.sha256),
        ));
        let Some(hashes) = photo.hashes.as_deref().and_then(PhotoHashes::from_bytes) else {
            continue;
        };
        let near = lookup::near_photos(state, &photo.sha256, &hashes)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (finding, later) = near_duplicate(state, &visit, &photo.sha256, &near).await?;
        judged.findings.extend(finding);
        judged.recheck.extend(later.iter().map(Uuid::to_string));
    }
    judged.households.push(visit.household_id);
    Ok(())
}

/// Where a photo near this one was first sent: if that was a different household's visit, this
/// one copied it. Returns the finding, if any, and the later visits of other households with a
/// photo near this one whose finding does not point at this pair yet: checked before this photo
/// had its hashes, they could not see it, so they are checked again.
async fn near_duplicate(
    state: &AppState,
    visit: &SentWith,
    sha256: &str,
    near: &[NearPhoto],
) -> anyhow::Result<(Option<Finding>, Vec<Uuid>)> {
    let threshold = state.config.near_duplicate_bits;
    let mut origin: Option<(&SentWith, &NearPhoto)> = None;
    let mut later = Vec::new();
    for photo in near {
        for other in &photo.visits {
            if other.seq > visit.seq && other.household_id != visit.household_id {
                later.push((other.submission_id, photo.sha256.as_str()));
            }
            if other.seq < visit.seq && origin.is_none_or(|(o, _)| other.seq < o.seq) {
                origin = Some((other, photo));
            }
        }
    }
    let mut recheck = Vec::new();
    for (submission_id, photo) in later {
        let pointing: Option<String> = on_pool!(&state.db.read, |p| {
            sqlx::query_scalar(
                "SELECT other_photo FROM findings WHERE submission_id = $1
                 AND code = 'photo_near_duplicate' AND subject = 'photo:' || $2
                 AND cleared_at IS NULL",
            )
            .bind(submission_id)
            .bind(photo)
            .fetch_optional(p)
            .await
        })?;
        if pointing.is_none() {
            recheck.push(submission_id);
        }
    }
    let finding = origin
        .filter(|(o, _)| o.household_id != visit.household_id)
        .map(|(o, photo)| Finding::near_duplicate(visit, sha256, o, photo, threshold));
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
    /// What the finding points at, as stored in `findings.data`.
    fn data(&self) -> serde_json::Value {
        let mut data = serde_json::json!({
            "other_submission_id": self.other_submission_id,
            "other_household_id": self.other_household_id,
        });
        if let (Some(photo), Some(distance)) = (&self.other_photo, self.distance) {
            data["other_photo"] = photo.as_str().into();
            data["distance"] = distance.into();
        }
        data
    }

    fn entry(&self, action: &'static str) -> Entry {
        Entry::presorted(
            "system",
            action,
            format!("submission:{}", self.submission_id),
            Some(&self.household_id),
            self,
        )
    }

    fn reused_exact(visit: &SentWith, sha256: &str, earlier: &SentWith) -> Finding {
        Finding {
            code: "photo_reused_exact",
            detail: format!(
                "photo {sha256} is the same file already submitted for household {} (visit {})",
                earlier.household_id, earlier.submission_id
            ),
            distance: None,
            household_id: visit.household_id.clone(),
            other_household_id: earlier.household_id.clone(),
            other_photo: None,
            other_submission_id: earlier.submission_id,
            rule_version: RULE_VERSION,
            severity: "critical",
            subject: format!("photo:{sha256}"),
            submission_id: visit.submission_id,
        }
    }

    fn near_duplicate(
        later: &SentWith,
        sha256: &str,
        earlier: &SentWith,
        other_photo: &NearPhoto,
        threshold: u32,
    ) -> Finding {
        Finding {
            code: "photo_near_duplicate",
            detail: format!(
                "photo {sha256} looks like photo {} first sent for household {} (visit {}): their copy-detection hashes differ in {} of 64 bits, within the threshold of {threshold}",
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

/// A cleared finding as recorded in the audit trail. Fields in JCS order.
#[derive(Serialize)]
struct Cleared<'a> {
    code: &'a str,
    household_id: &'a str,
    rule_version: i64,
    subject: &'a str,
    submission_id: Uuid,
}

/// A near-duplicate finding as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    finding_id: Uuid,
    household_id: String,
    data: String,
    other_photo: Option<String>,
    cleared: bool,
}

/// Brings the stored photo findings in line with what the checks judged, each change with its
/// audit entry, and enqueues the visits to check again and the households' reconciliation
/// (their photos' facts are in now), in one transaction.
async fn record(state: &AppState, judged: &Judged) -> anyhow::Result<()> {
    if judged.findings.is_empty() && judged.recheck.is_empty() && judged.households.is_empty() {
        return Ok(());
    }
    let dialect = state.db.dialect();
    let now = crate::db::now();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut entries = Vec::new();
        // Exact reuse rests on bytes, which never change: raised once, never cleared.
        for finding in judged.findings.iter().filter(|f| f.code == "photo_reused_exact") {
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
            .bind(finding.data().to_string())
            .bind(finding.rule_version)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                entries.push(finding.entry("finding.raised"));
            }
        }
        for (submission_id, code, subject) in &judged.near_judged {
            let wanted = judged.findings.iter().find(|f| {
                f.submission_id == *submission_id && f.code == code && f.subject == *subject
            });
            let stored: Option<Stored> = sqlx::query_as(
                "SELECT finding_id, household_id, data, other_photo, cleared_at IS NOT NULL AS cleared
                 FROM findings WHERE submission_id = $1 AND code = $2 AND subject = $3",
            )
            .bind(submission_id)
            .bind(code)
            .bind(subject)
            .fetch_optional(&mut *tx)
            .await?;
            match (wanted, stored) {
                (Some(finding), None) => {
                    sqlx::query(
                        "INSERT INTO findings (finding_id, submission_id, household_id, code, severity,
                             subject, detail, data, other_photo, rule_version, raised_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(finding.submission_id)
                    .bind(&finding.household_id)
                    .bind(finding.code)
                    .bind(finding.severity)
                    .bind(&finding.subject)
                    .bind(&finding.detail)
                    .bind(finding.data().to_string())
                    .bind(finding.other_photo.as_deref())
                    .bind(finding.rule_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    entries.push(finding.entry("finding.raised"));
                }
                (Some(finding), Some(old)) => {
                    let data = finding.data().to_string();
                    if old.cleared || old.data != data {
                        sqlx::query(
                            "UPDATE findings SET detail = $1, data = $2, other_photo = $3,
                                    rule_version = $4, cleared_at = NULL,
                                    raised_at = CASE WHEN cleared_at IS NULL THEN raised_at ELSE $5 END
                             WHERE finding_id = $6",
                        )
                        .bind(&finding.detail)
                        .bind(data)
                        .bind(finding.other_photo.as_deref())
                        .bind(finding.rule_version)
                        .bind(now)
                        .bind(old.finding_id)
                        .execute(&mut *tx)
                        .await?;
                        let action = if old.cleared { "finding.raised" } else { "finding.revised" };
                        entries.push(finding.entry(action));
                    }
                }
                (None, Some(old)) if !old.cleared => {
                    // Kept while the other photo awaits its hashes by the current scheme.
                    let other_current: Option<bool> = sqlx::query_scalar(
                        "SELECT hash_version IS NOT NULL AND hash_version >= $1 FROM photo_facts
                         WHERE sha256 = $2",
                    )
                    .bind(HASH_VERSION)
                    .bind(old.other_photo.as_deref())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if other_current == Some(false) {
                        continue;
                    }
                    sqlx::query("UPDATE findings SET cleared_at = $1 WHERE finding_id = $2")
                        .bind(now)
                        .bind(old.finding_id)
                        .execute(&mut *tx)
                        .await?;
                    entries.push(Entry::presorted(
                        "system",
                        "finding.cleared",
                        format!("submission:{submission_id}"),
                        Some(&old.household_id),
                        &Cleared {
                            code,
                            household_id: &old.household_id,
                            rule_version: RULE_VERSION,
                            subject,
                            submission_id: *submission_id,
                        },
                    ));
                }
                (None, _) => {}
            }
        }
        append_audit!(tx, dialect, &entries);
        let recheck: Vec<&str> = judged.recheck.iter().map(String::as_str).collect();
        enqueue_jobs!(tx, Kind::CheckPhotos, &recheck);
        let households: Vec<&str> = judged.households.iter().map(String::as_str).collect();
        enqueue_jobs!(tx, Kind::Reconcile, &households);
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    state.jobs.notify();
    Ok(())
}
