//! The hashes that find a copied photo: a 64-bit DCT sign hash of six views of the frame (the
//! whole of it, the frame less 5 % off each edge, and less 5 % all round), so that a copy cropped
//! off any one edge or centred lands on a view of its original instead of drifting half the hash
//! away, and turns of 90°, 180° and 270° worked out from the bits alone.
//!
//! Each bit is the sign of one of the lowest 8×8 DCT coefficients of the view shrunk to 32×32
//! grey pixels (the DC term, always positive, is left 0). Signs, unlike bits against a mean or
//! median, do not move when the picture is brightened, darkened or its contrast changed, and
//! turning the picture only permutes them and flips some: turning a square grid by 90° maps
//! coefficient (u, v) to ±(v, u). So the turned hashes of a photo cost nothing, and the distance
//! between a turned hash and another is the distance between the hash and the other turned
//! back: the comparison is symmetric. Written here because no image-hashing crate exposes the
//! coefficients' signs or a rotation of its hashes (image_hasher thresholds against the mean or
//! median).
//!
//! Two photos are near-duplicates when [`distance`] is at most the threshold: the whole frame of
//! either against any view of the other, or either's whole frame turned against the other's.

use image::GrayImage;
use image::imageops::FilterType;

/// Bumped whenever the hashes change meaning: photos hashed by an older scheme are hashed again
/// by a job, and their findings judged again.
pub const HASH_VERSION: i64 = 2;

/// Photos at most this far apart ([`distance`]) are near-duplicates. Measured on 35 real
/// photographs (tests/tests/phash.rs prints the table): copies recompressed at quality 60,
/// resized, cropped 5 % off any edge or 10 % centred, brightened, darkened or turned lie 0–5
/// bits from their original, and the closest two different photographs 16 apart. 8 leaves a
/// margin on both sides, and is the widest radius the index answers within 2 ms among ten
/// million photos (evidence/index.rs).
pub const NEAR_DUPLICATE_BITS: u32 = 8;

/// The views, in the order of [`PhotoHashes::views`]: `(left, top, right, bottom)` margins cut
/// off, in twentieths of the width and height.
pub const VIEWS: [(&str, [u32; 4]); 6] = [
    ("full", [0, 0, 0, 0]),
    ("left", [1, 0, 0, 0]),
    ("right", [0, 0, 1, 0]),
    ("top", [0, 1, 0, 0]),
    ("bottom", [0, 0, 0, 1]),
    ("centre", [1, 1, 1, 1]),
];

/// Side of the grey grid a view is shrunk to before its DCT.
const GRID: usize = 32;
/// The lowest `LOW`×`LOW` coefficients make the hash.
const LOW: usize = 8;
/// A view whose low frequencies vary less than this (RMS, in grey levels of 255) is too flat to
/// compare: a blank wall, a covered lens, fog. Its signs are noise, and two such photos of
/// different houses would match. None of the 35 sample photographs, nor any copy of them
/// (darkened ones included), falls under it (tests/tests/phash.rs).
const MIN_CONTRAST: f32 = 1.0;

/// A photo's hashes, as stored (`photo_facts.hashes`, [`PhotoHashes::to_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoHashes {
    /// One per entry of [`VIEWS`]; the first is the whole frame.
    pub views: [u64; 6],
}

impl PhotoHashes {
    pub fn full(&self) -> u64 {
        self.views[0]
    }

    /// The cropped views: every view but the whole frame.
    pub fn crops(&self) -> &[u64] {
        &self.views[1..]
    }

    /// The whole frame turned by 90°, 180° and 270° clockwise.
    pub fn turned(&self) -> [u64; 3] {
        let once = turn(self.full());
        let twice = turn(once);
        [once, twice, turn(twice)]
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.views.iter().flat_map(|h| h.to_be_bytes()).collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<PhotoHashes> {
        if bytes.len() != 8 * VIEWS.len() {
            return None;
        }
        let mut views = [0u64; 6];
        for (view, chunk) in views.iter_mut().zip(bytes.chunks_exact(8)) {
            *view = u64::from_be_bytes(chunk.try_into().ok()?);
        }
        Some(PhotoHashes { views })
    }
}

/// How far apart two photos are as copies of one another: the fewest differing bits between the
/// whole frame of either and any view of the other, or between either's whole frame turned and
/// the other's. Symmetric.
pub fn distance(a: &PhotoHashes, b: &PhotoHashes) -> u32 {
    let bits = |x: u64, y: u64| (x ^ y).count_ones();
    let a_in_b = b.views.iter().map(|v| bits(a.full(), *v)).min();
    let b_in_a = a.crops().iter().map(|v| bits(b.full(), *v)).min();
    let turned = a.turned().into_iter().map(|t| bits(t, b.full())).min();
    [a_in_b, b_in_a, turned]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(64)
}

/// The hashes of an upright picture, or why it cannot be judged.
pub fn hashes(image: &image::DynamicImage) -> Result<PhotoHashes, String> {
    let grey = image.to_luma8();
    let (w, h) = grey.dimensions();
    let mut views = [0u64; 6];
    for (slot, (name, [left, top, right, bottom])) in views.iter_mut().zip(VIEWS) {
        let (x0, y0) = (w * left / 20, h * top / 20);
        let (x1, y1) = (w - w * right / 20, h - h * bottom / 20);
        let view = image::imageops::crop_imm(&grey, x0, y0, x1 - x0, y1 - y0).to_image();
        let (hash, contrast) = sign_hash(&view);
        if contrast < MIN_CONTRAST {
            return Err(format!(
                "too flat to compare with other photos (the {name} view varies by {contrast:.2} grey levels)"
            ));
        }
        *slot = hash;
    }
    Ok(PhotoHashes { views })
}

/// The bit of coefficient (u, v): u counts horizontal frequency, v vertical; bit 63 is (0, 0).
fn bit(u: usize, v: usize) -> u32 {
    (63 - (v * LOW + u)) as u32
}

/// The hash of a view and the RMS of its low-frequency coefficients (its contrast, in grey
/// levels).
fn sign_hash(view: &GrayImage) -> (u64, f32) {
    let grid = image::imageops::resize(view, GRID as u32, GRID as u32, FilterType::Triangle);
    let cosines = cosine_table();
    // Rows first: rows[y][u] = Σx pixel(x, y) cos(π(2x+1)u / 2N).
    let mut rows = [[0f32; LOW]; GRID];
    for (y, row) in rows.iter_mut().enumerate() {
        for (u, out) in row.iter_mut().enumerate() {
            *out = (0..GRID)
                .map(|x| f32::from(grid.get_pixel(x as u32, y as u32).0[0]) * cosines[u][x])
                .sum();
        }
    }
    let mut hash = 0u64;
    let mut energy = 0f64;
    for (v, column_cosines) in cosines.iter().enumerate() {
        for u in 0..LOW {
            let coefficient: f32 = rows
                .iter()
                .zip(column_cosines)
                .map(|(row, cosine)| row[u] * cosine)
                .sum();
            if (u, v) == (0, 0) {
                continue;
            }
            energy += f64::from(coefficient) * f64::from(coefficient);
            if coefficient > 0.0 {
                hash |= 1 << bit(u, v);
            }
        }
    }
    // Orthonormal scaling of the unnormalised sums: 2/N for AC terms on a square grid.
    let rms = (energy / (LOW * LOW - 1) as f64).sqrt() * 2.0 / GRID as f64;
    (hash, rms as f32)
}

fn cosine_table() -> &'static [[f32; GRID]; LOW] {
    static TABLE: std::sync::LazyLock<[[f32; GRID]; LOW]> = std::sync::LazyLock::new(|| {
        let mut table = [[0f32; GRID]; LOW];
        for (k, row) in table.iter_mut().enumerate() {
            for (x, c) in row.iter_mut().enumerate() {
                *c = (std::f64::consts::PI * (2 * x + 1) as f64 * k as f64 / (2 * GRID) as f64)
                    .cos() as f32;
            }
        }
        table
    });
    &TABLE
}

/// The hash of the picture turned 90° clockwise: the pixel at (x, y) comes from (y, N−1−x), so
/// coefficient (u, v) becomes (−1)^u times coefficient (v, u) of the original.
pub fn turn(hash: u64) -> u64 {
    let mut out = 0u64;
    for v in 0..LOW {
        for u in 0..LOW {
            if (u, v) == (0, 0) {
                continue;
            }
            let sign = hash >> bit(v, u) & 1;
            let flipped = if u % 2 == 1 { sign ^ 1 } else { sign };
            out |= flipped << bit(u, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};

    /// A picture with structure at every scale, from a fixed seed.
    fn picture(w: u32, h: u32, seed: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let s = seed as f32;
            let v = 128.0
                + 60.0 * (fx * (3.0 + s) + fy * 2.0).sin()
                + 40.0 * (fy * (7.0 + s * 0.5) - fx).cos()
                + 20.0 * (fx * fy * 31.0 + s).sin();
            let g = v.clamp(0.0, 255.0) as u8;
            image::Rgb([g, g.wrapping_add(x as u8 / 4), g / 2])
        }))
    }

    #[test]
    fn turning_the_picture_turns_the_hash() {
        let original = picture(640, 480, 1);
        let hashes = super::hashes(&original).unwrap();
        for (turned, expected) in [
            (original.rotate90(), hashes.turned()[0]),
            (original.rotate180(), hashes.turned()[1]),
            (original.rotate270(), hashes.turned()[2]),
        ] {
            let actual = super::hashes(&turned).unwrap().full();
            assert!(
                (actual ^ expected).count_ones() <= 2,
                "{actual:016x} against {expected:016x}"
            );
        }
        assert_eq!(turn(turn(turn(turn(hashes.full())))), hashes.full());
    }

    #[test]
    fn distance_is_symmetric_and_finds_crops_of_either() {
        let a = super::hashes(&picture(640, 480, 1)).unwrap();
        let b = super::hashes(&picture(640, 480, 2)).unwrap();
        assert_eq!(distance(&a, &b), distance(&b, &a));
        assert_eq!(distance(&a, &a), 0);
        let cropped = super::hashes(&picture(640, 480, 1).crop_imm(32, 0, 608, 480)).unwrap();
        assert!(distance(&cropped, &a) <= 3, "{}", distance(&cropped, &a));
        assert_eq!(distance(&cropped, &a), distance(&a, &cropped));
    }

    #[test]
    fn flat_pictures_are_not_compared() {
        let grey =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90])));
        assert!(super::hashes(&grey).unwrap_err().contains("too flat"));
    }

    #[test]
    fn hashes_survive_storage() {
        let hashes = super::hashes(&picture(400, 300, 3)).unwrap();
        assert_eq!(PhotoHashes::from_bytes(&hashes.to_bytes()), Some(hashes));
        assert_eq!(PhotoHashes::from_bytes(&[0; 7]), None);
    }
}
