//! Copied photos through the server's own path: real photographs and every copy a forger would
//! make of them, each sent for a household of its own, judged by the photo check; the lookup
//! answered by a process that hashed nothing itself; and a change of hashing scheme, after which
//! every photo is hashed again and its findings judged again.

use std::time::Duration;

use huikan_server::evidence::phash::NEAR_DUPLICATE_BITS;
use huikan_tests::api::expect_problem;
use huikan_tests::photos::{encode, jpeg, originals, sha256_hex, transformed};
use huikan_tests::{Backend, TestServer, backend_tests};
use serde_json::Value;

use super::evidence::{findings_of, in_seconds, processed, visit_to};

backend_tests!(
    real_copies_are_caught_and_different_photographs_are_not,
    a_photo_hashed_in_one_process_is_found_by_a_lookup_in_another,
    a_new_hashing_scheme_judges_every_photo_again,
);

fn near_findings(visit: &Value) -> Vec<&Value> {
    visit["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter(|f| f["code"] == "photo_near_duplicate")
                .collect()
        })
        .unwrap_or_default()
}

async fn real_copies_are_caught_and_different_photographs_are_not(server: TestServer) {
    let Some(photos) = originals(800) else { return };
    let field = server
        .user("field_staff", &["410327101001", "410327101002"])
        .await;
    let mut sent = Vec::new();
    for (i, (name, image)) in photos.iter().enumerate() {
        let household = format!("410327101001{:04}", i + 1);
        let id = visit_to(&field, &household, &[encode(image, 90)]).await;
        sent.push((name.as_str(), household, id));
    }
    let mut copies = Vec::new();
    for (i, (_, image)) in photos.iter().enumerate() {
        for (how, bytes) in transformed(image) {
            let household = format!("410327101002{:04}", copies.len() + 1);
            copies.push((i, how, visit_to(&field, &household, &[bytes]).await));
        }
    }
    server.settle().await;

    let mut false_positives = Vec::new();
    for (name, _, id) in &sent {
        let visit = field.get_json(&format!("/v1/submissions/{id}")).await;
        for finding in near_findings(&visit) {
            false_positives.push(format!("{name}: {}", finding["detail"]));
        }
    }
    let mut missed = Vec::new();
    for (original, how, id) in &copies {
        let visit = field.get_json(&format!("/v1/submissions/{id}")).await;
        let (name, household, first) = &sent[*original];
        let caught = near_findings(&visit).iter().any(|f| {
            f["data"]["other_household_id"] == household.as_str()
                && f["data"]["other_submission_id"] == first.as_str()
        });
        if !caught {
            missed.push(format!("{name} {how}: {:?}", near_findings(&visit)));
        }
    }
    println!(
        "through the server: recall {}/{}; false positives among {} different photographs: {}",
        copies.len() - missed.len(),
        copies.len(),
        sent.len(),
        false_positives.len()
    );
    assert!(missed.len() * 100 <= copies.len(), "missed: {missed:?}");
    assert!(false_positives.is_empty(), "{false_positives:?}");
}

/// 5 % cropped off the left and recompressed: a copy the whole-frame hash alone misses.
fn cropped_copy(photo: &[u8]) -> Vec<u8> {
    let image = image::load_from_memory(photo).unwrap().to_rgb8();
    let (w, h) = image.dimensions();
    encode(
        &image::imageops::crop_imm(&image, w / 20, 0, w - w / 20, h).to_image(),
        80,
    )
}

async fn a_photo_hashed_in_one_process_is_found_by_a_lookup_in_another(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let reviewer = server.user("reviewer", &["410327101"]).await;
    // A process that only serves requests: it hashes nothing, and learns what the other process
    // hashed from the database.
    let serving = server.process_with(&[("HUIKAN_JOB_WORKERS", "0")]).await;
    let original = jpeg(640, 480, 61, 92);
    let copy = cropped_copy(&original);
    let first = visit_to(&field, "4103271010010001", std::slice::from_ref(&original)).await;
    processed(&field, &first).await;
    let second = visit_to(&field, "4103271010010002", std::slice::from_ref(&copy)).await;
    processed(&field, &second).await;

    let near: Value = reviewer
        .at(&serving)
        .get_json(&format!("/v1/blobs/{}/near-duplicates", sha256_hex(&copy)))
        .await;
    assert_eq!(near["comparable"], true, "{near}");
    assert_eq!(near["threshold"], NEAR_DUPLICATE_BITS);
    let items = near["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{near}");
    assert_eq!(items[0]["photo"], sha256_hex(&original).as_str());
    assert_eq!(items[0]["submission_id"], first.as_str());
    assert_eq!(items[0]["household_id"], "4103271010010001");
    assert!(items[0]["distance"].as_u64().unwrap() <= u64::from(NEAR_DUPLICATE_BITS));

    // Unasked, the serving process's index follows the database within about a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server
            .anonymous()
            .at(&serving)
            .get("/metrics")
            .await
            .text()
            .await
            .unwrap();
        let photos = metrics
            .lines()
            .find_map(|l| l.strip_prefix("near_index_photos "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if photos == Some(2.0) && metrics.contains("near_index_lag_seconds ") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Who may ask: reviewers of the photo's visits' scope, auditors and admins.
    let path = format!("/v1/blobs/{}/near-duplicates", sha256_hex(&original));
    expect_problem(field.get(&path).await, 403, "forbidden").await;
    let elsewhere = server.user("reviewer", &["410327102"]).await;
    expect_problem(elsewhere.get(&path).await, 404, "not_found").await;
    let auditor = server.user("auditor", &[]).await;
    let near: Value = auditor.get_json(&path).await;
    assert_eq!(near["items"][0]["submission_id"], second.as_str(), "{near}");
    let unknown = format!("/v1/blobs/{}/near-duplicates", "0".repeat(64));
    expect_problem(auditor.get(&unknown).await, 404, "not_found").await;
    expect_problem(
        auditor.get("/v1/blobs/not-a-hash/near-duplicates").await,
        400,
        "invalid_path",
    )
    .await;
}

/// A UUID as a literal of the backend's column type.
fn uuid_literal(server: &TestServer, id: &str) -> String {
    match server.backend {
        Backend::Embedded => format!("X'{}'", id.replace('-', "")),
        Backend::PostgresS3 => format!("'{id}'::uuid"),
    }
}

async fn a_new_hashing_scheme_judges_every_photo_again(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let original = jpeg(640, 480, 71, 92);
    let copy = cropped_copy(&original);
    let unrelated = huikan_tests::photos::unlike_jpeg(71);
    let first = visit_to(&field, "4103271010010001", std::slice::from_ref(&original)).await;
    let copied = visit_to(&field, "4103271010010002", std::slice::from_ref(&copy)).await;
    let other = visit_to(&field, "4103271010010003", std::slice::from_ref(&unrelated)).await;
    server.settle().await;
    assert_eq!(
        findings_of(&field, &copied, 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );

    // As the database stands after a migration to a new scheme: every photo's hashes are the
    // old scheme's and wait to be made again, and the old scheme judged differently: it missed
    // the copy, and took the unrelated photo for a copy of the original.
    let (original_sha, unrelated_sha) = (sha256_hex(&original), sha256_hex(&unrelated));
    let now = in_seconds(&server, 0);
    server
        .sql(&format!(
            "UPDATE photo_facts SET hash_version = 1, hashes = NULL, hash_seq = NULL;
             DELETE FROM findings WHERE code = 'photo_near_duplicate';
             INSERT INTO findings (finding_id, submission_id, household_id, code, severity, subject,
                 detail, data, other_photo, rule_version, raised_at)
             VALUES ({}, {}, '4103271010010003', 'photo_near_duplicate', 'critical',
                 'photo:{unrelated_sha}', 'judged by the old scheme',
                 '{{\"other_photo\":\"{original_sha}\"}}', '{original_sha}', 1, {now});
             INSERT INTO jobs (kind, subject, ready_at, enqueued_at)
             SELECT 'process_photo', sha256, {now}, {now} FROM photo_facts;",
            uuid_literal(&server, &uuid::Uuid::now_v7().to_string()),
            uuid_literal(&server, &other),
        ))
        .await
        .unwrap();
    // A new process: its index holds what the database holds.
    server.restart().await;
    let field = field.at(&server.base);
    server.settle().await;

    let copied_findings = findings_of(&field, &copied, 1, Duration::from_secs(30)).await;
    assert_eq!(copied_findings.len(), 1, "{copied_findings:?}");
    assert_eq!(
        copied_findings[0]["data"]["other_submission_id"],
        first.as_str()
    );
    let visit = field.get_json(&format!("/v1/submissions/{other}")).await;
    assert!(near_findings(&visit).is_empty(), "{visit}");
    let log = server.audit_log().await;
    let rehashed = log
        .iter()
        .filter(|e| e["action"] == "photo.rehashed")
        .count();
    assert_eq!(rehashed, 3);
    assert!(log.iter().any(|e| e["action"] == "finding.cleared"
        && e["subject"] == format!("submission:{other}").as_str()
        && e["data"]["code"] == "photo_near_duplicate"));
    let first_rehash = log
        .iter()
        .position(|e| e["action"] == "photo.rehashed")
        .unwrap();
    assert!(
        log[first_rehash..]
            .iter()
            .any(|e| e["action"] == "finding.raised"
                && e["subject"] == format!("submission:{copied}").as_str()
                && e["data"]["code"] == "photo_near_duplicate")
    );
}
