//! The audit trail: an append-only, hash-chained log of every state change, appended in the same
//! transaction as the change (see [`append_audit!`]), with the chain's verification, the log
//! feed and a household's trail for auditors.

pub mod bundle;
pub mod checkpoints;
mod export;
mod routes;
pub mod signing;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use routes::router;

use crate::db::BeginWrite;
use crate::db::{Db, Dialect};
use crate::error::Result;
use crate::on_pool;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One state change to record. `data` names records by id and content hash, never a 身份证号.
pub struct Entry {
    pub actor: String,
    pub action: &'static str,
    pub subject: String,
    /// The JCS text of the data.
    data: String,
    /// The household the data names, for its trail.
    household_id: Option<String>,
}

impl Entry {
    pub fn new(actor: &str, action: &'static str, subject: String, data: Value) -> Entry {
        let household_id = data
            .get("household_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Entry {
            actor: actor.to_owned(),
            action,
            subject,
            data: huikan_shared::content::canonical_json(&data),
            household_id,
        }
    }

    /// For hot paths: data serialized from a struct whose fields are declared in JCS order (by
    /// name) and hold only strings, integers, booleans, nulls and such structs, for which
    /// serde_json's output is the JCS text, without building a `Value` first.
    pub fn presorted<T: Serialize>(
        actor: &str,
        action: &'static str,
        subject: String,
        household_id: Option<&str>,
        data: &T,
    ) -> Entry {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
        debug_assert_eq!(
            serde_json::from_str::<Value>(&data)
                .map(|v| huikan_shared::content::canonical_json(&v))
                .ok()
                .as_deref(),
            Some(data.as_str()),
            "presorted audit data must already be JCS"
        );
        Entry {
            actor: actor.to_owned(),
            action,
            subject,
            data,
            household_id: household_id.map(str::to_owned),
        }
    }
}

/// An entry as chained and stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Chained {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    #[serde(skip)]
    pub household_id: Option<String>,
    /// The JCS text of the entry's data.
    #[serde(skip)]
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The JCS text of an entry without its hash. Built by hand from parts that are already
/// canonical (`data` is stored as JCS text), so verifying a million entries does not re-parse
/// them: keys in JCS order, strings escaped as serde_json does, which is what JCS requires.
pub fn canonical(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    data: &str,
    prev_hash: &str,
) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    format!(
        "{{\"action\":{},\"actor\":{},\"at\":{},\"data\":{data},\"prev_hash\":{},\"seq\":{seq},\"subject\":{}}}",
        s(action),
        s(actor),
        s(at),
        s(prev_hash),
        s(subject)
    )
}

/// `hash = SHA-256(prev_hash ‖ JCS(entry without hash))`, as lowercase hex.
pub fn entry_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

/// Chains entries after `(seq, prev_hash)`, advancing both.
pub fn chain(entries: &[Entry], seq: &mut i64, prev_hash: &mut String) -> Vec<Chained> {
    let at = crate::db::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    entries
        .iter()
        .map(|e| {
            *seq += 1;
            let text = canonical(
                *seq, &at, &e.actor, e.action, &e.subject, &e.data, prev_hash,
            );
            let hash = entry_hash(prev_hash, &text);
            let chained = Chained {
                seq: *seq,
                at: at.clone(),
                actor: e.actor.clone(),
                action: e.action.to_owned(),
                subject: e.subject.clone(),
                household_id: e.household_id.clone(),
                data: e.data.clone(),
                prev_hash: prev_hash.clone(),
                hash: hash.clone(),
            };
            *prev_hash = hash;
            chained
        })
        .collect()
}

/// The head lock: appenders serialize on this row, briefly, at the end of their transaction.
pub fn head_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
        Dialect::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
    }
}

/// Appends entries inside an open transaction `$tx` (a `sqlx::Transaction` of either backend):
/// the entries of one transaction go in together, under the chain head's lock. A macro because
/// it runs in both arms of `on_pool!`.
#[macro_export]
macro_rules! append_audit {
    ($tx:ident, $dialect:expr, $entries:expr) => {{
        let entries: &[$crate::audit::Entry] = $entries;
        if !entries.is_empty() {
            let (mut seq, mut prev): (i64, String) =
                sqlx::query_as($crate::audit::head_sql($dialect)).fetch_one(&mut *$tx).await?;
            let chained = $crate::audit::chain(entries, &mut seq, &mut prev);
            for chunk in chained.chunks(500) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_log (seq, at, actor, action, subject, household_id, data, prev_hash, hash) ",
                );
                q.push_values(chunk, |mut b, c| {
                    b.push_bind(c.seq)
                        .push_bind(&c.at)
                        .push_bind(&c.actor)
                        .push_bind(&c.action)
                        .push_bind(&c.subject)
                        .push_bind(&c.household_id)
                        .push_bind(&c.data)
                        .push_bind(&c.prev_hash)
                        .push_bind(&c.hash);
                });
                q.build().execute(&mut *$tx).await?;
            }
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&prev)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// Records entries in a transaction of their own, for changes that have none (reads of whole
/// ID numbers, registry pulls).
pub async fn record(db: &Db, entries: &[Entry]) -> Result<()> {
    let dialect = db.dialect();
    on_pool!(&db.write, |p| {
        let mut tx = p.begin_write().await?;
        append_audit!(tx, dialect, entries);
        tx.commit().await?;
        Ok(())
    })
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Broken {
    pub seq: i64,
    /// `changed`, `missing` or `reordered`.
    pub problem: &'static str,
    pub detail: String,
}

#[derive(Serialize, Debug)]
pub struct Verification {
    pub ok: bool,
    pub entries: i64,
    pub head_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<Broken>,
    /// Signed checkpoints the chain was found to match.
    pub checkpoints: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<signing::Signed>,
}

/// Walks the whole chain in order and reports the first entry that breaks it, or that differs
/// from what a signed checkpoint says it was.
pub async fn verify(db: &Db) -> Result<Verification> {
    const PAGE: i64 = 10_000;
    let (head_seq, head_hash) = checkpoints::head(db).await?;
    let signed = checkpoints::list(db, 0, i64::MAX).await?;
    let mut pending = signed.iter().peekable();
    let mut expected_seq = 1i64;
    let mut prev_hash = GENESIS.to_owned();
    let mut window: std::collections::VecDeque<Chained> = std::collections::VecDeque::new();
    let broken = |entries: i64, broken: Broken| Verification {
        ok: false,
        entries,
        head_hash: head_hash.clone(),
        first_broken: Some(broken),
        checkpoints: 0,
        last_checkpoint: None,
    };
    loop {
        let page = read_page(db, expected_seq, PAGE).await?;
        let done = (page.len() as i64) < PAGE;
        for entry in page {
            if let Some(problem) = check(&entry, expected_seq, &prev_hash, &window) {
                return Ok(broken(expected_seq - 1, problem));
            }
            while let Some(checkpoint) = pending.next_if(|c| c.statement.seq <= entry.seq) {
                if let Some(problem) = check_checkpoint(checkpoint, &entry) {
                    return Ok(broken(expected_seq - 1, problem));
                }
            }
            prev_hash = entry.hash.clone();
            expected_seq += 1;
            window.push_back(entry);
            if window.len() > 4 {
                window.pop_front();
            }
        }
        if done {
            break;
        }
    }
    let entries = expected_seq - 1;
    if entries < head_seq || prev_hash != head_hash {
        let problem = Broken {
            seq: entries + 1,
            problem: "missing",
            detail: format!("the chain ends at entry {entries} but its head is entry {head_seq}"),
        };
        return Ok(broken(entries, problem));
    }
    if let Some(checkpoint) = pending.next() {
        let problem = Broken {
            seq: entries + 1,
            problem: "missing",
            detail: format!(
                "the chain ends at entry {entries} but a checkpoint signed at {} covers entry {}",
                checkpoint.statement.at, checkpoint.statement.seq
            ),
        };
        return Ok(broken(entries, problem));
    }
    Ok(Verification {
        ok: true,
        entries,
        head_hash,
        first_broken: None,
        checkpoints: signed.len(),
        last_checkpoint: signed.last().cloned(),
    })
}

/// Entries from `first` on, in order, at most `limit`.
async fn read_page(db: &Db, first: i64, limit: i64) -> Result<Vec<Chained>> {
    match &db.read {
        // sqlx-sqlite hands each row over from its worker thread on its own, which makes a
        // million rows cost seconds of thread switching: a page comes as one JSON array instead.
        // The texts survive exactly (JSON strings), which the hashes need.
        crate::db::Pool::Sqlite(p) => {
            let page: String = sqlx::query_scalar(
                "SELECT json_group_array(json_array(seq, at, actor, action, subject, household_id,
                                                    data, prev_hash, hash) ORDER BY seq)
                 FROM (SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2)",
            )
            .bind(first)
            .bind(limit)
            .fetch_one(p)
            .await?;
            type Row = (i64, String, String, String, String, Option<String>, String, String, String);
            let rows: Vec<Row> = serde_json::from_str(&page).map_err(anyhow::Error::from)?;
            Ok(rows
                .into_iter()
                .map(|(seq, at, actor, action, subject, household_id, data, prev_hash, hash)| Chained {
                    seq,
                    at,
                    actor,
                    action,
                    subject,
                    household_id,
                    data,
                    prev_hash,
                    hash,
                })
                .collect())
        }
        crate::db::Pool::Postgres(p) => Ok(sqlx::query_as(
            "SELECT seq, at, actor, action, subject, household_id, data, prev_hash, hash FROM audit_log
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(first)
        .bind(limit)
        .fetch_all(p)
        .await?),
    }
}

/// Whether the checkpoint is genuine and `entry` (the one it names) is what it signed.
fn check_checkpoint(checkpoint: &signing::Signed, entry: &Chained) -> Option<Broken> {
    let s = &checkpoint.statement;
    if let Err(why) = checkpoint.verify() {
        return Some(Broken {
            seq: s.seq,
            problem: "changed",
            detail: format!(
                "the checkpoint of entry {} taken at {} is not genuine: {why}",
                s.seq, s.at
            ),
        });
    }
    (s.seq != entry.seq || s.head_hash != entry.hash).then(|| Broken {
        seq: s.seq,
        problem: "changed",
        detail: format!(
            "entry {} is not the one signed at {}: the chain was rewritten from there or before",
            s.seq, s.at
        ),
    })
}

/// What, if anything, is wrong with `entry` where entry `expected_seq` should be.
fn check(
    entry: &Chained,
    expected_seq: i64,
    prev_hash: &str,
    recent: &std::collections::VecDeque<Chained>,
) -> Option<Broken> {
    let hashes_as = |seq: i64| {
        let text = canonical(
            seq,
            &entry.at,
            &entry.actor,
            &entry.action,
            &entry.subject,
            &entry.data,
            &entry.prev_hash,
        );
        entry_hash(&entry.prev_hash, &text) == entry.hash
    };
    if entry.seq != expected_seq {
        return Some(Broken {
            seq: expected_seq,
            problem: "missing",
            detail: format!(
                "entry {expected_seq} is missing: the next one is entry {}",
                entry.seq
            ),
        });
    }
    if !hashes_as(entry.seq) {
        // Content that hashes correctly under another position was moved there.
        if let Some(other) =
            (entry.seq - 3..=entry.seq + 3).find(|s| *s != entry.seq && hashes_as(*s))
        {
            return Some(Broken {
                seq: entry.seq,
                problem: "reordered",
                detail: format!("entry {} holds the entry written as {other}", entry.seq),
            });
        }
        return Some(Broken {
            seq: entry.seq,
            problem: "changed",
            detail: format!(
                "entry {} does not hash to its recorded hash: it was altered",
                entry.seq
            ),
        });
    }
    if entry.prev_hash != prev_hash {
        let moved = recent.iter().any(|r| r.hash == entry.prev_hash);
        return Some(Broken {
            seq: entry.seq,
            problem: if moved { "reordered" } else { "changed" },
            detail: format!(
                "entry {} does not follow entry {}",
                entry.seq,
                entry.seq - 1
            ),
        });
    }
    None
}
