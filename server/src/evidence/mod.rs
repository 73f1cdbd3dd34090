//! The evidence pipeline: every stored photo is looked at once, on the job queue and never on an
//! upload's path. `process_photo` reads its bytes, works out its facts ([`analysis`]), stores a
//! thumbnail beside the blob and records the facts with their audit entry, all idempotently.
//! A photo hashed by an older scheme ([`phash::HASH_VERSION`]) is hashed again by the same job.

pub mod analysis;
pub mod index;
pub mod lookup;
pub mod phash;
pub mod reuse;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use self::analysis::{Facts, Outcome};
use crate::append_audit;
use crate::audit::Entry;
use crate::db::BeginWrite;
use crate::enqueue_jobs;
use crate::error::AppError;
use crate::http::AppState;
use crate::jobs::Kind;
use crate::on_pool;
use crate::store::blob_key;

/// Where a photo's thumbnail lives, beside its blob.
pub fn thumbnail_key(sha256: &str) -> String {
    format!(
        "thumbnails/{}/{}/{}.jpg",
        &sha256[0..2],
        &sha256[2..4],
        sha256
    )
}

/// The `process_photo` job: facts, thumbnail and copy-detection hashes of one blob; or, for a
/// photo hashed by an older scheme, its hashes again.
pub async fn process_photo(state: &AppState, sha256: &str) -> anyhow::Result<()> {
    let known: Option<(String, Option<String>, Option<i64>)> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT b.content_type, f.state, f.hash_version FROM blobs b
             LEFT JOIN photo_facts f ON f.sha256 = b.sha256 WHERE b.sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(p)
        .await
    })?;
    let Some((content_type, processed, hash_version)) = known else {
        anyhow::bail!("no blob {sha256}");
    };
    let rehash = match processed.as_deref() {
        None => false,
        Some("processed") if hash_version.is_none_or(|v| v < phash::HASH_VERSION) => true,
        Some(_) => return Ok(()),
    };
    let facts = analyse_blob(state, sha256, content_type).await?;
    if rehash {
        return record_hashes(state, sha256, &facts).await;
    }
    if let Outcome::Decoded { thumbnail, .. } = &facts.outcome {
        store_thumbnail(state, sha256, thumbnail).await?;
    }
    record(state, sha256, &facts).await?;
    state.jobs.notify();
    metrics::counter!("photos_processed_total", "state" => facts_state(&facts)).increment(1);
    Ok(())
}

/// Reads the blob from a file through a small buffer, never whole in memory: the blob's own file,
/// or a temporary copy of an S3 object.
async fn analyse_blob(
    state: &AppState,
    sha256: &str,
    content_type: String,
) -> anyhow::Result<Facts> {
    let key = blob_key(sha256);
    let (path, _copy) = match state.store.local_path(&key) {
        Some(path) => (path, None),
        None => {
            let (mut stream, _) = state
                .store
                .open(&key)
                .await?
                .ok_or_else(|| anyhow::anyhow!("blob {sha256} is missing from the store"))?;
            let copy = tempfile::NamedTempFile::new_in(state.spool.path())?;
            let mut file = tokio::fs::File::from_std(copy.reopen()?);
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk?).await?;
            }
            file.flush().await?;
            (copy.path().to_owned(), Some(copy))
        }
    };
    analyse_at_low_priority(path, content_type).await
}

/// A thumbnail is derived from its photo and made again if lost, so it is stored without the
/// fsyncs that photos get: those would compete with the uploads' own on the same disk.
async fn store_thumbnail(state: &AppState, sha256: &str, thumbnail: &[u8]) -> anyhow::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(state.spool.path())?;
    std::io::Write::write_all(&mut file, thumbnail)?;
    state
        .store
        .commit_derived(
            &thumbnail_key(sha256),
            file.into_temp_path(),
            thumbnail.len() as u64,
        )
        .await
}

/// Makes a processed photo's thumbnail again where a crash lost it (a file store writes them
/// without fsync), before it is served.
pub async fn ensure_thumbnail(
    state: &AppState,
    sha256: &str,
    content_type: &str,
) -> anyhow::Result<()> {
    let Some(path) = state.store.local_path(&thumbnail_key(sha256)) else {
        return Ok(());
    };
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    tracing::warn!(sha256, "thumbnail lost; making it again");
    let facts = analyse_blob(state, sha256, content_type.to_owned()).await?;
    match &facts.outcome {
        Outcome::Decoded { thumbnail, .. } => store_thumbnail(state, sha256, thumbnail).await,
        _ => anyhow::bail!("photo {sha256} no longer decodes"),
    }
}

/// Runs the analysis on a thread of its own at low CPU priority: decoding photos is the heaviest
/// work the server does, and uploads and visits must not wait for it on a small machine.
async fn analyse_at_low_priority(
    path: std::path::PathBuf,
    content_type: String,
) -> anyhow::Result<Facts> {
    let (done, facts) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("photo-analysis".to_owned())
        .spawn(move || {
            lower_this_threads_priority();
            let _ = done.send(analysis::analyse_file(&path, &content_type));
        })?;
    Ok(facts.await?)
}

/// On Linux, niceness belongs to a thread: `setpriority(PRIO_PROCESS, 0, …)` sets the calling
/// thread's. Failure only means full priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and changes only this thread's scheduling weight.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn facts_state(facts: &Facts) -> &'static str {
    match facts.outcome {
        Outcome::Decoded { .. } => "processed",
        Outcome::NotDecoded(_) => "not_decoded",
        Outcome::Undecodable(_) => "undecodable",
    }
}

/// Writes the facts and their audit entry in one transaction; a second writer of the same facts
/// (a job redone after a crash) changes nothing.
async fn record(state: &AppState, sha256: &str, facts: &Facts) -> anyhow::Result<()> {
    let (hashes, problem) = match &facts.outcome {
        Outcome::Decoded { hashes, .. } => match hashes {
            Ok(hashes) => (Some(*hashes), None),
            Err(why) => (None, Some(why.as_str())),
        },
        Outcome::NotDecoded(why) | Outcome::Undecodable(why) => (None, Some(why.as_str())),
    };
    let phash = hashes.map(|h| h.full());
    let exif = &facts.exif;
    // Fields in JCS order.
    #[derive(Serialize)]
    struct Processed<'a> {
        exif_gps: Option<[f64; 2]>,
        exif_offset: Option<&'a str>,
        exif_time: Option<&'a str>,
        hash_version: i64,
        height: Option<u32>,
        phash: Option<String>,
        problem: Option<&'a str>,
        sha256: &'a str,
        state: &'static str,
        width: Option<u32>,
    }
    let data = Processed {
        exif_gps: exif.gps.map(|(lat, lon)| [lat, lon]),
        exif_offset: exif.offset.as_deref(),
        exif_time: exif.taken_at.as_deref(),
        hash_version: phash::HASH_VERSION,
        height: facts.height,
        phash: phash.map(|h| format!("{h:016x}")),
        problem,
        sha256,
        state: facts_state(facts),
        width: facts.width,
    };
    let entry = Entry::new(
        "system",
        "photo.processed",
        format!("blob:{sha256}"),
        serde_json::to_value(&data)?,
    );
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let hash_seq = match hashes {
            Some(_) => Some(next_hash_seq!(tx, dialect)),
            None => None,
        };
        let inserted = sqlx::query(
            "INSERT INTO photo_facts (sha256, state, problem, width, height, taken_at, taken_offset,
                 gps_lat, gps_lon, make, model, orientation, phash, hash_version, hashes, hash_seq,
                 processed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(data.state)
        .bind(problem)
        .bind(facts.width.map(i64::from))
        .bind(facts.height.map(i64::from))
        .bind(exif.taken_at.as_deref())
        .bind(exif.offset.as_deref())
        .bind(exif.gps.map(|g| g.0))
        .bind(exif.gps.map(|g| g.1))
        .bind(exif.make.as_deref())
        .bind(exif.model.as_deref())
        .bind(exif.orientation.map(i64::from))
        // Stored as the signed 64-bit integer with the same bits.
        .bind(phash.map(|h| h as i64))
        .bind(phash::HASH_VERSION)
        .bind(hashes.map(|h| h.to_bytes()))
        .bind(hash_seq)
        .bind(crate::db::now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            append_audit!(tx, dialect, std::slice::from_ref(&entry));
            enqueue_checks!(tx, sha256);
        }
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// The next position in the near-duplicate index's catch-up, inside an open write transaction
/// `$tx`: read under the `photo_hashes` counter's lock (held to commit on PostgreSQL, SQLite's
/// one writer elsewhere), so positions are handed out in commit order and a reader that has seen
/// one has seen every one before it.
macro_rules! next_hash_seq {
    ($tx:ident, $dialect:expr) => {{
        let value: i64 = sqlx::query_scalar(crate::db::lock_counter_sql($dialect))
            .bind("photo_hashes")
            .fetch_one(&mut *$tx)
            .await?;
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'photo_hashes'")
            .bind(value + 1)
            .execute(&mut *$tx)
            .await?;
        value + 1
    }};
}
use next_hash_seq;

/// Enqueues, inside an open transaction `$tx`, the photo check of every visit that a change to
/// photo `$sha256`'s hashes concerns: those naming it, and those with a near-duplicate finding
/// pointing at it.
macro_rules! enqueue_checks {
    ($tx:ident, $sha256:expr) => {{
        let visits: Vec<String> = sqlx::query_scalar(
            "SELECT submission_id FROM submission_photos WHERE sha256 = $1
             UNION SELECT submission_id FROM findings WHERE other_photo = $1 AND cleared_at IS NULL",
        )
        .bind($sha256)
        .fetch_all(&mut *$tx)
        .await?
        .into_iter()
        .map(|id: uuid::Uuid| id.to_string())
        .collect();
        let visits: Vec<&str> = visits.iter().map(String::as_str).collect();
        enqueue_jobs!($tx, Kind::CheckPhotos, &visits);
    }};
}
use enqueue_checks;

/// Stores a photo's hashes by the current scheme in place of an older one's, with its audit
/// entry, and has its visits and those pointing at it judged again.
async fn record_hashes(state: &AppState, sha256: &str, facts: &Facts) -> anyhow::Result<()> {
    let hashes = match &facts.outcome {
        Outcome::Decoded { hashes, .. } => hashes.as_ref().ok().copied(),
        _ => None,
    };
    // Fields in JCS order.
    #[derive(Serialize)]
    struct Rehashed<'a> {
        hash_version: i64,
        phash: Option<String>,
        sha256: &'a str,
    }
    let entry = Entry::new(
        "system",
        "photo.rehashed",
        format!("blob:{sha256}"),
        serde_json::to_value(Rehashed {
            hash_version: phash::HASH_VERSION,
            phash: hashes.map(|h| format!("{:016x}", h.full())),
            sha256,
        })?,
    );
    let dialect = state.db.dialect();
    on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let hash_seq = match hashes {
            Some(_) => Some(next_hash_seq!(tx, dialect)),
            None => None,
        };
        let changed = sqlx::query(
            "UPDATE photo_facts SET hash_version = $1, hashes = $2, hash_seq = $3, phash = $4
             WHERE sha256 = $5 AND (hash_version IS NULL OR hash_version < $1)",
        )
        .bind(phash::HASH_VERSION)
        .bind(hashes.map(|h| h.to_bytes()))
        .bind(hash_seq)
        .bind(hashes.map(|h| h.full() as i64))
        .bind(sha256)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            append_audit!(tx, dialect, std::slice::from_ref(&entry));
            enqueue_checks!(tx, sha256);
        }
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    state.jobs.notify();
    metrics::counter!("photos_rehashed_total").increment(1);
    Ok(())
}
