//! Real JPEGs for tests and load: encoded by the image crate from a deterministic scene (sky,
//! a house-like block, textured ground and sensor-like noise), so they decode, vary with the
//! seed, and compress like photographs rather than like flat colour.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// A JPEG of the given size; `seed` changes the scene and the noise.
pub fn jpeg(width: u32, height: u32, seed: u64, quality: u8) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let house_left = rng.random_range(0..width / 2);
    let house_top = height / 3 + rng.random_range(0..height / 6);
    let roof: [u8; 3] = [rng.random(), rng.random(), rng.random()];
    let noise = 24;
    let img = RgbImage::from_fn(width, height, |x, y| {
        let base = if y < height / 3 {
            [120, 160u8.saturating_add((y * 60 / height) as u8), 230]
        } else if x >= house_left
            && x < house_left + width / 3
            && y >= house_top
            && y < house_top + height / 3
        {
            roof
        } else {
            let t = ((x / 7 + y / 5) % 17) as u8;
            [90 + t * 3, 70 + t * 2, 40 + t]
        };
        let mut px = [0u8; 3];
        for (c, b) in px.iter_mut().zip(base) {
            *c = (b as i32 + rng.random_range(-noise..=noise)).clamp(0, 255) as u8;
        }
        Rgb(px)
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&img)
        .expect("encoding a JPEG");
    out
}

/// A small JPEG whose coarse structure (a random 8×8 grid of grey levels) is its own, so that
/// perceptual hashes of different seeds lie far apart, as those of different houses do. The
/// scenes of [`jpeg`] share their sky and ground, and hash close together.
pub fn unlike_jpeg(seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cells: Vec<u8> = (0..64).map(|_| rng.random()).collect();
    let img = RgbImage::from_fn(64, 64, |x, y| {
        let level = cells[(y / 8 * 8 + x / 8) as usize];
        Rgb([level, level, level])
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("encoding a JPEG");
    out
}

/// A small JPEG, quick to make, distinct per seed.
pub fn small_jpeg(seed: u64) -> Vec<u8> {
    jpeg(64, 48, seed, 85)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A JPEG of about `target_bytes`: the scene is mostly noise, so its size grows with the pixel
/// count at a steady rate; measure a small one, scale, then correct once at full size.
pub fn jpeg_of_about(target_bytes: usize, seed: u64) -> Vec<u8> {
    let bytes_per_pixel = jpeg(400, 300, 0, 90).len() as f64 / 120_000.0;
    let (w, h) = four_by_three(target_bytes as f64 / bytes_per_pixel);
    let measured = jpeg(w, h, 0, 90).len() as f64;
    let (w, h) = four_by_three((w * h) as f64 * target_bytes as f64 / measured);
    jpeg(w, h, seed, 90)
}

/// 4:3 dimensions with about `pixels` pixels (at least 64×48, which the scene needs).
fn four_by_three(pixels: f64) -> (u32, u32) {
    let width = (pixels * 4.0 / 3.0).sqrt().max(64.0) as u32;
    (width, (width * 3 / 4).max(48))
}

/// A distinct, still valid copy of a JPEG: a COM segment carrying `label` inserted right after
/// the SOI marker, so each copy has its own hash for the cost of a copy.
pub fn distinct_copy(jpeg: &[u8], label: &str) -> Vec<u8> {
    let segment_len = u16::try_from(label.len() + 2).expect("a short label");
    let mut bytes = Vec::with_capacity(jpeg.len() + label.len() + 4);
    bytes.extend_from_slice(&jpeg[..2]); // SOI: FF D8
    bytes.extend_from_slice(&[0xFF, 0xFE]);
    bytes.extend_from_slice(&segment_len.to_be_bytes());
    bytes.extend_from_slice(label.as_bytes());
    bytes.extend_from_slice(&jpeg[2..]);
    bytes
}

/// EXIF as a phone writes it: the demo county's writer (one writer for both).
pub use huikan_server::demo::{Exif, with_exif};

/// A picture as a JPEG at `quality`.
pub fn encode(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encoding a JPEG");
    out
}

/// The real photographs the test script fetched into `HUIKAN_TEST_PHOTOS`, by name, at most
/// `max_side` pixels on their long side; `None` (skipped, with a warning) where it is unset
/// outside CI.
pub fn originals(max_side: u32) -> Option<Vec<(String, RgbImage)>> {
    let dir = crate::server::installed("HUIKAN_TEST_PHOTOS", "the test photographs")?;
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("reading HUIKAN_TEST_PHOTOS")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    paths.sort();
    Some(
        paths
            .into_iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let image = image::open(&p).expect("a sample photograph").to_rgb8();
                // The wallpapers are up to 4K.
                let image = if image.width().max(image.height()) > max_side {
                    image::DynamicImage::ImageRgb8(image)
                        .thumbnail(max_side, max_side)
                        .to_rgb8()
                } else {
                    image
                };
                (name, image)
            })
            .collect(),
    )
}

/// The copies a forger would make of a photo, named, as JPEGs.
pub fn transformed(original: &RgbImage) -> Vec<(&'static str, Vec<u8>)> {
    use image::DynamicImage;
    let (w, h) = original.dimensions();
    let decoded = image::load_from_memory(&encode(original, 90))
        .expect("decoding our own JPEG")
        .to_rgb8();
    let resized = DynamicImage::ImageRgb8(original.clone())
        .resize_exact(
            w * 7 / 10,
            h * 7 / 10,
            image::imageops::FilterType::Lanczos3,
        )
        .to_rgb8();
    let crop = |x: u32, y: u32, cw: u32, ch: u32| {
        encode(
            &image::imageops::crop_imm(original, x, y, cw, ch).to_image(),
            90,
        )
    };
    let (dw, dh) = (w / 20, h / 20);
    let scaled = |factor: f32| {
        let mut out = original.clone();
        for pixel in out.pixels_mut() {
            for c in pixel.0.iter_mut() {
                *c = (f32::from(*c) * factor).round().clamp(0.0, 255.0) as u8;
            }
        }
        encode(&out, 90)
    };
    let turned = |image: DynamicImage| encode(&image.to_rgb8(), 90);
    vec![
        ("recompressed at quality 60", encode(&decoded, 60)),
        ("resized to 70 %", encode(&resized, 90)),
        ("5 % cropped off the left", crop(dw, 0, w - dw, h)),
        ("5 % cropped off the right", crop(0, 0, w - dw, h)),
        ("5 % cropped off the top", crop(0, dh, w, h - dh)),
        ("5 % cropped off the bottom", crop(0, 0, w, h - dh)),
        (
            "10 % cropped, centred",
            crop(dw, dh, w - 2 * dw, h - 2 * dh),
        ),
        ("brightened 10 %", scaled(1.1)),
        ("darkened 10 %", scaled(0.9)),
        (
            "turned 90°",
            turned(DynamicImage::ImageRgb8(original.clone()).rotate90()),
        ),
        (
            "turned 180°",
            turned(DynamicImage::ImageRgb8(original.clone()).rotate180()),
        ),
    ]
}
