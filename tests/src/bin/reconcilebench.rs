//! `reconcilebench`: reconciliation of a generated county against a running server.
//!
//! Loads `--households` registered households (villages of 1,000, ten villages a township), two
//! visits each in one campaign, with 2 or 3 photos a visit (150,000 photos for the default
//! 30,000 households). The photos' facts (EXIF time and GPS, some implausible or far) are written
//! straight into `photo_facts`, as the photo pipeline would have; they carry no copy-detection hashes,
//! so the near-duplicate lookups (measured by `neardupbench`) are not part of these figures. The
//! visits go through `POST /v1/sync/push`; some fail a guarantee, some disagree with their
//! household's other visit.
//!
//! Then, timed:
//! - the first reconciliation of every visit (until the job queue is empty);
//! - `GET /v1/reports/coverage` for the county by township and by village, and a filtered page
//!   of `GET /v1/households`, `--runs` times each (p50 / p99 / max);
//! - a registry re-import that changes every household (a name in each; one member dropped in
//!   one household of ten, which raises `member_mismatch`), and the re-reconciliation of the
//!   whole county it causes, from the import's answer until the queue is empty.
//!
//! ```text
//! reconcilebench --base URL --admin NAME:PASSWORD --data-dir DIR [--database-url postgres://…]
//!     [--households 30000] [--runs 50]
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures::StreamExt;
use huikan_server::db::{Db, Pool};
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::registry::{Household, village};
use huikan_tests::{Api, percentile};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: String,
    /// `name:password` of an admin.
    #[arg(long)]
    admin: String,
    /// The server's data directory (its SQLite database), or with `--database-url` unused.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, default_value_t = 30_000)]
    households: u32,
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

const CAMPAIGN: &str = "2020-lookback-1";
const HOUSE: (f64, f64) = (34.51, 112.17);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (name, password) = args
        .admin
        .split_once(':')
        .context("--admin is name:password")?;
    let admin = Api::new(&args.base, None).login(name, password).await;
    let db = Db::connect(args.database_url.as_deref(), &args.data_dir).await?;

    define_campaign(
        &admin,
        CAMPAIGN,
        "2020-03-01",
        &["housing_exterior", "water_source"],
    )
    .await;
    let county = county(args.households);
    let started = Instant::now();
    import_registry(&admin, &county).await;
    eprintln!(
        "imported {} households in {:.1} s",
        county.len(),
        started.elapsed().as_secs_f64()
    );

    let field = huikan_tests::server::user_on(&args.base, &admin, "field_staff", &["410327"]).await;
    let reviewer = huikan_tests::server::user_on(&args.base, &admin, "reviewer", &["410327"]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let visits: Vec<Value> = county
        .iter()
        .enumerate()
        .flat_map(|(i, household)| {
            [
                visit(household, i, 0, &mut rng),
                visit(household, i, 1, &mut rng),
            ]
        })
        .collect();
    let photos: usize = visits
        .iter()
        .map(|v| v["photos"].as_array().map_or(0, Vec::len))
        .sum();
    let started = Instant::now();
    store_photo_facts(&db, &visits, &mut rng).await?;
    eprintln!(
        "{photos} photos' facts stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    push(&field, &visits).await?;
    let pushed = started.elapsed();
    drained(&db).await?;
    let reconciled = started.elapsed();
    println!(
        "scenario=reconcile_first households={} visits={} photos={photos} push_s={:.1} pushed_and_reconciled_s={:.1}",
        county.len(),
        visits.len(),
        pushed.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    reports(&reviewer, args.runs).await?;
    console_queue(&args.base, &reviewer.username(), args.runs).await?;

    // The re-import: every household changed, one in ten losing a member.
    let changed: Vec<Household> = county
        .iter()
        .enumerate()
        .map(|(i, household)| {
            let mut household = household.clone();
            for member in &mut household.members {
                member.name.push('某');
            }
            if i.is_multiple_of(10) {
                household.members.pop();
            }
            household
        })
        .collect();
    let open_before = count(
        &db,
        "SELECT COUNT(*) FROM findings WHERE cleared_at IS NULL",
    )
    .await?;
    let started = Instant::now();
    import_registry(&admin, &changed).await;
    let imported = started.elapsed();
    drained(&db).await?;
    let total = started.elapsed();
    let open_after = count(
        &db,
        "SELECT COUNT(*) FROM findings WHERE cleared_at IS NULL",
    )
    .await?;
    println!(
        "scenario=reconcile_after_import households={} visits={} import_s={:.1} reconcile_s={:.1} total_s={:.1} open_findings_before={open_before} open_findings_after={open_after}",
        changed.len(),
        visits.len(),
        imported.as_secs_f64(),
        (total - imported).as_secs_f64(),
        total.as_secs_f64()
    );
    reports(&reviewer, args.runs).await
}

/// Villages of 1,000 households, ten a township, in county 410327.
fn county(households: u32) -> Vec<Household> {
    let villages = households.div_ceil(1000);
    (0..villages)
        .flat_map(|v| {
            let code = format!("410327{:03}{:03}", 101 + v / 10, 1 + v % 10);
            let n = (households - v * 1000).min(1000);
            village(&code, n)
        })
        .collect()
}

fn photo_sha(household: usize, round: usize, n: usize) -> String {
    hex::encode(Sha256::digest(format!(
        "reconcilebench {household} {round} {n}"
    )))
}

/// A visit of household `i` (`round` 0 or 1, three days apart): its registered members, at the
/// house, with 2 or 3 photos; about one in twenty fails a guarantee, and about one second visit
/// in fifty disagrees on water with the first.
fn visit(household: &Household, i: usize, round: usize, rng: &mut impl Rng) -> Value {
    let kinds = ["housing_exterior", "water_source", "housing_interior"];
    let photo_count = if (i + round).is_multiple_of(2) { 2 } else { 3 };
    let photos: Vec<Value> = (0..photo_count)
        .map(|n| json!({"sha256": photo_sha(i, round, n), "kind": kinds[n]}))
        .collect();
    let members: Vec<Value> = household
        .members
        .iter()
        .enumerate()
        .map(|(n, m)| {
            json!({"id_number": m.id_number, "name": m.name,
                   "relation": if n == 0 { "head" } else { "other" }, "present": true,
                   "school_status": "not_school_age", "insured": rng.random_bool(0.98),
                   "health": "healthy", "disability_grade": null, "labour": "normal"})
        })
        .collect();
    let water_ok = !(round == 1 && rng.random_bool(0.02));
    json!({
        "submission_id": uuid::Uuid::now_v7().to_string(),
        "household_id": household.id,
        "campaign": CAMPAIGN,
        "form_version": "1",
        "surveyed_at": format!("2020-03-0{}T10:15:00+08:00", 2 + round * 3),
        "location": {"lat": HOUSE.0 + rng.random_range(-0.001..0.001), "lon": HOUSE.1, "accuracy_m": 15.0},
        "answers": {
            "members": members,
            "food_secure": rng.random_bool(0.99),
            "clothing_secure": true,
            "housing": {"grade": if rng.random_bool(0.02) { "C" } else { "B" }, "renovated": false},
            "water": {"source": "piped", "quantity_ok": true, "quality_ok": water_ok,
                      "convenience_ok": true, "guarantee_ok": true},
            "income": {"per_capita_yuan": rng.random_range(3800..9000), "sources": ["wage"]}
        },
        "photos": photos,
        "device_id": "bench",
        "app_version": "1.0.0"
    })
}

/// Inserts the `blobs` and `photo_facts` rows of `(sha256, EXIF local time, GPS latitude)`.
macro_rules! blob_rows {
    ($tx:ident, $chunk:expr, $now:expr) => {{
        let mut q = sqlx::QueryBuilder::new("INSERT INTO blobs (sha256, size, content_type, created_at) ");
        q.push_values($chunk, |mut b, (sha, _, _)| {
            b.push_bind(sha).push_bind(1_000_000i64).push_bind("image/jpeg").push_bind(chrono::DateTime::parse_from_rfc3339($now).unwrap());
        });
        q.build().execute(&mut *$tx).await?;
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO photo_facts (sha256, state, width, height, taken_at, taken_offset, gps_lat, gps_lon, processed_at) ",
        );
        q.push_values($chunk, |mut b, (sha, taken, lat)| {
            b.push_bind(sha)
                .push_bind("processed")
                .push_bind(4000i64)
                .push_bind(3000i64)
                .push_bind(taken)
                .push_bind("+08:00")
                .push_bind(*lat)
                .push_bind(HOUSE.1)
                .push_bind(chrono::DateTime::parse_from_rfc3339($now).unwrap());
        });
        q.build().execute(&mut *$tx).await?;
    }};
}

/// The photos as stored and processed: a `blobs` row and its `photo_facts`, EXIF time an hour
/// after the visit (one in fifty a day off) and GPS at the house (one in fifty 1 km away).
async fn store_photo_facts(db: &Db, visits: &[Value], rng: &mut impl Rng) -> Result<()> {
    let mut facts: Vec<(String, String, f64)> = Vec::new();
    for visit in visits {
        let day = &visit["surveyed_at"].as_str().unwrap()[..10];
        for photo in visit["photos"].as_array().unwrap() {
            let hour = if rng.random_bool(0.02) { 23 } else { 11 };
            let taken = format!("{day}T{hour}:30:00");
            let lat = if rng.random_bool(0.02) {
                HOUSE.0 + 0.01
            } else {
                HOUSE.0
            };
            facts.push((photo["sha256"].as_str().unwrap().to_owned(), taken, lat));
        }
    }
    let now = "2026-01-01T00:00:00+00:00";
    for chunk in facts.chunks(2000) {
        match &db.write {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                blob_rows!(tx, chunk, now);
                tx.commit().await?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                blob_rows!(tx, chunk, now);
                tx.commit().await?;
            }
        }
    }
    Ok(())
}

/// Pushes the visits 500 a request, four requests at a time, as phones syncing.
async fn push(field: &Api, visits: &[Value]) -> Result<()> {
    let batches: Vec<&[Value]> = visits.chunks(500).collect();
    let results: Vec<Result<()>> = futures::stream::iter(batches)
        .map(|batch| async move {
            let pushed = field
                .post_json("/v1/sync/push", &json!({"submissions": batch}))
                .await;
            ensure!(pushed.status().is_success(), "push: {}", pushed.status());
            let body: Value = pushed.json().await?;
            let created = body["results"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["outcome"] == "created")
                .count();
            ensure!(created == batch.len(), "push: {body}");
            Ok(())
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn count(db: &Db, query: &str) -> Result<i64> {
    Ok(match &db.read {
        Pool::Sqlite(pool) => sqlx::query_scalar(query).fetch_one(pool).await?,
        Pool::Postgres(pool) => sqlx::query_scalar(query).fetch_one(pool).await?,
    })
}

/// Waits until the server's job queue is empty (no parked job either: that would be a failure).
async fn drained(db: &Db) -> Result<()> {
    loop {
        if count(db, "SELECT COUNT(*) FROM jobs WHERE state = 'queued'").await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let parked = count(db, "SELECT COUNT(*) FROM jobs WHERE state = 'parked'").await?;
    ensure!(parked == 0, "{parked} jobs parked");
    Ok(())
}

/// The console's queue page for a township, as a reviewer's browser loads it, timed.
async fn console_queue(base: &str, username: &str, runs: usize) -> Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (_, cookie) =
        huikan_tests::api::console_login(base, username, huikan_tests::server::PASSWORD).await?;
    let cookie = cookie.context("no session cookie")?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let page = client
            .get(format!("{base}/console/queue?prefix=410327101"))
            .header("cookie", &cookie)
            .send()
            .await?;
        ensure!(page.status() == 200, "console queue: {}", page.status());
        let html = page.text().await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        ensure!(
            html.contains("class=\"visit\""),
            "the console queue is empty"
        );
    }
    println!(
        "scenario=console_queue_township runs={runs} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 100.0)
    );
    Ok(())
}

/// The reports a supervisor and a reviewer open, timed.
async fn reports(reviewer: &Api, runs: usize) -> Result<()> {
    for (scenario, path) in [
        (
            "coverage_township",
            "/v1/reports/coverage?prefix=410327".to_owned(),
        ),
        (
            "coverage_village",
            "/v1/reports/coverage?prefix=410327&level=village".to_owned(),
        ),
        (
            "households_failing_page",
            "/v1/households?prefix=410327101&verdict=failing&limit=100".to_owned(),
        ),
        (
            "households_finding_page",
            "/v1/households?prefix=410327&finding=member_mismatch&limit=100".to_owned(),
        ),
        // A township's undecided visits: 20,000 with the default 30,000 households.
        (
            "review_queue_township",
            "/v1/review/queue?prefix=410327101&limit=100".to_owned(),
        ),
        (
            "review_queue_finding",
            "/v1/review/queue?prefix=410327101&finding=water_unsafe&limit=100".to_owned(),
        ),
    ] {
        let mut times = Vec::with_capacity(runs);
        let mut items = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let answer = reviewer.get(&path).await;
            ensure!(answer.status() == 200, "{path}: {}", answer.status());
            let body: Value = answer.json().await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            items = body["items"].as_array().map_or(0, Vec::len);
        }
        println!(
            "scenario={scenario} items={items} runs={runs} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            percentile(&times, 100.0)
        );
    }
    Ok(())
}
