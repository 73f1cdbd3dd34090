//! The evidence pipeline: every stored photo is looked at once, on the job queue and never on an
//! upload's path. `process_photo` reads its bytes, works out its facts ([`analysis`]), stores a
//! thumbnail beside the blob and records the facts with their audit entry, all idempotently.

pub mod analysis;
pub mod near;
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

/// The `process_photo` job: facts, thumbnail and perceptual hash of one blob.
pub async fn process_photo(state: &AppState, sha256: &str) -> anyhow::Result<()> {
    let known: Option<(String, bool)> = on_pool!(&state.db.read, |p| {
        sqlx::query_as(
            "SELECT b.content_type, f.sha256 IS NOT NULL FROM blobs b
             LEFT JOIN photo_facts f ON f.sha256 = b.sha256 WHERE b.sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(p)
        .await
    })?;
    let Some((content_type, processed)) = known else {
        anyhow::bail!("no blob {sha256}");
    };
    if processed {
        return Ok(());
    }
    let facts = analyse_blob(state, sha256, content_type).await?;
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
    let (phash, problem) = match &facts.outcome {
        Outcome::Decoded { phash, .. } => (Some(*phash), None),
        Outcome::NotDecoded(why) | Outcome::Undecodable(why) => (None, Some(why.as_str())),
    };
    let exif = &facts.exif;
    // Fields in JCS order.
    #[derive(Serialize)]
    struct Processed<'a> {
        exif_gps: Option<[f64; 2]>,
        exif_offset: Option<&'a str>,
        exif_time: Option<&'a str>,
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
        let inserted = sqlx::query(
            "INSERT INTO photo_facts (sha256, state, problem, width, height, taken_at, taken_offset,
                 gps_lat, gps_lon, make, model, orientation, phash, phash_band0, phash_band1,
                 phash_band2, phash_band3, processed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
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
        .bind(phash.map(|h| near::band(h, 0)))
        .bind(phash.map(|h| near::band(h, 1)))
        .bind(phash.map(|h| near::band(h, 2)))
        .bind(phash.map(|h| near::band(h, 3)))
        .bind(crate::db::now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            append_audit!(tx, dialect, std::slice::from_ref(&entry));
            // The visits already naming this photo can now be checked.
            let visits: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT submission_id FROM submission_photos WHERE sha256 = $1",
            )
            .bind(sha256)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|id: uuid::Uuid| id.to_string())
            .collect();
            let visits: Vec<&str> = visits.iter().map(String::as_str).collect();
            enqueue_jobs!(tx, Kind::CheckPhotos, &visits);
        }
        tx.commit().await?;
        Ok::<_, AppError>(())
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}
