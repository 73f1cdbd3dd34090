use std::collections::BTreeMap;

use huikan_tests::api::expect_problem;
use huikan_tests::registry::{self, XLSX, gbk, rows, utf8_bom, village, xlsx};
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    gbk_utf8_bom_and_xlsx_import_identically,
    bad_rows_are_reported_and_good_rows_land,
    bad_rows_never_remove_a_household,
    a_household_that_moves_leaves_one_phone_and_reaches_the_other,
    a_reimport_changes_only_what_changed,
    field_staff_see_exactly_their_villages,
    a_phone_paging_during_an_import_misses_nothing,
    the_command_line_imports_into_the_same_registry,
    unusable_files_are_refused,
);

async fn import(admin: &Api, content_type: &str, bytes: Vec<u8>) -> Value {
    let response = admin
        .post_raw("/v1/registry/imports", content_type, bytes)
        .await;
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    response.json().await.unwrap()
}

fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let h = &report["households"];
    let n = |k: &str| h[k].as_u64().unwrap();
    (n("added"), n("updated"), n("unchanged"), n("removed"))
}

/// Pages through the registry feed from `cursor`, returning the items and the final cursor.
async fn pull(api: &Api, cursor: Option<&str>, limit: u32) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut cursor = cursor.map(str::to_owned);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync/registry?limit={limit}&since={c}"),
            None => format!("/v1/sync/registry?limit={limit}"),
        };
        let response = api.get(&path).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            return (items, cursor.unwrap());
        }
    }
}

/// The phone's copy after applying items in order: household id → latest record.
fn apply(items: &[Value]) -> BTreeMap<String, Value> {
    let mut copy = BTreeMap::new();
    for item in items {
        let id = item["household_id"].as_str().unwrap().to_owned();
        if item["deleted"] == true {
            copy.remove(&id);
        } else {
            copy.insert(id, item.clone());
        }
    }
    copy
}

async fn gbk_utf8_bom_and_xlsx_import_identically(server: TestServer) {
    let admin = server.admin().await;
    let data = rows(&village("410327101001", 20));
    assert_eq!(
        counts(&import(&admin, "text/csv", gbk(&data)).await),
        (20, 0, 0, 0)
    );
    assert_eq!(
        counts(&import(&admin, "text/csv; charset=utf-8", utf8_bom(&data)).await),
        (0, 0, 20, 0)
    );
    assert_eq!(
        counts(&import(&admin, XLSX, xlsx(&data)).await),
        (0, 0, 20, 0)
    );

    let field = server.user("field_staff", &["410327101001"]).await;
    let (items, _) = pull(&field, None, 100).await;
    assert_eq!(items.len(), 20);
    let first = &items[0];
    assert_eq!(first["household_id"], "4103271010010001");
    assert_eq!(first["version"], 1);
    assert_eq!(first["village"], "001村");
    assert_eq!(first["members"][0]["relation"], "head");
    assert_eq!(first["members"][0]["name"], "户主1");
    assert_eq!(first["members"][2]["relation"], "child");
    assert_eq!(first["members"][0]["id_number_valid"], true);
    assert_eq!(first["water_source"], "piped");
}

async fn bad_rows_are_reported_and_good_rows_land(server: TestServer) {
    let admin = server.admin().await;
    let mut data = rows(&village("410327101001", 6));
    // Rows 2-4 are household 1, 5-7 household 2, and so on (row 1 is the header).
    data[4][0] = String::new(); // row 5: missing 户编号
    data[7][1] = "4103271010011".to_owned(); // row 8: a 13-digit village code
    data[10][7] = "表哥".to_owned(); // row 11: unknown relation
    data[13][11] = "北纬34度".to_owned(); // row 14: non-numeric latitude
    data[16][6] = "410327198001011230".to_owned(); // row 17: invalid 身份证号: imported and marked
    let report = import(&admin, "text/csv", utf8_bom(&data)).await;
    let rejected = report["rejected_rows"].as_array().unwrap();
    let by_row: BTreeMap<u64, &str> = rejected
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_row.keys().copied().collect::<Vec<_>>(),
        vec![5, 8, 11, 14],
        "{rejected:?}"
    );
    assert!(by_row[&5].contains("户编号"));
    assert!(by_row[&8].contains("12"));
    assert!(by_row[&11].contains("与户主关系") && by_row[&11].contains("表哥"));
    assert!(by_row[&14].contains("纬度"));
    assert_eq!(
        counts(&report).0,
        6,
        "every household has good rows, so every one lands"
    );

    let field = server.user("field_staff", &["410327101001"]).await;
    let (items, _) = pull(&field, None, 100).await;
    let copy = apply(&items);
    assert_eq!(
        copy["4103271010010002"]["members"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the bad row is skipped"
    );
    let marked = &copy["4103271010010006"]["members"][0];
    assert_eq!(marked["id_number"], "410327198001011230");
    assert_eq!(marked["id_number_valid"], false);
    assert!(
        marked["id_number_problem"]
            .as_str()
            .unwrap()
            .contains("check character")
    );
}

async fn bad_rows_never_remove_a_household(server: TestServer) {
    let admin = server.admin().await;
    let village_a = village("410327101001", 3);
    let village_b = village("410327101002", 2);
    let all: Vec<_> = village_a.iter().chain(&village_b).cloned().collect();
    assert_eq!(
        counts(&import(&admin, "text/csv", utf8_bom(&rows(&all))).await),
        (5, 0, 0, 0)
    );

    // Re-import village A only: every row of household 1 is bad, and one row of household 2
    // names village B by mistake.
    let mut data = rows(&village_a);
    for row in &mut data[1..4] {
        row[7] = "表哥".to_owned();
    }
    data[5][1] = "410327101002".to_owned();
    let report = import(&admin, "text/csv", utf8_bom(&data)).await;
    let rejected: Vec<u64> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, [2, 3, 4, 6]);
    // Household 1 is left as it was, household 2 loses the contradicting member, 3 is unchanged,
    // and village B, which this file does not cover, keeps its households.
    assert_eq!(counts(&report), (0, 1, 1, 0), "{report}");
    let field = server.user("field_staff", &["410327101"]).await;
    let copy = apply(&pull(&field, None, 100).await.0);
    assert_eq!(copy.len(), 5);
    assert_eq!(
        copy["4103271010010001"]["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

async fn a_household_that_moves_leaves_one_phone_and_reaches_the_other(server: TestServer) {
    let admin = server.admin().await;
    let mut households = village("410327101001", 3);
    households.extend(village("410327101002", 2));
    import(&admin, "text/csv", utf8_bom(&rows(&households))).await;
    let old_village = server.user("field_staff", &["410327101001"]).await;
    let new_village = server.user("field_staff", &["410327101002"]).await;
    let (_, old_cursor) = pull(&old_village, None, 100).await;
    let (_, new_cursor) = pull(&new_village, None, 100).await;

    households[2].village_code = "410327101002".to_owned();
    let report = import(&admin, "text/csv", utf8_bom(&rows(&households))).await;
    assert_eq!(counts(&report), (0, 1, 4, 0));
    let (left, _) = pull(&old_village, Some(&old_cursor), 100).await;
    assert_eq!(
        left,
        [json!({"household_id": "4103271010010003", "deleted": true, "version": 2})]
    );
    let (arrived, _) = pull(&new_village, Some(&new_cursor), 100).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0]["household_id"], "4103271010010003");
    assert_eq!(arrived[0]["village_code"], "410327101002");
}

async fn a_reimport_changes_only_what_changed(server: TestServer) {
    let admin = server.admin().await;
    let mut households = village("410327101001", 10);
    households.extend(village("410327101002", 5));
    assert_eq!(
        counts(&import(&admin, "text/csv", utf8_bom(&rows(&households))).await),
        (15, 0, 0, 0)
    );
    let field = server.user("field_staff", &["410327101"]).await;
    let (items, cursor) = pull(&field, None, 100).await;
    assert_eq!(items.len(), 15);

    assert_eq!(
        counts(&import(&admin, "text/csv", utf8_bom(&rows(&households))).await),
        (0, 0, 15, 0)
    );
    let (nothing, _) = pull(&field, Some(&cursor), 100).await;
    assert!(
        nothing.is_empty(),
        "an unchanged re-import changes no version: {nothing:?}"
    );

    households.remove(3); // 4103271010010004 leaves the registry
    households[0].members[1].name = "改名".to_owned();
    assert_eq!(
        counts(&import(&admin, "text/csv", utf8_bom(&rows(&households))).await),
        (0, 1, 13, 1)
    );
    let (delta, _) = pull(&field, Some(&cursor), 100).await;
    let ids: Vec<&str> = delta
        .iter()
        .map(|i| i["household_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["4103271010010001", "4103271010010004"], "{delta:?}");
    assert_eq!(delta[0]["version"], 2);
    assert_eq!(delta[0]["members"][1]["name"], "改名");
    assert_eq!(
        delta[1],
        json!({"household_id": "4103271010010004", "deleted": true, "version": 2})
    );

    // The removed household keeps its history and can be read by an auditor.
    let auditor = server.user("auditor", &[]).await;
    let gone: Value = auditor
        .get("/v1/households/4103271010010004")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(gone["removed"], true);
}

async fn field_staff_see_exactly_their_villages(server: TestServer) {
    let admin = server.admin().await;
    let mut households = village("410327101001", 4);
    households.extend(village("410327101002", 3));
    households.extend(village("410327102001", 2));
    import(&admin, "text/csv", utf8_bom(&rows(&households))).await;

    let one = server.user("field_staff", &["410327101002"]).await;
    let (items, _) = pull(&one, None, 100).await;
    assert!(
        items.iter().all(|i| i["village_code"] == "410327101002") && items.len() == 3,
        "{items:?}"
    );
    let township = server.user("field_staff", &["410327101"]).await;
    assert_eq!(pull(&township, None, 2).await.0.len(), 7);
    let two = server
        .user("field_staff", &["410327101001", "410327102001"])
        .await;
    assert_eq!(pull(&two, None, 100).await.0.len(), 6);

    expect_problem(
        one.get("/v1/households/4103271010010001").await,
        404,
        "not_found",
    )
    .await;
    let own: Value = one
        .get("/v1/households/4103271010020001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["members"][0]["id_number"].as_str().unwrap().len(), 18);
    let reviewer = server.user("reviewer", &["410327101"]).await;
    let masked: Value = reviewer
        .get("/v1/households/4103271010020001")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        masked["members"][0]["id_number"]
            .as_str()
            .unwrap()
            .contains("********")
    );
    let unmasked: Value = reviewer
        .get("/v1/households/4103271010020001?unmask=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unmasked["members"][0]["id_number"],
        own["members"][0]["id_number"]
    );
    expect_problem(
        reviewer.get("/v1/households/4103271020010001").await,
        404,
        "not_found",
    )
    .await;
    expect_problem(reviewer.get("/v1/sync/registry").await, 403, "forbidden").await;
    expect_problem(
        one.get("/v1/sync/registry?limit=abc").await,
        400,
        "invalid_query",
    )
    .await;
}

async fn a_phone_paging_during_an_import_misses_nothing(server: TestServer) {
    let admin = server.admin().await;
    let base = village("410327101001", 150);
    import(&admin, "text/csv", utf8_bom(&rows(&base))).await;
    let field = server.user("field_staff", &["410327101001"]).await;

    // The next import changes every household, drops ten and adds twenty.
    let mut next = base.clone();
    for h in &mut next {
        h.members[2].name.push('乙');
    }
    next.truncate(140);
    next.extend(village("410327101001", 160).into_iter().skip(140));
    let body = utf8_bom(&rows(&next));
    let importer = {
        let admin = admin.clone();
        tokio::spawn(async move { import(&admin, "text/csv", body).await })
    };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync/registry?limit=7&since={c}"),
            None => "/v1/sync/registry?limit=7".to_owned(),
        };
        let page: Value = field.get(&path).await.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            if importer.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    importer.await.unwrap();
    let (tail, _) = pull(&field, cursor.as_deref(), 7).await;
    items.extend(tail);
    let (fresh, _) = pull(&field, None, 1000).await;
    let paged = apply(&items);
    assert_eq!(
        paged,
        apply(&fresh),
        "the paged copy equals a fresh full pull"
    );
    assert_eq!(paged.len(), 160);
}

async fn the_command_line_imports_into_the_same_registry(server: TestServer) {
    let file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    std::fs::write(file.path(), gbk(&rows(&village("410327101003", 5)))).unwrap();
    let output = server
        .cli(&[
            "registry",
            "import",
            file.path().to_str().unwrap(),
            "--datum",
            "gcj02",
        ])
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(counts(&report), (5, 0, 0, 0));
    let field = server.user("field_staff", &["410327101003"]).await;
    let (items, _) = pull(&field, None, 100).await;
    assert_eq!(items.len(), 5);
    // GCJ-02 coordinates were moved to WGS-84 (a few hundred metres).
    let lat = items[0]["location"]["lat"].as_f64().unwrap();
    assert!(
        (lat - 34.51).abs() > 0.0005 && (lat - 34.51).abs() < 0.01,
        "{lat}"
    );
}

async fn unusable_files_are_refused(server: TestServer) {
    let admin = server.admin().await;
    let mut data = rows(&village("410327101001", 2));
    for row in &mut data {
        row.remove(6); // no 身份证号 column
    }
    let problem = expect_problem(
        admin
            .post_raw("/v1/registry/imports", "text/csv", utf8_bom(&data))
            .await,
        400,
        "invalid_body",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("身份证号"),
        "{problem}"
    );
    let full = rows(&village("410327101001", 2));
    let response = admin
        .post_raw("/v1/registry/imports", "application/pdf", utf8_bom(&full))
        .await;
    expect_problem(response, 415, "unsupported_media_type").await;
    let response = admin
        .post_raw(
            "/v1/registry/imports?datum=mars",
            "text/csv",
            utf8_bom(&full),
        )
        .await;
    expect_problem(response, 400, "invalid_query").await;
    let field = server.user("field_staff", &["410327101001"]).await;
    expect_problem(
        field
            .post_raw("/v1/registry/imports", "text/csv", utf8_bom(&full))
            .await,
        403,
        "forbidden",
    )
    .await;
    let garbage = admin
        .post_raw(
            "/v1/registry/imports",
            XLSX,
            b"PK\x03\x04 not really a zip".to_vec(),
        )
        .await;
    expect_problem(garbage, 400, "invalid_body").await;
    // Nothing of a refused file landed.
    assert!(pull(&field, None, 100).await.0.is_empty());
    let _ = registry::HEADERS;
}

/// On PostgreSQL the server analyses a table an import has grown, without waiting for
/// autovacuum (which may be off, as it is on the test machine): the planner must not keep
/// believing the registry empty.
#[tokio::test]
async fn postgres_statistics_follow_an_import() {
    let Some(server) = TestServer::start(huikan_tests::Backend::PostgresS3).await else {
        return;
    };
    let never_analysed = "SELECT COUNT(*) FROM pg_stat_user_tables
        WHERE relname = 'households' AND last_analyze IS NULL AND last_autoanalyze IS NULL";
    assert_eq!(server.count(never_analysed).await, 1);
    import(
        &server.admin().await,
        "text/csv",
        utf8_bom(&rows(&village("410327101001", 1000))),
    )
    .await;
    for _ in 0..300 {
        if server.count(never_analysed).await == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the households table was not analysed within 30 s of the import");
}
