//! Copied-photo detection on real photographs (scikit-image's, scikit-learn's and matplotlib's
//! sample data, and the MATE desktop's nature photographs, fetched by the test script into
//! `HUIKAN_TEST_PHOTOS`): every copy a forger would make of an original (recompressed, resized,
//! cropped off any one edge or centred, brightened, darkened, turned) must lie within the
//! threshold of it, and every pair of different originals beyond it. Prints, per transform, the
//! largest distance of a copy, and the smallest distance between different originals.

use huikan_server::evidence::analysis::{self, Outcome};
use huikan_server::evidence::phash::{self, NEAR_DUPLICATE_BITS, PhotoHashes};
use huikan_tests::photos::{originals, transformed};

fn hashes(bytes: &[u8]) -> PhotoHashes {
    match analysis::analyse(bytes, "image/jpeg").outcome {
        Outcome::Decoded {
            hashes: Ok(hashes), ..
        } => hashes,
        other => panic!("not hashed: {other:?}"),
    }
}

/// A photograph's name and hashes, with each of its copies' transform and hashes.
type Hashed = (String, PhotoHashes, Vec<(&'static str, PhotoHashes)>);

#[test]
fn copies_are_near_duplicates_and_different_photographs_are_not() {
    let Some(photos) = originals(1600) else {
        return;
    };
    assert!(photos.len() >= 30, "only {} photographs", photos.len());
    let hashed: Vec<Hashed> = photos
        .iter()
        .map(|(name, image)| {
            let copies = transformed(image)
                .into_iter()
                .map(|(how, bytes)| (how, hashes(&bytes)))
                .collect();
            (
                name.clone(),
                hashes(&huikan_tests::photos::encode(image, 90)),
                copies,
            )
        })
        .collect();

    println!(
        "threshold: {NEAR_DUPLICATE_BITS} bits of 64; {} photographs",
        hashed.len()
    );
    let mut found = 0;
    let mut copies = 0;
    let mut worst_by_transform: Vec<(&str, u32, String)> = Vec::new();
    for (name, original, transformed) in &hashed {
        for (how, copy) in transformed {
            let distance = phash::distance(copy, original);
            copies += 1;
            found += usize::from(distance <= NEAR_DUPLICATE_BITS);
            match worst_by_transform.iter_mut().find(|(h, ..)| h == how) {
                Some(worst) if worst.1 < distance => *worst = (how, distance, name.clone()),
                Some(_) => {}
                None => worst_by_transform.push((how, distance, name.clone())),
            }
        }
    }
    let mut pairs = 0;
    let mut false_positives = Vec::new();
    let mut closest = (64, String::new());
    for (i, (a, ha, _)) in hashed.iter().enumerate() {
        for (b, hb, _) in &hashed[i + 1..] {
            let distance = phash::distance(ha, hb);
            pairs += 1;
            if distance <= NEAR_DUPLICATE_BITS {
                false_positives.push(format!("{a} and {b} at {distance}"));
            }
            if distance < closest.0 {
                closest = (distance, format!("{a} and {b}"));
            }
        }
    }
    println!(
        "| copy | largest distance to its original (photograph) | margin to the closest different pair ({} bits: {}) |",
        closest.0, closest.1
    );
    println!("| --- | --- | --- |");
    for (how, distance, name) in &worst_by_transform {
        println!(
            "| {how} | {distance} ({name}) | {} |",
            i64::from(closest.0) - i64::from(*distance)
        );
    }
    println!(
        "recall {found}/{copies}; false positives {}/{pairs} pairs of different photographs",
        false_positives.len()
    );
    assert!(
        found * 100 >= copies * 99,
        "recall {found}/{copies} is under 99 %"
    );
    assert!(false_positives.is_empty(), "{false_positives:?}");
}
