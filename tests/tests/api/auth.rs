use huikan_tests::api::expect_problem;
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::json;

backend_tests!(
    login_issues_a_token_and_refuses_bad_credentials,
    missing_or_bad_tokens_are_401_and_wrong_roles_403,
    users_are_validated_and_unique,
    revoked_tokens_stop_working,
    tokens_survive_a_restart,
);

async fn login_issues_a_token_and_refuses_bad_credentials(server: TestServer) {
    let anon = server.anonymous();
    let field = server.user("field_staff", &["410327101001"]).await;
    assert_eq!(field.user["role"], "field_staff");
    assert_eq!(field.user["villages"], json!(["410327101001"]));

    let wrong = anon
        .post_json(
            "/v1/auth/token",
            &json!({"username": field.username(), "password": "not-the-password"}),
        )
        .await;
    expect_problem(wrong, 401, "unauthorized").await;
    let nobody = anon
        .post_json(
            "/v1/auth/token",
            &json!({"username": "nobody", "password": "whatever-1"}),
        )
        .await;
    expect_problem(nobody, 401, "unauthorized").await;
    let malformed = anon
        .post_raw("/v1/auth/token", "application/json", "{\"username\": ")
        .await;
    expect_problem(malformed, 400, "invalid_body").await;
    let mistyped = anon
        .post_json("/v1/auth/token", &json!({"username": 5, "password": "x"}))
        .await;
    let body = expect_problem(mistyped, 400, "invalid_body").await;
    assert!(
        body["detail"].as_str().unwrap().contains("username"),
        "{body}"
    );
}

async fn missing_or_bad_tokens_are_401_and_wrong_roles_403(server: TestServer) {
    let anon = server.anonymous();
    expect_problem(anon.get("/v1/campaigns").await, 401, "unauthorized").await;
    let forged = Api::new(&server.base, Some("forged-token".to_owned()));
    expect_problem(forged.get("/v1/campaigns").await, 401, "unauthorized").await;

    let field = server.user("field_staff", &["410327101001"]).await;
    let new_user =
        json!({"username": "x-user", "password": "password-123", "role": "admin", "scope": []});
    expect_problem(
        field.post_json("/v1/users", &new_user).await,
        403,
        "forbidden",
    )
    .await;
    let auditor = server.user("auditor", &[]).await;
    let campaign = json!({"name": "r", "starts_at": "2020-03-01T00:00:00+08:00", "ends_at": "2020-04-01T00:00:00+08:00",
                          "timezone": "Asia/Shanghai", "required_photos": []});
    expect_problem(
        auditor.put_json("/v1/campaigns/r1", &campaign).await,
        403,
        "forbidden",
    )
    .await;
    let visit = huikan_tests::visits::visit("4103271010010001", &[]);
    expect_problem(
        auditor.post_json("/v1/submissions", &visit).await,
        403,
        "forbidden",
    )
    .await;
}

async fn users_are_validated_and_unique(server: TestServer) {
    let admin = server.admin().await;
    let user = json!({"username": "wang.wu", "password": "password-123", "role": "reviewer", "scope": ["410327101"]});
    let created = admin.post_json("/v1/users", &user).await;
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    assert_eq!(body["scope"], json!(["410327101"]));
    expect_problem(
        admin.post_json("/v1/users", &user).await,
        409,
        "username_taken",
    )
    .await;

    for (bad, field) in [
        (
            json!({"username": "a", "password": "short", "role": "reviewer", "scope": []}),
            "password",
        ),
        (
            json!({"username": "b", "password": "password-123", "role": "boss", "scope": []}),
            "role",
        ),
        (
            json!({"username": "c", "password": "password-123", "role": "reviewer", "scope": ["41x"]}),
            "scope",
        ),
        (
            json!({"username": "d", "password": "password-123", "role": "reviewer", "scope": [], "extra": 1}),
            "extra",
        ),
        (
            json!({"username": "has space", "password": "password-123", "role": "reviewer", "scope": []}),
            "username",
        ),
    ] {
        let body = expect_problem(
            admin.post_json("/v1/users", &bad).await,
            400,
            "invalid_body",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{field}: {body}"
        );
    }
}

async fn revoked_tokens_stop_working(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    assert_eq!(field.get("/v1/campaigns").await.status(), 200);
    let revoked = field
        .request(reqwest::Method::POST, "/v1/auth/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    expect_problem(field.get("/v1/campaigns").await, 401, "unauthorized").await;

    // A lost phone: the admin revokes every token of the user.
    let admin = server.admin().await;
    let phone = server.user("field_staff", &["410327101001"]).await;
    let second = server
        .anonymous()
        .login(&phone.username(), "password-123")
        .await;
    let other = server.user("field_staff", &["410327101002"]).await;
    let response = other
        .post_json("/v1/auth/revoke", &json!({"username": phone.username()}))
        .await;
    expect_problem(response, 403, "forbidden").await;
    let response = admin
        .post_json("/v1/auth/revoke", &json!({"username": phone.username()}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["revoked"],
        2
    );
    expect_problem(phone.get("/v1/campaigns").await, 401, "unauthorized").await;
    expect_problem(second.get("/v1/campaigns").await, 401, "unauthorized").await;
    assert_eq!(other.get("/v1/campaigns").await.status(), 200);
    let unknown = admin
        .post_json("/v1/auth/revoke", &json!({"username": "nobody"}))
        .await;
    expect_problem(unknown, 404, "not_found").await;
}

async fn tokens_survive_a_restart(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    server.restart().await;
    assert_eq!(
        field.at(&server.base).get("/v1/campaigns").await.status(),
        200
    );
}
