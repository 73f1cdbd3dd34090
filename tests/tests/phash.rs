//! Near-duplicate detection quality on real photographs (scikit-image's sample data, fetched by
//! the test script into `HUIKAN_TEST_PHOTOS`): each original's recompressed, resized, cropped
//! and brightened copies must lie within the threshold of it, and every pair of different
//! originals beyond it. Prints the distances, recall and false positives.

use std::path::PathBuf;

use huikan_server::evidence::analysis::{self, NEAR_DUPLICATE_BITS, Outcome};
use image::{DynamicImage, RgbImage};

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, quality,
        ))
        .unwrap();
    out
}

fn phash(bytes: &[u8]) -> u64 {
    match analysis::analyse(bytes, "image/jpeg").outcome {
        Outcome::Decoded { phash, .. } => phash,
        other => panic!("not decoded: {other:?}"),
    }
}

/// The copies a forger would make of a photo, named.
fn transformed(original: &RgbImage) -> Vec<(&'static str, Vec<u8>)> {
    let (w, h) = original.dimensions();
    let decoded = image::load_from_memory(&jpeg(original, 90))
        .unwrap()
        .to_rgb8();
    let resized = DynamicImage::ImageRgb8(original.clone())
        .resize_exact(
            w * 7 / 10,
            h * 7 / 10,
            image::imageops::FilterType::Lanczos3,
        )
        .to_rgb8();
    let cropped = image::imageops::crop_imm(original, 0, 0, w - w / 20, h).to_image();
    let mut brightened = original.clone();
    for pixel in brightened.pixels_mut() {
        for c in pixel.0.iter_mut() {
            *c = (f32::from(*c) * 1.1).round().min(255.0) as u8;
        }
    }
    vec![
        ("recompressed at quality 60", jpeg(&decoded, 60)),
        ("resized to 70 %", jpeg(&resized, 90)),
        ("5 % cropped off the right edge", jpeg(&cropped, 90)),
        ("brightened 10 %", jpeg(&brightened, 90)),
    ]
}

fn photos() -> Option<Vec<(String, RgbImage)>> {
    let Ok(dir) = std::env::var("HUIKAN_TEST_PHOTOS") else {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("HUIKAN_TEST_PHOTOS is not set, and CI=true requires the test photographs");
        }
        eprintln!(
            "SKIPPED: HUIKAN_TEST_PHOTOS is not set (the README's test command fetches them)"
        );
        return None;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    paths.sort();
    Some(
        paths
            .into_iter()
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, image::open(&p).unwrap().to_rgb8())
            })
            .collect(),
    )
}

#[test]
fn copies_are_near_duplicates_and_different_photographs_are_not() {
    let Some(photos) = photos() else { return };
    assert!(photos.len() >= 15, "only {} photographs", photos.len());
    let originals: Vec<(String, u64)> = photos
        .iter()
        .map(|(name, image)| (name.clone(), phash(&jpeg(image, 90))))
        .collect();
    let mut found = 0;
    let mut copies = 0;
    let mut worst_copy = 0;
    println!("threshold: {NEAR_DUPLICATE_BITS} bits of 64");
    for ((name, image), (_, original)) in photos.iter().zip(&originals) {
        let mut line = format!("{name:>20}:");
        for (how, bytes) in transformed(image) {
            let distance = (phash(&bytes) ^ original).count_ones();
            copies += 1;
            found += usize::from(distance <= NEAR_DUPLICATE_BITS);
            worst_copy = worst_copy.max(distance);
            line.push_str(&format!(" {how} {distance};"));
            assert!(
                distance <= NEAR_DUPLICATE_BITS,
                "{name} {how}: {distance} bits apart"
            );
        }
        println!("{line}");
    }
    let mut pairs = 0;
    let mut false_positives = 0;
    let mut closest = (64, String::new());
    for (i, (a, ha)) in originals.iter().enumerate() {
        for (b, hb) in &originals[i + 1..] {
            let distance = (ha ^ hb).count_ones();
            pairs += 1;
            false_positives += usize::from(distance <= NEAR_DUPLICATE_BITS);
            if distance < closest.0 {
                closest = (distance, format!("{a} and {b}"));
            }
        }
    }
    println!(
        "recall {found}/{copies} (farthest copy {worst_copy} bits); false positives {false_positives}/{pairs} pairs of different photographs (closest: {}, {} bits)",
        closest.1, closest.0
    );
    assert_eq!(found, copies);
    assert_eq!(
        false_positives, 0,
        "closest pair: {} at {} bits",
        closest.1, closest.0
    );
}
