//! Review: the queue, claims with leases, decisions with optimistic concurrency, comments, and a
//! resurvey request reaching the field worker's phone.

use huikan_tests::api::expect_problem;
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::registry::{Household, village};
use huikan_tests::visits::sound_visit;
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    a_visit_goes_through_every_transition,
    clean_visits_enter_the_queue_by_sample,
);

const VILLAGE: &str = "410327101001";

async fn county(server: &TestServer) -> Vec<Household> {
    let admin = server.admin().await;
    let households = village(VILLAGE, 4);
    import_registry(&admin, &households).await;
    define_campaign(&admin, "2020-lookback-1", "2020-03-01", &[]).await;
    households
}

async fn push(field: &Api, body: &Value) -> String {
    let pushed = field
        .post_json("/v1/sync/push", &json!({"submissions": [body]}))
        .await;
    let result: Value = pushed.json().await.unwrap();
    assert_eq!(result["results"][0]["outcome"], "created", "{result}");
    body["submission_id"].as_str().unwrap().to_owned()
}

async fn queue_ids(reviewer: &Api, query: &str) -> Vec<String> {
    let page: Value = reviewer
        .get_json(&format!("/v1/review/queue?{query}"))
        .await;
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|i| i["submission_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_visit_goes_through_every_transition(server: TestServer) {
    let households = county(&server).await;
    let field = server.user("field_staff", &[VILLAGE]).await;
    let first = server.user("reviewer", &["410327101"]).await;
    let second = server.user("reviewer", &["410327"]).await;
    let elsewhere = server.user("reviewer", &["410327102"]).await;

    let sound = push(&field, &sound_visit(&households[0], &[])).await;
    let mut failing = sound_visit(&households[1], &[]);
    failing["answers"]["housing"]["grade"] = "D".into();
    let flagged = push(&field, &failing).await;
    server.settle().await;

    // The queue: undecided visits in arrival order, with their findings; filters narrow it.
    assert_eq!(
        queue_ids(&first, "").await,
        [sound.clone(), flagged.clone()]
    );
    let page: Value = first
        .get_json("/v1/review/queue?finding=housing_unsafe")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["submission_id"], flagged.as_str());
    assert_eq!(page["items"][0]["findings"]["housing_unsafe"], 1);
    assert_eq!(page["items"][0]["severity"], "critical");
    assert_eq!(page["items"][0]["state"], "received");
    assert_eq!(
        queue_ids(&first, "severity=critical").await,
        std::slice::from_ref(&flagged)
    );
    assert_eq!(
        queue_ids(&first, "prefix=410327102").await,
        Vec::<String>::new()
    );
    assert_eq!(queue_ids(&elsewhere, "").await, Vec::<String>::new());
    expect_problem(
        elsewhere.get(&format!("/v1/submissions/{flagged}")).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        queue_ids(&first, "state=approved").await,
        Vec::<String>::new()
    );
    for bad in [
        "state=done",
        "finding=nope",
        "severity=high",
        "prefix=x",
        "since=nope",
    ] {
        expect_problem(
            first.get(&format!("/v1/review/queue?{bad}")).await,
            400,
            "invalid_query",
        )
        .await;
    }
    expect_problem(field.get("/v1/review/queue").await, 403, "forbidden").await;

    // Claims: the holder may claim again to extend; nobody else may, nor decide.
    let claimed = first
        .post_json(&format!("/v1/review/{flagged}/claim"), &json!({}))
        .await;
    assert_eq!(claimed.status(), 200);
    let claim: Value = claimed.json().await.unwrap();
    assert_eq!(claim["state"], "in_review");
    assert_eq!(claim["reviewer"], first.username().as_str());
    let again: Value = first
        .post_json(&format!("/v1/review/{flagged}/claim"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert!(again["lease_expires_at"].as_str() >= claim["lease_expires_at"].as_str());
    let refused = expect_problem(
        second
            .post_json(&format!("/v1/review/{flagged}/claim"), &json!({}))
            .await,
        409,
        "claimed_by_other",
    )
    .await;
    assert_eq!(refused["reviewer"], first.username().as_str());
    expect_problem(
        second
            .post_json(
                &format!("/v1/review/{flagged}/decision"),
                &json!({"decision": "approve", "expected_state": "in_review"}),
            )
            .await,
        409,
        "claimed_by_other",
    )
    .await;
    expect_problem(
        elsewhere
            .post_json(&format!("/v1/review/{flagged}/claim"), &json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        queue_ids(&first, "state=in_review").await,
        std::slice::from_ref(&flagged)
    );

    // Decisions: the state must be the one the reviewer saw; a resurvey needs a reason.
    let decide = |id: &str, body: Value| {
        let first = &first;
        let path = format!("/v1/review/{id}/decision");
        async move { first.post_json(&path, &body).await }
    };
    expect_problem(
        decide(
            &flagged,
            json!({"decision": "resurvey", "reason": "x", "expected_state": "received"}),
        )
        .await,
        409,
        "state_conflict",
    )
    .await;
    for bad in [
        json!({"decision": "resurvey", "expected_state": "in_review"}),
        json!({"decision": "reject", "reason": "  ", "expected_state": "in_review"}),
        json!({"decision": "maybe", "expected_state": "in_review"}),
        json!({"decision": "approve"}),
        json!({"decision": "approve", "expected_state": "lost"}),
    ] {
        expect_problem(decide(&flagged, bad).await, 400, "invalid_body").await;
    }
    let reason = "照片看不清房屋结构，请重新拍摄并核实住房等级";
    let decided = decide(
        &flagged,
        json!({"decision": "resurvey", "reason": reason, "expected_state": "in_review"}),
    )
    .await;
    assert_eq!(decided.status(), 200);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["state"], "resurvey_requested");
    assert_eq!(decided["decided_by"], first.username().as_str());
    assert_eq!(decided["reason"], reason);
    // Decided: it can be neither claimed nor decided again.
    expect_problem(
        second
            .post_json(&format!("/v1/review/{flagged}/claim"), &json!({}))
            .await,
        409,
        "state_conflict",
    )
    .await;
    expect_problem(
        decide(
            &flagged,
            json!({"decision": "approve", "expected_state": "resurvey_requested"}),
        )
        .await,
        409,
        "state_conflict",
    )
    .await;

    // The phone learns it must go back, and why.
    let feed: Value = field.get_json("/v1/sync/submissions").await;
    let item = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|i| i["submission_id"] == flagged.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["review_state"], "resurvey_requested");
    assert_eq!(item["reason"], reason);
    // The visit that answers the request links to it.
    let mut revisit = sound_visit(&households[1], &[]);
    revisit["surveyed_at"] = "2020-03-09T09:00:00+08:00".into();
    let revisit = push(&field, &revisit).await;
    let view: Value = second.get_json(&format!("/v1/submissions/{revisit}")).await;
    assert_eq!(view["answers_resurvey_of"], flagged.as_str());
    let view: Value = second.get_json(&format!("/v1/submissions/{flagged}")).await;
    assert_eq!(view["review_state"], "resurvey_requested");
    assert_eq!(view["decisions"][0]["from_state"], "in_review");
    assert_eq!(view["decisions"][0]["reason"], reason);
    assert!(view["claim"].is_null(), "a decision releases the claim");

    // Approve needs no reason, and no claim when nobody holds one.
    let approved = second
        .post_json(
            &format!("/v1/review/{sound}/decision"),
            &json!({"decision": "approve", "expected_state": "received"}),
        )
        .await;
    assert_eq!(approved.status(), 200);
    // Reject, after a comment.
    let commented = second
        .post_json(
            &format!("/v1/review/{revisit}/comments"),
            &json!({"text": "与村干部核实过"}),
        )
        .await;
    assert_eq!(commented.status(), 201);
    expect_problem(
        second
            .post_json(
                &format!("/v1/review/{revisit}/comments"),
                &json!({"text": ""}),
            )
            .await,
        400,
        "invalid_body",
    )
    .await;
    let rejected = second
        .post_json(
            &format!("/v1/review/{revisit}/decision"),
            &json!({"decision": "reject", "reason": "重复走访", "expected_state": "received"}),
        )
        .await;
    assert_eq!(rejected.status(), 200);
    let view: Value = second.get_json(&format!("/v1/submissions/{revisit}")).await;
    assert_eq!(view["comments"][0]["text"], "与村干部核实过");
    assert_eq!(view["review_state"], "rejected");
    assert_eq!(queue_ids(&first, "").await, Vec::<String>::new());

    // The roll-up counts the approval once reconciliation has caught up.
    server.settle().await;
    let coverage: Value = second.get_json("/v1/reports/coverage?level=village").await;
    assert_eq!(coverage["items"][0]["approved"], 1, "{coverage}");

    // Every transition is in the household's trail, reasons by hash only.
    let auditor = server.user("auditor", &[]).await;
    let trail: Value = auditor
        .get_json(&format!("/v1/audit/households/{}/trail", households[1].id))
        .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.starts_with("review."))
        .collect();
    assert_eq!(
        actions,
        [
            "review.claimed",
            "review.claimed",
            "review.decided",
            "review.commented",
            "review.decided"
        ]
    );
    assert!(
        !trail.to_string().contains(reason),
        "the reason's text stays out of the chain"
    );
}

async fn clean_visits_enter_the_queue_by_sample(mut server: TestServer) {
    let households = county(&server).await;
    let base = server
        .process_with(&[("HUIKAN_REVIEW_SAMPLE_PERCENT", "0")])
        .await;
    let field = server.user("field_staff", &[VILLAGE]).await;
    let clean = push(&field, &sound_visit(&households[0], &[])).await;
    let mut failing = sound_visit(&households[1], &[]);
    failing["answers"]["food_secure"] = false.into();
    let flagged = push(&field, &failing).await;
    server.settle().await;
    let reviewer = server.user("reviewer", &[VILLAGE]).await;
    // Every visit by default; with a sample of 0 %, only the flagged one.
    assert_eq!(
        queue_ids(&reviewer, "").await,
        [clean.clone(), flagged.clone()]
    );
    assert_eq!(queue_ids(&reviewer.at(&base), "").await, [flagged]);
    // Asked for by state, every visit in it is listed.
    assert_eq!(
        queue_ids(&reviewer.at(&base), "state=received").await.len(),
        2
    );
}
