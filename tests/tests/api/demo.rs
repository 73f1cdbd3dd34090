//! `huikan serve --demo`: the synthetic county raises every finding the contract names, and its
//! logins work.

use huikan_tests::{Api, TestServer, backend_tests};
use serde_json::Value;

backend_tests!(the_demo_county_shows_every_finding);

async fn the_demo_county_shows_every_finding(mut server: TestServer) {
    let base = server.process_with(&[("HUIKAN_DEMO", "true")]).await;
    server.settle().await;
    let codes = server
        .count("SELECT COUNT(DISTINCT code) FROM findings WHERE cleared_at IS NULL")
        .await;
    assert_eq!(codes, 18, "every finding code is raised somewhere");
    let reviewer = Api::new(&base, None)
        .login("demo-reviewer", "demo-password")
        .await;
    let queue: Value = reviewer.get_json("/v1/review/queue?limit=100").await;
    assert!(queue["items"].as_array().unwrap().len() >= 20, "{queue}");
    let coverage: Value = reviewer.get_json("/v1/reports/coverage").await;
    let townships: Vec<&str> = coverage["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(townships, ["城关镇", "东城街道"]);
    // Started again with --demo, it finds the county there and loads nothing twice.
    let visits = server.count("SELECT COUNT(*) FROM submissions").await;
    server.process_with(&[("HUIKAN_DEMO", "true")]).await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM submissions").await,
        visits
    );
}
