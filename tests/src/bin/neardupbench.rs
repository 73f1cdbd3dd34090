//! The near-duplicate index at scale: fills `photo_facts` with `--photos` photos' hashes
//! (generated inside the database: six 64-bit views each, as the server stores them), then times
//! what a server process does with them: the start-up load of its in-memory index
//! (`evidence::index`), the memory that takes, and lookups at each `--distances`: queries half
//! copies of stored photos (a view of one with up to half the distance flipped, as a cropped
//! copy would be), half unrelated photos. The first `--check` lookups are compared with a scan
//! of every stored photo by `phash::distance`, so a fast wrong index fails the run.
//!
//!   neardupbench --data-dir DIR [--photos 10000000]              (SQLite)
//!   neardupbench --data-dir DIR --database-url postgres://…      (PostgreSQL)

use std::time::Instant;

use clap::Parser;
use huikan_server::db::{Db, Pool};
use huikan_server::evidence::index::{Match, NearIndex};
use huikan_server::evidence::phash::{self, HASH_VERSION, PhotoHashes};
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
    photos: u64,
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [phash::NEAR_DUPLICATE_BITS])]
    distances: Vec<u32>,
    #[arg(long, default_value_t = 20)]
    check: usize,
}

/// `INSERT … SELECT` of the rows `(i, hashes)` of the common table `g` defined by `with`.
fn insert_generated(with: &str) -> String {
    format!(
        "{with} INSERT INTO photo_facts (sha256, state, hash_version, hashes, hash_seq, processed_at)
         SELECT i_hex, 'processed', {HASH_VERSION}, hashes, i, '2026-01-01T00:00:00Z' FROM g"
    )
}

async fn fill(args: &Args, db: &Db) -> anyhow::Result<()> {
    let n = args.photos;
    match &db.write {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            // Generated facts name no stored blob.
            sqlx::query("PRAGMA foreign_keys = OFF")
                .execute(&mut *conn)
                .await?;
            sqlx::query(&insert_generated(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}),
                 g(i, i_hex, hashes) AS (SELECT i, printf('%064x', i), randomblob(48) FROM n)"
            )))
            .execute(&mut *conn)
            .await?;
            sqlx::query("ANALYZE").execute(&mut *conn).await?;
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            // Generated facts name no stored blob: foreign keys are off for this session only.
            let mut tx = conn.begin().await?;
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&insert_generated(&format!(
                "WITH g(i, i_hex, hashes) AS (
                     SELECT i, lpad(to_hex(i), 64, '0'),
                            decode(md5(i::text) || md5((-i)::text) || md5((i * 7)::text), 'hex')
                     FROM generate_series(1, {n}::bigint) i)"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            sqlx::query("VACUUM ANALYZE photo_facts")
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Every stored photo's hashes, for the scan the index is checked against.
async fn all_hashes(db: &Db) -> anyhow::Result<Vec<(i64, PhotoHashes)>> {
    let rows: Vec<(i64, Vec<u8>)> = huikan_server::on_pool!(&db.read, |p| {
        sqlx::query_as("SELECT hash_seq, hashes FROM photo_facts WHERE hash_seq IS NOT NULL")
            .fetch_all(p)
            .await
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|(seq, bytes)| Some((seq, PhotoHashes::from_bytes(&bytes)?)))
        .collect())
}

/// This process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    huikan_tests::memory_of(0).map_or(0, |(resident, _)| resident)
}

fn random_photo(rng: &mut impl Rng) -> PhotoHashes {
    PhotoHashes {
        views: std::array::from_fn(|_| rng.random()),
    }
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
        "scenario=neardup_fill backend={backend} photos={} duration={:.1}s",
        args.photos,
        started.elapsed().as_secs_f64()
    );

    // What a server process does at start.
    let before = resident_bytes();
    let index = NearIndex::default();
    let started = Instant::now();
    index.catch_up(&db).await?;
    let load = started.elapsed().as_secs_f64();
    let (photos, bytes) = index.size();
    let rss = resident_bytes().saturating_sub(before);
    println!(
        "scenario=neardup_load backend={backend} photos={photos} duration={load:.1}s index_bytes={bytes} ({:.0} bytes/photo) rss_growth={rss} ({:.2} GiB per 10M photos)",
        bytes as f64 / photos.max(1) as f64,
        rss as f64 / photos.max(1) as f64 * 1e7 / (1u64 << 30) as f64
    );

    let stored = all_hashes(&db).await?;
    anyhow::ensure!(
        stored.len() == photos,
        "index has {photos}, the database {}",
        stored.len()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &distance in &args.distances {
        let queries: Vec<PhotoHashes> = (0..args.queries)
            .map(|i| {
                let mut query = random_photo(&mut rng);
                if i % 2 == 1 {
                    // A copy: the whole frame is one of a stored photo's views, a little off.
                    let (_, of) = &stored[rng.random_range(0..stored.len())];
                    query.views[0] = of.views[rng.random_range(0..6)];
                    for _ in 0..rng.random_range(0..=distance / 2) {
                        query.views[0] ^= 1 << rng.random_range(0..64);
                    }
                }
                query
            })
            .collect();
        // Warm the caches as a running server's would be.
        for q in queries.iter().take(200) {
            std::hint::black_box(index.lookup(q, distance));
        }
        let mut latencies: Vec<f64> = Vec::with_capacity(queries.len());
        let mut found = 0;
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let near = index.lookup(q, distance);
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            found += near.len();
            if i < args.check {
                let mut expected: Vec<Match> = stored
                    .iter()
                    .map(|(seq, h)| Match {
                        hash_seq: *seq,
                        distance: phash::distance(q, h),
                    })
                    .filter(|m| m.distance <= distance)
                    .collect();
                expected.sort_by_key(|m| (m.distance, m.hash_seq));
                anyhow::ensure!(
                    near == expected,
                    "lookup within {distance}: index found {}, a scan {}",
                    near.len(),
                    expected.len()
                );
            }
        }
        // Lookups alone: the scans that check the first few are not counted.
        let took: f64 = latencies.iter().sum::<f64>() / 1000.0;
        let ms = |p: f64| percentile(&latencies, p);
        println!(
            "scenario=neardup_lookup backend={backend} photos={photos} distance={distance} queries={} checked={} found={found} throughput={:.0} lookups/s p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms",
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
