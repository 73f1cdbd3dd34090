//! `loadgen`: plays N phones against an already running huikan server and reports throughput,
//! latency percentiles and errors per scenario. It does not start the server.
//!
//! ```text
//! cargo run -p huikan-tests --bin loadgen -- \
//!     --base http://127.0.0.1:8080 --admin admin:password \
//!     --scenario push|submit|put|tus|all --phones 8 --duration 10 \
//!     [--batch 100] [--photo-bytes 3000000] [--retry-rate 0.1] [--rate 0] [--json]
//! ```
//!
//! Setup logs in as the admin and creates one `field_staff` user per phone. Each phone is then a
//! tokio task that loops until the duration ends:
//! - `push`: `POST /v1/sync/push` with `--batch` photo-less visits (unit: visits/s);
//! - `submit`: one photo-less visit per `POST /v1/submissions` (unit: visits/s);
//! - `put`: distinct JPEGs of about `--photo-bytes` to `PUT /v1/blobs/{sha256}` (photos/s, MB/s);
//! - `tus`: the same photos through tus 1.0.0 at `/v1/uploads/` in 1 MiB PATCHes;
//! - `all`: the four above one after another, each for `--duration`.
//!
//! With probability `--retry-rate` a write is repeated right after its answer, as a phone that
//! lost the response would; the repeat must get the same receipt. Repeats are not counted in
//! throughput; their latency is reported separately (`retry_*`). Any non-2xx answer, unexpected
//! outcome or receipt mismatch is an error (the first few are printed to stderr) and makes the
//! exit status non-zero.
//!
//! Every scenario also reports how far reconciliation ran behind: the largest
//! `jobs_lag_seconds{kind="reconcile"}` and `jobs_queued` seen on `/metrics` (sampled each
//! second), and how long after the scenario's end the queue was empty. With `--rate`, submit
//! offers a steady rate instead of as many visits as the server takes.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use huikan_tests::Api;
use huikan_tests::openrosa::Filled;
use huikan_tests::photos::{distinct_copy, jpeg_of_about, sha256_hex};
use huikan_tests::visits::visit;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

/// The scope given to every load user.
const SCOPE: &str = "410327101";
/// How many households each phone goes round before visiting the first again.
const HOUSEHOLDS_PER_PHONE: u64 = 10_000;
/// tus PATCH size: what mobile tus clients typically use on poor networks.
const TUS_CHUNK: usize = 1 << 20;
const TUS_VERSION: &str = "1.0.0";
/// A request that takes longer than this is counted as an error rather than stalling a phone.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// After a failed request a phone waits a little, so a dead server is not hammered in a hot loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How many error details per scenario go to stderr.
const ERRORS_SHOWN_MAX: usize = 5;

static ERRORS_SHOWN: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Scenario {
    Push,
    Submit,
    Put,
    Tus,
    /// Photo-less visits as ODK Collect sends them: `POST /v1/openrosa/submission` with HTTP
    /// Basic, the instance in `multipart/form-data`.
    Openrosa,
    /// The same with one photo of `--photo-bytes` in the request.
    OpenrosaPhoto,
    /// The four JSON-API scenarios, one after another.
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Push => "push",
            Scenario::Submit => "submit",
            Scenario::Put => "put",
            Scenario::Tus => "tus",
            Scenario::Openrosa => "openrosa",
            Scenario::OpenrosaPhoto => "openrosa-photo",
            Scenario::All => "all",
        }
    }

    fn uploads_photos(self) -> bool {
        matches!(
            self,
            Scenario::Put | Scenario::Tus | Scenario::OpenrosaPhoto
        )
    }
}

#[derive(Debug, clap::Parser)]
#[command(about = "Plays N phones against a running huikan server")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Admin credentials NAME:PASSWORD.
    #[arg(long, env = "HUIKAN_BOOTSTRAP_ADMIN", value_parser = parse_admin)]
    admin: (String, String),
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Concurrent phones.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    phones: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Visits per sync push (1 to 500).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=500))]
    batch: u64,
    /// Approximate JPEG size for put and tus.
    #[arg(long, default_value_t = 3_000_000)]
    photo_bytes: usize,
    /// Probability of repeating a write as if its answer was lost.
    #[arg(long, default_value_t = 0.1)]
    retry_rate: f64,
    /// The server's process id: its peak resident memory (VmHWM) is reported after each scenario.
    #[arg(long)]
    server_pid: Option<u32>,
    /// One JSON object per scenario instead of the text line.
    #[arg(long)]
    json: bool,
    /// For submit: the sustained rate to offer, in visits per second over all phones (0: as
    /// fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("must be a positive integer".to_owned()),
    }
}

fn parse_admin(value: &str) -> Result<(String, String), String> {
    value
        .split_once(':')
        .map(|(n, p)| (n.to_owned(), p.to_owned()))
        .ok_or_else(|| "must be NAME:PASSWORD".to_owned())
}

impl Args {
    fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            Scenario::All => vec![
                Scenario::Push,
                Scenario::Submit,
                Scenario::Put,
                Scenario::Tus,
            ],
            one => vec![one],
        }
    }
}

/// Resets a process's peak resident memory (Linux: `5` to clear_refs), so that a scenario's
/// figure is not the setup's (logging in many phones hashes many passwords).
fn reset_peak_rss(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("loadgen: cannot reset the server's peak memory: {e}");
    }
}

/// Peak resident memory of a process in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    huikan_tests::memory_of(pid).map(|(_, peak)| peak as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------------------------------------
// Figures

/// What one phone saw in one scenario; merged over the phones for the report.
#[derive(Default)]
struct Stats {
    /// First attempts sent (for tus: every POST and PATCH of an upload).
    requests: u64,
    /// Visits or photos acknowledged by a first attempt: the throughput numerator.
    items: u64,
    /// Photo bytes acknowledged by a first attempt.
    bytes: u64,
    /// Latency of answered first attempts, in microseconds (for tus: one whole upload).
    latencies_us: Vec<u64>,
    retries: u64,
    retry_latencies_us: Vec<u64>,
    /// Failures of any kind, retry mismatches included.
    errors: u64,
    retry_mismatch: u64,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.items += other.items;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
        self.retries += other.retries;
        self.retry_latencies_us.extend(other.retry_latencies_us);
        self.errors += other.errors;
        self.retry_mismatch += other.retry_mismatch;
    }

    fn error(&mut self, phone: usize, what: &str, detail: impl Display) {
        self.errors += 1;
        if ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN_MAX {
            eprintln!("error: phone {phone}: {what}: {detail}");
        }
    }

    fn mismatch(&mut self, phone: usize, what: &str, first: impl Display, again: impl Display) {
        self.retry_mismatch += 1;
        self.error(
            phone,
            what,
            format!("retry answered {again}, first attempt {first}"),
        );
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

fn report(
    scenario: Scenario,
    args: &Args,
    photo_bytes: usize,
    elapsed: Duration,
    mut stats: Stats,
    watch: &ReconcileWatch,
) {
    stats.latencies_us.sort_unstable();
    stats.retry_latencies_us.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let lat = |p| percentile_ms(&stats.latencies_us, p);
    let retry_lat = |p| percentile_ms(&stats.retry_latencies_us, p);
    let throughput = stats.items as f64 / secs;
    let mb_per_s = stats.bytes as f64 / 1e6 / secs;
    let unit = if scenario.uploads_photos() {
        "photos/s"
    } else {
        "visits/s"
    };

    if args.json {
        let mut line = json!({
            "scenario": scenario.name(), "phones": args.phones, "duration_s": secs,
            "requests": stats.requests, "items": stats.items,
            "throughput": throughput, "unit": unit,
            "p50_ms": lat(50.0), "p90_ms": lat(90.0), "p99_ms": lat(99.0), "max_ms": lat(100.0),
            "errors": stats.errors, "retries": stats.retries, "retry_mismatch": stats.retry_mismatch,
            "retry_p50_ms": retry_lat(50.0), "retry_p99_ms": retry_lat(99.0), "retry_max_ms": retry_lat(100.0),
        });
        match scenario {
            Scenario::Push => line["batch"] = json!(args.batch),
            Scenario::Put | Scenario::Tus | Scenario::OpenrosaPhoto => {
                line["photo_bytes"] = json!(photo_bytes);
                line["mb_per_s"] = json!(mb_per_s);
            }
            Scenario::Submit | Scenario::Openrosa | Scenario::All => {}
        }
        if let Some(mib) = args.server_pid.and_then(peak_rss_mib) {
            line["server_peak_rss_mib"] = json!(mib);
        }
        if args.rate > 0.0 {
            line["offered_rate"] = json!(args.rate);
        }
        line["reconcile_lag_max_s"] = json!(watch.max_lag_s);
        line["reconcile_queue_max"] = json!(watch.max_queued);
        line["reconcile_drained_after_s"] = json!(watch.drained_after_s);
        println!("{line}");
        return;
    }

    let mut line = format!("scenario={} phones={}", scenario.name(), args.phones);
    if args.rate > 0.0 {
        line += &format!(" offered_rate={}/s", args.rate);
    }
    match scenario {
        Scenario::Push => line += &format!(" batch={}", args.batch),
        Scenario::Put | Scenario::Tus | Scenario::OpenrosaPhoto => {
            line += &format!(" photo_bytes={photo_bytes}")
        }
        Scenario::Submit | Scenario::Openrosa | Scenario::All => {}
    }
    line += &format!(
        " duration={secs:.1}s requests={} items={} throughput={throughput:.1} {unit}",
        stats.requests, stats.items
    );
    if scenario.uploads_photos() {
        line += &format!(" {mb_per_s:.1} MB/s");
    }
    line += &format!(
        " p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms errors={} retries={} retry_mismatch={} \
         retry_p50={:.1}ms retry_p99={:.1}ms retry_max={:.1}ms",
        lat(50.0),
        lat(90.0),
        lat(99.0),
        lat(100.0),
        stats.errors,
        stats.retries,
        stats.retry_mismatch,
        retry_lat(50.0),
        retry_lat(99.0),
        retry_lat(100.0),
    );
    if let Some(mib) = args.server_pid.and_then(peak_rss_mib) {
        line += &format!(" server_peak_rss={mib:.1}MiB");
    }
    line += &format!(
        " reconcile_lag_max={:.1}s reconcile_queue_max={} reconcile_drained_after={}",
        watch.max_lag_s,
        watch.max_queued,
        watch
            .drained_after_s
            .map_or_else(|| "never".to_owned(), |s| format!("{s:.1}s"))
    );
    println!("{line}");
}

// ---------------------------------------------------------------------------------------------
// Talking to the server

/// A whole answer, body included: the latency covers reading the body, as a phone's would.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    elapsed_us: u64,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(600).collect();
        write!(f, "HTTP {} {body}", self.status)
    }
}

struct Phone {
    index: usize,
    api: Api,
    /// The phone's user's password, for HTTP Basic (OpenRosa).
    password: String,
    args: Arc<Args>,
}

impl Phone {
    /// The household of this phone's `n`th visit: each phone works through a village of its own,
    /// as field staff do, coming back to a household only after all the others. (The registry
    /// is empty, so every visit is also flagged `unknown_household`: the flagging path is in the
    /// numbers.)
    fn household(&self, n: u64) -> String {
        format!(
            "{SCOPE}{:03}{:04}",
            self.index % 999 + 1,
            n % HOUSEHOLDS_PER_PHONE
        )
    }

    /// Whether this write's answer is "lost", so that the phone sends it again.
    fn loses_answer(&self) -> bool {
        rand::random::<f64>() < self.args.retry_rate
    }

    /// Sends a request and reads the whole answer; a transport failure or timeout is recorded as
    /// an error (after a short backoff) and gives `None`.
    async fn send(&self, stats: &mut Stats, what: &str, request: RequestBuilder) -> Option<Answer> {
        let start = Instant::now();
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        let failure = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok((status, headers, body))) => {
                let elapsed_us = start.elapsed().as_micros() as u64;
                return Some(Answer {
                    status,
                    headers,
                    body,
                    elapsed_us,
                });
            }
            Ok(Err(e)) => with_causes(&e),
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        stats.error(self.index, what, failure);
        tokio::time::sleep(ERROR_BACKOFF).await;
        None
    }
}

/// An error with its causes: reqwest's own text ("error sending request") hides the reason.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// Logs in with a client of its own, so each phone has its own connections as a real one would
/// (`Api::login` would share the admin's connection pool).
async fn login(base: &str, username: &str, password: &str) -> Result<Api> {
    let anonymous = Api::new(base, None);
    let response = anonymous
        .request(Method::POST, "/v1/auth/token")
        .json(&json!({"username": username, "password": password, "device_id": "loadgen"}))
        .send()
        .await
        .with_context(|| format!("logging in as {username} at {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != 200 {
        bail!("login of {username}: HTTP {status} {body}");
    }
    let mut api = Api::new(base, body["token"].as_str().map(str::to_owned));
    api.user = body["user"].clone();
    Ok(api)
}

/// Creates and logs in one field_staff user per phone, under names unique to this run.
async fn setup_phones(args: &Arc<Args>, run_id: &str) -> Result<Vec<Phone>> {
    let health = Api::new(&args.base, None)
        .request(Method::GET, "/healthz")
        .send()
        .await
        .with_context(|| format!("is the server running at {}?", args.base))?;
    if !health.status().is_success() {
        bail!("GET /healthz: HTTP {}", health.status());
    }
    let admin = login(&args.base, &args.admin.0, &args.admin.1).await?;
    let password = format!("loadgen-{run_id}-pw");
    let mut phones = Vec::with_capacity(args.phones);
    for index in 0..args.phones {
        let username = format!("loadgen-{run_id}-{index}");
        let response = admin
            .request(Method::POST, "/v1/users")
            .json(&json!({"username": username, "password": password, "role": "field_staff", "scope": [SCOPE]}))
            .send()
            .await
            .context("POST /v1/users")?;
        if response.status() != 201 {
            let status = response.status();
            bail!(
                "creating {username}: HTTP {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        let api = login(&args.base, &username, &password).await?;
        phones.push(Phone {
            index,
            api,
            password: password.clone(),
            args: args.clone(),
        });
    }
    Ok(phones)
}

/// `seq` and `content_sha256` identify a receipt: a replay must give back both unchanged.
fn receipt_key(receipt: &Value) -> Option<(i64, String)> {
    Some((
        receipt["seq"].as_i64()?,
        receipt["content_sha256"].as_str()?.to_owned(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Scenarios: each runs in one phone's task until the deadline and returns what it saw.

/// `POST /v1/sync/push` with `--batch` photo-less visits; every item must be `created` (and
/// `replayed`, with the same receipt, when sent again).
async fn push(phone: Phone, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let batch = phone.args.batch;
    let mut visited: u64 = 0;
    while Instant::now() < deadline {
        let visits: Vec<Value> = (visited..visited + batch)
            .map(|n| visit(&phone.household(n), &[]))
            .collect();
        visited += batch;
        let body =
            Bytes::from(serde_json::to_vec(&json!({ "submissions": visits })).expect("JSON"));
        let request = || {
            phone
                .api
                .request(Method::POST, "/v1/sync/push")
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };

        stats.requests += 1;
        let Some(first) = phone.send(&mut stats, "push", request()).await else {
            continue;
        };
        stats.latencies_us.push(first.elapsed_us);
        let Some(receipts) = push_receipts(&phone, &mut stats, &first, "created") else {
            continue;
        };
        stats.items += batch;

        if phone.loses_answer() {
            stats.retries += 1;
            let Some(again) = phone.send(&mut stats, "push retry", request()).await else {
                continue;
            };
            stats.retry_latencies_us.push(again.elapsed_us);
            if let Some(replayed) = push_receipts(&phone, &mut stats, &again, "replayed")
                && replayed != receipts
            {
                // Name the first visit whose receipt changed.
                let (was, now) = receipts
                    .iter()
                    .zip(&replayed)
                    .find(|(was, now)| was != now)
                    .expect("unequal lists of equal length differ somewhere");
                stats.mismatch(
                    phone.index,
                    "push retry",
                    format!("{was:?}"),
                    format!("{now:?}"),
                );
            }
        }
    }
    stats
}

/// Checks a push answer (200, one result per visit, each with the expected outcome) and returns
/// the receipts' keys in order; records an error and gives `None` otherwise.
fn push_receipts(
    phone: &Phone,
    stats: &mut Stats,
    answer: &Answer,
    outcome: &str,
) -> Option<Vec<(i64, String)>> {
    if answer.status != 200 {
        stats.error(phone.index, "push", answer);
        return None;
    }
    let body = answer.json();
    let results = body["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if results.len() as u64 != phone.args.batch {
        stats.error(
            phone.index,
            "push",
            format!(
                "{} results for {} visits: {answer}",
                results.len(),
                phone.args.batch
            ),
        );
        return None;
    }
    let mut keys = Vec::with_capacity(results.len());
    for result in results {
        match receipt_key(&result["receipt"]) {
            Some(key) if result["outcome"] == outcome => keys.push(key),
            _ => {
                stats.error(
                    phone.index,
                    "push",
                    format!("expected outcome {outcome}, got {result}"),
                );
                return None;
            }
        }
    }
    Some(keys)
}

/// One photo-less visit per `POST /v1/submissions`: 201 with a receipt, 200 with the same receipt
/// when sent again.
async fn submit(phone: Phone, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut visited: u64 = 0;
    let mut pace = Pace::new(&phone.args);
    while Instant::now() < deadline {
        pace.wait().await;
        let body =
            Bytes::from(serde_json::to_vec(&visit(&phone.household(visited), &[])).expect("JSON"));
        visited += 1;
        let request = || {
            phone
                .api
                .request(Method::POST, "/v1/submissions")
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };

        stats.requests += 1;
        let Some(first) = phone.send(&mut stats, "submit", request()).await else {
            continue;
        };
        stats.latencies_us.push(first.elapsed_us);
        let receipt = receipt_key(&first.json());
        let Some(receipt) = receipt.filter(|_| first.status == 201) else {
            stats.error(phone.index, "submit (expected 201 + receipt)", &first);
            continue;
        };
        stats.items += 1;

        if phone.loses_answer() {
            stats.retries += 1;
            let Some(again) = phone.send(&mut stats, "submit retry", request()).await else {
                continue;
            };
            stats.retry_latencies_us.push(again.elapsed_us);
            match receipt_key(&again.json()) {
                _ if again.status != 200 => {
                    stats.error(phone.index, "submit retry (expected 200)", &again)
                }
                Some(replayed) if replayed == receipt => {}
                _ => stats.mismatch(phone.index, "submit retry", format!("{receipt:?}"), &again),
            }
        }
    }
    stats
}

/// Visits as ODK Collect submits them: an instance of the campaign's form (and, with `photos`,
/// one photo of the house) per `POST /v1/openrosa/submission`, over HTTP Basic; 201 with an
/// `OpenRosaResponse`, and 201 again, storing nothing twice, when sent again.
async fn openrosa(phone: Phone, photos: Option<Arc<PhotoPool>>, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut stream =
        photos.map(|pool| PhotoStream::new(pool, Scenario::OpenrosaPhoto, phone.index));
    let username = phone.api.username();
    let mut visited: u64 = 0;
    while Instant::now() < deadline {
        let mut filled = Filled::new("huikan-2020-lookback-1", "1", &phone.household(visited));
        visited += 1;
        let photo = match &mut stream {
            Some(stream) => {
                let photo = stream.next().await;
                filled.photos = vec![("housing_exterior", format!("{}.jpg", &photo.sha256[..16]))];
                Some(photo)
            }
            None => None,
        };
        let xml = Bytes::from(filled.xml());
        let request = || {
            let mut form = Form::new().part(
                "xml_submission_file",
                Part::stream_with_length(xml.clone(), xml.len() as u64)
                    .file_name("submission.xml")
                    .mime_str("text/xml")
                    .expect("a MIME type"),
            );
            if let (Some(photo), Some((_, name))) = (&photo, filled.photos.first()) {
                form = form.part(
                    name.clone(),
                    Part::stream_with_length(photo.bytes.clone(), photo.bytes.len() as u64)
                        .file_name(name.clone())
                        .mime_str("image/jpeg")
                        .expect("a MIME type"),
                );
            }
            phone
                .api
                .request_without_token(Method::POST, "/v1/openrosa/submission")
                .basic_auth(&username, Some(&phone.password))
                .header("X-OpenRosa-Version", "1.0")
                .multipart(form)
        };
        let accepted = |answer: &Answer| {
            answer.status == 201 && String::from_utf8_lossy(&answer.body).contains("submit_success")
        };

        stats.requests += 1;
        let Some(first) = phone.send(&mut stats, "openrosa", request()).await else {
            continue;
        };
        stats.latencies_us.push(first.elapsed_us);
        if !accepted(&first) {
            stats.error(
                phone.index,
                "openrosa (expected 201 submit_success)",
                &first,
            );
            continue;
        }
        stats.items += 1;
        stats.bytes += photo.as_ref().map_or(0, |p| p.bytes.len() as u64);

        if phone.loses_answer() {
            stats.retries += 1;
            let Some(again) = phone.send(&mut stats, "openrosa retry", request()).await else {
                continue;
            };
            stats.retry_latencies_us.push(again.elapsed_us);
            if !accepted(&again) || again.body != first.body {
                stats.mismatch(
                    phone.index,
                    "openrosa retry",
                    String::from_utf8_lossy(&first.body),
                    &again,
                );
            }
        }
    }
    stats
}

/// Distinct JPEGs to `PUT /v1/blobs/{sha256}`: 201 with the blob record, and 200 with the same
/// record when sent again.
async fn put(phone: Phone, photos: Arc<PhotoPool>, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut stream = PhotoStream::new(photos, Scenario::Put, phone.index);
    while Instant::now() < deadline {
        let photo = stream.next().await;
        let path = format!("/v1/blobs/{}", photo.sha256);
        let request = || {
            phone
                .api
                .request(Method::PUT, &path)
                .header(CONTENT_TYPE, "image/jpeg")
                .body(photo.bytes.clone())
        };

        stats.requests += 1;
        let Some(first) = phone.send(&mut stats, "put", request()).await else {
            continue;
        };
        stats.latencies_us.push(first.elapsed_us);
        let record = first.json();
        if first.status != 201 || record["sha256"] != photo.sha256.as_str() {
            stats.error(phone.index, "put (expected 201 + the blob)", &first);
            continue;
        }
        stats.items += 1;
        stats.bytes += photo.bytes.len() as u64;

        if phone.loses_answer() {
            stats.retries += 1;
            let Some(again) = phone.send(&mut stats, "put retry", request()).await else {
                continue;
            };
            stats.retry_latencies_us.push(again.elapsed_us);
            if again.status != 200 {
                stats.error(phone.index, "put retry (expected 200)", &again);
            } else if again.json() != record {
                stats.mismatch(phone.index, "put retry", &record, &again);
            }
        }
    }
    stats
}

/// The same photos through tus 1.0.0: create with `POST /v1/uploads/`, then PATCH 1 MiB at a
/// time. Latency is per photo (creation and all PATCHes); `requests` counts every request.
async fn tus(phone: Phone, photos: Arc<PhotoPool>, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut stream = PhotoStream::new(photos, Scenario::Tus, phone.index);
    while Instant::now() < deadline {
        let photo = stream.next().await;
        if let Some(elapsed_us) = tus_upload(&phone, &mut stats, &photo).await {
            stats.latencies_us.push(elapsed_us);
            stats.items += 1;
            stats.bytes += photo.bytes.len() as u64;
        }
    }
    stats
}

/// One tus upload; the time it took if every step answered as expected.
async fn tus_upload(phone: &Phone, stats: &mut Stats, photo: &Photo) -> Option<u64> {
    let start = Instant::now();
    let length = photo.bytes.len();
    let metadata = format!(
        "sha256 {},content_type {}",
        BASE64.encode(&photo.sha256),
        BASE64.encode("image/jpeg")
    );
    let create = phone
        .api
        .request(Method::POST, "/v1/uploads/")
        .header("Tus-Resumable", TUS_VERSION)
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata);
    stats.requests += 1;
    let created = phone.send(stats, "tus create", create).await?;
    let location = match created.header("location") {
        Some(location) if created.status == 201 => location.to_owned(),
        _ => {
            stats.error(
                phone.index,
                "tus create (expected 201 + Location)",
                &created,
            );
            return None;
        }
    };
    // The server answers with a path; a tus client resolves it against the base.
    let url = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else {
        format!("{}{location}", phone.args.base)
    };

    let mut offset = 0;
    while offset < length {
        let end = (offset + TUS_CHUNK).min(length);
        let patch = phone
            .api
            .request(Method::PATCH, "")
            .header("Tus-Resumable", TUS_VERSION)
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(photo.bytes.slice(offset..end));
        // `request` prefixes the base; the upload URL is already absolute.
        let patch = retarget(patch, &url);
        stats.requests += 1;
        let answer = phone.send(stats, "tus patch", patch).await?;
        let new_offset = end.to_string();
        if answer.status != 204 || answer.header("upload-offset") != Some(new_offset.as_str()) {
            stats.error(
                phone.index,
                &format!("tus patch at {offset} (expected 204, Upload-Offset {end})"),
                &answer,
            );
            return None;
        }
        // A server extension: the finishing PATCH names the committed blob. Check it if present.
        if end == length
            && let Some(sha) = answer.header("huikan-blob-sha256")
            && sha != photo.sha256
        {
            stats.error(
                phone.index,
                "tus finish",
                format!("committed {sha}, expected {}", photo.sha256),
            );
            return None;
        }
        offset = end;

        // A tus client that lost a PATCH answer does not resend the PATCH blindly: it asks for
        // the offset with HEAD and resumes from there. So the "retry" here is that HEAD, and it
        // must report what the lost answer said.
        if phone.loses_answer() {
            stats.retries += 1;
            let head = retarget(
                phone
                    .api
                    .request(Method::HEAD, "")
                    .header("Tus-Resumable", TUS_VERSION),
                &url,
            );
            let again = phone.send(stats, "tus resume HEAD", head).await?;
            stats.retry_latencies_us.push(again.elapsed_us);
            if again.status != 200 {
                stats.error(phone.index, "tus resume HEAD (expected 200)", &again);
            } else if again.header("upload-offset") != Some(new_offset.as_str())
                || again.header("upload-length") != Some(length.to_string().as_str())
            {
                let seen = format!(
                    "offset {:?} length {:?}",
                    again.header("upload-offset"),
                    again.header("upload-length")
                );
                stats.mismatch(
                    phone.index,
                    "tus resume HEAD",
                    format!("offset {end} length {length}"),
                    seen,
                );
            }
        }
    }
    Some(start.elapsed().as_micros() as u64)
}

/// Points a request built by `Api::request` (which carries the token) at another URL.
fn retarget(builder: RequestBuilder, url: &str) -> RequestBuilder {
    let (client, request) = builder.build_split();
    let mut request = request.expect("a valid request");
    *request.url_mut() = url.parse().expect("a valid upload URL");
    RequestBuilder::from_parts(client, request)
}

// ---------------------------------------------------------------------------------------------
// Photos

/// A few real JPEGs of about the wanted size, made once before any timing: encoding a 3 MB
/// JPEG takes far longer than uploading it, so it must not be in the measured loop.
struct PhotoPool {
    bases: Vec<Bytes>,
    run_id: String,
}

struct Photo {
    bytes: Bytes,
    sha256: String,
}

impl PhotoPool {
    async fn new(target_bytes: usize, count: usize, run_id: &str) -> Result<PhotoPool> {
        let makers = (0..count as u64).map(|seed| {
            tokio::task::spawn_blocking(move || Bytes::from(jpeg_of_about(target_bytes, seed + 1)))
        });
        let bases = futures::future::try_join_all(makers).await?;
        Ok(PhotoPool {
            bases,
            run_id: run_id.to_owned(),
        })
    }

    fn typical_size(&self) -> usize {
        self.bases.iter().map(Bytes::len).sum::<usize>() / self.bases.len()
    }

    /// A distinct, still valid JPEG: a base with a COM segment naming the run, scenario, phone
    /// and counter inserted right after the SOI marker, so every upload has a new hash (also
    /// across runs against the same server) for the cost of a copy and a hash.
    fn photo(&self, scenario: Scenario, phone: usize, n: u64) -> Photo {
        let base = &self.bases[(phone + n as usize) % self.bases.len()];
        let comment = format!(
            "huikan loadgen {} {} phone {phone} photo {n}",
            self.run_id,
            scenario.name()
        );
        let bytes = distinct_copy(base, &comment);
        let sha256 = sha256_hex(&bytes);
        Photo {
            bytes: Bytes::from(bytes),
            sha256,
        }
    }
}

/// A phone's supply of photos: the next one is copied and hashed on a blocking thread while the
/// current one uploads, so client-side work does not throttle the load.
struct PhotoStream {
    pool: Arc<PhotoPool>,
    scenario: Scenario,
    phone: usize,
    n: u64,
    next: tokio::task::JoinHandle<Photo>,
}

impl PhotoStream {
    fn new(pool: Arc<PhotoPool>, scenario: Scenario, phone: usize) -> PhotoStream {
        let next = Self::prepare(&pool, scenario, phone, 0);
        PhotoStream {
            pool,
            scenario,
            phone,
            n: 0,
            next,
        }
    }

    fn prepare(
        pool: &Arc<PhotoPool>,
        scenario: Scenario,
        phone: usize,
        n: u64,
    ) -> tokio::task::JoinHandle<Photo> {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || pool.photo(scenario, phone, n))
    }

    async fn next(&mut self) -> Photo {
        self.n += 1;
        let following = Self::prepare(&self.pool, self.scenario, self.phone, self.n);
        std::mem::replace(&mut self.next, following)
            .await
            .expect("preparing a photo")
    }
}

/// Spaces one phone's requests so that all the phones together offer `--rate` a second. A phone
/// that falls behind catches up without bursting past the rate's schedule.
struct Pace {
    period: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pace {
    fn new(args: &Args) -> Pace {
        let period =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(args.phones as f64 / args.rate));
        // Phones start spread over one period, not all at once.
        let offset = period.map_or(Duration::ZERO, |p| p.mul_f64(rand::random::<f64>()));
        Pace {
            period,
            next: tokio::time::Instant::now() + offset,
        }
    }

    async fn wait(&mut self) {
        if let Some(period) = self.period {
            tokio::time::sleep_until(self.next).await;
            self.next += period;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciliation: how far behind ingest it runs

/// The reconcile queue as `/metrics` shows it, sampled every second while a scenario runs.
#[derive(Default)]
struct ReconcileWatch {
    max_lag_s: f64,
    max_queued: f64,
    /// Seconds from the scenario's end until the queue was empty (None: not within the wait).
    drained_after_s: Option<f64>,
}

/// One gauge of the reconcile kind from Prometheus text.
fn reconcile_gauge(metrics: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{kind=\"reconcile\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn reconcile_gauges(api: &Api) -> Option<(f64, f64)> {
    let text = api.get("/metrics").await.text().await.ok()?;
    Some((
        reconcile_gauge(&text, "jobs_lag_seconds")?,
        reconcile_gauge(&text, "jobs_queued")?,
    ))
}

/// Samples the reconcile gauges until `stop`, then waits (up to two minutes) for the queue to
/// drain.
async fn watch_reconcile(api: Api, stop: tokio::sync::oneshot::Receiver<()>) -> ReconcileWatch {
    let mut watch = ReconcileWatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some((lag, queued)) = reconcile_gauges(&api).await {
                    watch.max_lag_s = watch.max_lag_s.max(lag);
                    watch.max_queued = watch.max_queued.max(queued);
                }
            }
            _ = &mut stop => break,
        }
    }
    let ended = Instant::now();
    while ended.elapsed() < Duration::from_secs(120) {
        tick.tick().await;
        match reconcile_gauges(&api).await {
            Some((lag, queued)) => {
                watch.max_lag_s = watch.max_lag_s.max(lag);
                if queued == 0.0 {
                    watch.drained_after_s = Some(ended.elapsed().as_secs_f64());
                    break;
                }
            }
            None => break,
        }
    }
    watch
}

// ---------------------------------------------------------------------------------------------
// Driver

/// Runs one scenario on every phone at once and returns the merged figures and the wall time
/// (from the start until the last phone's last request finished).
async fn run_scenario(
    scenario: Scenario,
    phones: &[Phone],
    photos: Option<&Arc<PhotoPool>>,
) -> (Stats, Duration) {
    ERRORS_SHOWN.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(phones[0].args.duration.max(0.1));
    let tasks: Vec<_> = phones
        .iter()
        .map(|p| {
            let phone = Phone {
                index: p.index,
                api: p.api.clone(),
                password: p.password.clone(),
                args: p.args.clone(),
            };
            let photos = photos.cloned();
            tokio::spawn(async move {
                match (scenario, photos) {
                    (Scenario::Push, _) => push(phone, deadline).await,
                    (Scenario::Submit, _) => submit(phone, deadline).await,
                    (Scenario::Put, Some(photos)) => put(phone, photos, deadline).await,
                    (Scenario::Tus, Some(photos)) => tus(phone, photos, deadline).await,
                    (Scenario::Openrosa, _) => openrosa(phone, None, deadline).await,
                    (Scenario::OpenrosaPhoto, Some(photos)) => {
                        openrosa(phone, Some(photos), deadline).await
                    }
                    (Scenario::All, _) => unreachable!("`all` is expanded before running"),
                    (_, None) => unreachable!("photos are made before a photo scenario"),
                }
            })
        })
        .collect();
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await.expect("a phone task panicked"));
    }
    (total, start.elapsed())
}

async fn run(args: Args) -> Result<u64> {
    let args = Arc::new(args);
    // Unique per run: user names and photo comments must not collide with earlier runs.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let phones = setup_phones(&args, &run_id).await?;
    eprintln!(
        "loadgen: {} phones logged in at {} (run {run_id})",
        phones.len(),
        args.base
    );

    let photos = if args.scenarios().iter().any(|s| s.uploads_photos()) {
        let started = Instant::now();
        let pool = PhotoPool::new(args.photo_bytes, args.phones.clamp(1, 4), &run_id).await?;
        eprintln!(
            "loadgen: {} base JPEGs of ~{} bytes made in {:.1}s",
            pool.bases.len(),
            pool.typical_size(),
            started.elapsed().as_secs_f64()
        );
        Some(Arc::new(pool))
    } else {
        None
    };

    let mut errors = 0;
    for scenario in args.scenarios() {
        if let Some(pid) = args.server_pid {
            reset_peak_rss(pid);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(watch_reconcile(phones[0].api.clone(), stopped));
        let (stats, elapsed) = run_scenario(scenario, &phones, photos.as_ref()).await;
        let _ = stop.send(());
        let watch = watcher.await.unwrap_or_default();
        errors += stats.errors;
        let photo_bytes = photos.as_ref().map_or(0, |p| p.typical_size());
        report(scenario, &args, photo_bytes, elapsed, stats, &watch);
    }
    Ok(errors)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run(args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("loadgen: {errors} errors");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
