use huikan_tests::api::expect_problem;
use huikan_tests::{TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    campaigns_are_defined_replaced_and_listed,
    bad_campaigns_are_refused
);

fn campaign(name: &str) -> Value {
    json!({"name": name, "starts_at": "2020-03-01T00:00:00+08:00", "ends_at": "2020-04-30T23:59:59+08:00",
           "timezone": "Asia/Shanghai", "required_photos": ["housing_exterior", "water_source"]})
}

async fn campaigns_are_defined_replaced_and_listed(server: TestServer) {
    let admin = server.admin().await;
    let created = admin
        .put_json("/v1/campaigns/2020-lookback-1", &campaign("第一轮"))
        .await;
    assert_eq!(created.status(), 201);
    let replaced = admin
        .put_json("/v1/campaigns/2020-lookback-1", &campaign("第一轮回头看"))
        .await;
    assert_eq!(replaced.status(), 200);
    let field = server.user("field_staff", &["410327101001"]).await;
    let list: Value = field.get("/v1/campaigns").await.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["campaign_id"], "2020-lookback-1");
    assert_eq!(items[0]["name"], "第一轮回头看");
    assert_eq!(items[0]["timezone"], "Asia/Shanghai");
    assert_eq!(
        items[0]["required_photos"],
        json!(["housing_exterior", "water_source"])
    );
    assert_eq!(
        items[0]["starts_at"]
            .as_str()
            .map(|s| s.starts_with("2020-02-29T16:00:00")),
        Some(true)
    );
}

async fn bad_campaigns_are_refused(server: TestServer) {
    let admin = server.admin().await;
    let response = admin
        .put_json("/v1/campaigns/Not_A_Slug", &campaign("x"))
        .await;
    expect_problem(response, 400, "invalid_path").await;
    for (field, value) in [
        ("timezone", json!("Mars/Olympus")),
        ("ends_at", json!("2020-01-01T00:00:00+08:00")),
        ("required_photos", json!(["selfie"])),
        ("starts_at", json!("yesterday")),
        ("name", json!("")),
    ] {
        let mut body = campaign("x");
        body[field] = value;
        let problem = expect_problem(
            admin.put_json("/v1/campaigns/c1", &body).await,
            400,
            "invalid_body",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{field}: {problem}"
        );
    }
}
