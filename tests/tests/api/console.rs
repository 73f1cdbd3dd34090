//! The web console: its sessions and forms over plain HTTP on every backend, and a reviewer's
//! whole errand in headless Chromium (through ChromeDriver), with a screenshot of each page.

use std::time::Duration;

use super::browser::{browser, chromedriver};
use fantoccini::{Client, Locator};
use huikan_tests::api::expect_problem;
use huikan_tests::county::{define_campaign, import_registry};
use huikan_tests::photos::{distinct_copy, sha256_hex, unlike_jpeg};
use huikan_tests::registry::{Household, village};
use huikan_tests::visits::sound_visit;
use huikan_tests::{Backend, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(sessions_and_forms_keep_to_the_api_rules);

const VILLAGE: &str = "410327101001";
const PASSWORD: &str = "console-password-1";

/// A registered village, a campaign, and a user of `role` with a known password.
async fn setup(server: &TestServer) -> (Vec<Household>, String) {
    let admin = server.admin().await;
    let households = village(VILLAGE, 3);
    import_registry(&admin, &households).await;
    define_campaign(
        &admin,
        "2020-lookback-1",
        "2020-03-01",
        &["housing_exterior"],
    )
    .await;
    let reviewer = format!(
        "reviewer-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let created = admin
        .post_json(
            "/v1/users",
            &json!({"username": reviewer, "password": PASSWORD, "role": "reviewer", "scope": ["410327101"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    (households, reviewer)
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in through the console's form; returns the session cookie.
async fn console_login(base: &str, username: &str, password: &str) -> Option<String> {
    let (status, cookie) = huikan_tests::api::console_login(base, username, password)
        .await
        .unwrap();
    if cookie.is_some() {
        assert_eq!(status, 303);
    }
    cookie
}

async fn sessions_and_forms_keep_to_the_api_rules(server: TestServer) {
    let (households, reviewer) = setup(&server).await;
    let base = server.base.clone();
    let field = server.user("field_staff", &[VILLAGE]).await;
    let visit = sound_visit(&households[0], &[]);
    let pushed = field
        .post_json("/v1/sync/push", &json!({"submissions": [visit]}))
        .await;
    assert_eq!(pushed.status(), 200);
    let id = visit["submission_id"].as_str().unwrap();
    let client = plain_client();

    // No session: every page sends the browser to the login.
    let answer = client
        .get(format!("{base}/console/queue"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console/login");
    assert!(console_login(&base, &reviewer, "wrong").await.is_none());
    // A login posted from elsewhere, without the form's token and cookie, logs no one in.
    let forged_login = client
        .post(format!("{base}/console/login"))
        .form(&[("username", reviewer.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged_login.status(), 403);
    assert!(
        !forged_login
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("huikan_session="))
    );

    let cookie = console_login(&base, &reviewer, PASSWORD).await.unwrap();
    let page = client
        .get(format!("{base}/console/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&id[..8]), "the visit is in the queue");
    assert!(html.contains("审核队列"), "Chinese by default");
    // Surveyed at 10:15 +08:00, shown on the Beijing clock.
    assert!(html.contains("2020-03-02 10:15"), "{html}");

    // A form without this session's token changes nothing.
    let forged = client
        .post(format!("{base}/console/visits/{id}/decision"))
        .header("cookie", &cookie)
        .form(&[
            ("decision", "approve"),
            ("expected_state", "received"),
            ("csrf", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let state: Value = field.get_json(&format!("/v1/submissions/{id}")).await;
    assert_eq!(state["review_state"], "received");
    // Through the API, the cookie reads but never writes.
    let api_write = client
        .post(format!("{base}/v1/review/{id}/claim"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    expect_problem(api_write, 401, "unauthorized").await;

    // A field worker's session may do in the console what their role may do through the API:
    // not review.
    let staff = format!("field-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let admin = server.admin().await;
    let created = admin
        .post_json(
            "/v1/users",
            &json!({"username": staff, "password": PASSWORD, "role": "field_staff", "scope": [VILLAGE]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let staff_cookie = console_login(&base, &staff, PASSWORD).await.unwrap();
    let refused = client
        .get(format!("{base}/console/queue"))
        .header("cookie", &staff_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // English on request.
    let switched = client
        .get(format!("{base}/console/lang/en"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let lang = switched.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = client
        .get(format!("{base}/console/queue"))
        .header("cookie", format!("{cookie}; {lang}"))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Review queue"));

    // Logging out ends the session for the API too.
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let out = client
        .post(format!("{base}/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = client
        .get(format!("{base}/console/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
}

async fn screenshot(client: &Client, name: &str) {
    super::browser::screenshot(client, "console-screenshots", name).await;
}

/// Whether every image on the page has loaded (none broken).
async fn images_loaded(client: &Client, selector: &str) -> usize {
    let script = format!(
        "return Array.from(document.querySelectorAll('{selector}')).filter(i => i.complete && i.naturalWidth > 0).length;"
    );
    client
        .execute(&script, vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap() as usize
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(client: &Client, id: &str, text: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Polls the text of the element with `id` until it reads `expected` (or about ten seconds
/// pass), riding out the moment a navigation makes the element found a step ago stale.
async fn text_becomes(client: &Client, id: &str, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(element) = client.find(Locator::Id(id)).await
            && let Ok(text) = element.text().await
        {
            if text == expected {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_sends_a_copied_photo_back_for_resurvey_in_the_browser() {
    let Some(mut driver) = chromedriver().await else {
        return;
    };
    let Some(server) = TestServer::start(Backend::Embedded).await else {
        return;
    };
    let (households, reviewer) = setup(&server).await;
    let field = server.user("field_staff", &[VILLAGE]).await;
    // One house photographed, and a copy of that photo sent for the neighbour.
    let original = unlike_jpeg(4242);
    let copy = distinct_copy(&original, "copied for another household");
    let mut shas = Vec::new();
    for bytes in [original, copy] {
        let sha = sha256_hex(&bytes);
        assert!(field.put_blob(&sha, bytes).await.status().is_success());
        shas.push(sha);
    }
    let first = sound_visit(&households[0], &[(shas[0].as_str(), "housing_exterior")]);
    let copied = sound_visit(&households[1], &[(shas[1].as_str(), "housing_exterior")]);
    for body in [&first, &copied] {
        let pushed = field
            .post_json("/v1/sync/push", &json!({"submissions": [body]}))
            .await;
        assert_eq!(pushed.status(), 200);
    }
    let copied_id = copied["submission_id"].as_str().unwrap().to_owned();
    server.settle().await;

    let client = browser(&driver, &[]).await;
    let base = &server.base;
    client.goto(&format!("{base}/console/login")).await.unwrap();
    screenshot(&client, "1-login").await;
    type_into(&client, "username", &reviewer).await;
    type_into(&client, "password", PASSWORD).await;
    click(&client, "login").await;
    client
        .wait()
        .for_element(Locator::Id("queue"))
        .await
        .unwrap();
    screenshot(&client, "2-queue").await;

    // The queue, filtered to copied photos: only the neighbour's visit.
    client
        .find(Locator::Id("finding"))
        .await
        .unwrap()
        .select_by_value("photo_near_duplicate")
        .await
        .unwrap();
    click(&client, "apply").await;
    for _ in 0..100 {
        let url = client.current_url().await.unwrap();
        if url
            .query()
            .is_some_and(|q| q.contains("photo_near_duplicate"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .wait()
        .for_element(Locator::Id("queue"))
        .await
        .unwrap();
    let visits = client
        .find_all(Locator::Css("#queue a.visit"))
        .await
        .unwrap();
    assert_eq!(visits.len(), 1);
    screenshot(&client, "3-queue-near-duplicates").await;
    visits[0].clone().click().await.unwrap();

    // The visit: both photos side by side, loaded.
    client
        .wait()
        .for_element(Locator::Css(".near-duplicate"))
        .await
        .unwrap();
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&copied_id)
    );
    assert_eq!(
        images_loaded(&client, ".near-duplicate img.thumbnail").await,
        2
    );
    let findings = client
        .find(Locator::Id("findings"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(findings.contains("photo_near_duplicate"), "{findings}");
    screenshot(&client, "4-visit").await;

    // Sent back for resurvey, with a reason.
    let reason = "照片与另一户相同，请重新入户拍摄";
    click(&client, "resurvey").await;
    type_into(&client, "reason", reason).await;
    click(&client, "decide").await;
    // The page before the decision also has `#state`: wait for the new page's text.
    assert_eq!(
        text_becomes(&client, "state", "需重新走访").await,
        "需重新走访"
    );
    screenshot(&client, "5-decided").await;
    client
        .goto(&format!("{base}/console/coverage?level=village"))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("coverage"))
        .await
        .unwrap();
    screenshot(&client, "6-coverage").await;
    client.close().await.unwrap();
    let _ = driver.process.kill().await;

    // The field worker's phone learns it.
    let feed: Value = field.get_json("/v1/sync/submissions").await;
    let item = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|i| i["submission_id"] == copied_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["review_state"], "resurvey_requested");
    assert_eq!(item["reason"], reason);
}
