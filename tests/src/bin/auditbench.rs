//! The audit chain at scale: appends `--entries` entries through the server's own append path
//! (in transactions of `--batch`), then verifies the whole chain with the function behind
//! `GET /v1/audit/verify`, and prints both rates.
//!
//!   auditbench --data-dir DIR [--entries 1000000]      (SQLite)
//!   DATABASE_URL=postgres://… auditbench --data-dir DIR (PostgreSQL)

use std::time::Instant;

use clap::Parser;
use huikan_server::audit::{self, Entry};
use huikan_server::db::Db;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = Db::connect(args.database_url.as_deref(), &args.data_dir).await?;
    let started = Instant::now();
    let mut written = 0;
    while written < args.entries {
        let n = args.batch.min(args.entries - written);
        let entries: Vec<Entry> = (written..written + n)
            .map(|i| {
                Entry::new(
                    "auditbench",
                    "submission.received",
                    format!("submission:{i}"),
                    serde_json::json!({"household_id": format!("410327101{:03}{:04}", i % 1000, i % 10000),
                                       "content_sha256": format!("{i:064x}"), "seq": i}),
                )
            })
            .collect();
        audit::record(&db, &entries)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        written += n;
    }
    let append = started.elapsed().as_secs_f64();
    println!(
        "scenario=audit_append entries={written} batch={} duration={append:.1}s throughput={:.0} entries/s",
        args.batch,
        written as f64 / append
    );
    let started = Instant::now();
    let report = audit::verify(&db)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "scenario=audit_verify entries={} ok={} duration={took:.2}s throughput={:.0} entries/s",
        report.entries,
        report.ok,
        report.entries as f64 / took
    );
    anyhow::ensure!(
        report.ok,
        "the chain did not verify: {:?}",
        report.first_broken
    );
    Ok(())
}
