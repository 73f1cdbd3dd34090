//! The OpenRosa endpoint as ODK Collect uses it: the form list, the form (checked by JavaRosa,
//! the engine Collect runs) with its CSV media, and submissions with photos, whole or split.

use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::openrosa::{Collect, Filled, element, elements};
use huikan_tests::photos::{jpeg_of_about, sha256_hex, small_jpeg};
use huikan_tests::registry::village;
use huikan_tests::server::installed;
use huikan_tests::{Api, TestServer, backend_tests, memory_of};
use serde_json::Value;

backend_tests!(
    collect_signs_in_and_lists_the_forms,
    the_forms_pass_javarosa_with_their_media,
    a_collect_submission_is_stored_once,
    a_split_submission_is_stored_when_its_last_part_arrives,
    photos_after_their_visit_make_a_new_version,
    bad_submissions_get_a_clear_openrosa_message,
    a_large_submission_is_streamed_not_held,
);

pub(super) const CAMPAIGN: &str = "2020-lookback-1";
pub(super) const FORM: &str = "huikan-2020-lookback-1";
pub(super) const VILLAGE: &str = "410327101001";
const OTHER_VILLAGE: &str = "410327102001";

/// A county of two villages (`village(VILLAGE, 3)` and two households in another), the round
/// (two photos required), and a field worker of the first village.
pub(super) async fn county(server: &TestServer) -> Api {
    let admin = server.admin().await;
    let mut households = village(VILLAGE, 3);
    households.extend(village(OTHER_VILLAGE, 2));
    import_registry(&admin, &households).await;
    define_campaign(
        &admin,
        CAMPAIGN,
        "2020-03-01",
        &["housing_exterior", "water_source"],
    )
    .await;
    server.user("field_staff", &[VILLAGE]).await
}

async fn text_of(response: reqwest::Response, status: u16) -> String {
    let got = response.status().as_u16();
    assert_eq!(
        response.headers()["x-openrosa-version"],
        "1.0",
        "every OpenRosa answer says its version"
    );
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    text
}

/// The form's version, as the form list gives it.
async fn version(collect: &Collect) -> String {
    let list = text_of(collect.get("/formList").await, 200).await;
    element(&list, "version").unwrap().to_owned()
}

async fn collect_signs_in_and_lists_the_forms(server: TestServer) {
    let field = county(&server).await;
    // Collect asks without credentials first, and signs in when challenged.
    let anonymous = server.anonymous().get("/v1/openrosa/formList").await;
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    assert_eq!(anonymous.headers()["x-openrosa-version"], "1.0");
    let mut wrong = Collect::basic(&field);
    wrong.username.push('x');
    text_of(wrong.get("/formList").await, 401).await;

    for collect in [Collect::basic(&field), Collect::keyed(&field)] {
        let list = text_of(collect.get("/formList").await, 200).await;
        assert!(list.contains("xmlns=\"http://openrosa.org/xforms/xformsList\""));
        assert_eq!(elements(&list, "formID"), vec![FORM]);
        let download = element(&list, "downloadUrl").unwrap();
        let manifest_url = element(&list, "manifestUrl").unwrap();
        // The URLs handed out keep the way in: a token in the path stays in them.
        assert!(download.starts_with(&collect.server_url), "{download}");
        let form = collect.get(download).await.bytes().await.unwrap();
        assert_eq!(
            element(&list, "hash").unwrap(),
            format!("md5:{}", md5_hex(&form)),
            "the list's hash is the form's"
        );
        let manifest = text_of(collect.get(manifest_url).await, 200).await;
        assert_eq!(
            elements(&manifest, "filename"),
            vec!["villages.csv", "households.csv"]
        );
        for (url, hash) in elements(&manifest, "downloadUrl")
            .into_iter()
            .zip(elements(&manifest, "hash"))
        {
            let bytes = collect.get(url).await.bytes().await.unwrap();
            assert_eq!(hash, format!("md5:{}", md5_hex(&bytes)));
        }
        // The households of the caller's village and no other.
        let households = String::from_utf8(
            collect
                .get(elements(&manifest, "downloadUrl")[1])
                .await
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert_eq!(households.lines().count(), 1 + 3, "{households}");
        assert!(households.contains(&format!("{VILLAGE}0001")));
        assert!(!households.contains(OTHER_VILLAGE));
    }

    // A reviewer has no forms to fill in; a form that does not exist is 404.
    let reviewer = server.user("reviewer", &["410327101"]).await;
    text_of(Collect::basic(&reviewer).get("/formList").await, 403).await;
    text_of(
        Collect::basic(&field)
            .get("/forms/huikan-nope/form.xml")
            .await,
        404,
    )
    .await;
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// Runs ODK Validate, then our stricter JavaRosa check with the media, on a form; Ok if both
/// pass, else what they printed. `None` when the checkers are not installed (outside CI).
fn javarosa(form: &[u8], media: &[(&str, Vec<u8>)]) -> Option<Result<(), String>> {
    let jar = installed("HUIKAN_TEST_ODK_VALIDATE", "ODK Validate")?;
    let classes = installed("HUIKAN_TEST_XFORM_CHECK", "the JavaRosa form check")?;
    let dir = tempfile::tempdir().unwrap();
    let form_path = dir.path().join("form.xml");
    std::fs::write(&form_path, form).unwrap();
    let media_dir = dir.path().join("form-media");
    std::fs::create_dir(&media_dir).unwrap();
    for (name, bytes) in media {
        std::fs::write(media_dir.join(name), bytes).unwrap();
    }
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("java")
            .arg("-Djava.awt.headless=true")
            .args(args)
            .output()
            .expect("running java");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let validate = run(&["-jar".as_ref(), jar.as_ref(), form_path.as_os_str()]);
    let classpath = format!("{jar}:{classes}");
    let strict = run(&[
        "-cp".as_ref(),
        classpath.as_ref(),
        "XFormCheck".as_ref(),
        form_path.as_os_str(),
        media_dir.as_os_str(),
    ]);
    Some(validate.and(strict))
}

async fn the_forms_pass_javarosa_with_their_media(server: TestServer) {
    let field = county(&server).await;
    let collect = Collect::basic(&field);
    let form = collect
        .get(&format!("/forms/{FORM}/form.xml"))
        .await
        .bytes()
        .await
        .unwrap();
    let mut media = Vec::new();
    for name in ["villages.csv", "households.csv"] {
        let bytes = collect
            .get(&format!("/forms/{FORM}/media/{name}"))
            .await
            .bytes()
            .await
            .unwrap();
        media.push((name, bytes.to_vec()));
    }
    let Some(verdict) = javarosa(&form, &media) else {
        return;
    };
    verdict.expect("JavaRosa accepts the form with its media");
    // The check can fail: a bind to a node the form does not have, and a missing CSV.
    let text = String::from_utf8(form.to_vec()).unwrap();
    let broken = text.replacen(
        "nodeset=\"/data/notes\"",
        "nodeset=\"/data/no_such_node\"",
        1,
    );
    assert!(javarosa(broken.as_bytes(), &media).unwrap().is_err());
    assert!(javarosa(&form, &media[..1]).unwrap().is_err());
}

/// Reads a visit back as its field worker.
async fn stored(field: &Api, instance_id: &str) -> reqwest::Response {
    let id = instance_id.strip_prefix("uuid:").unwrap();
    field.get(&format!("/v1/submissions/{id}")).await
}

/// The visit stored under an instance id, as its field worker reads it back.
pub(super) async fn visit_of(field: &Api, instance_id: &str) -> Value {
    let response = stored(field, instance_id).await;
    assert_eq!(response.status(), 200, "no visit for {instance_id}");
    response.json().await.unwrap()
}

/// The visit's photos as (kind, sha256), in order.
pub(super) fn photo_kinds(visit: &Value) -> Vec<(String, String)> {
    visit["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_collect_submission_is_stored_once(server: TestServer) {
    let field = county(&server).await;
    let collect = Collect::basic(&field);
    let probe = collect.head_submission().await;
    assert_eq!(probe.status(), 204);
    assert_eq!(probe.headers()["x-openrosa-version"], "1.0");
    let accepted: u64 = probe.headers()["x-openrosa-accept-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accepted >= 10 * 1024 * 1024);
    assert_eq!(
        probe.headers()["location"],
        format!("{}/submission", collect.server_url).as_str()
    );

    let (house, well) = (small_jpeg(71), small_jpeg(72));
    let mut filled = Filled::new(FORM, &version(&collect).await, &format!("{VILLAGE}0002"));
    filled.photos = vec![
        ("housing_exterior", "1583115300123.jpg".to_owned()),
        ("water_source", "1583115400456.jpg".to_owned()),
    ];
    let photos: [(&str, &[u8]); 2] = [("1583115300123.jpg", &house), ("1583115400456.jpg", &well)];
    let answer = text_of(collect.submit(&filled.xml(), &photos, false).await, 201).await;
    assert!(answer.contains("nature=\"submit_success\""), "{answer}");

    let visit: Value = visit_of(&field, &filled.instance_id).await;
    assert_eq!(visit["household_id"], format!("{VILLAGE}0002"));
    assert_eq!(visit["campaign"], CAMPAIGN);
    assert_eq!(visit["device_id"], "collect:Xq3k9aT0");
    let content = &visit["content"];
    assert_eq!(content["surveyed_at"], "2020-03-02T10:15:00.000+08:00");
    assert_eq!(content["location"]["accuracy_m"], 12.0);
    assert_eq!(content["answers"]["members"][1]["disability_grade"], 2);
    assert_eq!(
        content["answers"]["members"][0]["disability_grade"],
        Value::Null
    );
    assert_eq!(content["answers"]["members"][1]["present"], false);
    assert_eq!(content["answers"]["income"]["sources"][1], "dibao");
    assert_eq!(content["answers"]["notes"], "门前有狗");
    assert_eq!(
        photo_kinds(&visit),
        vec![
            ("housing_exterior".to_owned(), sha256_hex(&house)),
            ("water_source".to_owned(), sha256_hex(&well))
        ]
    );

    // Collect resends when it lost the answer: the same answer, nothing stored twice.
    let again = text_of(collect.submit(&filled.xml(), &photos, false).await, 201).await;
    assert!(again.contains("submit_success"));
    let visits = server.count("SELECT COUNT(*) FROM submissions").await;
    assert_eq!(visits, 1);
    // The same instance with other answers changes nothing.
    filled.food_secure = "no";
    let conflict = collect.submit(&filled.xml(), &photos, false).await;
    assert_eq!(
        conflict.headers()["x-huikan-problem"],
        "submission_conflict"
    );
    let conflict = text_of(conflict, 409).await;
    assert!(conflict.contains("nature=\"error\""), "{conflict}");
    let visit: Value = visit_of(&field, &filled.instance_id).await;
    assert_eq!(visit["content"]["answers"]["food_secure"], true);

    // Reconciled and checked like any visit; the trail names the instance's photos and visit.
    server.settle().await;
    let visit: Value = visit_of(&field, &filled.instance_id).await;
    assert!(visit["photos"][0]["state"] != "pending", "{visit}");
    let log = server.audit_log().await;
    let actions: Vec<&str> = log.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "submission.received")
            .count(),
        1
    );
    assert_eq!(actions.iter().filter(|a| **a == "photo.stored").count(), 2);

    // An edit in Collect is a new instance naming the old one: a new visit, linked.
    let mut edit = Filled::new(FORM, &filled.version, &filled.household);
    edit.photos = filled.photos.clone();
    let xml = edit.xml().replace(
        "<deviceid>",
        &format!(
            "<deprecatedID>{}</deprecatedID><deviceid>",
            filled.instance_id
        ),
    );
    text_of(collect.submit(&xml, &photos, false).await, 201).await;
    let linked = server
        .count(&format!(
            "SELECT COUNT(*) FROM openrosa_instances WHERE deprecated_id = '{}'",
            filled.instance_id
        ))
        .await;
    assert_eq!(linked, 1);
}

async fn a_split_submission_is_stored_when_its_last_part_arrives(server: TestServer) {
    let field = county(&server).await;
    let collect = Collect::keyed(&field);
    // Photos of about 3 MB each, as phones take them, sent one per request.
    let (house, well) = (jpeg_of_about(3_000_000, 81), jpeg_of_about(3_000_000, 82));
    let mut filled = Filled::new(FORM, &version(&collect).await, &format!("{VILLAGE}0003"));
    filled.photos = vec![
        ("housing_exterior", "house.jpg".to_owned()),
        ("water_source", "well.jpg".to_owned()),
    ];
    let first = text_of(
        collect
            .submit(&filled.xml(), &[("house.jpg", &house)], true)
            .await,
        201,
    )
    .await;
    assert!(first.contains("submit_success"));
    assert_eq!(
        stored(&field, &filled.instance_id).await.status(),
        404,
        "not a visit yet"
    );
    text_of(
        collect
            .submit(&filled.xml(), &[("well.jpg", &well)], false)
            .await,
        201,
    )
    .await;
    let visit: Value = visit_of(&field, &filled.instance_id).await;
    let shas: Vec<&str> = visit["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(shas, vec![sha256_hex(&house), sha256_hex(&well)]);
}

async fn photos_after_their_visit_make_a_new_version(server: TestServer) {
    let field = county(&server).await;
    let collect = Collect::basic(&field);
    let (house, well) = (small_jpeg(61), small_jpeg(62));
    let mut filled = Filled::new(FORM, &version(&collect).await, &format!("{VILLAGE}0001"));
    filled.photos = vec![
        ("housing_exterior", "house.jpg".to_owned()),
        ("water_source", "well.jpg".to_owned()),
    ];
    // A client that splits without marking the first request incomplete (Enketo does): the
    // first is stored as the visit, without the well, and says so.
    let first = text_of(
        collect
            .submit(&filled.xml(), &[("house.jpg", &house)], false)
            .await,
        201,
    )
    .await;
    assert!(first.contains("未收到照片"), "{first}");
    let versions = format!(
        "SELECT COUNT(*) FROM openrosa_instances WHERE deprecated_id = '{}'",
        filled.instance_id
    );
    // The second brings the well: the visit stays as stored, and the visit with both photos
    // is a new version of it; sent again, nothing more.
    for _ in 0..2 {
        let second = text_of(
            collect
                .submit(&filled.xml(), &[("well.jpg", &well)], false)
                .await,
            201,
        )
        .await;
        assert!(!second.contains("未收到照片"), "{second}");
        let visit: Value = visit_of(&field, &filled.instance_id).await;
        assert_eq!(visit["photos"].as_array().unwrap().len(), 1, "{visit}");
        assert_eq!(server.count(&versions).await, 1);
        assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 2);
    }
    let whole = format!(
        "SELECT COUNT(*) FROM submission_photos p JOIN openrosa_instances o
         ON o.submission_id = p.submission_id WHERE o.deprecated_id = '{}'",
        filled.instance_id
    );
    assert_eq!(server.count(&whole).await, 2);

    // Other answers with the late photo are a conflict, not a version.
    let mut other = Filled::new(FORM, &filled.version, &format!("{VILLAGE}0002"));
    other.photos = filled.photos.clone();
    text_of(
        collect
            .submit(&other.xml(), &[("house.jpg", &house)], false)
            .await,
        201,
    )
    .await;
    other.food_secure = "no";
    let changed = collect
        .submit(&other.xml(), &[("well.jpg", &well)], false)
        .await;
    text_of(changed, 409).await;
    // And so is another field worker's request under the same instance.
    let colleague = server.user("field_staff", &[VILLAGE]).await;
    other.food_secure = "yes";
    let theirs = Collect::basic(&colleague)
        .submit(
            &other.xml(),
            &[("house.jpg", &house), ("well.jpg", &well)],
            false,
        )
        .await;
    text_of(theirs, 409).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 3);
}

async fn bad_submissions_get_a_clear_openrosa_message(server: TestServer) {
    let field = county(&server).await;
    let collect = Collect::basic(&field);
    let version = version(&collect).await;
    let household = format!("{VILLAGE}0001");
    let good = Filled::new(FORM, &version, &household);

    async fn refused(response: reqwest::Response, status: u16, code: &str, says: &str) {
        assert_eq!(response.headers()["x-huikan-problem"], code);
        let text = text_of(response, status).await;
        assert!(text.contains("<OpenRosaResponse"), "{text}");
        assert!(text.contains(says), "{says:?} not in {text}");
    }

    // Not multipart at all.
    let plain = field
        .post_raw("/v1/openrosa/submission", "text/xml", good.xml())
        .await;
    refused(plain, 415, "unsupported_media_type", "multipart/form-data").await;

    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("<data id=".to_owned(), 400, "invalid_body", "well-formed"),
        (
            good.xml().replace(FORM, "someone-elses-form"),
            400,
            "invalid_body",
            "someone-elses-form",
        ),
        (
            good.xml()
                .replace("<instanceID>", "<instanceIDx>")
                .replace("</instanceID>", "</instanceIDx>"),
            400,
            "invalid_body",
            "meta/instanceID",
        ),
        (
            Filled {
                relation: "cousin",
                ..Filled::new(FORM, &version, &household)
            }
            .xml(),
            400,
            "invalid_body",
            "answers.members[0].relation",
        ),
        (
            good.xml()
                .replace("34.51 112.17 301.5 12.0", "34.51 112.17"),
            400,
            "invalid_body",
            "location",
        ),
        (
            format!(
                "<!DOCTYPE data [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>{}",
                good.xml().replace("<?xml version='1.0' ?>", "")
            ),
            400,
            "invalid_body",
            "XML",
        ),
    ];
    for (xml, status, code, says) in cases {
        refused(collect.submit(&xml, &[], false).await, status, code, says).await;
    }
    // A photo part that is not a photo.
    let mut with_photo = Filled::new(FORM, &version, &household);
    with_photo.photos = vec![("housing_exterior", "notes.jpg".to_owned())];
    refused(
        collect
            .submit(
                &with_photo.xml(),
                &[("notes.jpg", b"just some text")],
                false,
            )
            .await,
        415,
        "unsupported_media_type",
        "notes.jpg",
    )
    .await;
    // No instance part.
    let only_photo = small_jpeg(90);
    refused(
        collect.submit_parts_without_instance(&only_photo).await,
        400,
        "invalid_body",
        "xml_submission_file",
    )
    .await;
    // A reviewer may not submit.
    let reviewer = server.user("reviewer", &["410327101"]).await;
    refused(
        Collect::basic(&reviewer)
            .submit(&good.xml(), &[], false)
            .await,
        403,
        "forbidden",
        "reviewer",
    )
    .await;
    assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 0);
}

/// A submission of 120 MB (six 20 MB photos, one per photo question, as a client that does not
/// split sends it) is streamed part by part to the spool: the peak memory of the process taking
/// it grows by a bounded amount, far below the body (on this machine 4–9 MB on the embedded
/// backend and 19–27 MB on PostgreSQL + S3, the same for bodies of 30 and 60 MB), and every
/// photo is stored and named by the visit. That process runs no jobs (the first one analyses the
/// photos), so what is measured is the submission's path alone.
async fn a_large_submission_is_streamed_not_held(mut server: TestServer) {
    let field = county(&server).await;
    let taker = server.process_with(&[("HUIKAN_JOB_WORKERS", "0")]).await;
    let pid = server.last_process_pid().expect("the second process runs");
    let collect = Collect::basic(&field.at(&taker));
    let encoders: Vec<_> = (0..6u64)
        .map(|i| tokio::task::spawn_blocking(move || jpeg_of_about(20_000_000, 80 + i)))
        .collect();
    let mut photos: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, encoder) in encoders.into_iter().enumerate() {
        photos.push((format!("15831153{i:05}.jpg"), encoder.await.unwrap()));
    }
    let total: usize = photos.iter().map(|(_, bytes)| bytes.len()).sum();
    assert!(total >= 115_000_000, "{total} bytes");
    let mut filled = Filled::new(FORM, &version(&collect).await, &format!("{VILLAGE}0003"));
    filled.photos = [
        "housing_exterior",
        "housing_interior",
        "water_source",
        "water_storage",
        "document",
        "other",
    ]
    .into_iter()
    .zip(photos.iter().map(|(name, _)| name.clone()))
    .collect();
    let parts: Vec<(&str, &[u8])> = photos
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();

    // A small submission first, so that what the process sets up on first use (database and S3
    // connections, buffers) is in the baseline.
    let mut warm_up = Filled::new(FORM, &filled.version, &format!("{VILLAGE}0002"));
    warm_up.photos = vec![("housing_exterior", "warm-up.jpg".to_owned())];
    let small = small_jpeg(79);
    text_of(
        collect
            .submit(&warm_up.xml(), &[("warm-up.jpg", &small)], false)
            .await,
        201,
    )
    .await;

    let (before, _) = memory_of(pid).expect("the taking process's memory");
    let answer = text_of(collect.submit(&filled.xml(), &parts, false).await, 201).await;
    assert!(answer.contains("nature=\"submit_success\""), "{answer}");
    let (_, peak) = memory_of(pid).expect("the taking process's memory");
    let grown = peak.saturating_sub(before);
    eprintln!("a {total}-byte submission: peak memory {before} → {peak} bytes (+{grown})");
    assert!(
        grown < total as u64 / 3,
        "peak memory grew by {grown} bytes for a {total}-byte body"
    );

    let visit: Value = visit_of(&field, &filled.instance_id).await;
    let named: Vec<&str> = visit["content"]["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    for (_, bytes) in &photos {
        let sha = sha256_hex(bytes);
        assert!(named.contains(&sha.as_str()), "{sha} not in {named:?}");
        assert_eq!(field.head(&format!("/v1/blobs/{sha}")).await.status(), 200);
    }
}
