//! `huikan verify-bundle FILE`: checks an audit export offline, trusting nothing in it but the
//! signing key. The signature covers the chain head and the manifest's hash; the manifest covers
//! every other member; the chain segment must hash through to the signed head; and every visit,
//! photo and registry version in the bundle must be the one its chain entry names.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::export::Manifest;
use super::signing::Signed;
use super::{canonical, entry_hash};

/// What was checked, line by line, and every mismatch found, each naming its file.
#[derive(Default)]
pub struct Report {
    pub checked: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An entry as the chain segment holds it.
#[derive(Deserialize)]
struct Line {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    data: Box<RawValue>,
    prev_hash: String,
    hash: String,
}

/// What the chain says about the records it names.
#[derive(Default)]
struct Named {
    /// submission id → (content hash, photo hashes)
    visits: HashMap<String, (String, Vec<String>)>,
    /// (household id, version) → record hash
    versions: HashMap<(String, i64), String>,
    photos: HashSet<String>,
}

const CHAIN: &str = "audit/chain.jsonl";

/// Checks the bundle at `path`; `pinned_key` is the server's public key as the auditor knows it.
pub fn verify_bundle(path: &Path, pinned_key: Option<&str>) -> Report {
    let mut report = Report::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report
                .problems
                .push(format!("{}: cannot be read: {e}", path.display()));
            return report;
        }
    };
    let mut zip = match zip::ZipArchive::new(BufReader::new(file)) {
        Ok(z) => z,
        Err(e) => {
            report
                .problems
                .push(format!("{}: not a whole ZIP archive: {e}", path.display()));
            return report;
        }
    };

    // 1. The signature, and the manifest it covers.
    let Some(signed) = read_member(&mut zip, "checkpoint.json", &mut report)
        .and_then(|bytes| parse::<Signed>("checkpoint.json", &bytes, &mut report))
    else {
        return report;
    };
    let s = &signed.statement;
    match signed.verify() {
        Ok(()) => report.checked.push(format!(
            "checkpoint.json: signed by ed25519 key {} at {}, head entry {} ({}), scope {}",
            s.public_key,
            s.at,
            s.seq,
            s.head_hash,
            s.scope.as_deref().unwrap_or("-")
        )),
        Err(why) => report.problems.push(format!("checkpoint.json: {why}")),
    }
    if let Some(pinned) = pinned_key
        && !pinned.eq_ignore_ascii_case(&s.public_key)
    {
        report.problems.push(format!(
            "checkpoint.json: signed by key {}, not by the pinned key {pinned}",
            s.public_key
        ));
    }
    let Some(manifest_bytes) = read_member(&mut zip, "manifest.json", &mut report) else {
        return report;
    };
    let manifest_sha = hex::encode(Sha256::digest(&manifest_bytes));
    if s.manifest_sha256.as_deref() == Some(manifest_sha.as_str()) {
        report
            .checked
            .push("manifest.json: its SHA-256 is the one signed".to_owned());
    } else {
        report.problems.push(format!(
            "manifest.json: its SHA-256 {manifest_sha} is not the one signed in checkpoint.json: the manifest was edited"
        ));
    }
    let Some(manifest) = parse::<Manifest>("manifest.json", &manifest_bytes, &mut report) else {
        return report;
    };

    // 2. Every member against the manifest; the chain first, as the records are checked
    //    against what it names.
    let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for name in zip.file_names_raw() {
        let name = String::from_utf8_lossy(name);
        let name = name.as_ref();
        if name != "manifest.json" && name != "checkpoint.json" && !listed.contains(name) {
            report
                .problems
                .push(format!("{name}: in the bundle but not in the manifest"));
        }
    }
    let mut named = Named::default();
    let mut ordered: Vec<_> = manifest.files.iter().collect();
    ordered.sort_by_key(|f| f.path != CHAIN);
    let (mut households, mut visits, mut photos) = (0, 0, 0);
    let (mut contents_recomputed, mut records_recomputed) = (0, 0);
    for listed in ordered {
        let mut member = match zip.by_name(&listed.path) {
            Ok(m) => m,
            Err(_) => {
                report.problems.push(format!(
                    "{}: in the manifest but not in the bundle",
                    listed.path
                ));
                continue;
            }
        };
        let mut hashing = Hashing::new(&mut member);
        let outcome = if listed.path == CHAIN {
            check_chain(&mut hashing, &signed, &mut named, &mut report)
        } else if listed.path.starts_with("photos/") {
            std::io::copy(&mut hashing, &mut std::io::sink()).map(|_| ())
        } else {
            let mut bytes = Vec::new();
            hashing.read_to_end(&mut bytes).map(|_| {
                if listed.path.starts_with("visits/") {
                    visits += 1;
                    contents_recomputed +=
                        check_visit(&listed.path, &bytes, &named, &mut report) as usize;
                } else if listed.path.starts_with("households/") {
                    households += 1;
                    records_recomputed +=
                        check_household(&listed.path, &bytes, &named, &mut report) as usize;
                }
            })
        };
        if let Err(e) = outcome {
            report
                .problems
                .push(format!("{}: cannot be read: {e}", listed.path));
            continue;
        }
        let (sha, size) = hashing.finish();
        if sha != listed.sha256 || size != listed.size {
            report.problems.push(format!(
                "{}: SHA-256 {sha} and size {size} differ from the manifest's {} and {}: the file was altered",
                listed.path, listed.sha256, listed.size
            ));
        }
        if let Some(name) = listed.path.strip_prefix("photos/") {
            photos += 1;
            let claimed = name.split('.').next().unwrap_or_default();
            if claimed != sha {
                report.problems.push(format!(
                    "{}: its bytes hash to {sha}, not to the hash it is named by: the photo was replaced",
                    listed.path
                ));
            }
            if !named.photos.contains(claimed) {
                report.problems.push(format!(
                    "{}: no visit in the chain segment names this photo",
                    listed.path
                ));
            }
        }
    }
    report.checked.push(format!(
        "{} files match the manifest: {households} households, {visits} visits, {photos} photos, the chain segment",
        manifest.files.len()
    ));
    report.checked.push(format!(
        "visits match the content hash and photos of their chain entries; content re-hashed for {contents_recomputed} (the others have masked ID numbers)"
    ));
    report.checked.push(format!(
        "households' versions match their chain entries; current record re-hashed for {records_recomputed}"
    ));
    report
}

fn read_member<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    report: &mut Report,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match zip.by_name(name).map(|mut m| m.read_to_end(&mut bytes)) {
        Ok(Ok(_)) => Some(bytes),
        Ok(Err(e)) => {
            report.problems.push(format!("{name}: cannot be read: {e}"));
            None
        }
        Err(_) => {
            report
                .problems
                .push(format!("{name}: missing from the bundle"));
            None
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    bytes: &[u8],
    report: &mut Report,
) -> Option<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| {
            report
                .problems
                .push(format!("{name}: not what it should hold: {e}"))
        })
        .ok()
}

/// Reads through, keeping the SHA-256 and length of what passed.
struct Hashing<'a, R> {
    inner: &'a mut R,
    hasher: Sha256,
    size: u64,
}

impl<'a, R: Read> Hashing<'a, R> {
    fn new(inner: &'a mut R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// The segment must hash entry by entry, link each to the one before, and end at the signed
/// head. Collects what its entries name.
fn check_chain(
    segment: &mut impl Read,
    signed: &Signed,
    named: &mut Named,
    report: &mut Report,
) -> std::io::Result<()> {
    let mut previous: Option<(i64, String)> = None;
    let mut first = None;
    for (n, line) in BufReader::new(segment).lines().enumerate() {
        let line = line?;
        let Ok(entry) = serde_json::from_str::<Line>(&line) else {
            report
                .problems
                .push(format!("{CHAIN}: line {} is not an audit entry", n + 1));
            return Ok(());
        };
        first.get_or_insert(entry.seq);
        let text = canonical(
            entry.seq,
            &entry.at,
            &entry.actor,
            &entry.action,
            &entry.subject,
            entry.data.get(),
            &entry.prev_hash,
        );
        if entry_hash(&entry.prev_hash, &text) != entry.hash {
            report.problems.push(format!(
                "{CHAIN}: entry {} does not hash to its recorded hash: it was altered",
                entry.seq
            ));
        }
        if let Some((seq, hash)) = &previous {
            if entry.seq != seq + 1 {
                report.problems.push(format!(
                    "{CHAIN}: entry {} follows entry {seq}: entries are missing or out of order",
                    entry.seq
                ));
            } else if &entry.prev_hash != hash {
                report.problems.push(format!(
                    "{CHAIN}: entry {} does not link to entry {seq}",
                    entry.seq
                ));
            }
        }
        remember(&entry, named);
        previous = Some((entry.seq, entry.hash));
    }
    let s = &signed.statement;
    match previous {
        Some((seq, hash)) if seq == s.seq && hash == s.head_hash => report.checked.push(format!(
            "{CHAIN}: entries {} to {seq} hash and link correctly and end at the signed head",
            first.unwrap_or(seq)
        )),
        Some((seq, _)) => report.problems.push(format!(
            "{CHAIN}: ends at entry {seq}, which is not the signed head (entry {})",
            s.seq
        )),
        None => report.problems.push(format!("{CHAIN}: empty")),
    }
    Ok(())
}

fn remember(entry: &Line, named: &mut Named) {
    let Ok(data) = serde_json::from_str::<Value>(entry.data.get()) else {
        return;
    };
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
    match entry.action.as_str() {
        "submission.received" => {
            let photos: Vec<String> = data
                .get("photos")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("sha256").and_then(Value::as_str).map(str::to_owned))
                .collect();
            named.photos.extend(photos.iter().cloned());
            if let (Some(id), Some(sha)) = (text("submission_id"), text("content_sha256")) {
                named.visits.insert(id, (sha, photos));
            }
        }
        "household.registered" | "household.updated" | "household.removed" => {
            if let (Some(id), Some(version), Some(sha)) = (
                text("household_id"),
                data.get("version").and_then(Value::as_i64),
                text("record_sha256"),
            ) {
                named.versions.insert((id, version), sha);
            }
        }
        _ => {}
    }
}

/// Whether any member's ID number is masked.
fn masked(record: &RawValue, members: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(record.get()) else {
        return false;
    };
    value
        .pointer(members)
        .and_then(Value::as_array)
        .is_some_and(|members| {
            members.iter().any(|m| {
                m.get("id_number")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.contains('*'))
            })
        })
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Deserialize)]
struct VisitFile {
    submission_id: String,
    content_sha256: String,
    photos: Vec<PhotoRef>,
    content: Box<RawValue>,
}

#[derive(Deserialize)]
struct PhotoRef {
    sha256: String,
}

/// A visit must be the one its `submission.received` entry names. Returns whether its content
/// could be re-hashed (it cannot when ID numbers are masked).
fn check_visit(path: &str, bytes: &[u8], named: &Named, report: &mut Report) -> bool {
    let Some(visit) = parse::<VisitFile>(path, bytes, report) else {
        return false;
    };
    let Some((chained_sha, chained_photos)) = named.visits.get(&visit.submission_id) else {
        report.problems.push(format!(
            "{path}: no entry in the chain segment records this visit"
        ));
        return false;
    };
    if &visit.content_sha256 != chained_sha {
        report.problems.push(format!(
            "{path}: content_sha256 differs from the one recorded in the chain"
        ));
    }
    if !visit
        .photos
        .iter()
        .map(|p| &p.sha256)
        .eq(chained_photos.iter())
    {
        report.problems.push(format!(
            "{path}: its photos differ from those recorded in the chain"
        ));
    }
    if masked(&visit.content, "/answers/members") {
        return false;
    }
    if &sha256_hex(visit.content.get()) != chained_sha {
        report.problems.push(format!(
            "{path}: its content does not hash to the content hash recorded in the chain: it was altered"
        ));
    }
    true
}

#[derive(Deserialize)]
struct HouseholdFile {
    household_id: String,
    record_sha256: String,
    record: Box<RawValue>,
    versions: Vec<VersionRef>,
}

#[derive(Deserialize)]
struct VersionRef {
    version: i64,
    record_sha256: String,
}

/// A household's versions must be those the chain records. Returns whether its current record
/// could be re-hashed.
fn check_household(path: &str, bytes: &[u8], named: &Named, report: &mut Report) -> bool {
    let Some(household) = parse::<HouseholdFile>(path, bytes, report) else {
        return false;
    };
    for version in &household.versions {
        let number = version.version;
        match named
            .versions
            .get(&(household.household_id.clone(), number))
        {
            Some(chained) if chained == &version.record_sha256 => {}
            Some(_) => report.problems.push(format!(
                "{path}: version {number} differs from the one recorded in the chain"
            )),
            None => report.problems.push(format!(
                "{path}: no entry in the chain segment records version {number}"
            )),
        }
    }
    if masked(&household.record, "/members") {
        return false;
    }
    if sha256_hex(household.record.get()) != household.record_sha256 {
        report.problems.push(format!(
            "{path}: its record does not hash to its record_sha256: it was altered"
        ));
    }
    true
}
