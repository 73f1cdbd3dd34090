//! `HEAD` and `POST …/submission`: a visit as an XForm instance, in `multipart/form-data` with
//! the part `xml_submission_file` and one part per photo, named by its file name. Photos are
//! streamed to the spool and committed exactly as a `PUT /v1/blobs` would commit them; the
//! instance is mapped onto the JSON visit of `POST /v1/submissions` and stored through the same
//! group commit, so it gets every guarantee a visit from our own app has.
//!
//! Collect splits a visit whose photos exceed `X-OpenRosa-Accept-Content-Length` over several
//! requests, each with the whole instance and some photos, all but the last marked
//! `*isIncomplete*`. Every photo received is remembered under the instance; the visit is stored
//! when a request without the mark arrives. The instance's `meta/instanceID` is the
//! idempotency key: `uuid:<uuid>` becomes the submission id, any other id a UUID derived from it.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huikan_shared::Sha256Hex;
use huikan_shared::limits;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{OpenRosaCaller, OpenRosaError, form, message_response};
use crate::auth::Role;
use crate::blobs::{self, Ingested};
use crate::db::BeginWrite;
use crate::error::AppError;
use crate::http::AppState;
use crate::on_pool;
use crate::store::spool::SpoolError;
use crate::submissions::{Incoming, Outcome};

/// The largest instance XML taken; a look-back instance is a few kilobytes.
const MAX_INSTANCE_BYTES: usize = 1024 * 1024;
/// The most parts one request may carry.
const MAX_PARTS: usize = 64;
/// The most elements an instance may have.
const MAX_NODES: u32 = 20_000;
/// Names derived UUIDs of instance ids that are not `uuid:<uuid>` (a UUID v5 namespace).
const INSTANCE_NAMESPACE: Uuid = Uuid::from_u128(0x6875_696b_616e_0001_8000_6f70_656e_726f);

/// What a client may send in one request: a whole visit, every photo question at the photo
/// limit plus the instance. Photos are streamed, so a large request costs no memory, and a visit
/// that fits one request is never split: Enketo's batches carry no `*isIncomplete*` mark, so a
/// split visit would be stored from its first batch (its later photos are then `late_photos`).
fn accept_content_length(state: &AppState) -> u64 {
    form::PHOTOS.len() as u64 * state.config.max_photo_bytes + MAX_INSTANCE_BYTES as u64
}

/// `HEAD …/submission`: Collect asks first, to authenticate and learn the size limit.
pub async fn probe(
    State(state): State<AppState>,
    client: OpenRosaCaller,
) -> Result<Response, OpenRosaError> {
    client.require(&[Role::FieldStaff])?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    super::openrosa_headers(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        "x-openrosa-accept-content-length",
        HeaderValue::from(accept_content_length(&state)),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("{}/submission", client.base)) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// What one request carried.
struct Received {
    instance: Vec<u8>,
    /// Photos by file name.
    media: Vec<(String, Sha256Hex)>,
    incomplete: bool,
}

/// `POST …/submission`.
pub async fn submit(
    State(state): State<AppState>,
    client: OpenRosaCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenRosaError> {
    client.require(&[Role::FieldStaff])?;
    let received = receive(&state, &client, &headers, body).await?;
    let instance = Instance::parse(&received.instance)?;
    let now = crate::db::now();
    let submitted_by = client.caller.user_id;
    let staged: Vec<(String, String)> = on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        for (filename, sha) in &received.media {
            sqlx::query(
                "INSERT INTO openrosa_media (submitted_by, instance_id, filename, sha256, received_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (submitted_by, instance_id, filename) DO UPDATE SET sha256 = excluded.sha256",
            )
            .bind(submitted_by)
            .bind(&instance.instance_id)
            .bind(filename)
            .bind(sha.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // An edit keeps the photos of the instance it edits that it does not send again:
        // Enketo edits a visit without its photo files, which stay on the server.
        if let Some(edited) = &instance.deprecated_id {
            sqlx::query(
                "INSERT INTO openrosa_media (submitted_by, instance_id, filename, sha256, received_at)
                 SELECT submitted_by, $1, filename, sha256, $2 FROM openrosa_media
                 WHERE submitted_by = $3 AND instance_id = $4
                 ON CONFLICT (submitted_by, instance_id, filename) DO NOTHING",
            )
            .bind(&instance.instance_id)
            .bind(now)
            .bind(submitted_by)
            .bind(edited)
            .execute(&mut *tx)
            .await?;
        }
        let staged = sqlx::query_as(
            "SELECT filename, sha256 FROM openrosa_media WHERE submitted_by = $1 AND instance_id = $2",
        )
        .bind(submitted_by)
        .bind(&instance.instance_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(staged)
    })?;
    if received.incomplete {
        return Ok(message_response(
            StatusCode::CREATED,
            "submit_success",
            &format!(
                "已收到这次走访的一部分（{} 张照片），其余部分随后发送",
                staged.len()
            ),
        ));
    }
    let media: HashMap<String, String> = staged.into_iter().collect();
    let app_version = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(limits::NAME).collect::<String>());
    let (visit, missing) = instance.visit_json(&media, app_version.clone())?;
    let item = prepare(&visit, &client)?;
    let (mut submission_id, household_id) = (item.submission_id, item.household_id.clone());
    let mut edits = instance.deprecated_id.clone();
    let mut outcome = state.submissions.submit(item).await?;
    if matches!(outcome, Outcome::Conflict(_))
        && let Some(version) =
            late_photos(&state, &client, &instance, &media, &visit, app_version).await?
    {
        (submission_id, edits) = (version.submission_id, Some(instance.instance_id.clone()));
        outcome = state.submissions.submit(version).await?;
    }
    crate::submissions::record(&outcome);
    match outcome {
        Outcome::Created(_) | Outcome::Replayed(_) => {
            if matches!(outcome, Outcome::Created(_)) {
                state.jobs.notify();
            }
            link_instance(&state, submission_id, &instance, edits, now).await?;
            let mut message = format!("已收到：户 {household_id} 的走访（{submission_id}）");
            if !missing.is_empty() {
                tracing::warn!(%submission_id, ?missing, "an OpenRosa visit came without some of its photos");
                message.push_str(&format!("；未收到照片 {}", missing.join("、")));
            }
            Ok(message_response(
                StatusCode::CREATED,
                "submit_success",
                &message,
            ))
        }
        Outcome::Conflict(_) => Err(OpenRosaError(AppError::problem(
            "submission_conflict",
            format!(
                "a different visit was already received as instance {}; nothing was changed",
                instance.instance_id
            ),
        ))),
        Outcome::MissingBlobs(problem) => Err(OpenRosaError(problem.into())),
    }
}

fn prepare(visit: &Value, client: &OpenRosaCaller) -> Result<Incoming, OpenRosaError> {
    Incoming::prepare(visit, client.caller.user_id, &client.caller.username).map_err(|p| {
        OpenRosaError(AppError::problem(
            "invalid_body",
            format!("the form's answers do not make a visit: {}", p.detail),
        ))
    })
}

/// Photos that came after their visit was stored: a complete request for an instance already
/// stored by the same caller, with the same answers, bringing photos the stored visit lacks.
/// Enketo sends a visit too large for one request in batches, each with the whole instance and
/// some photos and none marked incomplete, so its first batch is stored as the visit. A stored
/// visit is never altered: the visit with every photo received is a new version, under an id
/// derived from the instance and its photos (so a resend finds it), recorded as editing the
/// instance, and the household's current visit. `None`: a real conflict.
async fn late_photos(
    state: &AppState,
    client: &OpenRosaCaller,
    instance: &Instance,
    media: &HashMap<String, String>,
    visit: &Value,
    app_version: Option<String>,
) -> Result<Option<Incoming>, OpenRosaError> {
    let first = instance.submission_id();
    let user = client.caller.user_id;
    let (stored, stored_photos): (Option<String>, Vec<String>) = on_pool!(&state.db.read, |p| {
        let stored = sqlx::query_scalar(
            "SELECT content_sha256 FROM submissions WHERE submission_id = $1 AND submitted_by = $2",
        )
        .bind(first)
        .bind(user)
        .fetch_optional(p)
        .await?;
        let photos =
            sqlx::query_scalar("SELECT sha256 FROM submission_photos WHERE submission_id = $1")
                .bind(first)
                .fetch_all(p)
                .await?;
        Ok::<_, sqlx::Error>((stored, photos))
    })?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let mut photos: Vec<&str> = visit["photos"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["sha256"].as_str())
        .collect();
    if photos.len() <= stored_photos.len() {
        return Ok(None);
    }
    // The answers are the stored visit's if, given only its photos, they make the same content.
    let earlier: HashMap<String, String> = media
        .iter()
        .filter(|(_, sha)| stored_photos.contains(sha))
        .map(|(name, sha)| (name.clone(), sha.clone()))
        .collect();
    let (as_stored, _) = instance.visit_json(&earlier, app_version)?;
    if prepare(&as_stored, client)?.content_sha256 != stored {
        return Ok(None);
    }
    photos.sort_unstable();
    let version = Uuid::new_v5(
        &INSTANCE_NAMESPACE,
        format!("{}#{}", instance.instance_id, photos.join(",")).as_bytes(),
    );
    let mut whole = visit.clone();
    whole["submission_id"] = json!(version.to_string());
    prepare(&whole, client).map(Some)
}

/// Records which instance the visit came as and which it edits; a retry finds it there.
async fn link_instance(
    state: &AppState,
    submission_id: Uuid,
    instance: &Instance,
    edits: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), OpenRosaError> {
    on_pool!(&state.db.write, |p| {
        sqlx::query(
            "INSERT INTO openrosa_instances (submission_id, instance_id, deprecated_id, form_id, received_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (submission_id) DO NOTHING",
        )
        .bind(submission_id)
        .bind(&instance.instance_id)
        .bind(edits)
        .bind(&instance.form_id)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Reads the multipart body: the instance into memory (bounded), each photo through the spool
/// into the blob store. Whatever the client still sends after a refusal is read and dropped,
/// so it sees our answer.
async fn receive(
    state: &AppState,
    client: &OpenRosaCaller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, OpenRosaError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        AppError::problem(
            "unsupported_media_type",
            "a submission is multipart/form-data with an xml_submission_file part",
        )
    })?;
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    let answer = read_parts(state, client, &mut multipart).await;
    if answer.is_err() {
        drain(&mut multipart).await;
    }
    answer
}

async fn read_parts(
    state: &AppState,
    client: &OpenRosaCaller,
    multipart: &mut multer::Multipart<'static>,
) -> Result<Received, OpenRosaError> {
    let mut received = Received {
        instance: Vec::new(),
        media: Vec::new(),
        incomplete: false,
    };
    let mut seen_instance = false;
    let mut parts = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(OpenRosaError(AppError::problem(
                "payload_too_large",
                format!("a submission may have at most {MAX_PARTS} parts"),
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "xml_submission_file" => {
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if received.instance.len() + chunk.len() > MAX_INSTANCE_BYTES {
                        return Err(OpenRosaError(AppError::problem(
                            "payload_too_large",
                            format!("the instance XML may be at most {MAX_INSTANCE_BYTES} bytes"),
                        )));
                    }
                    received.instance.extend_from_slice(&chunk);
                }
                seen_instance = true;
            }
            "*isIncomplete*" => {
                // "yes" or absent; read only that much, so a huge part is refused unread.
                let mut flag = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    flag.extend_from_slice(&chunk);
                    if flag.len() > 16 {
                        return Err(OpenRosaError(AppError::invalid_body(
                            "*isIncomplete*: \"yes\" or absent",
                        )));
                    }
                }
                received.incomplete = flag.trim_ascii().eq_ignore_ascii_case(b"yes");
            }
            _ => {
                let filename = field
                    .file_name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| name.clone());
                if filename.is_empty()
                    || filename.len() > 255
                    || filename.contains(['/', '\\'])
                    || filename.chars().any(char::is_control)
                {
                    return Err(OpenRosaError(AppError::invalid_body(format!(
                        "part {}: a photo's file name is 1 to 255 characters without / or \\",
                        limits::quoted(&name)
                    ))));
                }
                let limit = state.config.max_photo_bytes;
                let spooled = state
                    .spool
                    .spool(&mut field, limit)
                    .await
                    .map_err(|e| match e {
                        SpoolError::TooLarge => AppError::problem(
                            "payload_too_large",
                            format!("photo {filename}: a photo may be at most {limit} bytes"),
                        ),
                        other => blobs::spool_error(other, limit),
                    })?;
                let sha = spooled.sha256.clone();
                match blobs::ingest(state, &client.caller, &sha, spooled).await {
                    Ok(Ingested::Created(_) | Ingested::Existing(_)) => {}
                    Err(AppError::Problem(p)) => {
                        return Err(OpenRosaError(AppError::problem(
                            p.code,
                            format!("photo {filename}: {}", p.detail),
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
                received.media.push((filename, sha));
            }
        }
    }
    if !seen_instance {
        return Err(OpenRosaError(AppError::invalid_body(
            "the submission has no xml_submission_file part",
        )));
    }
    Ok(received)
}

fn multipart_error(e: multer::Error) -> OpenRosaError {
    OpenRosaError(AppError::problem(
        "incomplete_body",
        format!("the multipart body is not well formed: {e}"),
    ))
}

/// Reads on (bounded in bytes and time) after a refusal, so a client still sending sees it.
async fn drain(multipart: &mut multer::Multipart<'static>) {
    let mut drained: u64 = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                drained += chunk.len() as u64;
                if drained > 64 * 1024 * 1024 {
                    return;
                }
            }
        }
    })
    .await;
}

/// A parsed instance of one of our forms.
struct Instance {
    document: String,
    form_id: String,
    campaign: String,
    version: String,
    instance_id: String,
    deprecated_id: Option<String>,
}

fn bad_instance(detail: impl Into<String>) -> OpenRosaError {
    OpenRosaError(AppError::invalid_body(detail))
}

impl Instance {
    fn parse(bytes: &[u8]) -> Result<Instance, OpenRosaError> {
        let document = std::str::from_utf8(bytes)
            .map_err(|_| bad_instance("the instance XML is not UTF-8"))?
            .to_owned();
        let (form_id, campaign, version, instance_id, deprecated_id) = {
            let doc = parse_xml(&document)?;
            let root = doc.root_element();
            let form_id = root
                .attribute("id")
                .ok_or_else(|| bad_instance("the instance's root element has no form id"))?
                .to_owned();
            let campaign = form::campaign_of(&form_id)
                .ok_or_else(|| {
                    bad_instance(format!(
                        "form {} is not one of this server's forms; download the form from it again",
                        limits::quoted(&form_id)
                    ))
                })?
                .to_owned();
            let version = root.attribute("version").unwrap_or_default().to_owned();
            let meta = child(root, "meta");
            let instance_id = meta
                .and_then(|m| text(m, "instanceID"))
                .ok_or_else(|| bad_instance("the instance has no meta/instanceID"))?
                .to_owned();
            limits::check(&instance_id, limits::ID)
                .map_err(|e| bad_instance(format!("meta/instanceID: {e}")))?;
            let deprecated_id = meta
                .and_then(|m| text(m, "deprecatedID"))
                .map(str::to_owned);
            if let Some(id) = &deprecated_id {
                limits::check(id, limits::ID)
                    .map_err(|e| bad_instance(format!("meta/deprecatedID: {e}")))?;
            }
            (form_id, campaign, version, instance_id, deprecated_id)
        };
        Ok(Instance {
            document,
            form_id,
            campaign,
            version,
            instance_id,
            deprecated_id,
        })
    }

    /// The submission id: the UUID of `uuid:<uuid>`, or one derived from any other id.
    fn submission_id(&self) -> Uuid {
        self.instance_id
            .strip_prefix("uuid:")
            .and_then(|u| Uuid::parse_str(u).ok())
            .unwrap_or_else(|| Uuid::new_v5(&INSTANCE_NAMESPACE, self.instance_id.as_bytes()))
    }

    /// The instance as the JSON visit of `POST /v1/submissions`, and the photo files it names
    /// that never arrived. Answers are carried over as given (yes/no as booleans, numbers as
    /// numbers); whether they fit is then decided by the same validation a JSON visit passes,
    /// which names the field.
    fn visit_json(
        &self,
        media: &HashMap<String, String>,
        app_version: Option<String>,
    ) -> Result<(Value, Vec<String>), OpenRosaError> {
        let doc = parse_xml(&self.document)?;
        let root = doc.root_element();
        let mut visit = Map::new();
        visit.insert(
            "submission_id".into(),
            json!(self.submission_id().to_string()),
        );
        let household = if text(root, "listed") == Some("no") {
            text(root, "household_unlisted")
        } else {
            text(root, "household")
        };
        visit.insert(
            "household_id".into(),
            json!(household.ok_or_else(|| bad_instance("household: no household was chosen"))?),
        );
        visit.insert("campaign".into(), json!(self.campaign));
        visit.insert("form_version".into(), json!(self.version));
        if let Some(start) = text(root, "start") {
            visit.insert("surveyed_at".into(), json!(start));
        }
        if let Some(point) = text(root, "location") {
            visit.insert("location".into(), geopoint(point)?);
        }

        let members: Vec<Value> = root
            .children()
            .filter(|n| n.is_element() && n.tag_name().name() == "member")
            .map(|m| {
                let mut member = Map::new();
                for name in [
                    "id_number",
                    "name",
                    "relation",
                    "school_status",
                    "health",
                    "labour",
                ] {
                    if let Some(value) = text(m, name) {
                        member.insert(name.into(), json!(value));
                    }
                }
                for name in ["present", "insured"] {
                    if let Some(value) = text(m, name) {
                        member.insert(name.into(), yes_no(value));
                    }
                }
                member.insert(
                    "disability_grade".into(),
                    text(m, "disability_grade").map_or(Value::Null, number),
                );
                Value::Object(member)
            })
            .collect();
        let mut answers = Map::new();
        answers.insert("members".into(), Value::Array(members));
        for name in ["food_secure", "clothing_secure"] {
            if let Some(value) = text(root, name) {
                answers.insert(name.into(), yes_no(value));
            }
        }
        let group = |name: &str, strings: &[&str], booleans: &[&str]| {
            let mut out = Map::new();
            if let Some(node) = child(root, name) {
                for field in strings {
                    if let Some(value) = text(node, field) {
                        out.insert((*field).into(), json!(value));
                    }
                }
                for field in booleans {
                    if let Some(value) = text(node, field) {
                        out.insert((*field).into(), yes_no(value));
                    }
                }
            }
            Value::Object(out)
        };
        answers.insert(
            "housing".into(),
            group("housing", &["grade"], &["renovated"]),
        );
        answers.insert(
            "water".into(),
            group(
                "water",
                &["source"],
                &[
                    "quantity_ok",
                    "quality_ok",
                    "convenience_ok",
                    "guarantee_ok",
                ],
            ),
        );
        let mut income = Map::new();
        if let Some(node) = child(root, "income") {
            if let Some(value) = text(node, "per_capita_yuan") {
                income.insert("per_capita_yuan".into(), number(value));
            }
            let sources: Vec<Value> = text(node, "sources")
                .unwrap_or_default()
                .split_whitespace()
                .map(|s| json!(s))
                .collect();
            income.insert("sources".into(), Value::Array(sources));
        }
        answers.insert("income".into(), Value::Object(income));
        if let Some(notes) = text(root, "notes") {
            answers.insert("notes".into(), json!(notes));
        }
        visit.insert("answers".into(), Value::Object(answers));

        let mut photos = Vec::new();
        let mut missing = Vec::new();
        if let Some(node) = child(root, "photos") {
            for question in node.children().filter(|n| n.is_element()) {
                let Some(filename) = question.text().map(str::trim).filter(|t| !t.is_empty())
                else {
                    continue;
                };
                match media.get(filename) {
                    Some(sha) => {
                        photos.push(json!({"sha256": sha, "kind": question.tag_name().name()}))
                    }
                    None => missing.push(filename.to_owned()),
                }
            }
        }
        visit.insert("photos".into(), Value::Array(photos));
        if let Some(device) = child(root, "meta").and_then(|m| text(m, "deviceid")) {
            visit.insert("device_id".into(), json!(device));
        }
        if let Some(app) = app_version {
            visit.insert("app_version".into(), json!(app));
        }
        Ok((Value::Object(visit), missing))
    }
}

fn parse_xml(document: &str) -> Result<roxmltree::Document<'_>, OpenRosaError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(document, options)
        .map_err(|e| bad_instance(format!("the instance is not well-formed XML: {e}")))
}

/// The first child element with this local name.
fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The trimmed text of a child element, if it has any: an unanswered question is an empty one.
fn text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name)
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `yes`/`no` as a boolean; anything else as given, for validation to name.
fn yes_no(value: &str) -> Value {
    match value {
        "yes" | "true" | "1" => Value::Bool(true),
        "no" | "false" | "0" => Value::Bool(false),
        other => json!(other),
    }
}

/// A decimal as a JSON number; anything else as given, for validation to name.
fn number(value: &str) -> Value {
    if let Ok(n) = value.parse::<i64>() {
        return json!(n);
    }
    value
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| json!(value), Value::Number)
}

/// An ODK geopoint, `lat lon [altitude [accuracy]]`, as the visit's location.
fn geopoint(point: &str) -> Result<Value, OpenRosaError> {
    let parts: Vec<f64> = point
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad_instance(format!(
                "location: {} is not \"lat lon altitude accuracy\"",
                limits::quoted(point)
            ))
        })?;
    match parts.as_slice() {
        [lat, lon, _altitude, accuracy] => {
            Ok(json!({"lat": lat, "lon": lon, "accuracy_m": accuracy}))
        }
        _ => Err(bad_instance(format!(
            "location: {} is not \"lat lon altitude accuracy\" (an accuracy is needed)",
            limits::quoted(point)
        ))),
    }
}
