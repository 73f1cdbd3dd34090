//! Enketo, the web-form client of ODK and KoboToolbox, filling in huikan's form in headless
//! Chromium as a field worker does: its own XSL transformation and form engine (enketo-transformer
//! and enketo-core, bundled from `tests/enketo` by scripts/backends.sh) open the form with the
//! registry's CSV media; the test picks the village and the household, answers every question,
//! adds a member, attaches photos through the file inputs, and the page submits the record the
//! way Enketo Express does (`tests/enketo/client.js`): whole, again after a lost answer, as an
//! edit, and split into batches.

use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use huikan_tests::photos::{jpeg_of_about, sha256_hex};
use huikan_tests::registry::{Household, village};
use huikan_tests::server::{PASSWORD, installed};
use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::{Value, json};

use super::browser::{Driver, browser, chromedriver, screenshot};
use super::openrosa::{CAMPAIGN, FORM, VILLAGE, county, photo_kinds, visit_of};

backend_tests!(
    enketo_fills_in_submits_and_edits_a_visit,
    enketo_sends_a_large_visit_in_batches,
);

const SCREENSHOTS: &str = "enketo-screenshots";

/// The page holding Enketo (scripts/backends.sh bundles it), or None outside CI without it.
fn enketo_page() -> Option<String> {
    installed("HUIKAN_TEST_ENKETO", "Enketo").map(|dir| format!("file://{dir}/index.html"))
}

/// Enketo open in a browser.
struct Enketo {
    client: Client,
    driver: Driver,
    page: String,
    photos: tempfile::TempDir,
}

impl Enketo {
    async fn start() -> Option<Enketo> {
        let page = enketo_page()?;
        let driver = chromedriver().await?;
        // The page is a file and the server another origin: Enketo Express would serve both
        // from one, so the browser's cross-origin rule is set aside rather than the server's.
        let client = browser(&driver, &["--disable-web-security"]).await;
        Some(Enketo {
            client,
            driver,
            page,
            photos: tempfile::tempdir().unwrap(),
        })
    }

    /// Opens the form as `field` (to edit `record` if given); returns Enketo's load errors.
    async fn open(&self, field: &Api, record: Option<&str>) -> Vec<Value> {
        self.client.goto(&self.page).await.unwrap();
        let options = json!({
            "server": format!("{}/v1/openrosa", field.base),
            "username": field.username(),
            "password": PASSWORD,
            "formId": FORM,
            "instanceStr": record,
            "deviceId": "enketo:field-test",
        });
        let answer = self
            .client
            .execute_async(
                "const [options, done] = arguments;
                 enketo.open(options).then(errors => done({errors}), e => done({failed: String(e)}));",
                vec![options],
            )
            .await
            .unwrap();
        assert!(answer["failed"].is_null(), "Enketo did not open: {answer}");
        answer["errors"].as_array().unwrap().clone()
    }

    /// Validates and submits; `max_size` stands in for the server's limit.
    async fn submit(&self, max_size: Option<u64>) -> Value {
        let answer = self
            .client
            .execute_async(
                "const [maxSize, done] = arguments;
                 enketo.submit({maxSize}).then(done, e => done({failed: String(e)}));",
                vec![json!(max_size)],
            )
            .await
            .unwrap();
        assert!(
            answer["failed"].is_null(),
            "Enketo did not submit: {answer}"
        );
        assert_eq!(answer["valid"], true, "the form did not validate: {answer}");
        answer
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Types into a field and leaves it, as a person does (Enketo takes the value on change).
    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
        field
            .send_keys(&char::from(Key::Tab).to_string())
            .await
            .unwrap();
    }

    /// Waits (up to 10 s) until `condition`, a script expression, holds on the page: Enketo
    /// redraws a question whose choices depend on an answer just given.
    async fn wait_until(&self, condition: &str) {
        let script = format!("return Boolean({condition})");
        for _ in 0..100 {
            if self.client.execute(&script, vec![]).await.unwrap() == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never came to {condition}");
    }

    /// Picks `value` of the radio buttons or checkboxes for `reference` in `scope`.
    async fn pick(&self, scope: &str, reference: &str, value: &str) {
        self.click(&format!(
            "{scope} input[data-ref=\"{reference}\"][value=\"{value}\"]"
        ))
        .await;
    }

    /// Chooses a photo file for a photo question, as the file picker does.
    async fn attach(&self, kind: &str, name: &str, bytes: &[u8]) {
        let path = self.photos.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        self.find(&format!(
            "input[type=file][data-ref=\"/data/photos/{kind}\"]"
        ))
        .await
        .send_keys(path.to_str().unwrap())
        .await
        .unwrap();
    }

    /// Answers the `nth` member's questions: `typed` text fields, `picked` choices.
    async fn member(&self, nth: usize, typed: &[(&str, &str)], picked: &[(&str, &str)]) {
        let scope = format!("section.or-repeat[name=\"/data/member\"]:nth-of-type({nth})");
        for (reference, text) in typed {
            self.type_into(
                &format!("{scope} input[data-ref=\"/data/member/{reference}\"]"),
                text,
            )
            .await;
        }
        for (reference, value) in picked {
            self.pick(&scope, &format!("/data/member/{reference}"), value)
                .await;
        }
    }

    /// Answers every question for `household` and attaches the photos of its house and well.
    async fn fill_in(&self, household: &Household, house: &[u8], well: &[u8]) {
        // The village from the CSV list, then the household among that village's.
        self.click(".bootstrap-select button").await;
        self.click(&format!(
            ".bootstrap-select a.option-wrapper:has(input[value=\"{VILLAGE}\"])"
        ))
        .await;
        let head = &household.members[0];
        let label = format!("{}（{}）", head.name, household.id);
        self.wait_until(&format!(
            "[...document.querySelectorAll('datalist option')].some(o => o.value === '{label}')"
        ))
        .await;
        self.type_into("input.autocomplete", &label).await;
        for (input, value) in [
            ("lat", "34.619712"),
            ("long", "112.454033"),
            ("alt", "151"),
            ("acc", "8"),
        ] {
            self.type_into(&format!(".geopicker input[name={input}]"), value)
                .await;
        }

        self.member(
            1,
            &[("id_number", &head.id_number), ("name", &head.name)],
            &[
                ("relation", "head"),
                ("present", "yes"),
                ("school_status", "not_school_age"),
                ("insured", "yes"),
                ("health", "healthy"),
                ("labour", "normal"),
            ],
        )
        .await;
        // A second member, disabled, so the grade question appears.
        self.click(".or-repeat-info[data-name=\"/data/member\"] .add-repeat-btn")
            .await;
        self.member(
            2,
            &[("id_number", "41032720100101002X")],
            &[
                ("relation", "child"),
                ("present", "no"),
                ("school_status", "home_taught"),
                ("insured", "yes"),
                ("health", "disabled"),
                ("labour", "none"),
            ],
        )
        .await;
        self.type_into(
            "section.or-repeat[name=\"/data/member\"]:nth-of-type(2) \
             input[data-ref=\"/data/member/disability_grade\"]",
            "2",
        )
        .await;

        for (reference, value) in [
            ("/data/food_secure", "yes"),
            ("/data/clothing_secure", "yes"),
            ("/data/housing/grade", "B"),
            ("/data/housing/renovated", "no"),
            ("/data/water/source", "well"),
            ("/data/water/quantity_ok", "yes"),
            ("/data/water/quality_ok", "yes"),
            ("/data/water/convenience_ok", "no"),
            ("/data/water/guarantee_ok", "yes"),
            ("/data/income/sources", "wage"),
            ("/data/income/sources", "dibao"),
        ] {
            self.pick("form.or", reference, value).await;
        }
        self.type_into("input[data-ref=\"/data/income/per_capita_yuan\"]", "8200.5")
            .await;
        self.type_into("input[data-ref=\"/data/notes\"]", "门前有狗")
            .await;
        self.attach("housing_exterior", "house.jpg", house).await;
        self.attach("water_source", "well.jpg", well).await;
    }

    async fn close(mut self) {
        self.client.close().await.unwrap();
        let _ = self.driver.process.kill().await;
    }
}

/// Every batch's answer was 201 (or 202); returns their messages.
fn accepted(answer: &Value) -> Vec<String> {
    answer["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 201, "a batch was refused: {answer}");
            r["message"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn enketo_fills_in_submits_and_edits_a_visit(server: TestServer) {
    let Some(enketo) = Enketo::start().await else {
        return;
    };
    let (field, households) = (county(&server).await, village(VILLAGE, 3));
    let errors = enketo.open(&field, None).await;
    assert!(errors.is_empty(), "Enketo's load errors: {errors:?}");
    let (house, well) = (jpeg_of_about(180_000, 81), jpeg_of_about(160_000, 82));
    let household = &households[1];
    enketo.fill_in(household, &house, &well).await;
    // The households offered are the chosen village's, from the CSV media, labelled by head.
    let labels = enketo
        .client
        .execute(
            "return [...document.querySelectorAll('datalist option')].map(o => o.value)",
            vec![],
        )
        .await
        .unwrap();
    for h in &households {
        let label = format!("{}（{}）", h.members[0].name, h.id);
        assert!(
            labels.as_array().unwrap().contains(&json!(label)),
            "{label} not in {labels}"
        );
    }
    screenshot(&enketo.client, SCREENSHOTS, "1-filled").await;
    let sent = enketo.submit(None).await;
    screenshot(&enketo.client, SCREENSHOTS, "2-submitted").await;
    let messages = accepted(&sent);
    assert_eq!(messages.len(), 1, "a visit within the limit is one request");
    assert!(
        messages[0].contains(&household.id) && !messages[0].contains("未收到"),
        "{messages:?}"
    );

    // What Enketo's engine made of the answers is the visit, field by field.
    let instance_id = sent["instanceId"].as_str().unwrap().to_owned();
    let visit = visit_of(&field, &instance_id).await;
    assert_eq!(visit["household_id"], household.id.as_str());
    assert_eq!(visit["campaign"], CAMPAIGN);
    assert_eq!(visit["device_id"], "enketo:field-test");
    let content = &visit["content"];
    assert_eq!(content["location"]["lat"], 34.619712, "{content}");
    assert_eq!(content["location"]["accuracy_m"], 8.0);
    let members = content["answers"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{content}");
    assert_eq!(
        members[0]["id_number"],
        household.members[0].id_number.as_str()
    );
    assert_eq!(members[0]["relation"], "head");
    assert_eq!(members[0]["disability_grade"], Value::Null);
    assert_eq!(members[1]["present"], false);
    assert_eq!(members[1]["school_status"], "home_taught");
    assert_eq!(members[1]["disability_grade"], 2);
    let answers = &content["answers"];
    assert_eq!(answers["housing"]["grade"], "B");
    assert_eq!(answers["water"]["convenience_ok"], false);
    assert_eq!(answers["income"]["per_capita_yuan"], 8200.5);
    assert_eq!(answers["income"]["sources"], json!(["wage", "dibao"]));
    assert_eq!(answers["notes"], "门前有狗");
    let photos = vec![
        ("housing_exterior".to_owned(), sha256_hex(&house)),
        ("water_source".to_owned(), sha256_hex(&well)),
    ];
    assert_eq!(photo_kinds(&visit), photos);

    // Enketo keeps a record whose answer it lost and sends it again: stored once.
    accepted(&enketo.submit(None).await);
    assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 1);

    // An edit in Enketo: the record opened again, one answer changed, sent without its photo
    // files (they are on the server). A new visit, linked to the first, with the same photos.
    let record = sent["record"].as_str().unwrap().to_owned();
    let errors = enketo.open(&field, Some(&record)).await;
    assert!(errors.is_empty(), "Enketo's load errors: {errors:?}");
    enketo
        .type_into("input[data-ref=\"/data/notes\"]", "门前有狗，户主在地里")
        .await;
    let edited = enketo.submit(None).await;
    accepted(&edited);
    assert_eq!(edited["deprecatedId"], instance_id.as_str(), "{edited}");
    assert_eq!(
        edited["files"],
        json!([]),
        "Enketo sent photo files again: {edited}"
    );
    let edit = visit_of(&field, edited["instanceId"].as_str().unwrap()).await;
    assert_eq!(edit["content"]["answers"]["notes"], "门前有狗，户主在地里");
    assert_eq!(photo_kinds(&edit), photos);
    let linked = server
        .count(&format!(
            "SELECT COUNT(*) FROM openrosa_instances WHERE deprecated_id = '{instance_id}'"
        ))
        .await;
    assert_eq!(linked, 1);
    assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 2);
    enketo.close().await;
}

async fn enketo_sends_a_large_visit_in_batches(server: TestServer) {
    let Some(enketo) = Enketo::start().await else {
        return;
    };
    let (field, households) = (county(&server).await, village(VILLAGE, 3));
    assert!(enketo.open(&field, None).await.is_empty());
    let (house, well) = (jpeg_of_about(300_000, 91), jpeg_of_about(300_000, 92));
    let household = &households[0];
    enketo.fill_in(household, &house, &well).await;
    // An Enketo that learned a smaller limit splits the record: each batch the whole instance
    // and one photo, none marked incomplete. The first is stored as the visit, without the
    // well; the second brings it, and the visit with both photos is stored as its new version.
    let sent = enketo.submit(Some(500_000)).await;
    let messages = accepted(&sent);
    assert_eq!(messages.len(), 2, "{sent}");
    assert!(messages[0].contains("未收到照片"), "{messages:?}");
    assert!(!messages[1].contains("未收到照片"), "{messages:?}");
    let instance_id = sent["instanceId"].as_str().unwrap().to_owned();
    let first = visit_of(&field, &instance_id).await;
    assert_eq!(
        photo_kinds(&first),
        vec![("housing_exterior".to_owned(), sha256_hex(&house))]
    );
    let whole = format!(
        "SELECT COUNT(*) FROM submission_photos p JOIN openrosa_instances o
         ON o.submission_id = p.submission_id WHERE o.deprecated_id = '{instance_id}'"
    );
    assert_eq!(server.count(&whole).await, 2);

    // Sent again in batches (the answers were lost): nothing more is stored.
    accepted(&enketo.submit(Some(500_000)).await);
    assert_eq!(server.count("SELECT COUNT(*) FROM submissions").await, 2);
    assert_eq!(server.count(&whole).await, 2);
    enketo.close().await;
}
