use huikan_tests::api::expect_problem;
use huikan_tests::photos::{sha256_hex, small_jpeg};
use huikan_tests::registry::{rows, utf8_bom, village};
use huikan_tests::visits::visit;
use huikan_tests::{Backend, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    every_change_is_chained_and_the_chain_verifies,
    a_household_trail_lists_its_history_in_order,
    the_log_refuses_update_and_delete,
    a_changed_entry_is_named,
    a_deleted_entry_is_named,
    swapped_entries_are_named,
    checkpoints_sign_the_head,
    a_chain_rewritten_consistently_is_caught_by_its_checkpoint,
    a_forged_checkpoint_is_named,
);

/// Some of everything: users, logins, a campaign, a registry import, a photo, visits, a read
/// of whole ID numbers.
pub async fn activity(server: &TestServer) {
    let admin = server.admin().await;
    let campaign = json!({"name": "r", "starts_at": "2020-03-01T00:00:00+08:00", "ends_at": "2020-04-01T00:00:00+08:00",
                          "timezone": "Asia/Shanghai", "required_photos": []});
    assert_eq!(
        admin
            .put_json("/v1/campaigns/2020-lookback-1", &campaign)
            .await
            .status(),
        201
    );
    let imported = admin
        .post_raw(
            "/v1/registry/imports",
            "text/csv",
            utf8_bom(&rows(&village("410327101001", 3))),
        )
        .await;
    assert_eq!(imported.status(), 201);
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = small_jpeg(9);
    let sha = sha256_hex(&photo);
    assert_eq!(field.put_blob(&sha, photo).await.status(), 201);
    let visits: Vec<Value> = (1..=3)
        .map(|i| {
            visit(
                &format!("410327101001000{i}"),
                &[(&sha, "housing_exterior")],
            )
        })
        .collect();
    assert_eq!(
        field
            .post_json("/v1/sync/push", &json!({"submissions": visits}))
            .await
            .status(),
        200
    );
    let reviewer = server.user("reviewer", &["410327101"]).await;
    assert_eq!(
        reviewer
            .get("/v1/households/4103271010010001?unmask=true")
            .await
            .status(),
        200
    );
}

async fn verify(server: &TestServer) -> Value {
    let auditor = server.user("auditor", &[]).await;
    let response = auditor.get("/v1/audit/verify").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn every_change_is_chained_and_the_chain_verifies(server: TestServer) {
    activity(&server).await;
    let report = verify(&server).await;
    assert_eq!(report["ok"], true, "{report}");
    let auditor = server.user("auditor", &[]).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = auditor
            .get(&format!("/v1/audit/log?limit=5&since={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if page["has_more"] != true {
            break;
        }
    }
    let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in [
        "user.created",
        "token.issued",
        "campaign.defined",
        "household.registered",
        "registry.imported",
        "photo.stored",
        "submission.received",
        "id_numbers.read",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    for (i, entry) in seen.iter().enumerate() {
        assert_eq!(entry["seq"], i as u64 + 1);
        if i > 0 {
            assert_eq!(entry["prev_hash"], seen[i - 1]["hash"]);
        }
    }
    assert!(verify(&server).await["entries"].as_u64().unwrap() >= seen.len() as u64);
    // No 身份证号 in clear anywhere in the log.
    let leaking: Vec<&Value> = seen
        .iter()
        .filter(|e| e.to_string().contains("41032719800"))
        .collect();
    assert!(
        leaking.is_empty(),
        "the log must not hold ID numbers: {leaking:?}"
    );
    let field = server.user("field_staff", &["410327101001"]).await;
    expect_problem(field.get("/v1/audit/verify").await, 403, "forbidden").await;
}

async fn a_household_trail_lists_its_history_in_order(server: TestServer) {
    activity(&server).await;
    let auditor = server.user("auditor", &[]).await;
    // The visits' photo is processed in the background; wait for it to be on the record.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let trail = loop {
        let trail: Value = auditor
            .get("/v1/audit/households/4103271010010001/trail")
            .await
            .json()
            .await
            .unwrap();
        if trail.to_string().contains("photo.processed") {
            break trail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no photo.processed: {trail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // The photo was stored before the visits; it is processed in the background meanwhile.
    let processed_at = actions
        .iter()
        .position(|a| *a == "photo.processed")
        .unwrap();
    let stored_at = actions.iter().position(|a| *a == "photo.stored").unwrap();
    assert!(stored_at < processed_at, "{trail}");
    let mut others = actions.clone();
    others.remove(processed_at);
    // What reconciliation found in the visit is in the trail too; its own tests say what.
    others.retain(|a| *a != "finding.raised");
    assert_eq!(
        others,
        [
            "household.registered",
            "photo.stored",
            "submission.received",
            "id_numbers.read"
        ],
        "{trail}"
    );
    let seqs: Vec<i64> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in chain order: {seqs:?}"
    );
    let visit = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "submission.received")
        .unwrap();
    assert_eq!(visit["data"]["household_id"], "4103271010010001");
}

async fn the_log_refuses_update_and_delete(server: TestServer) {
    activity(&server).await;
    let update = server
        .sql("UPDATE audit_log SET actor = 'someone' WHERE seq = 1")
        .await;
    assert!(update.unwrap_err().contains("append-only"));
    let delete = server.sql("DELETE FROM audit_log WHERE seq = 1").await;
    assert!(delete.unwrap_err().contains("append-only"));
    assert_eq!(verify(&server).await["ok"], true);
}

/// Removes the append-only guard, as someone with full database access could.
pub async fn without_guard(server: &TestServer) {
    let drop = match server.backend {
        Backend::Embedded => "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;",
        Backend::PostgresS3 => "DROP TRIGGER audit_log_no_change ON audit_log;",
    };
    server.sql(drop).await.unwrap();
}

async fn broken(server: &TestServer) -> Value {
    let report = verify(server).await;
    assert_eq!(report["ok"], false, "{report}");
    report["first_broken"].clone()
}

async fn a_changed_entry_is_named(server: TestServer) {
    activity(&server).await;
    without_guard(&server).await;
    server
        .sql("UPDATE audit_log SET data = '{\"tampered\":true}' WHERE seq = 5")
        .await
        .unwrap();
    let first = broken(&server).await;
    assert_eq!(
        (first["seq"].as_u64(), first["problem"].as_str()),
        (Some(5), Some("changed")),
        "{first}"
    );
}

async fn a_deleted_entry_is_named(server: TestServer) {
    activity(&server).await;
    without_guard(&server).await;
    server
        .sql("DELETE FROM audit_log WHERE seq = 7")
        .await
        .unwrap();
    let first = broken(&server).await;
    assert_eq!(
        (first["seq"].as_u64(), first["problem"].as_str()),
        (Some(7), Some("missing")),
        "{first}"
    );
}

async fn swapped_entries_are_named(server: TestServer) {
    activity(&server).await;
    without_guard(&server).await;
    server
        .sql("UPDATE audit_log SET seq = -3 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -3;")
        .await
        .unwrap();
    let first = broken(&server).await;
    assert_eq!(
        (first["seq"].as_u64(), first["problem"].as_str()),
        (Some(3), Some("reordered")),
        "{first}"
    );
}

/// Waits (the test server checkpoints every second) for a checkpoint of the current head.
async fn checkpointed(server: &TestServer) -> Value {
    let auditor = server.user("auditor", &[]).await;
    let head = verify(server).await["entries"].as_i64().unwrap();
    for _ in 0..100 {
        let page: Value = auditor
            .get("/v1/audit/checkpoints?limit=1000")
            .await
            .json()
            .await
            .unwrap();
        if let Some(c) = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["seq"].as_i64() >= Some(head))
        {
            return c.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no checkpoint of entry {head} within 10 s");
}

async fn checkpoints_sign_the_head(server: TestServer) {
    activity(&server).await;
    let checkpoint = checkpointed(&server).await;
    assert_eq!(checkpoint["public_key"].as_str().unwrap().len(), 64);
    assert_eq!(checkpoint["signature"].as_str().unwrap().len(), 128);
    let report = verify(&server).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checkpoints"].as_u64() >= Some(1), "{report}");
    // The key survives a restart: later checkpoints are signed by the same key.
    let mut server = server;
    server.restart().await;
    server.user("reviewer", &["410327101"]).await;
    let later = checkpointed(&server).await;
    assert!(later["seq"].as_i64() > checkpoint["seq"].as_i64());
    assert_eq!(later["public_key"], checkpoint["public_key"]);
    let field = server.user("field_staff", &["410327101001"]).await;
    expect_problem(field.get("/v1/audit/checkpoints").await, 403, "forbidden").await;
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Someone with the database (but not the signing key) changes entry 5 and recomputes every
/// hash after it, so the chain links again: only a signed checkpoint can tell.
async fn a_chain_rewritten_consistently_is_caught_by_its_checkpoint(server: TestServer) {
    activity(&server).await;
    let checkpoint = checkpointed(&server).await;
    let log = server.audit_log().await;
    without_guard(&server).await;
    let mut prev = String::new();
    let mut sql = String::new();
    for entry in &log {
        let seq = entry["seq"].as_i64().unwrap();
        if seq < 5 {
            prev = entry["hash"].as_str().unwrap().to_owned();
            continue;
        }
        let data = if seq == 5 {
            "{\"tampered\":true}".to_owned()
        } else {
            huikan_shared::content::canonical_json(&entry["data"])
        };
        let s = |k: &str| entry[k].as_str().unwrap().to_owned();
        let text = huikan_server::audit::canonical(
            seq,
            &s("at"),
            &s("actor"),
            &s("action"),
            &s("subject"),
            &data,
            &prev,
        );
        let hash = huikan_server::audit::entry_hash(&prev, &text);
        sql.push_str(&format!(
            "UPDATE audit_log SET data = {}, prev_hash = {}, hash = {} WHERE seq = {seq};",
            quoted(&data),
            quoted(&prev),
            quoted(&hash)
        ));
        prev = hash;
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET hash = {} WHERE id = 1;",
        quoted(&prev)
    ));
    server.sql(&sql).await.unwrap();
    let first = broken(&server).await;
    assert_eq!(first["problem"], "changed", "{first}");
    let seq = first["seq"].as_i64().unwrap();
    assert!(
        (5..=checkpoint["seq"].as_i64().unwrap()).contains(&seq),
        "{first}"
    );
    assert!(
        first["detail"]
            .as_str()
            .unwrap()
            .contains("not the one signed"),
        "{first}"
    );
}

async fn a_forged_checkpoint_is_named(server: TestServer) {
    activity(&server).await;
    let checkpoint = checkpointed(&server).await;
    let seq = checkpoint["seq"].as_i64().unwrap();
    let drop = match server.backend {
        Backend::Embedded => "DROP TRIGGER audit_checkpoints_no_update;",
        Backend::PostgresS3 => "DROP TRIGGER audit_checkpoints_no_change ON audit_checkpoints;",
    };
    let update = server
        .sql(&format!(
            "UPDATE audit_checkpoints SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = {seq}"
        ))
        .await;
    assert!(update.unwrap_err().contains("cannot be changed"));
    server.sql(drop).await.unwrap();
    server
        .sql(&format!(
            "UPDATE audit_checkpoints SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = {seq}"
        ))
        .await
        .unwrap();
    let first = broken(&server).await;
    assert_eq!(
        (first["seq"].as_i64(), first["problem"].as_str()),
        (Some(seq), Some("changed")),
        "{first}"
    );
    assert!(
        first["detail"].as_str().unwrap().contains("not genuine"),
        "{first}"
    );
}
