//! The machine's bound for storing photos, with no HTTP and no database: the server's own
//! spool (stream to a temporary file while hashing with its SHA-256) and its file store's commit
//! (fsync, rename, fsync of the directory), for the same JPEGs, as many at once as the load
//! generator's phones. Photo PUT throughput is judged against this figure.
//!
//!   diskbound --dir DIR [--photos 200] [--concurrency 8] [--photo-bytes 3000000]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use huikan_server::store::spool::SpoolDir;
use huikan_server::store::{BlobStore, FsStore, blob_key};
use huikan_tests::photos::{distinct_copy, jpeg_of_about};

#[derive(Parser)]
struct Args {
    /// A directory on the disk the server's data dir is on.
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 200)]
    photos: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 3_000_000)]
    photo_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = tokio::task::spawn_blocking(move || jpeg_of_about(args.photo_bytes, 1)).await?;
    let photos: Vec<Bytes> = (0..args.photos)
        .map(|n| Bytes::from(distinct_copy(&base, &format!("bound {n}"))))
        .collect();
    let spool = SpoolDir::new(args.dir.join("tmp")).context("temporary directory")?;
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::new(args.dir.clone())?);
    let photos = Arc::new(photos);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (spool, store, photos, next) =
                (spool.clone(), store.clone(), photos.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(photo) = photos.get(i) else { break };
                    let t = Instant::now();
                    // The body arrives in 64 KiB frames, as hyper hands them over.
                    let frames = photo
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>();
                    let spooled = spool
                        .spool(&mut futures::stream::iter(frames), u64::MAX)
                        .await
                        .expect("spool");
                    store
                        .commit(
                            &blob_key(spooled.sha256.as_str()),
                            spooled.file,
                            spooled.len,
                        )
                        .await
                        .expect("commit");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    let bytes: usize = photos.iter().map(Bytes::len).sum();
    println!(
        "scenario=bound photos={} concurrency={} photo_bytes={} duration={elapsed:.1}s throughput={:.1} photos/s {:.1} MB/s p50={:.1}ms p99={:.1}ms",
        photos.len(),
        args.concurrency,
        bytes / photos.len(),
        photos.len() as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99)
    );
    let _ = std::fs::remove_dir_all(args.dir.join("blobs"));
    Ok(())
}
