//! The served API and `openapi.yaml` agree, and the operational endpoints answer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use huikan_tests::{Backend, TestServer, backend_tests};
use reqwest::Method;
use serde_json::Value;

backend_tests!(health_readiness_and_metrics_answer_without_a_token);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).expect("openapi.yaml");
    serde_yaml::from_str(&text).expect("openapi.yaml parses")
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// (METHOD, path template) of every operation in the spec.
fn spec_operations() -> BTreeSet<(String, String)> {
    let spec = spec();
    let paths = spec["paths"].as_mapping().expect("paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    ops
}

/// (METHOD, path) of every route the server registers, read from `.route(...)` calls in its
/// source: the method routers chained onto each path.
fn served_operations() -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    let mut files = vec![root().join("server/src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for piece in source.split(".route(").skip(1) {
            let Some(rest) = piece.trim_start().strip_prefix('"') else {
                continue;
            };
            let (route, chain) = rest.split_once('"').unwrap();
            // The route's method chain ends where the call's parentheses close.
            let mut depth = 1;
            let end = chain
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(chain.len(), |(i, _)| i);
            let chain = &chain[..end];
            for method in METHODS {
                let call = format!("{method}(");
                let found = chain.match_indices(&call).any(|(i, _)| {
                    i == 0 || !chain[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if found {
                    ops.insert((method.to_uppercase(), route.to_owned()));
                }
            }
        }
    }
    ops
}

#[test]
fn every_served_route_is_in_the_spec_and_every_spec_path_is_served() {
    let spec = spec_operations();
    let served = served_operations();
    assert!(served.len() > 10, "the route scan found {served:?}");
    let undocumented: Vec<_> = served.difference(&spec).collect();
    let unserved: Vec<_> = spec.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.yaml but not served: {unserved:?}"
    );
}

#[test]
fn every_problem_code_is_documented() {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    let source = std::fs::read_to_string(root().join("server/src/error.rs")).unwrap();
    let table = source
        .split("pub const CODES")
        .nth(1)
        .unwrap()
        .split("];")
        .next()
        .unwrap();
    for line in table.lines().filter(|l| l.trim_start().starts_with("(\"")) {
        let code = line
            .trim_start()
            .trim_start_matches("(\"")
            .split('"')
            .next()
            .unwrap();
        assert!(
            text.contains(code),
            "problem code {code} is not in openapi.yaml"
        );
    }
}

/// Each operation of the spec reaches a handler on the running server: none is answered by
/// the router's fallbacks.
#[tokio::test]
async fn the_running_server_answers_every_operation_of_the_spec() {
    let Some(server) = TestServer::start(Backend::Embedded).await else {
        return;
    };
    let admin = server.admin().await;
    for (method, template) in spec_operations() {
        let path = template
            .replace("{sha256}", &"a".repeat(64))
            .replace("{upload_id}", "0190c3e2-7d3a-7b4c-9d1e-0123456789ab")
            .replace("{submission_id}", "0190c3e2-7d3a-7b4c-9d1e-0123456789ab")
            .replace("{campaign_id}", "c1")
            .replace("{household_id}", "4103271010010001")
            .replace("{lang}", "en")
            .replace("{form_id}", "huikan-c1")
            .replace("{filename}", "households.csv")
            .replace("{token}", admin.token.as_deref().unwrap());
        assert!(!path.contains('{'), "unfilled parameter in {path}");
        let response = admin
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &path)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            body["code"] != "no_route" && body["code"] != "method_not_allowed" && status != 405,
            "{method} {path} is in the spec but not served: {status} {body}"
        );
    }
    let served = server
        .anonymous()
        .get("/openapi.yaml")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        served,
        std::fs::read_to_string(root().join("openapi.yaml")).unwrap()
    );
}

async fn health_readiness_and_metrics_answer_without_a_token(server: TestServer) {
    let anon = server.anonymous();
    assert_eq!(anon.get("/healthz").await.status(), 200);
    let ready = anon.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        serde_json::json!({"database": "ok", "blob_store": "ok"})
    );
    let metrics = anon.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let missing = anon.get("/v1/no/such/thing").await;
    assert_eq!(missing.status(), 404);
}
