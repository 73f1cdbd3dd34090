//! Every string and list from outside has a bound, and a value over it is a 400 naming the field
//! with nothing stored; wrong passwords are throttled per username and per address, audited.

use huikan_tests::api::{console_login, expect_problem};
use huikan_tests::visits::visit;
use huikan_tests::{TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    every_field_over_its_bound_is_a_400_naming_it_and_nothing_is_stored,
    wrong_passwords_are_throttled_per_username_and_audited,
    wrong_passwords_are_throttled_per_address,
);

/// Sets one field of a visit to a value.
type SetField = fn(&mut Value, &str);

const FIVE_MB: usize = 5 * 1024 * 1024;

/// Checks a 400 whose detail starts with `field` and does not echo the value back.
async fn expect_bounded(response: reqwest::Response, code: &str, field: &str) {
    let body = expect_problem(response, 400, code).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(field), "{field}: {body}");
    assert!(
        detail.len() < 300,
        "the detail echoes the value: {}",
        detail.len()
    );
}

async fn every_field_over_its_bound_is_a_400_naming_it_and_nothing_is_stored(server: TestServer) {
    let long = "x".repeat(FIVE_MB);
    let field = server.user("field_staff", &["410327101001"]).await;

    // A visit: each bounded field in turn, singly and in a push; none is stored.
    let cases: [(&str, SetField); 5] = [
        ("device_id", |v, s| v["device_id"] = json!(s)),
        ("form_version", |v, s| v["form_version"] = json!(s)),
        ("app_version", |v, s| v["app_version"] = json!(s)),
        ("answers.notes", |v, s| v["answers"]["notes"] = json!(s)),
        ("answers.members[0].name", |v, s| {
            v["answers"]["members"][0]["name"] = json!(s)
        }),
    ];
    for (name, set) in cases {
        let mut body = visit("4103271010010001", &[]);
        set(&mut body, &long);
        let id = body["submission_id"].as_str().unwrap().to_owned();
        expect_bounded(
            field.post_json("/v1/submissions", &body).await,
            "invalid_body",
            name,
        )
        .await;
        let pushed = field
            .post_json("/v1/sync/push", &json!({"submissions": [body]}))
            .await;
        assert_eq!(pushed.status(), 200);
        let pushed: Value = pushed.json().await.unwrap();
        assert_eq!(
            pushed["results"][0]["outcome"], "invalid",
            "{name}: {pushed}"
        );
        assert_eq!(pushed["results"][0]["problem"]["code"], "invalid_body");
        let stored = field.get(&format!("/v1/submissions/{id}")).await;
        assert_eq!(stored.status(), 404, "{name} was stored");
    }
    let mut body = visit("4103271010010001", &[]);
    let member = body["answers"]["members"][0].clone();
    body["answers"]["members"] = json!(vec![member; 51]);
    expect_bounded(
        field.post_json("/v1/submissions", &body).await,
        "invalid_body",
        "answers.members: at most 50 entries",
    )
    .await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM submissions").await,
        0,
        "an over-long visit was stored"
    );

    // Logins, users, campaigns.
    let anon = server.anonymous();
    let login =
        |username: &str, password: &str| json!({"username": username, "password": password});
    expect_bounded(
        anon.post_json("/v1/auth/token", &login(&long, "password-1"))
            .await,
        "invalid_body",
        "username: at most 128 characters",
    )
    .await;
    expect_bounded(
        anon.post_json("/v1/auth/token", &login("someone", &long))
            .await,
        "invalid_body",
        "password: at most 256 characters",
    )
    .await;
    let admin = server.admin().await;
    let user = json!({"username": "u".repeat(129), "password": huikan_tests::server::PASSWORD, "role": "auditor", "scope": []});
    expect_bounded(
        admin.post_json("/v1/users", &user).await,
        "invalid_body",
        "username",
    )
    .await;
    let campaign = json!({"name": long, "starts_at": "2020-03-01T00:00:00+08:00",
                          "ends_at": "2020-04-01T00:00:00+08:00", "timezone": "Asia/Shanghai",
                          "required_photos": []});
    expect_bounded(
        admin.put_json("/v1/campaigns/r1", &campaign).await,
        "invalid_body",
        "name: at most 128",
    )
    .await;
    assert_eq!(server.count("SELECT COUNT(*) FROM campaigns").await, 0);

    // Review: a reason and a comment.
    let reviewer = server.user("reviewer", &["410327"]).await;
    let some_visit = uuid::Uuid::now_v7();
    let decision =
        json!({"decision": "reject", "reason": "r".repeat(4001), "expected_state": "pending"});
    expect_bounded(
        reviewer
            .post_json(&format!("/v1/review/{some_visit}/decision"), &decision)
            .await,
        "invalid_body",
        "reason: at most 4000",
    )
    .await;
    expect_bounded(
        reviewer
            .post_json(
                &format!("/v1/review/{some_visit}/comments"),
                &json!({"text": long}),
            )
            .await,
        "invalid_body",
        "text: at most 4000",
    )
    .await;

    // A query-string value, named.
    let prefix = "4".repeat(300);
    expect_bounded(
        reviewer
            .get(&format!("/v1/review/queue?prefix={prefix}"))
            .await,
        "invalid_query",
        "\"prefix\": at most 256",
    )
    .await;

    // The console's forms: a 400 too, not a stored comment.
    let (status, session) = console_login(&server.base, &"n".repeat(FIVE_MB / 16), "password-1")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(session.is_none());

    // A registry row with an over-long cell is skipped, naming the column; the others load.
    let mut rows = String::from(
        "户编号,村代码,乡镇,行政村,户主姓名,姓名,身份证号,与户主关系\n\
         4103271010010001,410327101001,城关镇,东村,张三,张三,11010519491231002X,户主\n",
    );
    rows.push_str(&format!(
        "4103271010010002,410327101001,城关镇,东村,{},李四,11010519491231002X,户主\n",
        "名".repeat(100_000)
    ));
    let imported = admin
        .post_raw("/v1/registry/imports", "text/csv", rows.into_bytes())
        .await;
    assert_eq!(imported.status(), 201);
    let report: Value = imported.json().await.unwrap();
    let text = report.to_string();
    assert!(
        text.contains("head_name: at most 128 characters"),
        "{report}"
    );
    assert!(text.len() < 10_000, "the report echoes the cell");
}

async fn wrong_passwords_are_throttled_per_username_and_audited(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let username = field.username();
    let anon = server.anonymous();
    let attempt = |password: &str| {
        let body = json!({"username": username, "password": password});
        let anon = anon.clone();
        async move { anon.post_json("/v1/auth/token", &body).await }
    };
    for _ in 0..5 {
        expect_problem(attempt("wrong-password").await, 401, "unauthorized").await;
    }
    // Held back now, even with the right password, with a time to wait.
    for password in ["wrong-password", huikan_tests::server::PASSWORD] {
        let held = attempt(password).await;
        let retry_after: u64 = held
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        let body = expect_problem(held, 429, "rate_limited").await;
        assert_eq!(body["retry_after"], retry_after);
    }
    // The console and OpenRosa's Basic share the count.
    let (status, _) = console_login(&server.base, &username, huikan_tests::server::PASSWORD)
        .await
        .unwrap();
    assert_eq!(status, 429);
    let basic = anon
        .request_without_token(reqwest::Method::GET, "/v1/openrosa/formList")
        .basic_auth(&username, Some(huikan_tests::server::PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 429);
    assert!(basic.headers().contains_key("retry-after"));
    // Other users are not held back.
    server.admin().await;

    let throttled: Vec<Value> = server
        .audit_log()
        .await
        .into_iter()
        .filter(|e| e["action"] == "login.throttled")
        .collect();
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert_eq!(throttled[0]["subject"], format!("user:{username}"));
    assert_eq!(throttled[0]["data"]["failures"], 5);
}

async fn wrong_passwords_are_throttled_per_address(mut server: TestServer) {
    let base = server
        .process_with(&[("HUIKAN_LOGIN_FAILURES_PER_ADDRESS", "3")])
        .await;
    let anon = server.anonymous().at(&base);
    for name in ["guess-1", "guess-2", "guess-3"] {
        let wrong = anon
            .post_json(
                "/v1/auth/token",
                &json!({"username": name, "password": "password-1"}),
            )
            .await;
        expect_problem(wrong, 401, "unauthorized").await;
    }
    let held = anon
        .post_json(
            "/v1/auth/token",
            &json!({"username": "admin", "password": "admin-password-1"}),
        )
        .await;
    let body = expect_problem(held, 429, "rate_limited").await;
    assert!(
        body["detail"].as_str().unwrap().contains("address"),
        "{body}"
    );
    let throttled = server
        .audit_log()
        .await
        .into_iter()
        .filter(|e| e["action"] == "login.throttled")
        .count();
    assert_eq!(throttled, 1);
}
