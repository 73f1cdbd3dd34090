//! The `check_photos` job of one visit, once all its photos are processed: a photo whose exact
//! bytes were first evidence for a different household is the classic faked visit, raised as
//! `photo_reused_exact` on the later visit, naming the first one. (A household's own photo sent
//! again with its next visit is not.)

use serde::Serialize;
use uuid::Uuid;

use crate::append_audit;
use crate::audit::Entry;
use crate::error::AppError;
use crate::http::AppState;
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
}

#[derive(sqlx::FromRow)]
struct Earlier {
    submission_id: Uuid,
    household_id: String,
}

pub async fn check_photos(state: &AppState, submission_id: &str) -> anyhow::Result<()> {
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
            "SELECT sp.sha256, f.sha256 IS NOT NULL AS processed FROM submission_photos sp
             LEFT JOIN photo_facts f ON f.sha256 = sp.sha256
             WHERE sp.submission_id = $1 ORDER BY sp.position",
        )
        .bind(id)
        .fetch_all(p)
        .await
    })?;
    if photos.iter().any(|p| !p.processed) {
        // Processing the last of them enqueues this job again.
        return Ok(());
    }
    let mut findings = Vec::new();
    for photo in &photos {
        let first: Option<Earlier> = on_pool!(&state.db.read, |p| {
            sqlx::query_as(
                "SELECT s.submission_id, s.household_id FROM submission_photos sp
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
    }
    record(state, &findings).await
}

/// A finding as stored and recorded. Fields in JCS order: it is also the audit entry's data.
#[derive(Serialize)]
struct Finding {
    code: &'static str,
    detail: String,
    household_id: String,
    other_household_id: String,
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
        earlier: &Earlier,
    ) -> Finding {
        Finding {
            code: "photo_reused_exact",
            detail: format!(
                "photo {sha256} is the same file already submitted for household {} (visit {})",
                earlier.household_id, earlier.submission_id
            ),
            household_id: household_id.to_owned(),
            other_household_id: earlier.household_id.clone(),
            other_submission_id: earlier.submission_id,
            rule_version: RULE_VERSION,
            severity: "critical",
            subject: format!("photo:{sha256}"),
            submission_id,
        }
    }
}

/// Stores the findings not raised yet, each with its audit entry, in one transaction.
async fn record(state: &AppState, findings: &[Finding]) -> anyhow::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let dialect = state.db.dialect();
    let now = crate::db::now();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin().await?;
        let mut raised = Vec::new();
        for finding in findings {
            let data = serde_json::json!({
                "other_submission_id": finding.other_submission_id,
                "other_household_id": finding.other_household_id,
            });
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
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}
