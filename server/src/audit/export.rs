//! `POST /v1/audit/exports`: a ZIP bundle of one household, village or township that an
//! inspection team checks offline with `huikan verify-bundle`: registry records, visits,
//! photos, the audit chain segment that covers them, `manifest.json` (SHA-256 and size of every
//! other member) and `checkpoint.json` (the chain head and the manifest's hash, signed).
//!
//! The bundle streams: an async producer reads records page by page and photos chunk by chunk
//! from the blob store, and hands them over a bounded channel to a blocking thread that writes
//! the ZIP (the `zip` crate writes to a plain `Write`) into the response body, hashing each member
//! as it passes. Memory stays flat whatever the size of the bundle.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use huikan_shared::ids::DivisionPrefix;
use huikan_shared::limits;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;
use zip::write::SimpleFileOptions;

use super::signing::Signer;
use super::{Chained, Entry};
use crate::append_audit;
use crate::auth::Caller;
use crate::db::BeginWrite;
use crate::db::Db;
use crate::error::{AppError, Result};
use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::http::page::ApiQuery;
use crate::on_pool;
use crate::privacy::{UnmaskQuery, mask_members};
use crate::store::{BlobStore, blob_key};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportRequest {
    #[serde(default, deserialize_with = "crate::http::json::present")]
    prefix: Option<DivisionPrefix>,
    #[serde(
        default,
        deserialize_with = "limits::present_text::<{ limits::ID }, _>"
    )]
    household_id: Option<String>,
}

/// What a bundle covers. Either way it is a range of one column, bound as `$1` and `$2`.
enum Scope {
    Household(String),
    Prefix(DivisionPrefix),
}

impl Scope {
    fn from_request(request: ExportRequest) -> Result<Scope> {
        match (request.prefix, request.household_id) {
            (Some(prefix), None) => Ok(Scope::Prefix(prefix)),
            (None, Some(id)) if !id.trim().is_empty() => Ok(Scope::Household(id)),
            _ => Err(AppError::invalid_body(
                "give exactly one of prefix (a division code prefix) or household_id",
            )),
        }
    }

    fn label(&self) -> String {
        match self {
            Scope::Household(id) => format!("household:{id}"),
            Scope::Prefix(p) => format!("prefix:{}", p.as_str()),
        }
    }

    /// The bounds bound as `$1` and `$2` in [`Scope::filter`].
    fn bounds(&self) -> (String, String) {
        match self {
            Scope::Household(id) => (id.clone(), id.clone()),
            // Division codes are digits, and ':' sorts right after '9'.
            Scope::Prefix(p) => (p.as_str().to_owned(), format!("{}:", p.as_str())),
        }
    }

    /// SQL that holds when `column` names a household in scope. A household's visits, even
    /// those that name a household the registry does not have, belong to a household export; a
    /// division's are those of the registered households in it.
    fn filter(&self, column: &str) -> String {
        match self {
            Scope::Household(_) => format!("{column} BETWEEN $1 AND $2"),
            Scope::Prefix(_) => format!(
                "{column} IN (SELECT household_id FROM households WHERE village_code >= $1 AND village_code < $2)"
            ),
        }
    }
}

/// Exports take a bounded share of the blob store's attention: a page of records or a photo at a
/// time, with this many chunks in flight between the reader and the ZIP writer.
const CHANNEL_DEPTH: usize = 16;
const PAGE: i64 = 500;

pub(super) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UnmaskQuery>,
    ApiJson(request): ApiJson<ExportRequest>,
) -> Result<Response> {
    caller.require(super::routes::AUDITORS)?;
    let unmasked = query.sees_full_id_numbers(&caller)?;
    let scope = Scope::from_request(request)?;
    let (low, high) = scope.bounds();
    if let Scope::Household(id) = &scope
        && !household_known(&state.db, id).await?
    {
        return Err(AppError::not_found(
            "no such household, and no visit names it",
        ));
    }

    // The export itself is a state change: recorded first, so the chain segment and the signed
    // head include it.
    let export_id = Uuid::now_v7();
    let mut data =
        serde_json::json!({"export_id": export_id, "scope": scope.label(), "unmasked": unmasked});
    if let Scope::Household(id) = &scope {
        data["household_id"] = Value::from(id.as_str());
    }
    let mut entries = vec![Entry::new(
        &caller.username,
        "audit.exported",
        format!("export:{export_id}"),
        data,
    )];
    if unmasked {
        let mut data = serde_json::json!({"export_id": export_id, "scope": scope.label()});
        if let Scope::Household(id) = &scope {
            data["household_id"] = Value::from(id.as_str());
        }
        entries.push(Entry::new(
            &caller.username,
            "id_numbers.read",
            format!("export:{export_id}"),
            data,
        ));
    }
    let dialect = state.db.dialect();
    let first_seq_sql = format!(
        "SELECT MIN(seq) FROM audit_log WHERE {}",
        scope.filter("household_id")
    );
    let (first_seq, head): (Option<i64>, (i64, String)) = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        append_audit!(tx, dialect, &entries);
        let head: (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let first: Option<i64> = sqlx::query_scalar(&first_seq_sql)
            .bind(&low)
            .bind(&high)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, AppError>((first, head))
    })?;
    let segment = (first_seq.unwrap_or(head.0).min(head.0), head.0);
    tracing::info!(%export_id, scope = scope.label(), unmasked, from = segment.0, to = segment.1, "audit export");

    let (parts_tx, parts_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (body_tx, body_rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let bundle = Bundle {
        signer: state.signer.clone(),
        head,
        scope: scope.label(),
    };
    let writer_body = body_tx.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = bundle.write(parts_rx, BodyWriter::new(writer_body)) {
            tracing::warn!(error = %e, "audit export stopped");
        }
    });
    let producer = Producer {
        db: state.db.clone(),
        store: state.store.clone(),
        scope,
        unmasked,
        parts: parts_tx,
    };
    tokio::spawn(async move {
        if let Err(e) = producer.run(segment).await {
            tracing::warn!(error = ?e, "audit export failed");
            // Breaks the response off, so the client sees a failed download, not a short bundle.
            let _ = body_tx
                .send(Err(io::Error::other("the export failed")))
                .await;
        }
    });

    let mut body_rx = body_rx;
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| body_rx.poll_recv(cx)));
    let filename = format!(
        "huikan-export-{}-{}.zip",
        export_id.simple(),
        Utc::now().format("%Y%m%d")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn household_known(db: &Db, household_id: &str) -> Result<bool> {
    Ok(on_pool!(&db.read, |p| {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM households WHERE household_id = $1)
                 OR EXISTS (SELECT 1 FROM submissions WHERE household_id = $1)",
        )
        .bind(household_id)
        .fetch_one(p)
        .await
    })?)
}

/// One step of the bundle, from the producer to the ZIP writer.
enum Part {
    /// Starts the next member.
    File {
        path: String,
        compress: bool,
    },
    Data(Bytes),
    /// Everything was sent: write the manifest and the signed checkpoint.
    Finish,
}

/// Reads what the bundle holds and sends it, in order, to the ZIP writer.
struct Producer {
    db: Db,
    store: Arc<dyn BlobStore>,
    scope: Scope,
    unmasked: bool,
    parts: mpsc::Sender<Part>,
}

#[derive(sqlx::FromRow)]
struct HouseholdRow {
    household_id: String,
    village_code: String,
    record: String,
    record_sha256: String,
    version: i64,
    removed: bool,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, sqlx::FromRow)]
struct VersionRow {
    #[serde(skip)]
    household_id: String,
    version: i64,
    record_sha256: String,
    removed: bool,
    import_id: Uuid,
    created_at: DateTime<Utc>,
}

/// `households/{id}.json`. Built as a struct, not a `Value`, so the record stays the exact text.
#[derive(Serialize)]
struct HouseholdFile<'a> {
    household_id: &'a str,
    village_code: &'a str,
    version: i64,
    removed: bool,
    updated_at: DateTime<Utc>,
    record_sha256: &'a str,
    record: Box<RawValue>,
    versions: Vec<&'a VersionRow>,
}

/// `visits/{submission_id}.json`.
#[derive(Serialize)]
struct VisitFile<'a> {
    #[serde(flatten)]
    visit: &'a VisitRow,
    photos: &'a [&'a PhotoRow],
    content: Box<RawValue>,
}

#[derive(Serialize, sqlx::FromRow)]
struct VisitRow {
    submission_id: Uuid,
    household_id: String,
    campaign: String,
    submitted_by: String,
    received_at: DateTime<Utc>,
    seq: i64,
    content_sha256: String,
    #[serde(skip)]
    content: String,
    duplicate_of: Option<Uuid>,
    review_state: String,
    device_id: Option<String>,
    app_version: Option<String>,
}

#[derive(Serialize, sqlx::FromRow)]
struct PhotoRow {
    #[serde(skip)]
    submission_id: Uuid,
    sha256: String,
    kind: String,
    size: i64,
    content_type: String,
}

impl Producer {
    async fn run(self, segment: (i64, i64)) -> anyhow::Result<()> {
        self.households().await?;
        self.visits().await?;
        self.chain(segment).await?;
        self.send(Part::Finish).await
    }

    async fn send(&self, part: Part) -> anyhow::Result<()> {
        self.parts
            .send(part)
            .await
            .map_err(|_| anyhow::anyhow!("the client went away"))
    }

    async fn file(&self, path: String, compress: bool, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.send(Part::File { path, compress }).await?;
        self.send(Part::Data(bytes.into())).await
    }

    /// `households/{id}.json`: the current record and the hash of every version it had.
    async fn households(&self) -> anyhow::Result<()> {
        let (low, high) = self.scope.bounds();
        let sql = format!(
            "SELECT household_id, village_code, record, record_sha256, version, removed, updated_at
             FROM households WHERE {} AND household_id > $3 ORDER BY household_id LIMIT $4",
            self.scope.filter("household_id")
        );
        let mut after = String::new();
        loop {
            let page: Vec<HouseholdRow> = on_pool!(&self.db.read, |p| {
                sqlx::query_as(&sql)
                    .bind(&low)
                    .bind(&high)
                    .bind(&after)
                    .bind(PAGE)
                    .fetch_all(p)
                    .await
            })?;
            let Some(last) = page.last() else { break };
            after = last.household_id.clone();
            let ids: Vec<&str> = page.iter().map(|h| h.household_id.as_str()).collect();
            let versions: Vec<VersionRow> = on_pool!(&self.db.read, |p| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT household_id, version, record_sha256, removed, import_id, created_at
                     FROM household_versions WHERE household_id IN ",
                );
                q.push_tuples(&ids, |mut b, id| {
                    b.push_bind(*id);
                });
                q.push(" ORDER BY household_id, version");
                q.build_query_as().fetch_all(p).await
            })?;
            for household in &page {
                let record = self.unmask(&household.record, "/members")?;
                let history: Vec<&VersionRow> = versions
                    .iter()
                    .filter(|v| v.household_id == household.household_id)
                    .collect();
                let json = HouseholdFile {
                    household_id: &household.household_id,
                    village_code: &household.village_code,
                    version: household.version,
                    removed: household.removed,
                    updated_at: household.updated_at,
                    record_sha256: &household.record_sha256,
                    record,
                    versions: history,
                };
                let path = format!("households/{}.json", safe_name(&household.household_id));
                self.file(path, true, serde_json::to_vec_pretty(&json)?)
                    .await?;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// `visits/{submission_id}.json` for every visit in scope, each followed by the photos it
    /// is the first to name (`photos/{sha256}.{ext}`).
    async fn visits(&self) -> anyhow::Result<()> {
        let (low, high) = self.scope.bounds();
        let sql = format!(
            "SELECT s.submission_id, s.household_id, s.campaign, u.username AS submitted_by, s.received_at,
                    s.seq, s.content_sha256, s.content, s.duplicate_of, s.review_state, s.device_id, s.app_version
             FROM submissions s JOIN users u ON u.id = s.submitted_by
             WHERE {} AND s.seq > $3 ORDER BY s.seq LIMIT $4",
            self.scope.filter("s.household_id")
        );
        let mut written: HashSet<String> = HashSet::new();
        let mut after = 0i64;
        loop {
            let page: Vec<VisitRow> = on_pool!(&self.db.read, |p| {
                sqlx::query_as(&sql)
                    .bind(&low)
                    .bind(&high)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(p)
                    .await
            })?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let ids: Vec<Uuid> = page.iter().map(|v| v.submission_id).collect();
            let photos: Vec<PhotoRow> = on_pool!(&self.db.read, |p| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT sp.submission_id, sp.sha256, sp.kind, b.size, b.content_type
                     FROM submission_photos sp JOIN blobs b ON b.sha256 = sp.sha256
                     WHERE sp.submission_id IN ",
                );
                q.push_tuples(&ids, |mut b, id| {
                    b.push_bind(*id);
                });
                q.push(" ORDER BY sp.submission_id, sp.position");
                q.build_query_as().fetch_all(p).await
            })?;
            for visit in &page {
                let own: Vec<&PhotoRow> = photos
                    .iter()
                    .filter(|p| p.submission_id == visit.submission_id)
                    .collect();
                self.visit(visit, &own).await?;
                for photo in own {
                    if written.insert(photo.sha256.clone()) {
                        self.photo(photo).await?;
                    }
                }
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(())
    }

    async fn visit(&self, visit: &VisitRow, photos: &[&PhotoRow]) -> anyhow::Result<()> {
        let content = self.unmask(&visit.content, "/answers/members")?;
        let json = VisitFile {
            visit,
            photos,
            content,
        };
        let path = format!("visits/{}.json", visit.submission_id);
        self.file(path, true, serde_json::to_vec_pretty(&json)?)
            .await
    }

    /// A stored record as the bundle holds it. Unmasked, it is the exact text its recorded hash
    /// is over, so the bundle's reader can re-hash it.
    fn unmask(&self, stored: &str, members: &str) -> anyhow::Result<Box<RawValue>> {
        if self.unmasked {
            return Ok(RawValue::from_string(stored.to_owned())?);
        }
        let mut value: Value = serde_json::from_str(stored)?;
        mask_members(value.pointer_mut(members));
        Ok(serde_json::value::to_raw_value(&value)?)
    }

    async fn photo(&self, photo: &PhotoRow) -> anyhow::Result<()> {
        let (mut stream, _) = self
            .store
            .open(&blob_key(&photo.sha256))
            .await?
            .ok_or_else(|| anyhow::anyhow!("photo {} is missing from the store", photo.sha256))?;
        let path = format!("photos/{}.{}", photo.sha256, extension(&photo.content_type));
        self.send(Part::File {
            path,
            compress: false,
        })
        .await?;
        while let Some(chunk) = stream.next().await {
            self.send(Part::Data(chunk?)).await?;
        }
        Ok(())
    }

    /// `audit/chain.jsonl`: every entry from the first that names a household in scope to the
    /// signed head, one JSON object per line as `GET /v1/audit/log` serves them. Entries hold
    /// no ID numbers, so the whole segment can travel.
    async fn chain(&self, (from, to): (i64, i64)) -> anyhow::Result<()> {
        const CHAIN_PAGE: i64 = 5_000;
        self.send(Part::File {
            path: "audit/chain.jsonl".to_owned(),
            compress: true,
        })
        .await?;
        let mut next = from;
        while next <= to {
            let rows: Vec<Chained> = on_pool!(&self.db.read, |p| {
                sqlx::query_as(
                    "SELECT seq, at, actor, action, subject, household_id, data, prev_hash, hash
                     FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                )
                .bind(next)
                .bind(to)
                .bind(CHAIN_PAGE)
                .fetch_all(p)
                .await
            })?;
            let Some(last) = rows.last() else { break };
            next = last.seq + 1;
            let mut lines = Vec::with_capacity(rows.len() * 512);
            for row in rows {
                serde_json::to_writer(
                    &mut lines,
                    &super::routes::served(row).map_err(|e| anyhow::anyhow!("{e:?}"))?,
                )?;
                lines.push(b'\n');
            }
            self.send(Part::Data(lines.into())).await?;
        }
        Ok(())
    }
}

/// A household id as a file name: the ids are digits in practice, but nothing from a registry
/// file may become a path that leaves its folder.
fn safe_name(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/heic" | "image/heif" => "heic",
        "image/webp" => "webp",
        _ => "bin",
    }
}

#[derive(Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
}

/// The ZIP writer's side: what it needs to sign the bundle at the end.
struct Bundle {
    signer: Arc<Signer>,
    head: (i64, String),
    scope: String,
}

impl Bundle {
    fn write(self, mut parts: mpsc::Receiver<Part>, out: BodyWriter) -> anyhow::Result<()> {
        let mut zip = zip::ZipWriter::new_stream(out);
        let mut manifest = Manifest { files: Vec::new() };
        let mut current: Option<(String, Sha256, u64)> = None;
        let close = |current: &mut Option<(String, Sha256, u64)>, manifest: &mut Manifest| {
            if let Some((path, hasher, size)) = current.take() {
                manifest.files.push(ManifestFile {
                    path,
                    sha256: hex::encode(hasher.finalize()),
                    size,
                });
            }
        };
        while let Some(part) = parts.blocking_recv() {
            match part {
                Part::File { path, compress } => {
                    close(&mut current, &mut manifest);
                    zip.start_file(&path, options(compress))?;
                    current = Some((path, Sha256::new(), 0));
                }
                Part::Data(bytes) => {
                    let (_, hasher, size) = current
                        .as_mut()
                        .ok_or_else(|| anyhow::anyhow!("data before any file"))?;
                    hasher.update(&bytes);
                    *size += bytes.len() as u64;
                    zip.write_all(&bytes)?;
                }
                Part::Finish => {
                    close(&mut current, &mut manifest);
                    let manifest = serde_json::to_vec_pretty(&manifest)?;
                    zip.start_file("manifest.json", options(true))?;
                    zip.write_all(&manifest)?;
                    let signed = self.signer.sign(
                        self.head.0,
                        &self.head.1,
                        Some(hex::encode(Sha256::digest(&manifest))),
                        Some(self.scope.clone()),
                    );
                    zip.start_file("checkpoint.json", options(true))?;
                    zip.write_all(&serde_json::to_vec_pretty(&signed)?)?;
                    zip.finish()?.into_inner().finish()?;
                    return Ok(());
                }
            }
        }
        anyhow::bail!("the export was cut short")
    }
}

fn options(compress: bool) -> SimpleFileOptions {
    let options = SimpleFileOptions::default().large_file(true);
    if compress {
        // The fastest level: records and the chain shrink several times over, and the bundle
        // still streams at disk speed.
        options
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
    } else {
        // Photos are already compressed.
        options.compression_method(zip::CompressionMethod::Stored)
    }
}

/// The response body as a `Write`: bytes go out in chunks of 256 KiB, waiting while the client
/// is slower than the bundle is made.
struct BodyWriter {
    body: mpsc::Sender<io::Result<Bytes>>,
    buffer: BytesMut,
}

impl BodyWriter {
    const CHUNK: usize = 256 * 1024;

    fn new(body: mpsc::Sender<io::Result<Bytes>>) -> BodyWriter {
        BodyWriter {
            body,
            buffer: BytesMut::with_capacity(Self::CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.body
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn household_ids_cannot_leave_their_folder() {
        assert_eq!(safe_name("4103271010010001"), "4103271010010001");
        assert_eq!(
            safe_name("../../etc/passwd"),
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"
        );
        assert_eq!(safe_name("户1"), "%E6%88%B71");
    }
}
