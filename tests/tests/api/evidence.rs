//! The evidence pipeline: every stored photo is processed on the job queue (facts, EXIF,
//! thumbnail), bad files become recorded facts rather than crashes, and the queue survives
//! restarts and dead workers.

use std::time::Duration;

use huikan_server::evidence::phash::PhotoHashes;
use huikan_tests::photos::{Exif, jpeg, sha256_hex, unlike_jpeg, with_exif};
use huikan_tests::visits::visit;
use huikan_tests::{Api, Backend, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    a_photo_is_processed_with_its_exif_and_an_oriented_thumbnail,
    bad_photos_are_recorded_as_undecodable,
    enqueued_photos_survive_a_crash,
    a_job_whose_worker_died_is_redone_after_its_lease,
    a_job_that_keeps_failing_is_parked,
    a_photo_first_sent_for_another_household_is_found,
    a_copy_of_another_households_photo_is_a_near_duplicate,
    a_heic_photo_is_kept_with_its_exif_but_not_decoded,
    a_lost_thumbnail_is_made_again,
    a_job_enqueued_again_while_it_runs_runs_again,
    a_process_without_workers_leaves_its_jobs_to_another,
);

/// Uploads the photos and pushes one visit naming them all; returns the visit's id.
async fn visit_with(field: &Api, photos: &[Vec<u8>]) -> String {
    visit_to(field, "4103271010010001", photos).await
}

pub(super) async fn visit_to(field: &Api, household_id: &str, photos: &[Vec<u8>]) -> String {
    let shas: Vec<String> = photos.iter().map(|p| sha256_hex(p)).collect();
    for (sha, photo) in shas.iter().zip(photos) {
        let stored = field.put_blob(sha, photo.clone()).await;
        assert!(stored.status().is_success(), "{}", stored.status());
    }
    let named: Vec<(&str, &str)> = shas
        .iter()
        .map(|s| (s.as_str(), "housing_exterior"))
        .collect();
    let body = visit(household_id, &named);
    let id = body["submission_id"].as_str().unwrap().to_owned();
    let pushed = field
        .post_json("/v1/sync/push", &json!({"submissions": [body]}))
        .await;
    assert_eq!(pushed.status(), 200);
    id
}

/// The visit once every photo has left `pending`.
pub(super) async fn processed(reader: &Api, submission_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let visit: Value = reader
            .get_json(&format!("/v1/submissions/{submission_id}"))
            .await;
        let photos = visit["photos"].as_array().unwrap();
        if photos.iter().all(|p| p["state"] != "pending") {
            return visit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "photos not processed within 30 s: {visit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_photo_is_processed_with_its_exif_and_an_oriented_thumbnail(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    // Landscape pixels, held upright: EXIF orientation 6 (rotate 90° clockwise to view).
    let held_upright = with_exif(
        &jpeg(800, 600, 21, 90),
        &Exif {
            taken_at: Some("2020:03:02 10:15:00"),
            offset: Some("+08:00"),
            gps: Some((34.5123, 112.1789)),
            make: Some("HUAWEI"),
            model: Some("HUAWEI nova 5"),
            orientation: Some(6),
        },
    );
    let no_gps = with_exif(
        &jpeg(640, 480, 22, 90),
        &Exif {
            taken_at: Some("2020:03:02 11:00:00"),
            ..Exif::default()
        },
    );
    let id = visit_with(&field, &[held_upright.clone(), no_gps]).await;
    let visit = processed(&field, &id).await;
    let first = &visit["photos"][0];
    assert_eq!(first["state"], "processed", "{first}");
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(800), Some(600))
    );
    assert_eq!(first["exif_time"], "2020-03-02T10:15:00");
    assert_eq!(first["exif_offset"], "+08:00");
    let gps = &first["exif_gps"];
    assert!(
        (gps["lat"].as_f64().unwrap() - 34.5123).abs() < 1e-5,
        "{gps}"
    );
    assert!(
        (gps["lon"].as_f64().unwrap() - 112.1789).abs() < 1e-5,
        "{gps}"
    );
    assert_eq!(first["camera"], "HUAWEI nova 5");
    let second = &visit["photos"][1];
    assert_eq!(second["exif_time"], "2020-03-02T11:00:00");
    assert!(
        second["exif_offset"].is_null() && second["exif_gps"].is_null(),
        "{second}"
    );

    let url = first["thumbnail_url"].as_str().unwrap();
    let thumbnail = field.get_object(url).await;
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (thumbnail.width(), thumbnail.height()),
        (240, 320),
        "at most 320 px, turned upright"
    );

    // Processing is on the record.
    let entry = server
        .audit_log()
        .await
        .into_iter()
        .find(|e| {
            e["subject"] == format!("blob:{}", sha256_hex(&held_upright)).as_str()
                && e["action"] == "photo.processed"
        })
        .expect("a photo.processed entry");
    assert_eq!(entry["data"]["exif_time"], "2020-03-02T10:15:00");
    assert_eq!(entry["data"]["phash"].as_str().unwrap().len(), 16);
}

/// A JPEG whose frame header declares other dimensions.
fn declaring(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg.to_vec();
    let sof = bytes
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("a frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// A PNG that declares 15000×15000 RGB pixels (675 MB decoded) in a few hundred bytes.
fn png_bomb() -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
        out
    };
    let mut header = Vec::new();
    header.extend_from_slice(&15_000u32.to_be_bytes());
    header.extend_from_slice(&15_000u32.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

async fn bad_photos_are_recorded_as_undecodable(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let whole = jpeg(400, 300, 23, 90);
    let mut random = vec![0xFF, 0xD8, 0xFF, 0xE0];
    random.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let mut one_pixel = Vec::new();
    image::RgbImage::new(1, 1)
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new(&mut one_pixel))
        .unwrap();
    let bad = [
        (one_pixel, "too small"),
        (declaring(&whole, 60_000, 60_000), "declares 60000×60000"),
        (whole[..whole.len() / 2].to_vec(), "cut short"),
        (png_bomb(), "not a readable image"),
        (random, "JPEG"),
    ];
    let photos: Vec<Vec<u8>> = bad.iter().map(|(b, _)| b.clone()).collect();
    let id = visit_with(&field, &photos).await;
    let visit = processed(&field, &id).await;
    for (photo, (_, why)) in visit["photos"].as_array().unwrap().iter().zip(&bad) {
        assert_eq!(photo["state"], "undecodable", "{photo}");
        assert!(
            photo["problem"].as_str().unwrap().contains(why),
            "{why}: {photo}"
        );
        assert!(photo["thumbnail_url"].is_null());
        let thumbnail = field
            .get(&format!(
                "/v1/blobs/{}/thumbnail",
                photo["sha256"].as_str().unwrap()
            ))
            .await;
        assert_eq!(thumbnail.status(), 404);
    }
    assert_eq!(server.anonymous().get("/healthz").await.status(), 200);
}

async fn enqueued_photos_survive_a_crash(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photos: Vec<Vec<u8>> = (0..12).map(|i| jpeg(1600, 1200, 100 + i, 90)).collect();
    let id = visit_with(&field, &photos).await;
    // Killed at once: most jobs are still queued, some perhaps half done.
    server.kill().await;
    server.restart().await;
    let field = field.at(&server.base);
    let visit = processed(&field, &id).await;
    for photo in visit["photos"].as_array().unwrap() {
        assert_eq!(photo["state"], "processed", "{photo}");
    }
}

/// A deployment may keep its request-serving processes free of background work: one started
/// with `HUIKAN_JOB_WORKERS=0` takes visits and photos, and another process runs their jobs.
async fn a_process_without_workers_leaves_its_jobs_to_another(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    server.kill().await;
    let serving_only = server.process_with(&[("HUIKAN_JOB_WORKERS", "0")]).await;
    let field = field.at(&serving_only);
    let id = visit_with(&field, &[jpeg(400, 300, 31, 90)]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let visit: Value = field.get_json(&format!("/v1/submissions/{id}")).await;
    assert_eq!(visit["photos"][0]["state"], "pending", "no worker ran it");
    assert!(server.count("SELECT COUNT(*) FROM jobs").await > 0);

    server.another_process().await;
    let visit = processed(&field, &id).await;
    assert_eq!(visit["photos"][0]["state"], "processed", "{visit}");
}

pub(super) fn in_seconds(server: &TestServer, seconds: i64) -> String {
    match server.backend {
        Backend::Embedded => {
            format!("strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '{seconds:+} seconds')")
        }
        Backend::PostgresS3 => format!("now() + interval '{seconds} seconds'"),
    }
}

async fn a_job_whose_worker_died_is_redone_after_its_lease(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(400, 300, 25, 90);
    let id = visit_with(&field, std::slice::from_ref(&photo)).await;
    processed(&field, &id).await;
    // As if a worker had claimed the job, then died mid-way: its lease ends in 3 s.
    let sha = sha256_hex(&photo);
    server
        .sql(&format!(
            "DELETE FROM photo_facts WHERE sha256 = '{sha}';
             INSERT INTO jobs (kind, subject, attempts, ready_at, leased_by, enqueued_at)
             VALUES ('process_photo', '{sha}', 1, {}, 'a-worker-that-died', {});",
            in_seconds(&server, 3),
            in_seconds(&server, 0)
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let visit: Value = field.get_json(&format!("/v1/submissions/{id}")).await;
    assert_eq!(
        visit["photos"][0]["state"], "pending",
        "leased jobs wait for their lease"
    );
    let visit = processed(&field, &id).await;
    assert_eq!(visit["photos"][0]["state"], "processed");
}

async fn a_job_that_keeps_failing_is_parked(server: TestServer) {
    // A job for a photo that does not exist fails every time; at its last attempt it is parked.
    server
        .sql(&format!(
            "INSERT INTO jobs (kind, subject, attempts, ready_at, enqueued_at)
             VALUES ('process_photo', '{}', 4, {now}, {now});",
            "0".repeat(64),
            now = in_seconds(&server, 0)
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server
            .anonymous()
            .get("/metrics")
            .await
            .text()
            .await
            .unwrap();
        if metrics.contains("jobs_parked{kind=\"process_photo\"} 1") {
            assert!(
                metrics.contains("job_failures_total{kind=\"process_photo\"} 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not parked: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The visit's photo findings (reuse, near duplicates) once there are `expected` of them, or
/// after `wait`. Reconciliation's findings on the same visit have their own tests.
pub(super) async fn findings_of(
    reader: &Api,
    submission_id: &str,
    expected: usize,
    wait: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let visit: Value = reader
            .get_json(&format!("/v1/submissions/{submission_id}"))
            .await;
        let findings: Vec<Value> = visit["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"].as_str().unwrap().starts_with("photo_"))
            .cloned()
            .collect();
        if findings.len() >= expected || tokio::time::Instant::now() > deadline {
            return findings;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_photo_first_sent_for_another_household_is_found(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(400, 300, 26, 90);
    let sha = sha256_hex(&photo);
    let first = visit_to(&field, "4103271010010001", std::slice::from_ref(&photo)).await;
    let copied = visit_to(&field, "4103271010010002", std::slice::from_ref(&photo)).await;
    let again = visit_to(&field, "4103271010010001", std::slice::from_ref(&photo)).await;

    let findings = findings_of(&field, &copied, 1, Duration::from_secs(30)).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = &findings[0];
    assert_eq!(finding["code"], "photo_reused_exact");
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["subject"], format!("photo:{sha}").as_str());
    assert_eq!(finding["data"]["other_submission_id"], first.as_str());
    assert_eq!(finding["data"]["other_household_id"], "4103271010010001");
    // The household's own photo, first and sent again, is not a finding.
    processed(&field, &again).await;
    // Its check ran with the others' when the photo was processed; a little longer for a slow one.
    let wait = Duration::from_secs(2);
    assert!(findings_of(&field, &first, 1, wait).await.is_empty());
    assert!(findings_of(&field, &again, 1, wait).await.is_empty());

    let auditor = server.user("auditor", &[]).await;
    let trail: Value = auditor
        .get_json("/v1/audit/households/4103271010010002/trail")
        .await;
    let raised = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "finding.raised" && e["data"]["code"] == "photo_reused_exact")
        .expect("the finding in the household's trail");
    assert_eq!(raised["data"]["other_submission_id"], first.as_str());
}

/// A copy a forger would make: brightened 10 % and recompressed at quality 60.
fn forged_copy(photo: &[u8]) -> Vec<u8> {
    let mut pixels = image::load_from_memory(photo).unwrap().to_rgb8();
    for pixel in pixels.pixels_mut() {
        for c in pixel.0.iter_mut() {
            *c = (f32::from(*c) * 1.1).round().min(255.0) as u8;
        }
    }
    let mut out = Vec::new();
    pixels
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, 60,
        ))
        .unwrap();
    out
}

fn hashes(photo: &[u8]) -> PhotoHashes {
    match huikan_server::evidence::analysis::analyse(photo, "image/jpeg").outcome {
        huikan_server::evidence::analysis::Outcome::Decoded {
            hashes: Ok(hashes), ..
        } => hashes,
        other => panic!("not hashed: {other:?}"),
    }
}

fn distance(a: &[u8], b: &[u8]) -> u32 {
    huikan_server::evidence::phash::distance(&hashes(a), &hashes(b))
}

async fn a_copy_of_another_households_photo_is_a_near_duplicate(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let original = jpeg(640, 480, 41, 92);
    let copy = forged_copy(&original);
    // Another photograph, as different as two houses' are.
    let unrelated = unlike_jpeg(41);
    let threshold = huikan_server::evidence::phash::NEAR_DUPLICATE_BITS;
    let distance = distance(&original, &copy);
    assert!(distance <= threshold, "the copy is {distance} bits off");
    let far = self::distance(&original, &unrelated);
    assert!(
        far > threshold,
        "the unrelated photo is only {far} bits off"
    );

    let first = visit_to(&field, "4103271010010001", std::slice::from_ref(&original)).await;
    processed(&field, &first).await;
    let copied = visit_to(&field, "4103271010010002", std::slice::from_ref(&copy)).await;
    let other = visit_to(&field, "4103271010010003", std::slice::from_ref(&unrelated)).await;
    // The first household photographing its own house again is no finding.
    let reshot = forged_copy(&jpeg(640, 480, 41, 85));
    assert!(self::distance(&original, &reshot) <= threshold);
    let again = visit_to(&field, "4103271010010001", &[reshot]).await;

    let findings = findings_of(&field, &copied, 1, Duration::from_secs(30)).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = &findings[0];
    assert_eq!(finding["code"], "photo_near_duplicate");
    assert_eq!(
        finding["subject"],
        format!("photo:{}", sha256_hex(&copy)).as_str()
    );
    assert_eq!(finding["data"]["other_submission_id"], first.as_str());
    assert_eq!(finding["data"]["other_household_id"], "4103271010010001");
    assert_eq!(
        finding["data"]["other_photo"],
        sha256_hex(&original).as_str()
    );
    assert_eq!(finding["data"]["distance"], distance);
    let visit = processed(&field, &copied).await;
    assert_eq!(
        visit["photos"][0]["near_duplicates"][0]["other_photo"],
        sha256_hex(&original).as_str()
    );

    processed(&field, &other).await;
    processed(&field, &again).await;
    let wait = Duration::from_secs(2);
    for quiet in [&first, &other, &again] {
        let findings = findings_of(&field, quiet, 1, wait).await;
        assert!(findings.is_empty(), "{quiet}: {findings:?}");
    }
    let auditor = server.user("auditor", &[]).await;
    let trail: Value = auditor
        .get_json("/v1/audit/households/4103271010010002/trail")
        .await;
    assert!(
        trail["items"].as_array().unwrap().iter().any(|e| e["action"] == "finding.raised"
            && e["data"]["code"] == "photo_near_duplicate"),
        "{trail}"
    );
}

async fn a_heic_photo_is_kept_with_its_exif_but_not_decoded(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let heic = include_bytes!("../../data/sample.heic").to_vec();
    let id = visit_with(&field, std::slice::from_ref(&heic)).await;
    let visit = processed(&field, &id).await;
    let photo = &visit["photos"][0];
    assert_eq!(photo["content_type"], "image/heic");
    assert_eq!(photo["state"], "not_decoded", "{photo}");
    assert_eq!(photo["exif_time"], "2026-11-20T09:30:00", "{photo}");
    assert_eq!(photo["exif_offset"], "+08:00");
    assert_eq!(photo["camera"], "HuikanTest HEIC-1");
    let gps = &photo["exif_gps"];
    assert!((gps["lat"].as_f64().unwrap() - 30.25).abs() < 1e-6, "{gps}");
    assert!((gps["lon"].as_f64().unwrap() - 103.5).abs() < 1e-6, "{gps}");
    assert!(photo["thumbnail_url"].is_null());
    let thumbnail = field
        .get(&format!("/v1/blobs/{}/thumbnail", sha256_hex(&heic)))
        .await;
    assert_eq!(thumbnail.status(), 404);
    // The photo itself is kept as sent.
    let stored = field
        .get_object(&format!("/v1/blobs/{}", sha256_hex(&heic)))
        .await;
    assert_eq!(stored.bytes().await.unwrap().as_ref(), heic.as_slice());
}

/// Thumbnails are written without fsync (they are derived): one a crash left empty or lost is
/// made again when asked for. (Only a file store can lose one; on S3 this checks the serving.)
async fn a_lost_thumbnail_is_made_again(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(800, 600, 51, 90);
    let sha = sha256_hex(&photo);
    let id = visit_with(&field, std::slice::from_ref(&photo)).await;
    processed(&field, &id).await;
    let file = server.data_dir().join(format!(
        "thumbnails/{}/{}/{sha}.jpg",
        &sha[0..2],
        &sha[2..4]
    ));
    if server.backend == Backend::Embedded {
        assert!(file.exists(), "{}", file.display());
        std::fs::write(&file, b"").unwrap();
    }
    let thumbnail = field
        .get_object(&format!("/v1/blobs/{sha}/thumbnail"))
        .await;
    assert_eq!(thumbnail.status(), 200);
    let image = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (320, 240));
}

/// A check that is running when a change it must see commits (here: a visit pushed while a
/// worker holds its check) runs again, rather than the new request being swallowed by the old.
async fn a_job_enqueued_again_while_it_runs_runs_again(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(400, 300, 27, 90);
    let sha = sha256_hex(&photo);
    let first = visit_to(&field, "4103271010010001", std::slice::from_ref(&photo)).await;
    processed(&field, &first).await;
    let copied = visit("4103271010010002", &[(sha.as_str(), "housing_exterior")]);
    let copied_id = copied["submission_id"].as_str().unwrap().to_owned();
    // A worker holds the check of that visit for the next hour.
    server
        .sql(&format!(
            "INSERT INTO jobs (kind, subject, attempts, ready_at, leased_by, enqueued_at)
             VALUES ('check_photos', '{copied_id}', 1, {}, 'a-busy-worker', {});",
            in_seconds(&server, 3600),
            in_seconds(&server, 0)
        ))
        .await
        .unwrap();
    let pushed = field
        .post_json("/v1/sync/push", &json!({"submissions": [copied]}))
        .await;
    assert_eq!(pushed.status(), 200);
    let findings = findings_of(&field, &copied_id, 1, Duration::from_secs(30)).await;
    assert_eq!(findings.len(), 1, "the check ran again: {findings:?}");
    assert_eq!(findings[0]["code"], "photo_reused_exact");
}
