//! The near-duplicate index at scale: fills `photo_facts` with `--hashes` uniformly random 64-bit
//! perceptual hashes (generated inside the database, with the band columns the server writes),
//! then times the server's own lookup (`evidence::near::within`) for each `--distances`: queries
//! half made from stored hashes with up to that many bits flipped, half random. The first
//! `--check` lookups are compared with a brute-force scan of every hash, so a fast wrong index
//! fails the run.
//!
//!   neardupbench --data-dir DIR [--hashes 10000000]              (SQLite)
//!   neardupbench --data-dir DIR --database-url postgres://…      (PostgreSQL)

use std::time::Instant;

use clap::Parser;
use huikan_server::db::{Db, Pool};
use huikan_server::evidence::near::{self, BANDS};
use huikan_tests::percentile;
use rand::{Rng, SeedableRng};
use sqlx::Connection;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, default_value_t = 10_000_000)]
    hashes: u64,
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [huikan_server::evidence::analysis::NEAR_DUPLICATE_BITS])]
    distances: Vec<u32>,
    #[arg(long, default_value_t = 50)]
    check: usize,
}

/// `INSERT … SELECT` of the rows `(sha, h)` of the common table `g` defined by `with`, with the
/// band columns computed from `h` by the same cuts as [`BANDS`].
fn insert_generated(with: &str) -> String {
    let bands: Vec<String> = BANDS
        .iter()
        .map(|(low, width)| format!("(h >> {low}) & {}", (1u64 << width) - 1))
        .collect();
    let columns: Vec<String> = (0..BANDS.len()).map(|i| format!("phash_band{i}")).collect();
    format!(
        "{with} INSERT INTO photo_facts (sha256, state, phash, {}, processed_at)
         SELECT sha, 'processed', h, {}, '2026-01-01T00:00:00Z' FROM g",
        columns.join(", "),
        bands.join(", ")
    )
}

/// Fills the table with the band indexes dropped and built again afterwards (bulk loading into
/// four random-order indexes would take far longer); the index definitions are the migration's.
async fn fill(args: &Args, db: &Db) -> anyhow::Result<()> {
    let n = args.hashes;
    match &db.write {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'photo_facts_band%'",
            )
            .fetch_all(&mut *conn)
            .await?;
            sqlx::query("PRAGMA foreign_keys = OFF")
                .execute(&mut *conn)
                .await?;
            for (name, _) in &indexes {
                sqlx::query(&format!("DROP INDEX {name}"))
                    .execute(&mut *conn)
                    .await?;
            }
            // Materialized, or SQLite would draw a new random() for every column naming h.
            sqlx::query(&insert_generated(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}),
                 g(sha, h) AS MATERIALIZED (SELECT printf('%064x', i), random() FROM n)"
            )))
            .execute(&mut *conn)
            .await?;
            for (_, sql) in &indexes {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            sqlx::query("ANALYZE").execute(&mut *conn).await?;
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE indexname LIKE 'photo_facts_band%'",
            )
            .fetch_all(&mut *conn)
            .await?;
            for (name, _) in &indexes {
                sqlx::query(&format!("DROP INDEX {name}"))
                    .execute(&mut *conn)
                    .await?;
            }
            // Generated facts name no stored blob: foreign keys are off for this session only.
            let mut tx = conn.begin().await?;
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&insert_generated(&format!(
                "WITH g(sha, h) AS (SELECT lpad(to_hex(i), 64, '0'), ('x' || md5(i::text))::bit(64)::bigint
                                    FROM generate_series(1, {n}::bigint) i)"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            for (_, sql) in &indexes {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            sqlx::query("VACUUM ANALYZE photo_facts")
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn all_hashes(db: &Db) -> anyhow::Result<Vec<u64>> {
    let hashes: Vec<i64> = huikan_server::on_pool!(&db.read, |p| {
        sqlx::query_scalar("SELECT phash FROM photo_facts WHERE phash IS NOT NULL")
            .fetch_all(p)
            .await
    })?;
    Ok(hashes.into_iter().map(|h| h as u64).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = Db::connect(args.database_url.as_deref(), &args.data_dir).await?;
    let backend = match db.read {
        Pool::Sqlite(_) => "sqlite",
        Pool::Postgres(_) => "postgres",
    };
    let started = Instant::now();
    fill(&args, &db).await?;
    println!(
        "scenario=neardup_fill backend={backend} hashes={} duration={:.1}s",
        args.hashes,
        started.elapsed().as_secs_f64()
    );
    let stored = all_hashes(&db).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &distance in &args.distances {
        let queries: Vec<u64> = (0..args.queries)
            .map(|i| {
                if i % 2 == 0 {
                    return rng.random();
                }
                let mut hash = stored[rng.random_range(0..stored.len())];
                for _ in 0..rng.random_range(0..=distance) {
                    hash ^= 1 << rng.random_range(0..64);
                }
                hash
            })
            .collect();
        // Warm the caches as a running server's would be.
        for &q in queries.iter().take(200) {
            near::within(&db.read, q, distance)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let mut latencies: Vec<f64> = Vec::with_capacity(queries.len());
        let mut found = 0;
        let started = Instant::now();
        for (i, &q) in queries.iter().enumerate() {
            let t = Instant::now();
            let near = near::within(&db.read, q, distance)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            found += near.len();
            if i < args.check {
                let mut expected: Vec<u64> = stored
                    .iter()
                    .copied()
                    .filter(|h| (h ^ q).count_ones() <= distance)
                    .collect();
                let mut got: Vec<u64> = near.iter().map(|n| n.phash).collect();
                expected.sort_unstable();
                got.sort_unstable();
                anyhow::ensure!(
                    got == expected,
                    "lookup of {q:016x} within {distance}: index found {}, a scan {}",
                    got.len(),
                    expected.len()
                );
            }
        }
        let took = started.elapsed().as_secs_f64();
        let ms = |p: f64| percentile(&latencies, p);
        println!(
            "scenario=neardup_lookup backend={backend} hashes={} distance={distance} queries={} checked={} found={found} throughput={:.0} lookups/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
            stored.len(),
            queries.len(),
            args.check.min(queries.len()),
            queries.len() as f64 / took,
            ms(50.0),
            ms(90.0),
            ms(99.0),
            ms(100.0)
        );
    }
    Ok(())
}
