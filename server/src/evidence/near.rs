//! The near-duplicate index: which stored photos have a perceptual hash within `d` bits of a
//! given one, answered by index probes rather than a scan (multi-index hashing, Norouzi, Punjani
//! and Fleet 2012). The hash is cut into [`BANDS`], each an indexed column of `photo_facts`. If
//! two hashes are within `d = q·m + a` bits (m bands), then one of the first `a + 1` bands is
//! within `q` bits of the query's, or one of the others within `q - 1`: otherwise they would differ
//! in at least `(a+1)(q+1) + (m-a-1)q = d + 1` bits. So a lookup probes each band's index at every
//! value that close to the query's band, and filters what it finds by the whole hash.
//!
//! Written here because no crate indexes Hamming space inside SQLite and PostgreSQL.

use crate::db::Pool;
use crate::error::AppError;

/// The bands as (lowest bit, width), from the top bit down, stored as `phash_band0..3`
/// (`migrations/*/0009`). Four bands of 16 bits: at the default threshold of 12 bits a lookup is
/// 1,108 probes (697 in one band, 137 in each other), where three bands of ~21 bits would need
/// ~12,000; the hashes each probe finds grow with the store (one per 65,536 photos).
pub const BANDS: [(u32, u32); 4] = [(48, 16), (32, 16), (16, 16), (0, 16)];

/// A stored photo whose hash lies near the query's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Near {
    pub sha256: String,
    pub phash: u64,
    pub distance: u32,
}

/// The value of band `i` of a hash, as stored.
pub fn band(hash: u64, i: usize) -> i64 {
    let (low, width) = BANDS[i];
    ((hash >> low) & ((1 << width) - 1)) as i64
}

/// Every band value each band's index must be probed at for a lookup within `distance` bits.
fn probes(hash: u64, distance: u32) -> Vec<Vec<i64>> {
    let m = BANDS.len() as u32;
    let (q, a) = (distance / m, distance % m);
    (0..BANDS.len())
        .map(|i| {
            let radius = if (i as u32) <= a {
                Some(q)
            } else {
                q.checked_sub(1)
            };
            let mut values = Vec::new();
            if let Some(radius) = radius {
                flips(band(hash, i), BANDS[i].1, radius, 0, &mut values);
            }
            values
        })
        .collect()
}

/// Pushes `value` and every value that differs from it in at most `radius` of the bits from
/// `from` up to `width`, each once.
fn flips(value: i64, width: u32, radius: u32, from: u32, out: &mut Vec<i64>) {
    out.push(value);
    if radius == 0 {
        return;
    }
    for bit in from..width {
        flips(value ^ (1 << bit), width, radius - 1, bit + 1, out);
    }
}

/// The stored photos whose hash is within `distance` bits of `hash`, nearest first (the photo
/// with this very hash included).
pub async fn within(pool: &Pool, hash: u64, distance: u32) -> Result<Vec<Near>, AppError> {
    let probes = probes(hash, distance);
    let mut found: Vec<(String, i64)> = match pool {
        // Each band's probe values go in as one JSON array; SQLite seeks its index once per
        // value. The hashes found come back as one JSON row (sqlx hands SQLite rows over one at
        // a time, which costs more than the filtering), are filtered here, and only the few
        // within the distance are looked up by (band, hash) for their photos.
        Pool::Sqlite(p) => {
            let probed = (0..BANDS.len())
                .map(|i| {
                    format!(
                        "SELECT phash FROM photo_facts WHERE phash IS NOT NULL
                         AND phash_band{i} IN (SELECT value FROM json_each(${}))",
                        i + 1
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let sql = format!("SELECT json_group_array(phash) FROM ({probed})");
            let mut query = sqlx::query_scalar(&sql);
            for values in &probes {
                query = query.bind(serde_json::to_string(values).map_err(anyhow::Error::from)?);
            }
            let candidates: String = query.fetch_one(p).await?;
            let candidates: Vec<i64> =
                serde_json::from_str(&candidates).map_err(anyhow::Error::from)?;
            let close: Vec<i64> = candidates
                .into_iter()
                .filter(|c| (*c as u64 ^ hash).count_ones() <= distance)
                .collect();
            if close.is_empty() {
                return Ok(Vec::new());
            }
            let bands: Vec<i64> = close.iter().map(|c| band(*c as u64, 0)).collect();
            sqlx::query_as(
                "SELECT sha256, phash FROM photo_facts
                 WHERE phash_band0 IN (SELECT value FROM json_each($1))
                   AND phash IN (SELECT value FROM json_each($2))",
            )
            .bind(serde_json::to_string(&bands).map_err(anyhow::Error::from)?)
            .bind(serde_json::to_string(&close).map_err(anyhow::Error::from)?)
            .fetch_all(p)
            .await?
        }
        // Each band index holds the hash and the photo (INCLUDE), so PostgreSQL filters by the
        // Hamming distance inside index-only scans.
        Pool::Postgres(p) => {
            let n = BANDS.len();
            let sql = (0..n)
                .map(|i| {
                    format!(
                        "SELECT sha256, phash FROM photo_facts
                         WHERE phash_band{i} = ANY(${}) AND phash IS NOT NULL
                           AND bit_count((phash # ${})::bit(64)) <= ${}",
                        i + 1,
                        n + 1,
                        n + 2
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut query = sqlx::query_as(&sql);
            for values in &probes {
                query = query.bind(values);
            }
            query
                .bind(hash as i64)
                .bind(i64::from(distance))
                .fetch_all(p)
                .await?
        }
    };
    // A photo close in several bands is found by each of their probes.
    found.sort_by_key(|(sha256, phash)| ((*phash as u64 ^ hash).count_ones(), sha256.clone()));
    found.dedup();
    Ok(found
        .into_iter()
        .map(|(sha256, phash)| Near {
            distance: (phash as u64 ^ hash).count_ones(),
            phash: phash as u64,
            sha256,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the distance, every hash within it has a band within that band's probes: the
    /// guarantee the lookup's exactness rests on, checked against hashes at exactly the distance.
    #[test]
    fn every_hash_within_the_distance_shares_a_probed_band_value() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for distance in 0..=14 {
            for _ in 0..300 {
                let hash = next();
                let mut other = hash;
                let mut flipped = 0;
                while flipped < distance {
                    let bit = 1u64 << (next() % 64);
                    if (other ^ hash) & bit == 0 {
                        other ^= bit;
                        flipped += 1;
                    }
                }
                let probes = probes(hash, distance);
                assert!(
                    (0..BANDS.len()).any(|i| probes[i].contains(&band(other, i))),
                    "{hash:016x} and {other:016x}, {distance} bits apart"
                );
            }
        }
    }

    #[test]
    fn probes_count_each_value_once() {
        let probes = probes(0xDEAD_BEEF_0123_4567, 12);
        // 12 = 4·3 + 0: radius 3 in the first band, 2 in the others.
        assert_eq!(probes[0].len(), 1 + 16 + 120 + 560);
        assert_eq!(probes[1].len(), 1 + 16 + 120);
        assert_eq!(probes[3].len(), 1 + 16 + 120);
        let mut unique = probes[0].clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), probes[0].len());
    }

    #[test]
    fn bands_cover_the_hash() {
        let hash = 0xF0E1_D2C3_B4A5_9687u64;
        let rebuilt = (0..BANDS.len()).fold(0u64, |h, i| h | (band(hash, i) as u64) << BANDS[i].0);
        assert_eq!(rebuilt, hash);
    }
}
