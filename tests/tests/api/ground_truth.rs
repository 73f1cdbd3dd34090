//! Reconciliation against a generated county whose truth is known: every rule triggered on
//! purpose in some households and not in others, with the edge of every threshold on both sides.
//! Every expected finding must be there and no other; the roll-up must add up to the same truth.

use std::collections::BTreeMap;

use huikan_shared::idcard::check_character;
use huikan_tests::api::expect_problem;
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::photos::{Exif, distinct_copy, sha256_hex, unlike_jpeg, with_exif};
use huikan_tests::registry::{Household, Member, village};
use huikan_tests::visits::sound_visit;
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(a_generated_county_reconciles_to_its_ground_truth);

const VILLAGE_A: &str = "410327101001";
const VILLAGE_B: &str = "410327101002";
const VILLAGE_C: &str = "410327102001";
const UNREGISTERED: &str = "4103271010019999";
const CAMPAIGN: &str = "2020-lookback-1";
/// The registered house of every household, WGS-84.
const HOUSE: (f64, f64) = (34.51, 112.17);
/// Metres per degree of latitude on the sphere the server measures on.
const METRES_PER_DEGREE: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

fn id_with_check(first17: &str) -> String {
    let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
    format!("{first17}{}", check_character(&digits))
}

/// The county: villages A and B in one township, C in another.
fn county() -> Vec<Household> {
    let mut households = village(VILLAGE_A, 12);
    let mut b = village(VILLAGE_B, 10);
    // B7's child turns 16 the day after the visit (still of school age); B8's on the day (past it).
    b[6].members[2].id_number = id_with_check("41032720040303002");
    b[7].members[2].id_number = id_with_check("41032720040302004");
    // B9's spouse is registered with a wrong check character, as found in the field.
    let spouse = &mut b[8].members[1].id_number;
    let wrong = if spouse.ends_with('1') { '2' } else { '1' };
    spouse.pop();
    spouse.push(wrong);
    households.extend(b);
    households.extend(village(VILLAGE_C, 2));
    households
}

fn the_unregistered() -> Household {
    Household {
        id: UNREGISTERED.to_owned(),
        village_code: VILLAGE_A.to_owned(),
        members: vec![Member {
            name: "漏评户主".to_owned(),
            id_number: id_with_check("41032719700505001"),
            relation: "户主",
            sex: "男",
        }],
    }
}

/// A point `metres` north of the house.
fn north(metres: f64) -> (f64, f64) {
    (HOUSE.0 + metres / METRES_PER_DEGREE, HOUSE.1)
}

struct Field {
    api: Api,
    seed: u64,
}

impl Field {
    /// Uploads a fresh photo (with EXIF if given) and returns its SHA-256.
    async fn photo(&mut self, exif: Option<Exif<'_>>) -> String {
        self.seed += 1;
        let plain = unlike_jpeg(9000 + self.seed);
        let bytes = match exif {
            Some(exif) => with_exif(&plain, &exif),
            None => plain,
        };
        self.upload(bytes).await
    }

    async fn upload(&self, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        assert!(self.api.put_blob(&sha, bytes).await.status().is_success());
        sha
    }

    async fn both_photos(&mut self) -> (String, String) {
        (self.photo(None).await, self.photo(None).await)
    }

    async fn push(&self, body: &Value) -> String {
        let pushed = self
            .api
            .post_json("/v1/sync/push", &json!({"submissions": [body]}))
            .await;
        let result: Value = pushed.json().await.unwrap();
        assert_eq!(result["results"][0]["outcome"], "created", "{result}");
        body["submission_id"].as_str().unwrap().to_owned()
    }
}

fn photos<'a>(exterior: &'a str, water: &'a str) -> [(&'a str, &'a str); 2] {
    [(exterior, "housing_exterior"), (water, "water_source")]
}

/// The codes of a visit's open findings, sorted.
async fn codes(reader: &Api, submission_id: &str) -> Vec<String> {
    let visit: Value = reader
        .get_json(&format!("/v1/submissions/{submission_id}"))
        .await;
    let mut codes: Vec<String> = visit["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    codes
}

async fn a_generated_county_reconciles_to_its_ground_truth(server: TestServer) {
    let admin = server.admin().await;
    let households = county();
    import_registry(&admin, &households).await;
    define_campaign(
        &admin,
        CAMPAIGN,
        "2020-03-01",
        &["housing_exterior", "water_source"],
    )
    .await;
    let reviewer = server.user("reviewer", &["410327"]).await;
    let mut field = Field {
        api: server.user("field_staff", &["410327101"]).await,
        seed: 0,
    };
    let mut other_field = Field {
        api: server.user("field_staff", &["410327102"]).await,
        seed: 500,
    };
    let h = |id: &str| households.iter().find(|h| h.id == id).unwrap().clone();
    let a = |n: u32| h(&format!("{VILLAGE_A}{n:04}"));
    let b = |n: u32| h(&format!("{VILLAGE_B}{n:04}"));
    let c = |n: u32| h(&format!("{VILLAGE_C}{n:04}"));
    // (visit, the codes expected on it)
    let mut expected: Vec<(String, Vec<&str>)> = Vec::new();

    // A1: sound; its photos are copied by A12 below.
    let (a1_exterior, a1_water) = field.both_photos().await;
    let id = field
        .push(&sound_visit(&a(1), &photos(&a1_exterior, &a1_water)))
        .await;
    expected.push((id, vec![]));
    // A2: 505 m from the house with an accuracy of 10 m: within 500 m plus accuracy.
    let (e, w) = field.both_photos().await;
    let mut body = sound_visit(&a(2), &photos(&e, &w));
    let (lat, lon) = north(505.0);
    body["location"] = json!({"lat": lat, "lon": lon, "accuracy_m": 10.0});
    expected.push((field.push(&body).await, vec![]));
    // A3: 600 m away, accuracy 12 m.
    let (e, w) = field.both_photos().await;
    let mut body = sound_visit(&a(3), &photos(&e, &w));
    let (lat, lon) = north(600.0);
    body["location"] = json!({"lat": lat, "lon": lon, "accuracy_m": 12.0});
    expected.push((field.push(&body).await, vec!["location_far_from_household"]));
    // A4: the water photo's own GPS (no accuracy) says 520 m.
    let far_gps = north(520.0);
    let e = field.photo(None).await;
    let w = field
        .photo(Some(Exif {
            gps: Some(far_gps),
            ..Exif::default()
        }))
        .await;
    let body = sound_visit(&a(4), &photos(&e, &w));
    expected.push((field.push(&body).await, vec!["location_far_from_household"]));
    // A5: a fix of accuracy 0 is a mock provider's.
    let (e, w) = field.both_photos().await;
    let mut body = sound_visit(&a(5), &photos(&e, &w));
    body["location"]["accuracy_m"] = 0.0.into();
    expected.push((field.push(&body).await, vec!["mock_location"]));
    // A6: a photo taken 12 h 45 min after the visit, by its EXIF with offset.
    let e = field
        .photo(Some(Exif {
            taken_at: Some("2020:03:02 23:00:00"),
            offset: Some("+08:00"),
            ..Exif::default()
        }))
        .await;
    let w = field.photo(None).await;
    let body = sound_visit(&a(6), &photos(&e, &w));
    expected.push((field.push(&body).await, vec!["photo_time_implausible"]));
    // A7: EXIF without offset, read in the campaign's zone: exactly 12 h after, not more.
    let e = field
        .photo(Some(Exif {
            taken_at: Some("2020:03:02 22:15:00"),
            ..Exif::default()
        }))
        .await;
    let w = field.photo(None).await;
    let body = sound_visit(&a(7), &photos(&e, &w));
    expected.push((field.push(&body).await, vec![]));
    // A8: 9 h before the visit, but before the campaign started.
    let e = field
        .photo(Some(Exif {
            taken_at: Some("2020:02:29 23:00:00"),
            offset: Some("+08:00"),
            ..Exif::default()
        }))
        .await;
    let w = field.photo(None).await;
    let mut body = sound_visit(&a(8), &photos(&e, &w));
    body["surveyed_at"] = "2020-03-01T08:00:00+08:00".into();
    expected.push((field.push(&body).await, vec!["photo_time_implausible"]));
    // A9: no water-source photo.
    let e = field.photo(None).await;
    let body = sound_visit(&a(9), &[(e.as_str(), "housing_exterior")]);
    expected.push((field.push(&body).await, vec!["missing_required_photo"]));
    // A10: a registered member missing from the visit.
    let (e, w) = field.both_photos().await;
    let mut body = sound_visit(&a(10), &photos(&e, &w));
    body["answers"]["members"].as_array_mut().unwrap().pop();
    expected.push((field.push(&body).await, vec!["member_mismatch"]));
    // A11: visited twice; the second visit, a day later, disagrees on water.
    let (e, w) = field.both_photos().await;
    let first = field.push(&sound_visit(&a(11), &photos(&e, &w))).await;
    expected.push((first, vec![]));
    let (e, w) = field.both_photos().await;
    let mut body = sound_visit(&a(11), &photos(&e, &w));
    body["surveyed_at"] = "2020-03-03T10:15:00+08:00".into();
    body["answers"]["water"]["quality_ok"] = false.into();
    expected.push((
        field.push(&body).await,
        vec!["conflicting_resurvey", "water_unsafe"],
    ));
    // A12: A1's house photo sent again, and a re-encoded copy of A1's water photo.
    let water_copy = field
        .upload(distinct_copy(&unlike_jpeg(9000 + 2), "copied"))
        .await;
    let body = sound_visit(&a(12), &photos(&a1_exterior, &water_copy));
    expected.push((
        field.push(&body).await,
        vec!["photo_near_duplicate", "photo_reused_exact"],
    ));

    // The guarantees, in village B.
    type Edit = fn(&mut Value);
    let guarantee_cases: [(u32, Edit, Vec<&str>); 9] = [
        (
            1,
            |v| v["housing"]["grade"] = "D".into(),
            vec!["housing_unsafe"],
        ),
        (
            2,
            |v| v["water"]["quality_ok"] = false.into(),
            vec!["water_unsafe"],
        ),
        (
            3,
            |v| v["food_secure"] = false.into(),
            vec!["food_clothing_insecure"],
        ),
        (
            4,
            |v| v["members"][1]["insured"] = false.into(),
            vec!["uninsured_member"],
        ),
        (
            5,
            |v| v["income"]["per_capita_yuan"] = 3999.into(),
            vec!["income_below_line"],
        ),
        (6, |v| v["income"]["per_capita_yuan"] = 4000.into(), vec![]),
        (
            7,
            |v| v["members"][2]["school_status"] = "dropped_out".into(),
            vec!["school_dropout"],
        ),
        (
            8,
            |v| v["members"][2]["school_status"] = "dropped_out".into(),
            vec![],
        ),
        (9, |_| {}, vec!["invalid_id_number"]),
    ];
    for (n, edit, codes) in guarantee_cases {
        let (e, w) = field.both_photos().await;
        let mut body = sound_visit(&b(n), &photos(&e, &w));
        edit(&mut body["answers"]);
        expected.push((field.push(&body).await, codes));
    }
    // B10 is not visited.

    // Village C, in the other township: C1 by a surveyor not assigned there; C2 in a campaign
    // that does not exist.
    let (e, w) = field.both_photos().await;
    let body = sound_visit(&c(1), &photos(&e, &w));
    expected.push((field.push(&body).await, vec!["out_of_scope"]));
    let (e, w) = other_field.both_photos().await;
    let mut body = sound_visit(&c(2), &photos(&e, &w));
    body["campaign"] = "2020-lookback-9".into();
    let undefined_campaign_visit = other_field.push(&body).await;
    expected.push((undefined_campaign_visit.clone(), vec!["unknown_campaign"]));
    // A household the registry missed.
    let (e, w) = field.both_photos().await;
    let body = sound_visit(&the_unregistered(), &photos(&e, &w));
    let unregistered_visit = field.push(&body).await;
    expected.push((unregistered_visit.clone(), vec!["unknown_household"]));

    server.settle().await;
    for (submission_id, want) in &expected {
        assert_eq!(
            codes(&reviewer, submission_id).await,
            *want,
            "visit {submission_id}"
        );
    }

    // The roll-up adds up to the same truth.
    let by_village: Value = reviewer
        .get_json(&format!(
            "/v1/reports/coverage?campaign={CAMPAIGN}&level=village&prefix=410327"
        ))
        .await;
    let unit = |code: &str| {
        by_village["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["code"] == code)
            .cloned()
            .unwrap_or_else(|| panic!("no {code} in {by_village}"))
    };
    let counts = |u: &Value| {
        ["registered", "surveyed", "approved", "all_ok"].map(|k| u[k].as_i64().unwrap())
    };
    let open = |u: &Value| -> BTreeMap<String, i64> {
        serde_json::from_value(u["open_findings"].clone()).unwrap()
    };
    let tally = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
        pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    };
    let village_a = unit(VILLAGE_A);
    assert_eq!(village_a["name"], "001村");
    assert_eq!(counts(&village_a), [12, 12, 0, 11], "{village_a}");
    assert_eq!(
        open(&village_a),
        tally(&[
            ("conflicting_resurvey", 1),
            ("location_far_from_household", 2),
            ("member_mismatch", 1),
            ("missing_required_photo", 1),
            ("mock_location", 1),
            ("photo_near_duplicate", 1),
            ("photo_reused_exact", 1),
            ("photo_time_implausible", 2),
            ("water_unsafe", 1),
        ])
    );
    let village_b = unit(VILLAGE_B);
    assert_eq!(counts(&village_b), [10, 9, 0, 3], "{village_b}");
    assert_eq!(
        open(&village_b),
        tally(&[
            ("food_clothing_insecure", 1),
            ("housing_unsafe", 1),
            ("income_below_line", 1),
            ("invalid_id_number", 1),
            ("school_dropout", 1),
            ("uninsured_member", 1),
            ("water_unsafe", 1),
        ])
    );
    let village_c = unit(VILLAGE_C);
    assert_eq!(counts(&village_c), [2, 1, 0, 1], "{village_c}");
    assert_eq!(open(&village_c), tally(&[("out_of_scope", 1)]));
    assert_eq!(by_village["unknown_household_visits"], 1);
    let by_township: Value = reviewer
        .get_json(&format!("/v1/reports/coverage?campaign={CAMPAIGN}"))
        .await;
    let townships: Vec<(String, String, [i64; 4])> = by_township["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["code"].as_str().unwrap().to_owned(),
                u["name"].as_str().unwrap().to_owned(),
                counts(u),
            )
        })
        .collect();
    assert_eq!(
        townships,
        [
            (
                "410327101".to_owned(),
                "410327101镇".to_owned(),
                [22, 21, 0, 14]
            ),
            (
                "410327102".to_owned(),
                "410327102镇".to_owned(),
                [2, 1, 0, 1]
            ),
        ]
    );

    // The county office's spreadsheet: the same numbers under Chinese headers.
    let csv = reviewer
        .request(
            reqwest::Method::GET,
            &format!("/v1/reports/coverage?campaign={CAMPAIGN}"),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark for Excel");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0]
            .starts_with("乡镇代码,乡镇名称,登记户数,已走访户数,审核通过户数,各项保障均达标户数,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("410327101,410327101镇,22,21,0,14,"),
        "{}",
        lines[1]
    );
    assert!(lines[3].starts_with(",合计,24,22,0,15,"), "{}", lines[3]);
    assert!(
        lines[3].ends_with(",1"),
        "unknown-household visits last: {}",
        lines[3]
    );

    // The households list, filtered and paged.
    let listed = |query: String| {
        let reviewer = &reviewer;
        async move {
            let page: Value = reviewer.get_json(&format!("/v1/households?{query}")).await;
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["household_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("finding=school_dropout".into()).await, [b(7).id]);
    assert_eq!(
        listed("verdict=unknown&prefix=410327101".into()).await,
        [b(10).id]
    );
    assert_eq!(
        listed(format!("verdict=failing&prefix={VILLAGE_A}")).await,
        [a(11).id]
    );
    let mut paged = Vec::new();
    let mut since = String::new();
    loop {
        let page: Value = reviewer
            .get_json(&format!(
                "/v1/households?prefix=410327101&limit=5&since={since}"
            ))
            .await;
        paged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["household_id"].as_str().unwrap().to_owned()),
        );
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        since = page["next_cursor"].as_str().unwrap().to_owned();
    }
    let mut township_ids: Vec<String> = households
        .iter()
        .filter(|h| h.village_code.starts_with("410327101"))
        .map(|h| h.id.clone())
        .collect();
    township_ids.sort();
    assert_eq!(paged, township_ids);
    let first: Value = reviewer
        .get_json(&format!("/v1/households?prefix={VILLAGE_B}&limit=1"))
        .await;
    assert_eq!(first["items"][0]["verdict"], "failing");
    assert_eq!(first["items"][0]["head_name"], "户主1");
    assert_eq!(first["items"][0]["open_findings"]["housing_unsafe"], 1);

    // The registry catches up with the missed household: its finding is cleared, with a trail.
    let mut with_missed = households.clone();
    with_missed.push(the_unregistered());
    import_registry(&admin, &with_missed).await;
    server.settle().await;
    assert_eq!(
        codes(&reviewer, &unregistered_visit).await,
        Vec::<String>::new()
    );
    let after: Value = reviewer
        .get_json(&format!(
            "/v1/reports/coverage?campaign={CAMPAIGN}&level=village&prefix={VILLAGE_A}"
        ))
        .await;
    assert_eq!(after["unknown_household_visits"], 0);
    assert_eq!(counts(&after["items"][0]), [13, 13, 0, 12]);
    let auditor = server.user("auditor", &[]).await;
    let trail: Value = auditor
        .get_json(&format!("/v1/audit/households/{UNREGISTERED}/trail"))
        .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let raised = actions
        .iter()
        .position(|a| *a == "finding.raised")
        .expect("raised");
    let cleared = actions
        .iter()
        .position(|a| *a == "finding.cleared")
        .expect("cleared");
    assert!(raised < cleared, "{actions:?}");
    // The campaign it named is defined after all: its visit is no longer flagged.
    define_campaign(
        &admin,
        "2020-lookback-9",
        "2020-03-01",
        &["housing_exterior", "water_source"],
    )
    .await;
    server.settle().await;
    assert_eq!(
        codes(&reviewer, &undefined_campaign_visit).await,
        Vec::<String>::new()
    );
    // Reconciling again changes nothing.
    let entries = server.count("SELECT COUNT(*) FROM audit_log").await;
    server
        .sql("INSERT INTO jobs (kind, subject, ready_at, enqueued_at) SELECT DISTINCT 'reconcile', household_id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM submissions")
        .await
        .unwrap();
    server.settle().await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM audit_log").await,
        entries
    );

    // Bad questions get clear answers.
    for (query, status, code) in [
        ("/v1/reports/coverage?level=county", 400, "invalid_query"),
        ("/v1/reports/coverage?prefix=41a", 400, "invalid_query"),
        ("/v1/reports/coverage?campaign=nope", 404, "not_found"),
        ("/v1/households?finding=bogus", 400, "invalid_query"),
        ("/v1/households?verdict=maybe", 400, "invalid_query"),
        ("/v1/households?since=garbage", 400, "invalid_query"),
    ] {
        expect_problem(reviewer.get(query).await, status, code).await;
    }
    expect_problem(
        field.api.get("/v1/reports/coverage").await,
        403,
        "forbidden",
    )
    .await;
    // A reviewer sees their own township only.
    let narrow = server.user("reviewer", &["410327102"]).await;
    let seen: Value = narrow.get_json("/v1/reports/coverage").await;
    assert_eq!(seen["items"].as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen["items"][0]["code"], "410327102");
}
