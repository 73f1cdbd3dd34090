//! A registry import: one transaction that stages the file's rows, groups them into households,
//! compares each with what is stored, writes new versions of the changed ones, tombstones the
//! households of the imported villages that the file no longer has, and numbers every change in
//! the registry feed. A crash at any point leaves the registry as it was.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use huikan_shared::content::canonical_json;
use huikan_shared::submission::Datum;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::file::{self, Item};
use super::rows::MemberRow;
use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::db::{Db, Dialect};
use crate::enqueue_jobs;
use crate::error::{AppError, Result};
use crate::jobs::Kind;
use crate::on_pool;

/// The feed every registry change is numbered in.
pub const FEED: &str = "registry";
const STAGE_BATCH: usize = 1000;
const HOUSEHOLDS_PER_ROUND: i64 = 2000;

#[derive(Serialize, Default, Debug, Clone)]
pub struct Counts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Rejected {
    pub row: u64,
    pub reason: String,
}

#[derive(Serialize, Debug, Clone)]
pub struct ImportReport {
    pub import_id: Uuid,
    pub households: Counts,
    pub rejected_rows: Vec<Rejected>,
}

/// A household as registered: what phones receive and visits are checked against.
#[derive(Serialize)]
struct HouseholdRecord<'a> {
    household_id: &'a str,
    village_code: &'a str,
    township: &'a str,
    village: &'a str,
    head_name: &'a str,
    attribute: Option<&'a str>,
    status: Option<&'a str>,
    key_groups: &'a [String],
    helper: Helper<'a>,
    location: Option<Location>,
    housing_grade: Option<&'a str>,
    water_source: Option<&'a str>,
    members: Vec<Member<'a>>,
}

#[derive(Serialize)]
struct Helper<'a> {
    name: Option<&'a str>,
    phone: Option<&'a str>,
}

#[derive(Serialize)]
struct Location {
    lat: f64,
    lon: f64,
}

#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    id_number: &'a str,
    id_number_valid: bool,
    id_number_problem: Option<&'a str>,
    relation: &'a str,
    sex: Option<&'a str>,
    birth_date: Option<chrono::NaiveDate>,
    school_status: Option<&'a str>,
    health: Option<&'a str>,
    disability_grade: Option<u8>,
    labour: Option<&'a str>,
    insured: Option<bool>,
}

/// Groups one household's rows into its record (canonical JSON text), reporting rows that
/// contradict the household (another village) as rejected.
fn household_record(rows: &[MemberRow], rejected: &mut Vec<Rejected>) -> Option<String> {
    let head = rows
        .iter()
        .find(|r| r.relation == "head")
        .or(rows.first())?;
    let mut members = Vec::with_capacity(rows.len());
    let mut kept: Vec<&MemberRow> = Vec::with_capacity(rows.len());
    for row in rows {
        if row.village_code != head.village_code {
            rejected.push(Rejected {
                row: row.row,
                reason: format!(
                    "村代码 {} 与同户第 {} 行的 {} 不一致 (village_code differs from the household's row {})",
                    row.village_code, head.row, head.village_code, head.row
                ),
            });
            continue;
        }
        kept.push(row);
        members.push(Member {
            name: &row.name,
            id_number: &row.id_number,
            id_number_valid: row.id_number_problem.is_none(),
            id_number_problem: row.id_number_problem.as_deref(),
            relation: &row.relation,
            sex: row.sex.as_deref(),
            birth_date: row.birth_date,
            school_status: row.school_status.as_deref(),
            health: row.health.as_deref(),
            disability_grade: row.disability_grade,
            labour: row.labour.as_deref(),
            insured: row.insured,
        });
    }
    // Household-level fields: the head's row first, then the first row that has them.
    let ordered = || std::iter::once(head).chain(kept.iter().copied());
    let first = |f: fn(&MemberRow) -> Option<&str>| ordered().find_map(f);
    let record = HouseholdRecord {
        household_id: &head.household_id,
        village_code: &head.village_code,
        township: &head.township,
        village: &head.village,
        head_name: &head.head_name,
        attribute: first(|r| r.attribute.as_deref()),
        status: first(|r| r.status.as_deref()),
        key_groups: ordered()
            .map(|r| &r.key_groups)
            .find(|g| !g.is_empty())
            .map_or(&[], |g| g),
        helper: Helper {
            name: first(|r| r.helper_name.as_deref()),
            phone: first(|r| r.helper_phone.as_deref()),
        },
        location: ordered().find_map(|r| {
            Some(Location {
                lat: r.lat?,
                lon: r.lon?,
            })
        }),
        housing_grade: first(|r| r.housing_grade.as_deref()),
        water_source: first(|r| r.water_source.as_deref()),
        members,
    };
    let value = serde_json::to_value(&record).ok()?;
    Some(canonical_json(&value))
}

struct Stored {
    version: i64,
    record_sha256: String,
    removed: bool,
    village_code: String,
    moved_from: Option<String>,
}

/// One household version to write.
struct Change {
    household_id: String,
    village_code: String,
    record: String,
    record_sha256: String,
    version: i64,
    removed: bool,
    seq: i64,
    /// The village the household last moved out of: its phones get a tombstone.
    moved_from: Option<String>,
}

impl Change {
    /// The audit entry of a household version: ids and hashes, no personal data.
    fn audit_entry(&self, actor: &str, import_id: Uuid) -> Entry {
        let action = match (self.removed, self.version) {
            (true, _) => "household.removed",
            (false, 1) => "household.registered",
            (false, _) => "household.updated",
        };
        // Fields in JCS order: an import writes one entry per changed household.
        #[derive(Serialize)]
        struct Version<'a> {
            household_id: &'a str,
            import_id: Uuid,
            record_sha256: &'a str,
            version: i64,
            village_code: &'a str,
        }
        let data = Version {
            household_id: &self.household_id,
            import_id,
            record_sha256: &self.record_sha256,
            version: self.version,
            village_code: &self.village_code,
        };
        Entry::presorted(
            actor,
            action,
            format!("household:{}", self.household_id),
            Some(&self.household_id),
            &data,
        )
    }
}

/// Writes household versions inside the import's transaction: the current row (upserted) and
/// its history row. A macro because it runs in both arms of `on_pool!`.
macro_rules! write_changes {
    ($tx:ident, $dialect:expr, $actor:expr, $changes:expr, $import_id:expr, $now:expr) => {
        for chunk in $changes.chunks(400) {
            let mut q = QueryBuilder::new(
                "INSERT INTO households (household_id, village_code, record, record_sha256, version, removed,
                 change_seq, import_id, updated_at, moved_from) ",
            );
            q.push_values(chunk, |mut b, c| {
                b.push_bind(&c.household_id)
                    .push_bind(&c.village_code)
                    .push_bind(&c.record)
                    .push_bind(&c.record_sha256)
                    .push_bind(c.version)
                    .push_bind(c.removed)
                    .push_bind(c.seq)
                    .push_bind($import_id)
                    .push_bind($now)
                    .push_bind(&c.moved_from);
            });
            q.push(
                " ON CONFLICT (household_id) DO UPDATE SET village_code = excluded.village_code,
                  record = excluded.record, record_sha256 = excluded.record_sha256, version = excluded.version,
                  removed = excluded.removed, change_seq = excluded.change_seq, import_id = excluded.import_id,
                  updated_at = excluded.updated_at, moved_from = excluded.moved_from",
            );
            q.build().execute(&mut *$tx).await?;
            let mut q = QueryBuilder::new(
                "INSERT INTO household_versions (household_id, version, record, record_sha256, removed, change_seq,
                 import_id, created_at) ",
            );
            q.push_values(chunk, |mut b, c| {
                b.push_bind(&c.household_id)
                    .push_bind(c.version)
                    .push_bind(&c.record)
                    .push_bind(&c.record_sha256)
                    .push_bind(c.removed)
                    .push_bind(c.seq)
                    .push_bind($import_id)
                    .push_bind($now);
            });
            q.build().execute(&mut *$tx).await?;
            let entries: Vec<Entry> = chunk.iter().map(|c| c.audit_entry($actor, $import_id)).collect();
            append_audit!($tx, $dialect, &entries);
            // Their visits are judged against the registry: reconciled again.
            let mut q = QueryBuilder::new("SELECT DISTINCT household_id FROM submissions WHERE household_id IN (");
            let mut list = q.separated(", ");
            for c in chunk {
                list.push_bind(&c.household_id);
            }
            list.push_unseparated(")");
            let visited: Vec<String> = q.build_query_scalar().fetch_all(&mut *$tx).await?;
            let visited: Vec<&str> = visited.iter().map(String::as_str).collect();
            enqueue_jobs!($tx, Kind::Reconcile, &visited);
        }
    };
}

/// Imports a registry file already on local disk.
pub async fn import_file(
    db: &Db,
    path: PathBuf,
    datum: Datum,
    imported_by: Option<Uuid>,
    actor: &str,
    source: &str,
) -> Result<ImportReport> {
    // Parse on a blocking thread; rows come over a bounded channel, so memory stays flat.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Item>>(8);
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(STAGE_BATCH);
        let result = file::read(&path, datum, &mut |item| {
            batch.push(item);
            if batch.len() == STAGE_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(STAGE_BATCH));
                let _ = tx.blocking_send(full);
            }
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        result
    });

    let import_id = Uuid::now_v7();
    let now = crate::db::now();
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut counts = Counts::default();
    let dialect = db.dialect();
    let lock_sql = crate::db::lock_counter_sql(db.dialect());
    let temp_table = match db.dialect() {
        Dialect::Sqlite => {
            "CREATE TEMP TABLE import_rows (household_id TEXT NOT NULL, row_no BIGINT NOT NULL, village_code TEXT, member TEXT)"
        }
        Dialect::Postgres => {
            "CREATE TEMP TABLE import_rows (household_id TEXT NOT NULL, row_no BIGINT NOT NULL, village_code TEXT, member TEXT) ON COMMIT DROP"
        }
    };
    // PostgreSQL drops the staging table at commit; SQLite keeps it on the connection until told.
    let drop_temp = match db.dialect() {
        Dialect::Sqlite => Some("DROP TABLE temp.import_rows"),
        Dialect::Postgres => None,
    };
    let rows_read: u64;
    on_pool!(&db.write, |p| {
        let mut tx = p.begin_write().await?;
        let mut seq: i64 = sqlx::query_scalar(lock_sql)
            .bind(FEED)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(temp_table).execute(&mut *tx).await?;
        // The import's row first: every household version names it.
        sqlx::query(
            "INSERT INTO registry_imports (import_id, imported_by, source, rows_read, added, updated, unchanged, removed,
             rejected_rows, created_at) VALUES ($1, $2, $3, 0, 0, 0, 0, 0, '[]', $4)",
        )
        .bind(import_id)
        .bind(imported_by)
        .bind(source)
        .bind(now)
        .execute(&mut *tx)
        .await?;

        // 1. Stage every row. A rejected row with a household id is staged without a member,
        //    so its household counts as present (a typo must not tombstone a household).
        let mut staged: u64 = 0;
        while let Some(batch) = rx.recv().await {
            let mut values: Vec<(String, i64, Option<String>, Option<String>)> =
                Vec::with_capacity(batch.len());
            for item in batch {
                staged += 1;
                match item {
                    Item::Member(m) => {
                        let json = serde_json::to_string(&m).map_err(anyhow::Error::from)?;
                        values.push((
                            m.household_id.clone(),
                            m.row as i64,
                            Some(m.village_code.clone()),
                            Some(json),
                        ));
                    }
                    Item::Rejected {
                        row,
                        household_id,
                        reason,
                    } => {
                        if let Some(id) = household_id {
                            values.push((id, row as i64, None, None));
                        }
                        rejected.push(Rejected { row, reason });
                    }
                }
            }
            if values.is_empty() {
                continue;
            }
            let mut q = QueryBuilder::new(
                "INSERT INTO import_rows (household_id, row_no, village_code, member) ",
            );
            q.push_values(&values, |mut b, (id, row, village, member)| {
                b.push_bind(id)
                    .push_bind(*row)
                    .push_bind(village)
                    .push_bind(member);
            });
            q.build().execute(&mut *tx).await?;
        }
        rows_read = staged;
        parser.await?.map_err(AppError::invalid_body)?;
        sqlx::query("CREATE INDEX import_rows_by_household ON import_rows (household_id, row_no)")
            .execute(&mut *tx)
            .await?;

        // 2. Household by household, in id order, a round at a time.
        let mut after = String::new();
        let mut village_names: BTreeMap<String, (String, String)> = BTreeMap::new();
        loop {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT household_id FROM import_rows WHERE household_id > $1 ORDER BY household_id LIMIT $2",
            )
            .bind(&after)
            .bind(HOUSEHOLDS_PER_ROUND)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let staged_rows: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT household_id, member FROM import_rows WHERE household_id > $1 AND household_id <= $2
                 ORDER BY household_id, row_no",
            )
            .bind(&after)
            .bind(&last)
            .fetch_all(&mut *tx)
            .await?;
            let stored: HashMap<String, Stored> = sqlx::query_as::<_, (String, i64, String, bool, String, Option<String>)>(
                "SELECT household_id, version, record_sha256, removed, village_code, moved_from FROM households
                 WHERE household_id > $1 AND household_id <= $2",
            )
            .bind(&after)
            .bind(&last)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, version, record_sha256, removed, village_code, moved_from)| {
                (
                    id,
                    Stored {
                        version,
                        record_sha256,
                        removed,
                        village_code,
                        moved_from,
                    },
                )
            })
            .collect();

            let mut changes = Vec::new();
            let mut contradicting: Vec<i64> = Vec::new();
            let mut start = 0;
            while start < staged_rows.len() {
                let id = &staged_rows[start].0;
                let end = staged_rows[start..]
                    .iter()
                    .position(|(h, _)| h != id)
                    .map_or(staged_rows.len(), |n| start + n);
                let members: Vec<MemberRow> = staged_rows[start..end]
                    .iter()
                    .filter_map(|(_, m)| m.as_deref())
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::from)?;
                start = end;
                if members.is_empty() {
                    continue; // only rejected rows: left as it was
                }
                let refused_before = rejected.len();
                let Some(record) = household_record(&members, &mut rejected) else {
                    continue;
                };
                contradicting.extend(rejected[refused_before..].iter().map(|r| r.row as i64));
                let record_sha256 = hex::encode(Sha256::digest(record.as_bytes()));
                let village_code = &members[0].village_code;
                village_names
                    .entry(village_code.clone())
                    .or_insert_with(|| (members[0].township.clone(), members[0].village.clone()));
                let (version, moved_from) = match stored.get(&members[0].household_id) {
                    Some(s) if s.record_sha256 == record_sha256 && !s.removed => {
                        counts.unchanged += 1;
                        continue;
                    }
                    Some(s) => {
                        counts.updated += 1;
                        let moved_from = if s.village_code != *village_code {
                            Some(s.village_code.clone())
                        } else {
                            s.moved_from.clone()
                        };
                        (s.version + 1, moved_from)
                    }
                    None => {
                        counts.added += 1;
                        (1, None)
                    }
                };
                seq += 1;
                changes.push(Change {
                    household_id: members[0].household_id.clone(),
                    village_code: village_code.clone(),
                    record,
                    record_sha256,
                    version,
                    removed: false,
                    seq,
                    moved_from,
                });
            }
            write_changes!(tx, dialect, actor, changes, import_id, now);
            after = last;
            // Rows refused for naming another village must not make that village "imported".
            for chunk in contradicting.chunks(500) {
                let mut q = QueryBuilder::new(
                    "UPDATE import_rows SET village_code = NULL WHERE row_no IN (",
                );
                let mut list = q.separated(", ");
                for row in chunk {
                    list.push_bind(*row);
                }
                list.push_unseparated(")");
                q.build().execute(&mut *tx).await?;
            }
        }

        // 3. Households of the imported villages that the file no longer has.
        let gone: Vec<(String, String, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT household_id, village_code, record, record_sha256, version, moved_from FROM households h
             WHERE removed = FALSE
               AND village_code IN (SELECT DISTINCT village_code FROM import_rows WHERE village_code IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM import_rows r WHERE r.household_id = h.household_id)
             ORDER BY household_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        counts.removed = gone.len() as u64;
        let changes: Vec<Change> = gone
            .into_iter()
            .map(
                |(household_id, village_code, record, record_sha256, version, moved_from)| {
                    seq += 1;
                    Change {
                        household_id,
                        village_code,
                        record,
                        record_sha256,
                        version: version + 1,
                        removed: true,
                        moved_from,
                        seq,
                    }
                },
            )
            .collect();
        write_changes!(tx, dialect, actor, changes, import_id, now);

        sqlx::query(
            "INSERT INTO registry_villages (village_code)
             SELECT DISTINCT village_code FROM import_rows WHERE village_code IS NOT NULL
             ON CONFLICT (village_code) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        // The roll-ups name their units as the registry last did.
        let names: Vec<(&String, &(String, String))> = village_names.iter().collect();
        for chunk in names.chunks(1000) {
            let mut q = QueryBuilder::new(
                "INSERT INTO registry_villages (village_code, township, village) ",
            );
            q.push_values(chunk, |mut b, (code, (township, village))| {
                b.push_bind(*code).push_bind(township).push_bind(village);
            });
            q.push(" ON CONFLICT (village_code) DO UPDATE SET township = excluded.township, village = excluded.village");
            q.build().execute(&mut *tx).await?;
        }
        rejected.sort_by_key(|r| r.row);
        sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
            .bind(seq)
            .bind(FEED)
            .execute(&mut *tx)
            .await?;
        let rejected_json = serde_json::to_string(&rejected).map_err(anyhow::Error::from)?;
        sqlx::query(
            "UPDATE registry_imports SET rows_read = $1, added = $2, updated = $3, unchanged = $4, removed = $5,
             rejected_rows = $6 WHERE import_id = $7",
        )
        .bind(rows_read as i64)
        .bind(counts.added as i64)
        .bind(counts.updated as i64)
        .bind(counts.unchanged as i64)
        .bind(counts.removed as i64)
        .bind(&rejected_json)
        .bind(import_id)
        .execute(&mut *tx)
        .await?;
        let entry = Entry::new(
            actor,
            "registry.imported",
            format!("import:{import_id}"),
            serde_json::json!({"import_id": import_id, "source": source, "rows": rows_read, "households": counts, "rejected_rows": rejected.len()}),
        );
        append_audit!(tx, dialect, std::slice::from_ref(&entry));
        if let Some(drop_sql) = drop_temp {
            sqlx::query(drop_sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    tracing::info!(%import_id, rows = rows_read, ?counts, rejected = rejected.len(), "registry imported");
    Ok(ImportReport {
        import_id,
        households: counts,
        rejected_rows: rejected,
    })
}
