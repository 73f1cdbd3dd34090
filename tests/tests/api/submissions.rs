use std::collections::HashSet;

use huikan_tests::api::expect_problem;
use huikan_tests::photos::{sha256_hex, small_jpeg};
use huikan_tests::visits::visit;
use huikan_tests::{Api, Backend, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    a_visit_is_created_replayed_or_conflicting,
    visits_wait_for_their_photos,
    bad_visits_name_the_field,
    identical_content_under_a_new_id_is_a_duplicate,
    push_answers_each_item_as_if_posted_alone,
    visits_are_read_back_within_reach,
    the_sync_feed_pages_by_cursor,
    a_burst_of_retries_stores_one,
    retries_across_two_processes_store_one,
    a_killed_server_keeps_every_acknowledged_visit,
);

async fn photo(api: &Api, seed: u64) -> String {
    let bytes = small_jpeg(seed);
    let sha = sha256_hex(&bytes);
    assert!(api.put_blob(&sha, bytes).await.status().is_success());
    sha
}

async fn a_visit_is_created_replayed_or_conflicting(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let sha = photo(&field, 1).await;
    let mut body = visit("4103271010010001", &[(&sha, "housing_exterior")]);
    let created = field.post_json("/v1/submissions", &body).await;
    assert_eq!(created.status(), 201);
    let receipt: Value = created.json().await.unwrap();
    assert_eq!(receipt["submission_id"], body["submission_id"]);
    assert_eq!(receipt["status"], "received");
    assert_eq!(receipt["duplicate_of"], Value::Null);
    assert_eq!(receipt["content_sha256"].as_str().unwrap().len(), 64);

    // A retry after an app update: other delivery fields, same content.
    body["app_version"] = json!("1.0.1");
    body["device_id"] = json!("new-phone");
    let replayed = field.post_json("/v1/submissions", &body).await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.json::<Value>().await.unwrap(), receipt);

    // JCS: 12.0 and 12 are the same number, key order does not matter.
    let text = serde_json::to_string(&body)
        .unwrap()
        .replace("\"accuracy_m\":12.0", "\"accuracy_m\":12");
    let same = field
        .post_raw("/v1/submissions", "application/json", text)
        .await;
    assert_eq!(same.status(), 200);

    body["answers"]["food_secure"] = json!(false);
    let conflict = expect_problem(
        field.post_json("/v1/submissions", &body).await,
        409,
        "submission_conflict",
    )
    .await;
    assert_eq!(conflict["content_sha256"], receipt["content_sha256"]);
    let stored: Value = field
        .get(&format!(
            "/v1/submissions/{}",
            receipt["submission_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["content"]["answers"]["food_secure"], true,
        "a conflict changes nothing"
    );
}

async fn visits_wait_for_their_photos(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let bytes = small_jpeg(2);
    let missing = sha256_hex(&bytes);
    let present = photo(&field, 3).await;
    let body = visit(
        "4103271010010001",
        &[(&present, "housing_exterior"), (&missing, "water_source")],
    );
    let problem = expect_problem(
        field.post_json("/v1/submissions", &body).await,
        422,
        "missing_blobs",
    )
    .await;
    assert_eq!(problem["missing"], json!([missing]));
    let id = body["submission_id"].as_str().unwrap();
    expect_problem(
        field.get(&format!("/v1/submissions/{id}")).await,
        404,
        "not_found",
    )
    .await;

    assert_eq!(field.put_blob(&missing, bytes).await.status(), 201);
    assert_eq!(
        field.post_json("/v1/submissions", &body).await.status(),
        201
    );
}

async fn bad_visits_name_the_field(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let malformed = field
        .post_raw(
            "/v1/submissions",
            "application/json",
            "{\"submission_id\": \"x\",",
        )
        .await;
    expect_problem(malformed, 400, "invalid_body").await;
    let not_json = field
        .post_raw("/v1/submissions", "application/json", "hello")
        .await;
    expect_problem(not_json, 400, "invalid_body").await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "submission_id",
            Box::new(|v| v["submission_id"] = json!("not-a-uuid")),
        ),
        (
            "submission_id",
            Box::new(|v| v["submission_id"] = json!("0190C3E2-7D3A-7B4C-9D1E-0123456789AB")),
        ),
        (
            "surveyed_at",
            Box::new(|v| v["surveyed_at"] = json!("2020-03-02 10:15")),
        ),
        (
            "location.lat",
            Box::new(|v| v["location"]["lat"] = json!(123.0)),
        ),
        (
            "location.lon",
            Box::new(|v| v["location"]["lon"] = json!("112")),
        ),
        (
            "answers.members[0].relation",
            Box::new(|v| v["answers"]["members"][0]["relation"] = json!("cousin")),
        ),
        (
            "answers.members[0].disability_grade",
            Box::new(|v| v["answers"]["members"][0]["disability_grade"] = json!(7)),
        ),
        (
            "answers.water.quality_ok",
            Box::new(|v| {
                v["answers"]["water"]
                    .as_object_mut()
                    .unwrap()
                    .remove("quality_ok");
            }),
        ),
        (
            "answers.income.per_capita_yuan",
            Box::new(|v| v["answers"]["income"]["per_capita_yuan"] = json!(-5)),
        ),
        (
            "answers.housing.grade",
            Box::new(|v| v["answers"]["housing"]["grade"] = json!("E")),
        ),
        (
            "photos[0].kind",
            Box::new(|v| v["photos"] = json!([{"sha256": "a".repeat(64), "kind": "selfie"}])),
        ),
        (
            "photos[0].sha256",
            Box::new(|v| v["photos"] = json!([{"sha256": "xyz", "kind": "other"}])),
        ),
        ("campaign", Box::new(|v| v["campaign"] = json!("Round One"))),
        ("color", Box::new(|v| v["answers"]["color"] = json!("red"))),
        (
            "household_id",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("household_id");
            }),
        ),
    ];
    for (field_name, mutate) in cases {
        let mut body = visit("4103271010010001", &[]);
        mutate(&mut body);
        let problem = expect_problem(
            field.post_json("/v1/submissions", &body).await,
            400,
            "invalid_body",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(field_name.rsplit('.').next().unwrap()),
            "{field_name}: {problem}"
        );
    }
    let list: Value = field
        .get("/v1/sync/submissions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]), "nothing of a bad visit is stored");
}

async fn identical_content_under_a_new_id_is_a_duplicate(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    // Unknown and out-of-scope households are stored too: flagged later, never refused.
    let first = visit("9999999999999999", &[]);
    let r1: Value = field
        .post_json("/v1/submissions", &first)
        .await
        .json()
        .await
        .unwrap();
    let mut again = first.clone();
    again["submission_id"] = json!(uuid::Uuid::now_v7().to_string());
    let response = field.post_json("/v1/submissions", &again).await;
    assert_eq!(response.status(), 201);
    let r2: Value = response.json().await.unwrap();
    assert_eq!(r2["duplicate_of"], r1["submission_id"]);
    assert_eq!(r2["content_sha256"], r1["content_sha256"]);
    let replay: Value = field
        .post_json("/v1/submissions", &again)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replay, r2);
}

async fn push_answers_each_item_as_if_posted_alone(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let sha = photo(&field, 4).await;
    let existing = visit("4103271010010002", &[]);
    assert_eq!(
        field.post_json("/v1/submissions", &existing).await.status(),
        201
    );
    let mut conflicting = existing.clone();
    conflicting["answers"]["clothing_secure"] = json!(false);
    let fresh = visit("4103271010010003", &[(&sha, "housing_exterior")]);
    let waiting = visit("4103271010010004", &[(&"b".repeat(64), "water_source")]);
    let mut invalid = visit("4103271010010005", &[]);
    invalid["answers"]["food_secure"] = json!("yes");
    let twin = {
        let mut t = fresh.clone();
        t["submission_id"] = json!(uuid::Uuid::now_v7().to_string());
        t
    };
    let batch = json!({"submissions": [existing, conflicting, fresh, waiting, invalid, twin, fresh, json!(42)]});
    let response = field.post_json("/v1/sync/push", &batch).await;
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    let outcomes: Vec<&str> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "replayed",
            "conflict",
            "created",
            "missing_blobs",
            "invalid",
            "created",
            "replayed",
            "invalid"
        ]
    );
    let r = &results["results"];
    assert_eq!(r[1]["problem"]["code"], "submission_conflict");
    assert_eq!(r[3]["problem"]["missing"], json!(["b".repeat(64)]));
    assert!(
        r[4]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("food_secure")
    );
    assert_eq!(
        r[5]["receipt"]["duplicate_of"],
        r[2]["receipt"]["submission_id"]
    );
    assert_eq!(r[6]["receipt"], r[2]["receipt"]);

    for bad in [
        json!([]),
        json!({"submissions": []}),
        json!({"submissions": {}}),
        json!({"submissions": [], "x": 1}),
    ] {
        expect_problem(
            field.post_json("/v1/sync/push", &bad).await,
            400,
            "invalid_body",
        )
        .await;
    }
    let too_many: Vec<Value> = (0..501).map(|_| visit("4103271010010001", &[])).collect();
    let problem = expect_problem(
        field
            .post_json("/v1/sync/push", &json!({"submissions": too_many}))
            .await,
        400,
        "invalid_body",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("500"));
}

async fn visits_are_read_back_within_reach(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let sha = photo(&field, 5).await;
    let body = visit("4103271010010001", &[(&sha, "water_source")]);
    let id = body["submission_id"].as_str().unwrap().to_owned();
    assert_eq!(
        field.post_json("/v1/submissions", &body).await.status(),
        201
    );
    let path = format!("/v1/submissions/{id}");

    let own: Value = field.get(&path).await.json().await.unwrap();
    assert_eq!(own["household_id"], "4103271010010001");
    assert_eq!(own["review_state"], "received");
    assert_eq!(own["submitted_by"], field.username().as_str());
    assert_eq!(own["photos"][0]["sha256"], sha.as_str());
    assert_eq!(own["photos"][0]["kind"], "water_source");
    assert_eq!(
        own["content"]["answers"]["members"][0]["id_number"],
        "41032719800101123X"
    );
    assert!(own["content"].get("submission_id").is_none());

    let other = server.user("field_staff", &["410327101001"]).await;
    expect_problem(other.get(&path).await, 404, "not_found").await;
    let reviewer = server.user("reviewer", &["410327101"]).await;
    let masked: Value = reviewer.get(&path).await.json().await.unwrap();
    assert_eq!(
        masked["content"]["answers"]["members"][0]["id_number"],
        "410327********123X"
    );
    let unmasked: Value = reviewer
        .get(&format!("{path}?unmask=true"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unmasked["content"]["answers"]["members"][0]["id_number"],
        "41032719800101123X"
    );
    expect_problem(
        reviewer.get(&format!("{path}?unmask=maybe")).await,
        400,
        "invalid_query",
    )
    .await;
    // A photo used in one's own visit can be read back by that field worker.
    let status = field
        .get(&format!("/v1/blobs/{sha}"))
        .await
        .status()
        .as_u16();
    assert!(
        status == 200 || (status == 307 && server.backend == Backend::PostgresS3),
        "{status}"
    );
}

async fn the_sync_feed_pages_by_cursor(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let other = server.user("field_staff", &["410327101001"]).await;
    let batch: Vec<Value> = (0..7)
        .map(|i| visit(&format!("410327101001{i:04}"), &[]))
        .collect();
    let ids: Vec<String> = batch
        .iter()
        .map(|v| v["submission_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        field
            .post_json("/v1/sync/push", &json!({"submissions": batch}))
            .await
            .status(),
        200
    );
    assert_eq!(
        other
            .post_json("/v1/submissions", &visit("4103271010019999", &[]))
            .await
            .status(),
        201
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync/submissions?limit=3&since={c}"),
            None => "/v1/sync/submissions?limit=3".to_owned(),
        };
        let page: Value = field.get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(
            items.len() == 3 || !page["has_more"].as_bool().unwrap(),
            "{page}"
        );
        seen.extend(
            items
                .iter()
                .map(|i| i["submission_id"].as_str().unwrap().to_owned()),
        );
        assert!(items.iter().all(|i| i["review_state"] == "received"));
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen, ids, "each of the caller's own visits once, in order");
    let tail: Value = field
        .get(&format!("/v1/sync/submissions?since={}", cursor.unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tail["items"], json!([]));

    for bad in [
        "limit=0",
        "limit=-3",
        "limit=ten",
        "since=not-a-cursor",
        "limit=1&limit=2",
    ] {
        expect_problem(
            field.get(&format!("/v1/sync/submissions?{bad}")).await,
            400,
            "invalid_query",
        )
        .await;
    }
}

/// Many tasks resend one visit at once: exactly one is created; every answer is the same receipt.
async fn burst(apis: &[Api], body: &Value, tasks: usize) -> Vec<(u16, Value)> {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let api = apis[i % apis.len()].clone();
            let body = body.clone();
            tokio::spawn(async move {
                let response = api.post_json("/v1/submissions", &body).await;
                (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap(),
                )
            })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}

fn exactly_one_created(answers: &[(u16, Value)]) {
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let replayed = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replayed), (1, answers.len() - 1), "{answers:?}");
    let receipts: HashSet<String> = answers.iter().map(|(_, r)| r.to_string()).collect();
    assert_eq!(
        receipts.len(),
        1,
        "every answer is the same receipt: {receipts:?}"
    );
}

async fn a_burst_of_retries_stores_one(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let body = visit("4103271010010001", &[]);
    exactly_one_created(&burst(std::slice::from_ref(&field), &body, 64).await);
    let feed: Value = field
        .get("/v1/sync/submissions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(feed["items"].as_array().unwrap().len(), 1);
}

async fn retries_across_two_processes_store_one(mut server: TestServer) {
    if server.backend == Backend::Embedded {
        return; // one SQLite file has one server process; scale-out is PostgreSQL + S3
    }
    let second = server.another_process().await;
    let field = server.user("field_staff", &["410327101001"]).await;
    let apis = [field.clone(), field.at(&second)];
    for _ in 0..5 {
        let body = visit("4103271010010001", &[]);
        exactly_one_created(&burst(&apis, &body, 40).await);
    }
    // The same photo uploaded through both processes at once is stored once.
    let bytes = small_jpeg(77);
    let sha = sha256_hex(&bytes);
    let puts: Vec<_> = (0..10)
        .map(|i| {
            let api = apis[i % 2].clone();
            let (sha, bytes) = (sha.clone(), bytes.clone());
            tokio::spawn(async move { api.put_blob(&sha, bytes).await.status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for p in puts {
        statuses.push(p.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        9,
        "{statuses:?}"
    );
    let feed: Value = field
        .get("/v1/sync/submissions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(feed["items"].as_array().unwrap().len(), 5);
}

async fn a_killed_server_keeps_every_acknowledged_visit(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let visits: Vec<Value> = (0..400)
        .map(|i| visit(&format!("410327101001{i:04}"), &[]))
        .collect();
    let sender = {
        let field = field.clone();
        let visits = visits.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for chunk in visits.chunks(4) {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|v| {
                        let (field, v) = (field.clone(), v.clone());
                        tokio::spawn(async move {
                            let response = field
                                .request(reqwest::Method::POST, "/v1/submissions")
                                .json(&v)
                                .send()
                                .await;
                            match response {
                                Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
                                _ => None,
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    if let Some(receipt) = t.await.unwrap() {
                        acknowledged.push(receipt);
                    }
                }
            }
            acknowledged
        })
    };
    // Kill once some visits are in, while the rest are still being sent.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let feed: Value = field
            .get("/v1/sync/submissions?limit=1000")
            .await
            .json()
            .await
            .unwrap();
        if feed["items"].as_array().unwrap().len() >= 40 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill().await;
    let acknowledged = sender.await.unwrap();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < visits.len(),
        "the kill came mid-burst: {}",
        acknowledged.len()
    );

    server.restart().await;
    let field = field.at(&server.base);
    for receipt in &acknowledged {
        let id = receipt["submission_id"].as_str().unwrap();
        let stored: Value = field
            .get(&format!("/v1/submissions/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            stored["content_sha256"], receipt["content_sha256"],
            "acknowledged {id} survives"
        );
    }
    let acked: HashSet<&str> = acknowledged
        .iter()
        .map(|r| r["submission_id"].as_str().unwrap())
        .collect();
    for chunk in visits.chunks(250) {
        let response: Value = field
            .post_json("/v1/sync/push", &json!({"submissions": chunk}))
            .await
            .json()
            .await
            .unwrap();
        for result in response["results"].as_array().unwrap() {
            let id = result["submission_id"].as_str().unwrap();
            if acked.contains(id) {
                assert_eq!(result["outcome"], "replayed", "{result}");
            } else {
                assert!(
                    result["outcome"] == "created" || result["outcome"] == "replayed",
                    "{result}"
                );
            }
        }
    }
    let feed: Value = field
        .get("/v1/sync/submissions?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        feed["items"].as_array().unwrap().len(),
        visits.len(),
        "every visit once"
    );
}
