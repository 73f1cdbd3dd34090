//! Headless Chromium through ChromeDriver, for the tests that need a real browser: the console
//! (a reviewer's errand) and Enketo (a web form filled in and submitted).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use huikan_tests::server::installed;
use serde_json::json;

/// Where a test's screenshots are kept: beside the test build, in a folder of its own.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Driver {
    pub process: tokio::process::Child,
    url: String,
    profile: tempfile::TempDir,
}

/// ChromeDriver on a free port, or None outside CI when it is not installed.
pub async fn chromedriver() -> Option<Driver> {
    let driver = installed("HUIKAN_TEST_CHROMEDRIVER", "ChromeDriver")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return Some(Driver {
                process,
                url,
                profile: tempfile::tempdir().unwrap(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// A Chromium session, with `extra_args` beside the headless defaults.
pub async fn browser(driver: &Driver, extra_args: &[&str]) -> Client {
    let chromium =
        std::env::var("HUIKAN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1400,1800".into(),
        format!("--user-data-dir={}", driver.profile.path().display()),
    ];
    args.extend(extra_args.iter().map(|a| a.to_string()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium, "args": args}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// A screenshot of the page as `dir/name.png`.
pub async fn screenshot(client: &Client, dir: &str, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir(dir).join(format!("{name}.png")), png).unwrap();
}
