//! Times registry pulls against a running server, as phones make them: a village's full first
//! pull, and delta pulls from a cursor. Run it twice around a re-import:
//!
//!   registrybench --base URL --admin NAME:PASS --village 410327101001 --scope 410327
//!       → times the village's full pull, pages the whole scope once, prints `cursor=…`
//!   registrybench --base URL --admin NAME:PASS --scope 410327 --since CURSOR
//!       → times the delta pull from CURSOR (after a re-import that changed a few households)

use std::time::{Duration, Instant};

use clap::Parser;
use huikan_tests::Api;
use huikan_tests::server::user_on;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: String,
    #[arg(long, env = "HUIKAN_BOOTSTRAP_ADMIN")]
    admin: String,
    /// A village whose full first pull is timed.
    #[arg(long)]
    village: Option<String>,
    /// The scope (division prefix) of the phone that pulls deltas.
    #[arg(long, default_value = "410327")]
    scope: String,
    /// Time delta pulls from this cursor instead.
    #[arg(long)]
    since: Option<String>,
    #[arg(long, default_value_t = 30)]
    requests: usize,
}

/// Times `requests` GETs of `path`; returns the last page and the sorted latencies.
async fn time(api: &Api, path: &str, requests: usize) -> (Value, Vec<Duration>) {
    let mut latencies = Vec::with_capacity(requests);
    let mut page = Value::Null;
    for _ in 0..requests {
        let started = Instant::now();
        let response = api.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        page = response.json().await.expect("a page");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (page, latencies)
}

fn report(what: &str, items: usize, latencies: &[Duration]) {
    let ms = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "scenario={what} items={items} requests={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        latencies.len(),
        ms(0.50),
        ms(0.99),
        ms(1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (name, password) = args
        .admin
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--admin NAME:PASSWORD"))?;
    let admin = Api::new(&args.base, None).login(name, password).await;
    let phone = user_on(&args.base, &admin, "field_staff", &[&args.scope]).await;

    if let Some(cursor) = &args.since {
        let (page, latencies) = time(
            &phone,
            &format!("/v1/sync/registry?since={cursor}&limit=1000"),
            args.requests,
        )
        .await;
        report(
            "registry_delta_pull",
            page["items"].as_array().map_or(0, Vec::len),
            &latencies,
        );
        return Ok(());
    }
    if let Some(village) = &args.village {
        let villager = user_on(&args.base, &admin, "field_staff", &[village]).await;
        let (page, latencies) =
            time(&villager, "/v1/sync/registry?limit=1000", args.requests).await;
        report(
            "registry_village_full_pull",
            page["items"].as_array().map_or(0, Vec::len),
            &latencies,
        );
    }
    // Page the whole scope once, as a phone's first sync of it would, to reach today's cursor.
    let started = Instant::now();
    let (mut cursor, mut total) = (String::new(), 0usize);
    loop {
        let page: Value = phone
            .get(&format!("/v1/sync/registry?limit=1000&since={cursor}"))
            .await
            .json()
            .await?;
        total += page["items"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
        if page["has_more"] != true {
            break;
        }
    }
    println!(
        "scenario=registry_scope_full_pull items={total} duration={:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("cursor={cursor}");
    Ok(())
}
