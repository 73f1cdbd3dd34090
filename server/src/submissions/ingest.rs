//! Taking visits in, exactly once: a batch of validated visits is decided and stored in one
//! transaction, under the lock of the submission feed's counter, so replays, conflicts and
//! content duplicates are decided by the database, the same way on every server process.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use huikan_shared::submission::Submission;
use huikan_shared::{PhotoKind, Sha256Hex, content_sha256};
use serde::Serialize;
use serde_json::Value;
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::db::Db;
use crate::enqueue_jobs;
use crate::error::{Problem, Result};
use crate::jobs::Kind;
use crate::on_pool;

/// A visit that fits the schema, with its content hash, ready to be stored.
pub struct Incoming {
    pub submitted_by: Uuid,
    /// The submitter's username, for the audit trail.
    pub actor: String,
    pub submission_id: Uuid,
    pub household_id: String,
    pub campaign: String,
    pub surveyed_at: DateTime<Utc>,
    pub content_sha256: String,
    pub content: String,
    pub device_id: Option<String>,
    pub app_version: Option<String>,
    pub photos: Vec<(Sha256Hex, PhotoKind)>,
}

impl Incoming {
    /// Validates a received JSON value against the contract and hashes its content.
    pub fn prepare(received: &Value, submitted_by: Uuid, actor: &str) -> Result<Incoming, Problem> {
        let parsed =
            Submission::from_value(received).map_err(|e| Problem::new("invalid_body", e))?;
        let (content_sha256, content) = content_sha256(received);
        Ok(Incoming {
            submitted_by,
            actor: actor.to_owned(),
            submission_id: parsed.submission_id,
            household_id: parsed.household_id,
            campaign: parsed.campaign.as_str().to_owned(),
            surveyed_at: parsed.surveyed_at.to_utc(),
            content_sha256,
            content,
            device_id: parsed.device_id,
            app_version: parsed.app_version,
            photos: parsed
                .photos
                .into_iter()
                .map(|p| (p.sha256, p.kind))
                .collect(),
        })
    }
}

#[derive(Serialize, Clone, Debug, sqlx::FromRow)]
pub struct Receipt {
    pub submission_id: Uuid,
    pub content_sha256: String,
    pub received_at: DateTime<Utc>,
    pub seq: i64,
    #[sqlx(skip)]
    pub status: &'static str,
    pub duplicate_of: Option<Uuid>,
}

pub enum Outcome {
    Created(Receipt),
    Replayed(Receipt),
    Conflict(Problem),
    MissingBlobs(Problem),
}

const FEED: &str = "submissions";

/// Decides and stores a batch: each item as if posted alone, all in one transaction.
pub async fn ingest(db: &Db, items: &[Incoming]) -> Result<Vec<Outcome>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let lock_sql = crate::db::lock_counter_sql(db.dialect());
    let now = crate::db::now();
    let dialect = db.dialect();
    on_pool!(&db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut last_seq: i64 = sqlx::query_scalar(lock_sql)
            .bind(FEED)
            .fetch_one(&mut *tx)
            .await?;

        let mut known: HashMap<Uuid, Receipt> = HashMap::new();
        let mut q = QueryBuilder::new(
            "SELECT submission_id, content_sha256, received_at, seq, duplicate_of FROM submissions WHERE submission_id IN (",
        );
        let mut ids = q.separated(", ");
        for item in items {
            ids.push_bind(item.submission_id);
        }
        ids.push_unseparated(")");
        for mut receipt in q.build_query_as::<Receipt>().fetch_all(&mut *tx).await? {
            receipt.status = "received";
            known.insert(receipt.submission_id, receipt);
        }

        let wanted: HashSet<&str> = items
            .iter()
            .flat_map(|i| i.photos.iter().map(|(s, _)| s.as_str()))
            .collect();
        let mut present: HashSet<String> = HashSet::new();
        for chunk in wanted.iter().collect::<Vec<_>>().chunks(1000) {
            let mut q = QueryBuilder::new("SELECT sha256 FROM blobs WHERE sha256 IN (");
            let mut list = q.separated(", ");
            for sha in chunk {
                list.push_bind(**sha);
            }
            list.push_unseparated(")");
            present.extend(q.build_query_scalar::<String>().fetch_all(&mut *tx).await?);
        }

        let mut q = QueryBuilder::new(
            "SELECT content_sha256, submission_id FROM submission_contents WHERE content_sha256 IN (",
        );
        let mut list = q.separated(", ");
        for item in items {
            list.push_bind(&item.content_sha256);
        }
        list.push_unseparated(")");
        let mut first_of: HashMap<String, Uuid> = q
            .build_query_as::<(String, Uuid)>()
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();

        let mut outcomes = Vec::with_capacity(items.len());
        let mut new_items: Vec<(&Incoming, Receipt)> = Vec::new();
        let mut new_firsts: Vec<(&str, Uuid)> = Vec::new();
        for item in items {
            if let Some(receipt) = known.get(&item.submission_id) {
                outcomes.push(if receipt.content_sha256 == item.content_sha256 {
                    Outcome::Replayed(receipt.clone())
                } else {
                    Outcome::Conflict(
                        Problem::new(
                            "submission_conflict",
                            format!(
                                "submission {} was stored with different content (content_sha256 {}); nothing was changed",
                                item.submission_id, receipt.content_sha256
                            ),
                        )
                        .with("content_sha256", &receipt.content_sha256),
                    )
                });
                continue;
            }
            let missing: Vec<&str> = item
                .photos
                .iter()
                .map(|(s, _)| s.as_str())
                .filter(|s| !present.contains(*s))
                .collect();
            if !missing.is_empty() {
                outcomes.push(Outcome::MissingBlobs(
                    Problem::new(
                        "missing_blobs",
                        format!(
                            "{} photo(s) are not uploaded yet; upload them, then resend",
                            missing.len()
                        ),
                    )
                    .with("missing", &missing),
                ));
                continue;
            }
            last_seq += 1;
            let duplicate_of = first_of.get(&item.content_sha256).copied();
            if duplicate_of.is_none() {
                first_of.insert(item.content_sha256.clone(), item.submission_id);
                new_firsts.push((&item.content_sha256, item.submission_id));
            }
            let receipt = Receipt {
                submission_id: item.submission_id,
                content_sha256: item.content_sha256.clone(),
                received_at: now,
                seq: last_seq,
                status: "received",
                duplicate_of,
            };
            known.insert(item.submission_id, receipt.clone());
            new_items.push((item, receipt.clone()));
            outcomes.push(Outcome::Created(receipt));
        }

        if !new_items.is_empty() {
            for chunk in new_items.chunks(500) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO submissions (seq, submission_id, household_id, campaign, submitted_by, content_sha256,
                     content, device_id, app_version, surveyed_at, received_at, duplicate_of, state_seq, state_at) ",
                );
                q.push_values(chunk, |mut row, (item, receipt)| {
                    row.push_bind(receipt.seq)
                        .push_bind(item.submission_id)
                        .push_bind(&item.household_id)
                        .push_bind(&item.campaign)
                        .push_bind(item.submitted_by)
                        .push_bind(&item.content_sha256)
                        .push_bind(&item.content)
                        .push_bind(&item.device_id)
                        .push_bind(&item.app_version)
                        .push_bind(item.surveyed_at)
                        .push_bind(now)
                        .push_bind(receipt.duplicate_of)
                        .push_bind(receipt.seq)
                        .push_bind(now);
                });
                q.build().execute(&mut *tx).await?;
            }
            let photos: Vec<(Uuid, i64, &str, &str)> = new_items
                .iter()
                .flat_map(|(item, _)| {
                    item.photos.iter().enumerate().map(|(i, (sha, kind))| {
                        (item.submission_id, i as i64, sha.as_str(), kind.as_str())
                    })
                })
                .collect();
            for chunk in photos.chunks(1000) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO submission_photos (submission_id, position, sha256, kind) ",
                );
                q.push_values(chunk, |mut row, (id, position, sha, kind)| {
                    row.push_bind(*id)
                        .push_bind(*position)
                        .push_bind(*sha)
                        .push_bind(*kind);
                });
                q.build().execute(&mut *tx).await?;
            }
            if !new_firsts.is_empty() {
                let mut q = QueryBuilder::new(
                    "INSERT INTO submission_contents (content_sha256, submission_id) ",
                );
                q.push_values(&new_firsts, |mut row, (sha, id)| {
                    row.push_bind(*sha).push_bind(*id);
                });
                q.push(" ON CONFLICT (content_sha256) DO NOTHING");
                q.build().execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
                .bind(last_seq)
                .bind(FEED)
                .execute(&mut *tx)
                .await?;
            let entries: Vec<Entry> = new_items
                .iter()
                .map(|(item, receipt)| audit_entry(item, receipt))
                .collect();
            append_audit!(tx, dialect, &entries);
            // Visits with photos are checked once their photos are processed.
            let with_photos: Vec<String> = new_items
                .iter()
                .filter(|(item, _)| !item.photos.is_empty())
                .map(|(item, _)| item.submission_id.to_string())
                .collect();
            if !with_photos.is_empty() {
                let subjects: Vec<&str> = with_photos.iter().map(String::as_str).collect();
                enqueue_jobs!(tx, Kind::CheckPhotos, &subjects);
            }
            // Every visit is reconciled at once, and again when its photos have been checked.
            let mut households: Vec<&str> = new_items
                .iter()
                .map(|(item, _)| item.household_id.as_str())
                .collect();
            households.sort_unstable();
            households.dedup();
            enqueue_jobs!(tx, Kind::Reconcile, &households);
        }
        tx.commit().await?;
        Ok(outcomes)
    })
}

/// The audit entry of a stored visit: ids and hashes only, no personal data. Fields in JCS
/// order: this runs for every visit, so its data is serialized straight to canonical text.
fn audit_entry(item: &Incoming, receipt: &Receipt) -> Entry {
    #[derive(Serialize)]
    struct Photo<'a> {
        kind: &'static str,
        sha256: &'a str,
    }
    #[derive(Serialize)]
    struct Received<'a> {
        campaign: &'a str,
        content_sha256: &'a str,
        duplicate_of: Option<Uuid>,
        household_id: &'a str,
        photos: Vec<Photo<'a>>,
        seq: i64,
        submission_id: Uuid,
    }
    let data = Received {
        campaign: &item.campaign,
        content_sha256: &item.content_sha256,
        duplicate_of: receipt.duplicate_of,
        household_id: &item.household_id,
        photos: item
            .photos
            .iter()
            .map(|(sha, kind)| Photo {
                kind: kind.as_str(),
                sha256: sha.as_str(),
            })
            .collect(),
        seq: receipt.seq,
        submission_id: item.submission_id,
    };
    Entry::presorted(
        &item.actor,
        "submission.received",
        format!("submission:{}", item.submission_id),
        Some(&item.household_id),
        &data,
    )
}
