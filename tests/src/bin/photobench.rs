//! `photobench`: photo processing on one core, the server's path against the naive one, on the
//! same 12-megapixel JPEGs in the same run. The server's path is `process_photo`'s analysis
//! (EXIF, DCT-scaled decode, oriented thumbnail, copy-detection hashes); the naive path decodes the
//! whole frame with the image crate, makes the thumbnail with `thumbnail()`, encodes it and
//! hashes it. Prints latency percentiles of both and the speed-up.
//!
//! The photos are real photographs (`--photos-dir`, the test photographs the test script fetches)
//! scaled up to the size of a phone's with a little sensor-like noise, which gives JPEGs of a
//! phone's size (3–5 MB at 12 MP); without a directory, generated scenes.
//!
//! ```text
//! photobench [--photos-dir DIR] [--photos 8] [--rounds 5] [--width 4000] [--height 3000]
//! ```

use std::time::Instant;

use clap::Parser;
use huikan_server::evidence::analysis::{self, Outcome};
use huikan_tests::percentile;
use huikan_tests::photos::{Exif, jpeg, with_exif};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "HUIKAN_TEST_PHOTOS")]
    photos_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 8)]
    photos: u64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 4000)]
    width: u32,
    #[arg(long, default_value_t = 3000)]
    height: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exif = Exif {
        taken_at: Some("2020:03:02 10:15:00"),
        offset: Some("+08:00"),
        gps: Some((34.51, 112.17)),
        make: Some("HUAWEI"),
        model: Some("nova 5"),
        orientation: Some(6),
    };
    let photos: Vec<Vec<u8>> = match &args.photos_dir {
        Some(dir) => phone_sized(dir, &args)?,
        None => (0..args.photos)
            .map(|seed| jpeg(args.width, args.height, seed, 90))
            .collect(),
    };
    let photos: Vec<Vec<u8>> = photos.iter().map(|p| with_exif(p, &exif)).collect();
    let mean_mb = photos.iter().map(Vec::len).sum::<usize>() as f64 / photos.len() as f64 / 1e6;

    let mut ours = Vec::new();
    let mut naive = Vec::new();
    for _ in 0..args.rounds {
        for photo in &photos {
            let started = Instant::now();
            let facts = analysis::analyse(photo, "image/jpeg");
            ours.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                matches!(facts.outcome, Outcome::Decoded { .. }),
                "not decoded: {:?}",
                facts.outcome
            );

            let started = Instant::now();
            naive_path(photo)?;
            naive.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (ours_p50, naive_p50) = (percentile(&ours, 50.0), percentile(&naive, 50.0));
    println!(
        "scenario=photo_processing photo={}x{} mean_mb={mean_mb:.1} samples={} ours_p50={ours_p50:.1}ms ours_p90={:.1}ms ours_p99={:.1}ms naive_p50={naive_p50:.1}ms naive_p90={:.1}ms naive_p99={:.1}ms speedup_p50={:.2}x ours_throughput={:.1} photos/s/core",
        args.width,
        args.height,
        ours.len(),
        percentile(&ours, 90.0),
        percentile(&ours, 99.0),
        percentile(&naive, 90.0),
        percentile(&naive, 99.0),
        naive_p50 / ours_p50,
        1e3 / ours_p50,
    );
    Ok(())
}

/// Real photographs from `dir`, scaled to `--width`×`--height` with a little noise, as JPEGs.
fn phone_sized(dir: &std::path::Path, args: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    paths.sort();
    paths.truncate(args.photos as usize);
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    paths
        .iter()
        .map(|path| {
            let mut image = image::open(path)?
                .resize_exact(
                    args.width,
                    args.height,
                    image::imageops::FilterType::Triangle,
                )
                .to_rgb8();
            for value in image.iter_mut() {
                // xorshift: cheap noise of ±4 levels, like a phone sensor's at daylight ISO.
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                *value = value.saturating_add_signed((noise % 9) as i8 - 4);
            }
            let mut out = Vec::new();
            image.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out, 92,
            ))?;
            Ok(out)
        })
        .collect()
}

/// Full decode, `thumbnail()`, thumbnail encoded, copy-detection hashes of the thumbnail.
fn naive_path(photo: &[u8]) -> anyhow::Result<()> {
    let image = image::load_from_memory(photo)?;
    let thumbnail = image.thumbnail(analysis::THUMBNAIL_SIZE, analysis::THUMBNAIL_SIZE);
    let mut encoded = Vec::new();
    thumbnail
        .to_rgb8()
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut encoded,
            80,
        ))?;
    std::hint::black_box(huikan_server::evidence::phash::hashes(&thumbnail).ok());
    Ok(())
}
