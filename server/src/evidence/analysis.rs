//! What a photo's bytes say, worked out on a blocking thread under strict limits: its type, its
//! EXIF (time with offset, GPS, make and model, orientation), a correctly oriented thumbnail of at
//! most 320 px, and the hashes that find its copies ([`super::phash`]). Anything a file can do wrong (a decompression bomb,
//! a truncated or corrupt file, a declared size of 60000×60000) becomes an "undecodable" fact with
//! its reason, never a crash or an unbounded allocation.
//!
//! JPEGs, nearly every phone photo, are decoded by libjpeg-turbo (through mozjpeg, built from
//! source by its crate) with DCT scaling: at 1/2 to 1/8 of full size, just large enough for the
//! thumbnail, which skips most of the decoding work. Other types go through the image crate.

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use image::{DynamicImage, ImageFormat, RgbImage};

use super::phash::{self, PhotoHashes};

/// The long side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 320;
/// Larger declared images are refused before decoding: 250 megapixels is beyond any phone.
const MAX_DECLARED_PIXELS: u64 = 250_000_000;
/// What the image crate may allocate for one decode (PNG, WebP).
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Smaller images are not photos of a house: a tracking pixel, a placeholder, a forgery's shortcut.
const MIN_SIDE: u32 = 32;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Exif {
    /// DateTimeOriginal as the camera wrote it (local time, `YYYY-MM-DDTHH:MM:SS`).
    pub taken_at: Option<String>,
    /// OffsetTimeOriginal (`+08:00`), when the camera wrote one.
    pub offset: Option<String>,
    /// WGS-84 latitude and longitude.
    pub gps: Option<(f64, f64)>,
    pub make: Option<String>,
    pub model: Option<String>,
    /// 1 to 8, as EXIF defines it.
    pub orientation: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Decoded: a thumbnail, and the hashes that find copies of it, or why it cannot be
    /// compared with other photos (too flat).
    Decoded {
        thumbnail: Vec<u8>,
        hashes: Result<PhotoHashes, String>,
    },
    /// Kept as evidence, but its pixels could not be read (HEIC, which nothing here decodes).
    NotDecoded(String),
    /// The bytes are not a readable image; why.
    Undecodable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Full-size dimensions as the file declares them, before orientation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub exif: Exif,
    pub outcome: Outcome,
}

/// The facts of the photo in the file at `path`, read through a small buffer: a 25 MiB photo is
/// never held whole in memory.
pub fn analyse_file(path: &Path, content_type: &str) -> Facts {
    match std::fs::File::open(path) {
        Ok(file) => analyse_source(file, content_type),
        Err(e) => Facts {
            width: None,
            height: None,
            exif: Exif::default(),
            outcome: Outcome::Undecodable(format!("the stored file cannot be read: {e}")),
        },
    }
}

pub fn analyse(bytes: &[u8], content_type: &str) -> Facts {
    analyse_source(Cursor::new(bytes), content_type)
}

fn analyse_source<R: Read + Seek>(mut source: R, content_type: &str) -> Facts {
    let exif = read_exif(&mut source, content_type);
    let mut facts = Facts {
        width: None,
        height: None,
        exif,
        outcome: Outcome::Undecodable(String::new()),
    };
    let decoded = match content_type {
        "image/jpeg" => decode_jpeg(&mut source, &mut facts),
        "image/png" => decode_other(&mut source, ImageFormat::Png, &mut facts),
        "image/webp" => decode_other(&mut source, ImageFormat::WebP, &mut facts),
        "image/heic" | "image/heif" => {
            facts.outcome =
                Outcome::NotDecoded("HEIC is kept and its EXIF read, but not decoded".to_owned());
            return facts;
        }
        other => Err(format!("{other} is not a photo type this server reads")),
    };
    facts.outcome = match decoded {
        Ok(image) => {
            let image = orient(image, facts.exif.orientation);
            Outcome::Decoded {
                hashes: phash::hashes(&image),
                thumbnail: thumbnail(&image),
            }
        }
        Err(why) => Outcome::Undecodable(why),
    };
    facts
}

fn check_size(width: u32, height: u32) -> Result<(), String> {
    if u64::from(width) * u64::from(height) > MAX_DECLARED_PIXELS {
        return Err(format!(
            "declares {width}×{height} pixels, more than any camera makes"
        ));
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(format!(
            "{width}×{height} pixels is too small to be a photo"
        ));
    }
    Ok(())
}

/// The TIFF data of a JPEG's EXIF segment (APP1 starting `Exif\0\0`), from the segments before
/// the first start-of-scan; `None` if there is none or the headers are malformed (the decoder
/// then says what is wrong with the file).
fn jpeg_exif_segment<R: Read>(source: &mut R) -> Option<Vec<u8>> {
    let mut marker = [0u8; 2];
    source.read_exact(&mut marker).ok()?;
    if marker != [0xFF, 0xD8] {
        return None;
    }
    loop {
        source.read_exact(&mut marker).ok()?;
        if marker[0] != 0xFF {
            return None;
        }
        match marker[1] {
            // Fill bytes before a marker.
            0xFF => continue,
            // Start of scan or end of image: no EXIF in the headers.
            0xDA | 0xD9 => return None,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let mut length = [0u8; 2];
        source.read_exact(&mut length).ok()?;
        let length = usize::from(u16::from_be_bytes(length)).checked_sub(2)?;
        let mut segment = vec![0u8; length];
        source.read_exact(&mut segment).ok()?;
        if marker[1] == 0xE1 && segment.starts_with(b"Exif\0\0") {
            segment.drain(..6);
            return Some(segment);
        }
    }
}

/// libjpeg treats a file cut short as a warning and fills the rest with grey; a phone always
/// writes the end marker, so a main image (after its last start-of-scan) without one was cut.
fn truncated<R: Read + Seek>(source: &mut R) -> std::io::Result<bool> {
    // Nearly every file ends with its end marker (an embedded EXIF thumbnail's cannot be last).
    let len = source.seek(SeekFrom::End(0))?;
    let tail_len = len.min(4096);
    source.seek(SeekFrom::End(-(tail_len as i64)))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    source.take(tail_len).read_to_end(&mut tail)?;
    let end = tail.len() - tail.iter().rev().take_while(|b| **b == 0).count();
    if tail[..end].ends_with(&[0xFF, 0xD9]) {
        return Ok(false);
    }
    // Otherwise: is there an end marker after the last start-of-scan?
    source.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let (mut previous, mut scanning, mut ended) = (0u8, false, false);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        for &byte in chunk {
            if previous == 0xFF && byte == 0xDA {
                (scanning, ended) = (true, false);
            } else if previous == 0xFF && byte == 0xD9 && scanning {
                ended = true;
            }
            previous = byte;
        }
        let n = chunk.len();
        reader.consume(n);
    }
    Ok(!ended)
}

fn decode_jpeg<R: Read + Seek>(source: &mut R, facts: &mut Facts) -> Result<DynamicImage, String> {
    match truncated(source) {
        Ok(false) => {}
        Ok(true) => return Err("the JPEG is cut short: its image data has no end".to_owned()),
        Err(e) => return Err(format!("the file cannot be read: {e}")),
    }
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    let reader = BufReader::with_capacity(64 * 1024, source);
    // libjpeg reports fatal errors by unwinding out of its error handler.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<(u32, u32, RgbImage), String> {
            let mut decompress = mozjpeg::Decompress::with_markers(&[])
                .from_reader(reader)
                .map_err(|e| format!("not a readable JPEG: {e}"))?;
            let (width, height) = decompress.size();
            let (width, height) = (width as u32, height as u32);
            check_size(width, height)?;
            decompress.scale(scale_for(width.max(height)));
            let mut started = decompress
                .rgb()
                .map_err(|e| format!("not a readable JPEG: {e}"))?;
            let (w, h) = (started.width() as u32, started.height() as u32);
            let pixels: Vec<u8> = started
                .read_scanlines()
                .map_err(|e| format!("the JPEG's image data is corrupt: {e}"))?;
            started
                .finish()
                .map_err(|e| format!("the JPEG's image data is corrupt: {e}"))?;
            let image = RgbImage::from_raw(w, h, pixels)
                .ok_or("the JPEG decoded to fewer pixels than it declares")?;
            Ok((width, height, image))
        },
    ));
    match decoded {
        Ok(Ok((width, height, image))) => {
            facts.width = Some(width);
            facts.height = Some(height);
            Ok(DynamicImage::ImageRgb8(image))
        }
        Ok(Err(why)) => Err(why),
        Err(_) => Err("not a readable JPEG: the decoder gave up on it".to_owned()),
    }
}

/// The DCT scaling numerator (over 8) that leaves the long side at least a thumbnail's size.
fn scale_for(long_side: u32) -> u8 {
    let numerator = (THUMBNAIL_SIZE * 8).div_ceil(long_side.max(1));
    numerator.clamp(1, 8) as u8
}

fn decode_other<R: Read + Seek>(
    source: &mut R,
    format: ImageFormat,
    facts: &mut Facts,
) -> Result<DynamicImage, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("not a readable image: {e}");
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| unreadable(&e))?;
    let mut reader = image::ImageReader::with_format(BufReader::new(&mut *source), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits.max_image_width = Some(20_000);
    limits.max_image_height = Some(20_000);
    reader.limits(limits.clone());
    let (width, height) = reader.into_dimensions().map_err(|e| unreadable(&e))?;
    check_size(width, height)?;
    facts.width = Some(width);
    facts.height = Some(height);
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| unreadable(&e))?;
    let mut reader = image::ImageReader::with_format(BufReader::new(&mut *source), format);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| unreadable(&e))?;
    // Full-size pixels are only needed small from here on.
    Ok(image.thumbnail(THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
}

/// Turns the pixels the way the camera says it was held.
fn orient(image: DynamicImage, orientation: Option<u16>) -> DynamicImage {
    match orientation {
        Some(2) => image.fliph(),
        Some(3) => image.rotate180(),
        Some(4) => image.flipv(),
        Some(5) => image.rotate90().fliph(),
        Some(6) => image.rotate90(),
        Some(7) => image.rotate270().fliph(),
        Some(8) => image.rotate270(),
        _ => image,
    }
}

fn thumbnail(image: &DynamicImage) -> Vec<u8> {
    let small = image.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE).to_rgb8();
    let mut out = Vec::with_capacity(32 * 1024);
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    // Encoding an in-memory RGB image into a Vec cannot fail.
    let _ = small.write_with_encoder(encoder);
    out
}

fn read_exif<R: Read + Seek>(source: &mut R, content_type: &str) -> Exif {
    if source.seek(SeekFrom::Start(0)).is_err() {
        return Exif::default();
    }
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let parsed = if content_type == "image/jpeg" {
        // kamadak-exif's container reader reads a JPEG without EXIF to its end looking for it;
        // EXIF can only come before the image data, so only the headers are walked.
        match jpeg_exif_segment(&mut BufReader::new(source)) {
            Some(tiff) => reader.read_raw(tiff),
            None => return Exif::default(),
        }
    } else {
        reader.read_from_container(&mut BufReader::new(source))
    };
    let parsed = parsed.or_else(|e| e.distill_partial_result(|_| {}));
    let Ok(parsed) = parsed else {
        return Exif::default();
    };
    let text = |tag: exif::Tag| {
        parsed
            .get_field(tag, exif::In::PRIMARY)
            .and_then(|f| match &f.value {
                exif::Value::Ascii(parts) => parts
                    .first()
                    .map(|p| String::from_utf8_lossy(p).trim().to_owned()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let taken_at = text(exif::Tag::DateTimeOriginal).and_then(|t| exif_time(&t));
    let offset = text(exif::Tag::OffsetTimeOriginal).filter(|o| valid_offset(o));
    let orientation = parsed
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|o| u16::try_from(o).ok())
        .filter(|o| (1..=8).contains(o));
    let coordinate = |value: exif::Tag, reference: exif::Tag, negative: &str| {
        let field = parsed.get_field(value, exif::In::PRIMARY)?;
        let exif::Value::Rational(parts) = &field.value else {
            return None;
        };
        let [d, m, s] = parts.get(..3)? else {
            return None;
        };
        let degrees = d.to_f64() + m.to_f64() / 60.0 + s.to_f64() / 3600.0;
        let sign = if text(reference).as_deref() == Some(negative) {
            -1.0
        } else {
            1.0
        };
        degrees.is_finite().then_some(sign * degrees)
    };
    let gps = coordinate(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, "S")
        .zip(coordinate(
            exif::Tag::GPSLongitude,
            exif::Tag::GPSLongitudeRef,
            "W",
        ))
        .filter(|(lat, lon)| lat.abs() <= 90.0 && lon.abs() <= 180.0 && (*lat, *lon) != (0.0, 0.0));
    Exif {
        taken_at,
        offset,
        gps,
        make: text(exif::Tag::Make),
        model: text(exif::Tag::Model),
        orientation,
    }
}

/// `2020:03:02 10:15:00` → `2020-03-02T10:15:00`, if it is a real time.
fn exif_time(text: &str) -> Option<String> {
    let time = chrono::NaiveDateTime::parse_from_str(text, "%Y:%m:%d %H:%M:%S").ok()?;
    Some(time.format("%Y-%m-%dT%H:%M:%S").to_string())
}

fn valid_offset(text: &str) -> bool {
    text.parse::<chrono::FixedOffset>().is_ok()
}
