//! The near-duplicate index: every compared photo's hashes ([`super::phash`]) in memory, so that
//! "which photos lie within `d` bits of this one" costs a few thousand memory probes among tens
//! of millions of photos, not a scan or a thousand database seeks.
//!
//! Multi-index hashing (Norouzi, Punjani and Fleet, 2012): each 64-bit hash is cut into `m`
//! bands. If two hashes are within `d = q·m + a` bits, then one of the first `a + 1` bands is
//! within `q` bits of the other's, or one of the rest within `q − 1`: otherwise they would differ
//! in at least `(a+1)(q+1) + (m−a−1)q = d + 1` bits. So a lookup visits, in each band's table,
//! every bucket that close to the query's band, and filters what it finds by the whole hash: the
//! answer is exact. Two tables: the whole frames, one entry per photo, and the cropped views,
//! five per photo; [`NearIndex::lookup`] asks each what [`super::phash::distance`] compares.
//!
//! Each band's table is a bucket array sorted by band value (offsets into one array of hashes
//! and one of photos, read sequentially), built at start-up from the database and rebuilt when
//! the entries added since reach an eighth of it; entries added in between sit in small hash
//! maps with the same bands. The database stays the source of truth: `photo_facts.hash_seq` is
//! handed out in commit order (under a counter's lock), so catching up from the last position
//! seen misses nothing and takes nothing twice, in this process and in any other sharing the
//! database. Written here because no crate keeps a Hamming-space index of this shape in memory.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::phash::{HASH_VERSION, PhotoHashes};
use crate::db::Db;
use crate::on_pool;

/// Rows read from the database per query while catching up.
const PAGE: i64 = 20_000;
/// How often every process catches up by itself, so that the index is at most about this much
/// behind the database for any reader that does not catch up first (`near_index_lag_seconds`).
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// Loads the index at start-up, then catches up every [`CATCH_UP_EVERY`]: what other processes
/// sharing the database hashed arrives within about that long, even for readers that do not
/// catch up first (the photo check and lookups do).
pub async fn keep_current(index: std::sync::Arc<NearIndex>, db: Db) {
    let started = Instant::now();
    loop {
        match index.catch_up(&db).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = ?e, "loading the near-duplicate index; trying again");
                tokio::time::sleep(CATCH_UP_EVERY).await;
            }
        }
    }
    let (photos, bytes) = index.size();
    let seconds = started.elapsed().as_secs_f64();
    metrics::gauge!("near_index_load_seconds").set(seconds);
    tracing::info!(photos, bytes, seconds, "near-duplicate index loaded");
    let mut tick = tokio::time::interval(CATCH_UP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = index.catch_up(&db).await {
            tracing::warn!(error = ?e, "catching up the near-duplicate index");
        }
    }
}

/// A photo found near another, by its position in the database (`photo_facts.hash_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub hash_seq: i64,
    pub distance: u32,
}

/// The in-memory index of one process, kept current from the database.
pub struct NearIndex {
    tables: RwLock<Tables>,
    /// One catch-up at a time.
    running: tokio::sync::Mutex<()>,
    /// When the last catch-up that succeeded began.
    caught_up: std::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Tables {
    /// Slot → `hash_seq`.
    photos: Vec<i64>,
    /// The last `hash_seq` read from the database.
    position: i64,
    full: Table,
    crops: Table,
}

impl Default for NearIndex {
    fn default() -> Self {
        NearIndex {
            tables: RwLock::new(Tables::default()),
            running: tokio::sync::Mutex::new(()),
            caught_up: std::sync::Mutex::new(None),
        }
    }
}

impl NearIndex {
    /// Reads the hashes the database has and this index does not yet, in `hash_seq` order. A
    /// caller that needs everything committed before it asked gets that: calls that overlap
    /// wait for one another, and one that began after this call was made suffices.
    pub async fn catch_up(&self, db: &Db) -> anyhow::Result<()> {
        let asked = Instant::now();
        let _running = self.running.lock().await;
        if self.caught_up().is_some_and(|began| began >= asked) {
            return Ok(());
        }
        let began = Instant::now();
        // Everything read is added at once: a start-up load then builds the tables once, instead
        // of growing them page by page.
        let mut photos: Vec<(i64, PhotoHashes)> = Vec::new();
        let mut end = self.read().position;
        loop {
            let rows: Vec<(i64, Option<i64>, Option<Vec<u8>>)> = on_pool!(&db.read, |p| {
                sqlx::query_as(
                    "SELECT hash_seq, hash_version, hashes FROM photo_facts
                     WHERE hash_seq > $1 ORDER BY hash_seq LIMIT $2",
                )
                .bind(end)
                .bind(PAGE)
                .fetch_all(p)
                .await
            })?;
            let Some(&(last, ..)) = rows.last() else {
                break;
            };
            end = last;
            photos.extend(
                rows.iter()
                    .filter(|(_, version, _)| *version == Some(HASH_VERSION))
                    .filter_map(|(seq, _, bytes)| {
                        Some((*seq, PhotoHashes::from_bytes(bytes.as_ref()?)?))
                    }),
            );
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        if end > self.read().position {
            tokio::task::block_in_place(|| self.add(&photos, end));
        }
        *self.caught_up.lock().unwrap_or_else(|e| e.into_inner()) = Some(began);
        let tables = self.read();
        metrics::gauge!("near_index_photos").set(tables.photos.len() as f64);
        metrics::gauge!("near_index_bytes").set(tables.bytes() as f64);
        Ok(())
    }

    fn caught_up(&self) -> Option<Instant> {
        *self.caught_up.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long ago the last successful catch-up began: everything committed before then is in
    /// (`None` until the first, at start-up, is done).
    pub fn lag(&self) -> Option<Duration> {
        self.caught_up().map(|began| began.elapsed())
    }

    /// Adds photos read from the database up to position `end`.
    pub fn add(&self, photos: &[(i64, PhotoHashes)], end: i64) {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let first = tables.photos.len() as u32;
        tables.photos.extend(photos.iter().map(|(seq, _)| *seq));
        let slots = (first..).zip(photos.iter().map(|(_, hashes)| hashes));
        let full = slots.clone().map(|(slot, h)| (h.full(), slot)).collect();
        let crops = slots
            .flat_map(|(slot, h)| h.crops().iter().map(move |crop| (*crop, slot)))
            .collect();
        tables.full.extend(full);
        tables.crops.extend(crops);
        tables.position = tables.position.max(end);
    }

    /// Every indexed photo within `radius` of `hashes` by [`super::phash::distance`], nearest
    /// first, the photo itself included if indexed.
    pub fn lookup(&self, hashes: &PhotoHashes, radius: u32) -> Vec<Match> {
        let tables = self.read();
        let mut best: HashMap<u32, u32> = HashMap::new();
        let mut keep = |slot: u32, distance: u32| {
            let d = best.entry(slot).or_insert(distance);
            *d = (*d).min(distance);
        };
        tables.full.search(hashes.full(), radius, &mut keep);
        tables.crops.search(hashes.full(), radius, &mut keep);
        for crop in hashes.crops() {
            tables.full.search(*crop, radius, &mut keep);
        }
        for turned in hashes.turned() {
            tables.full.search(turned, radius, &mut keep);
        }
        let mut found: Vec<Match> = best
            .into_iter()
            .map(|(slot, distance)| Match {
                hash_seq: tables.photos[slot as usize],
                distance,
            })
            .collect();
        found.sort_by_key(|m| (m.distance, m.hash_seq));
        found
    }

    /// Photos indexed, and the bytes the index holds.
    pub fn size(&self) -> (usize, usize) {
        let tables = self.read();
        (tables.photos.len(), tables.bytes())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Tables {
    fn bytes(&self) -> usize {
        self.photos.capacity() * 8 + self.full.bytes() + self.crops.bytes()
    }
}

/// One multi-index table: built buckets per band, and the entries added since.
#[derive(Default)]
struct Table {
    bands: Vec<(u32, u32)>,
    built: Vec<Built>,
    built_len: usize,
    recent: Vec<FxHashMap<u32, Vec<(u64, u32)>>>,
    recent_len: usize,
}

/// One band's buckets: the entries whose band has value `v` are `hashes[offsets[v]..offsets[v+1]]`
/// (and `slots` alike).
struct Built {
    offsets: Vec<u32>,
    hashes: Vec<u64>,
    slots: Vec<u32>,
}

/// The bands for a table of `n` entries, as (lowest bit, width) from the top bit down: about
/// log2(n) bits each, so that a bucket holds a few entries, in 3 or 4 bands.
fn layout(n: usize) -> Vec<(u32, u32)> {
    let m: u32 = if n >= 1 << 21 { 3 } else { 4 };
    let mut bands = Vec::new();
    let mut top = 64;
    for i in 0..m {
        let width = (top) / (m - i);
        bands.push((top - width, width));
        top -= width;
    }
    bands
}

fn band(hash: u64, (low, width): (u32, u32)) -> u32 {
    ((hash >> low) & ((1u64 << width) - 1)) as u32
}

impl Table {
    /// Adds entries: into the small maps, or, once the entries added since the last build would
    /// reach an eighth of it (and at least 65,536), by building the buckets again with them, so
    /// the maps stay small and each entry is copied a bounded number of times.
    fn extend(&mut self, new: Vec<(u64, u32)>) {
        if self.bands.is_empty() || self.recent_len + new.len() >= (self.built_len / 8).max(1 << 16)
        {
            let mut entries = self.entries();
            entries.extend(new);
            self.rebuild(entries);
            return;
        }
        for (i, map) in self.recent.iter_mut().enumerate() {
            for &(hash, slot) in &new {
                map.entry(band(hash, self.bands[i]))
                    .or_default()
                    .push((hash, slot));
            }
        }
        self.recent_len += new.len();
    }

    fn entries(&self) -> Vec<(u64, u32)> {
        let mut entries = Vec::with_capacity(self.built_len + self.recent_len);
        if let Some(first) = self.built.first() {
            entries.extend(
                first
                    .hashes
                    .iter()
                    .copied()
                    .zip(first.slots.iter().copied()),
            );
        }
        if let Some(first) = self.recent.first() {
            entries.extend(first.values().flatten().copied());
        }
        entries
    }

    /// Builds every band's buckets over `entries` by counting sort, with bands fit for its size.
    fn rebuild(&mut self, entries: Vec<(u64, u32)>) {
        self.bands = layout(entries.len());
        self.built = self
            .bands
            .iter()
            .map(|&b| {
                let mut offsets = vec![0u32; (1usize << b.1) + 1];
                for (hash, _) in &entries {
                    offsets[band(*hash, b) as usize + 1] += 1;
                }
                for v in 1..offsets.len() {
                    offsets[v] += offsets[v - 1];
                }
                let mut next = offsets.clone();
                let mut hashes = vec![0u64; entries.len()];
                let mut slots = vec![0u32; entries.len()];
                for &(hash, slot) in &entries {
                    let at = &mut next[band(hash, b) as usize];
                    hashes[*at as usize] = hash;
                    slots[*at as usize] = slot;
                    *at += 1;
                }
                Built {
                    offsets,
                    hashes,
                    slots,
                }
            })
            .collect();
        self.built_len = entries.len();
        self.recent = vec![FxHashMap::default(); self.bands.len()];
        self.recent_len = 0;
    }

    /// Calls `found(slot, distance)` for every entry within `radius` of `hash` (an entry close in
    /// several bands more than once).
    fn search(&self, hash: u64, radius: u32, found: &mut impl FnMut(u32, u32)) {
        let m = self.bands.len() as u32;
        if m == 0 {
            return;
        }
        let (q, a) = (radius / m, radius % m);
        for (i, &b) in self.bands.iter().enumerate() {
            let band_radius = if i as u32 <= a {
                Some(q)
            } else {
                q.checked_sub(1)
            };
            let Some(band_radius) = band_radius else {
                continue;
            };
            let built = &self.built[i];
            let recent = &self.recent[i];
            let mut values = Vec::with_capacity(256);
            each_within(band(hash, b), b.1, band_radius, 0, &mut |v| values.push(v));
            // Ascending, so neighbouring buckets share cache lines; and each bucket's offsets and
            // entries are prefetched a few probes ahead, so the memory reads of a lookup overlap
            // instead of each waiting for the last: at tens of millions of entries nearly every
            // probe misses the cache, and that wait is most of a lookup.
            values.sort_unstable();
            for (j, &value) in values.iter().enumerate() {
                if let Some(&ahead) = values.get(j + 2 * PREFETCH_AHEAD) {
                    prefetch(&built.offsets, ahead as usize);
                }
                if let Some(&ahead) = values.get(j + PREFETCH_AHEAD) {
                    prefetch(&built.hashes, built.offsets[ahead as usize] as usize);
                }
                let (start, end) = (
                    built.offsets[value as usize] as usize,
                    built.offsets[value as usize + 1] as usize,
                );
                for (at, h) in built.hashes[start..end].iter().enumerate() {
                    let distance = (h ^ hash).count_ones();
                    if distance <= radius {
                        found(built.slots[start + at], distance);
                    }
                }
                if !recent.is_empty() {
                    for (h, slot) in recent.get(&value).into_iter().flatten() {
                        let distance = (h ^ hash).count_ones();
                        if distance <= radius {
                            found(*slot, distance);
                        }
                    }
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        let built: usize = self
            .built
            .iter()
            .map(|b| b.offsets.capacity() * 4 + b.hashes.capacity() * 8 + b.slots.capacity() * 4)
            .sum();
        // A map entry: its key, the vector's header, and its share of the table's slack.
        let recent: usize = self
            .recent
            .iter()
            .map(|m| m.capacity() * 40 + m.values().map(|v| v.capacity() * 16).sum::<usize>())
            .sum();
        built + recent
    }
}

/// How many probes ahead a bucket's entries are prefetched (its offsets twice as far).
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading `slice[index]` into the cache, if it is in the slice.
#[inline]
fn prefetch<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = slice.get(index) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // A prefetch is a hint: it never faults and changes nothing but the cache.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((item as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}

/// Calls `visit` with `value` and every value of `width` bits that differs from it in at most
/// `radius` of the bits from `from` up, each once.
fn each_within(value: u32, width: u32, radius: u32, from: u32, visit: &mut impl FnMut(u32)) {
    visit(value);
    if radius == 0 {
        return;
    }
    for bit in from..width {
        each_within(value ^ (1 << bit), width, radius - 1, bit + 1, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::phash::distance;

    fn rng(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// A photo's hashes: random frames, with crops a few bits from the frame, as real views are.
    fn photo(next: &mut impl FnMut() -> u64) -> PhotoHashes {
        let full = next();
        let mut views = [full; 6];
        for view in &mut views[1..] {
            for _ in 0..(next() % 8) {
                *view ^= 1 << (next() % 64);
            }
        }
        PhotoHashes { views }
    }

    fn near(of: &PhotoHashes, bits: u64, next: &mut impl FnMut() -> u64) -> PhotoHashes {
        let mut copy = *of;
        for view in &mut copy.views {
            for _ in 0..bits {
                *view ^= 1 << (next() % 64);
            }
        }
        copy
    }

    /// The index finds exactly what comparing with every photo finds, before and after its
    /// buckets are rebuilt, for copies near the radius and for unrelated photos.
    #[test]
    fn lookups_equal_a_scan() {
        let mut next = rng(0x9E37_79B9_7F4A_7C15);
        let index = NearIndex::default();
        let mut stored: Vec<(i64, PhotoHashes)> = Vec::new();
        for round in 0..3 {
            // Rounds of 14,000 photos: the crops table (5 per photo) passes 65,536 entries and
            // is rebuilt in each; the whole frames stay in the recent maps.
            let batch: Vec<(i64, PhotoHashes)> = (0..14_000)
                .map(|i| ((round * 14_000 + i + 1) as i64, photo(&mut next)))
                .collect();
            index.add(&batch, batch.last().unwrap().0);
            stored.extend(batch);
            for radius in [4, 8, 12] {
                for q in 0..30 {
                    let query = if q % 2 == 0 {
                        let i = (next() % stored.len() as u64) as usize;
                        near(
                            &stored[i].1,
                            next() % (u64::from(radius) / 2 + 2),
                            &mut next,
                        )
                    } else {
                        photo(&mut next)
                    };
                    let mut expected: Vec<Match> = stored
                        .iter()
                        .map(|(seq, h)| Match {
                            hash_seq: *seq,
                            distance: distance(&query, h),
                        })
                        .filter(|m| m.distance <= radius)
                        .collect();
                    expected.sort_by_key(|m| (m.distance, m.hash_seq));
                    assert_eq!(index.lookup(&query, radius), expected, "radius {radius}");
                }
            }
        }
    }

    #[test]
    fn bands_cover_the_hash() {
        for n in [0, 1 << 21] {
            let bands = layout(n);
            assert_eq!(bands.iter().map(|b| b.1).sum::<u32>(), 64);
            let hash = 0xF0E1_D2C3_B4A5_9687u64;
            let rebuilt = bands
                .iter()
                .fold(0u64, |h, &b| h | u64::from(band(hash, b)) << b.0);
            assert_eq!(rebuilt, hash);
        }
    }
}
