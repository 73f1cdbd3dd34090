//! Reconciliation: a household's verdict per guarantee, from its current visit in a campaign.

use huikan_shared::idcard::check_character;
use huikan_tests::api::expect_problem;
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::registry::village;
use huikan_tests::visits::visit;
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    the_verdict_follows_the_current_visit,
    a_household_without_a_visit_is_unknown_on_every_guarantee,
);

const HOUSEHOLD: &str = "4103271010010001";
const GUARANTEES: [&str; 7] = [
    "food",
    "clothing",
    "education",
    "medical",
    "housing",
    "water",
    "income",
];

async fn registered(server: &TestServer) -> Api {
    let admin = server.admin().await;
    import_registry(&admin, &village("410327101001", 2)).await;
    for (id, starts) in [
        ("2020-lookback-1", "2020-03-01"),
        ("2019-lookback-2", "2019-10-01"),
    ] {
        define_campaign(&admin, id, starts, &["housing_exterior"]).await;
    }
    admin
}

async fn push(field: &Api, body: &Value) -> String {
    let pushed = field
        .post_json("/v1/sync/push", &json!({"submissions": [body]}))
        .await;
    assert_eq!(pushed.status(), 200);
    let result: Value = pushed.json().await.unwrap();
    assert_eq!(result["results"][0]["outcome"], "created", "{result}");
    body["submission_id"].as_str().unwrap().to_owned()
}

/// A child born on 2004-03-03: 15 at the visits of 2020-03-02, the last day of compulsory-school age.
fn child_dropped_out() -> Value {
    let first17 = "41032720040303123";
    let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
    json!({"id_number": format!("{first17}{}", check_character(&digits)), "relation": "child",
           "present": true, "school_status": "dropped_out", "insured": false,
           "health": "healthy", "disability_grade": null, "labour": "none"})
}

async fn the_verdict_follows_the_current_visit(server: TestServer) {
    registered(&server).await;
    let field = server.user("field_staff", &["410327101001"]).await;
    let reviewer = server.user("reviewer", &["410327101"]).await;

    let mut failing = visit(HOUSEHOLD, &[]);
    let answers = &mut failing["answers"];
    answers["members"]
        .as_array_mut()
        .unwrap()
        .push(child_dropped_out());
    answers["clothing_secure"] = false.into();
    answers["housing"]["grade"] = "C".into();
    answers["water"]["convenience_ok"] = false.into();
    answers["income"]["per_capita_yuan"] = 3200.into();
    let failing_id = push(&field, &failing).await;

    let household: Value = reviewer
        .get_json(&format!("/v1/households/{HOUSEHOLD}"))
        .await;
    let verdict = &household["verdict"];
    assert_eq!(
        verdict["campaign"], "2020-lookback-1",
        "the latest campaign"
    );
    assert_eq!(verdict["submission_id"], failing_id.as_str());
    let statuses: Vec<&str> = GUARANTEES
        .iter()
        .map(|g| verdict[g].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "ok", "failing", "failing", "failing", "failing", "failing", "failing"
        ],
        "{verdict}"
    );
    let mut codes: Vec<&str> = verdict["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "food_clothing_insecure",
            "housing_unsafe",
            "income_below_line",
            "school_dropout",
            "uninsured_member",
            "water_unsafe"
        ]
    );
    assert!(
        !verdict.to_string().contains("200403031"),
        "findings never name a member by full ID number: {verdict}"
    );

    // A later, sound visit is the current one; once the failing one is approved, it is again.
    let sound_id = push(&field, &visit(HOUSEHOLD, &[])).await;
    let verdict = &reviewer
        .get_json(&format!("/v1/households/{HOUSEHOLD}"))
        .await["verdict"];
    assert_eq!(verdict["submission_id"], sound_id.as_str());
    assert_eq!(verdict["housing"], "ok");
    server
        .sql(&format!(
            "UPDATE submissions SET review_state = 'approved' WHERE household_id = '{HOUSEHOLD}'
             AND content LIKE '%\"grade\":\"C\"%'"
        ))
        .await
        .unwrap();
    let verdict = &reviewer
        .get_json(&format!("/v1/households/{HOUSEHOLD}"))
        .await["verdict"];
    assert_eq!(
        verdict["submission_id"],
        failing_id.as_str(),
        "approved first"
    );

    // Another campaign has no visit of this household.
    let other = &reviewer
        .get_json(&format!(
            "/v1/households/{HOUSEHOLD}?campaign=2019-lookback-2"
        ))
        .await["verdict"];
    assert_eq!(other["campaign"], "2019-lookback-2");
    assert!(other["submission_id"].is_null());
    assert_eq!(other["housing"], "unknown");
}

async fn a_household_without_a_visit_is_unknown_on_every_guarantee(server: TestServer) {
    let admin = registered(&server).await;
    let household: Value = admin.get_json("/v1/households/4103271010010002").await;
    let verdict = &household["verdict"];
    for guarantee in GUARANTEES {
        assert_eq!(verdict[guarantee], "unknown", "{verdict}");
    }
    assert_eq!(verdict["findings"], json!([]));
    let bad = admin
        .get("/v1/households/4103271010010002?unmask=maybe")
        .await;
    expect_problem(bad, 400, "invalid_query").await;
}
