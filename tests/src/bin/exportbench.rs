//! `exportbench`: the audit export of one village against an already running server. Loads a
//! village of `--households` registered households, each visited once with `--photos-per-visit`
//! distinct JPEGs of about `--photo-bytes`, then downloads `POST /v1/audit/exports` for it
//! `--runs` times, reading the stream as a client does, and prints the throughput and the time to
//! the first byte and to the last, as percentiles over the runs. `--out FILE` keeps the last
//! bundle (for `huikan verify-bundle`).
//!
//! ```text
//! exportbench --base http://127.0.0.1:8080 --admin admin:password [--households 500]
//!     [--photos-per-visit 3] [--photo-bytes 2000000] [--runs 3] [--out bundle.zip]
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures::StreamExt;
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::photos::{distinct_copy, jpeg_of_about, sha256_hex};
use huikan_tests::registry::village;
use huikan_tests::visits::visit;
use huikan_tests::{Api, percentile};
use serde_json::json;

const VILLAGE: &str = "410327101001";

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: String,
    /// `name:password` of an admin.
    #[arg(long)]
    admin: String,
    #[arg(long, default_value_t = 500)]
    households: u32,
    #[arg(long, default_value_t = 3)]
    photos_per_visit: usize,
    #[arg(long, default_value_t = 2_000_000)]
    photo_bytes: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (name, password) = args
        .admin
        .split_once(':')
        .context("--admin is name:password")?;
    let admin = Api::new(&args.base, None).login(name, password).await;
    let started = Instant::now();
    let photos = load(&args, &admin).await?;
    eprintln!(
        "loaded {} households, {photos} photos in {:.1} s",
        args.households,
        started.elapsed().as_secs_f64()
    );

    let auditor = user(&admin, "auditor", &[]).await?;
    let mut rates = Vec::new();
    let mut first_bytes = Vec::new();
    let mut totals = Vec::new();
    let mut size = 0;
    for run in 0..args.runs {
        let keep = (run + 1 == args.runs)
            .then_some(args.out.as_deref())
            .flatten();
        let (bytes, first, total) = export(&auditor, keep).await?;
        size = bytes;
        rates.push(bytes as f64 / total.as_secs_f64() / 1e6);
        first_bytes.push(first.as_secs_f64() * 1e3);
        totals.push(total.as_secs_f64() * 1e3);
    }
    println!(
        "scenario=audit_export households={} photos={photos} bundle_mb={:.0} runs={} throughput_p50={:.0}MB/s throughput_min={:.0}MB/s first_byte_p50={:.0}ms first_byte_max={:.0}ms total_p50={:.0}ms total_max={:.0}ms",
        args.households,
        size as f64 / 1e6,
        args.runs,
        percentile(&rates, 50.0),
        percentile(&rates, 0.0),
        percentile(&first_bytes, 50.0),
        percentile(&first_bytes, 100.0),
        percentile(&totals, 50.0),
        percentile(&totals, 100.0),
    );
    Ok(())
}

async fn user(admin: &Api, role: &str, scope: &[&str]) -> Result<Api> {
    let username = format!("bench-{role}-{}", uuid::Uuid::new_v4().simple());
    let password = "bench-password-1";
    let created = admin
        .post_json(
            "/v1/users",
            &json!({"username": username, "password": password, "role": role, "scope": scope}),
        )
        .await;
    ensure!(
        created.status().is_success(),
        "creating a {role}: {}",
        created.status()
    );
    Ok(Api::new(&admin.base, None).login(&username, password).await)
}

/// The village, its photos and one visit per household; returns the number of photos.
async fn load(args: &Args, admin: &Api) -> Result<usize> {
    define_campaign(admin, "2020-lookback-1", "2020-03-01", &[]).await;
    let households = village(VILLAGE, args.households);
    import_registry(admin, &households).await;

    let field = user(admin, "field_staff", &[VILLAGE]).await?;
    let base_photo = jpeg_of_about(args.photo_bytes, 1);
    let mut visits = Vec::new();
    let mut uploads = Vec::new();
    for (i, household) in households.iter().enumerate() {
        let mut named = Vec::new();
        for p in 0..args.photos_per_visit {
            let photo = distinct_copy(&base_photo, &format!("export-bench {i} {p}"));
            let sha = sha256_hex(&photo);
            uploads.push((sha.clone(), photo));
            named.push(sha);
        }
        let named: Vec<(&str, &str)> = named
            .iter()
            .map(|s| (s.as_str(), "housing_exterior"))
            .collect();
        visits.push(visit(&household.id, &named));
    }
    let photos = uploads.len();
    let results: Vec<u16> = futures::stream::iter(uploads)
        .map(|(sha, photo)| {
            let field = field.clone();
            async move { field.put_blob(&sha, photo).await.status().as_u16() }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    ensure!(results.iter().all(|s| *s == 201), "a photo upload failed");
    for batch in visits.chunks(100) {
        let pushed = field
            .post_json("/v1/sync/push", &json!({"submissions": batch}))
            .await;
        ensure!(pushed.status() == 200, "push: {}", pushed.status());
    }
    Ok(photos)
}

/// One export of the village: (bytes, time to first byte, time to last byte).
async fn export(
    auditor: &Api,
    keep: Option<&std::path::Path>,
) -> Result<(u64, Duration, Duration)> {
    let started = Instant::now();
    let response = auditor
        .post_json("/v1/audit/exports", &json!({"prefix": VILLAGE}))
        .await;
    ensure!(response.status() == 200, "export: {}", response.status());
    let mut file = keep.map(std::fs::File::create).transpose()?;
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the export broke off")?;
        first.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        if let Some(file) = file.as_mut() {
            file.write_all(&chunk)?;
        }
    }
    Ok((bytes, first.unwrap_or_default(), started.elapsed()))
}
