//! Starting, killing and restarting the real server binary, and the per-test database, bucket
//! and data directory it runs on.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::api::Api;

pub const ADMIN: (&str, &str) = ("admin", "admin-password-1");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (WAL) and photos as files: the embedded default.
    Embedded,
    /// PostgreSQL and an S3 server.
    PostgresS3,
}

/// What a server process is started with; a second process or a restart reuses it.
#[derive(Clone)]
struct Setup {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
}

pub struct TestServer {
    pub backend: Backend,
    pub base: String,
    child: Child,
    setup: Setup,
    extra: Vec<Child>,
    _data: tempfile::TempDir,
    _database: Option<PgDatabase>,
}

/// The `huikan` binary under test.
pub fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("HUIKAN_BIN") {
        return bin.into();
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(profile)
        .join("huikan")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `statement` (one or several) on a fresh connection of type `C` to `url`.
async fn run_sql<C>(url: &str, statement: &str) -> Result<(), String>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let mut conn = C::connect(url).await.map_err(|e| e.to_string())?;
    sqlx::raw_sql(statement)
        .execute(&mut conn)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A tool the test command installs and names in the environment variable `var` (`what`, for
/// the message): its value, or None (the test skipped, loudly) outside CI; under CI it is
/// required.
pub fn installed(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) if in_ci() => panic!("{what} is not available ({var}), and CI=true requires it"),
        Err(_) => {
            eprintln!(
                "SKIPPED: {what} is not available ({var}; the README's test command installs it)"
            );
            None
        }
    }
}

/// A backend that is not there fails the run under CI and is skipped, loudly, elsewhere.
fn unavailable(what: &str) -> Option<TestServer> {
    if in_ci() {
        panic!("{what} is not available, and CI=true requires every backend");
    }
    eprintln!("SKIPPED: {what} is not available (run the README's test command to start it)");
    None
}

pub fn pg_admin_url() -> String {
    std::env::var("HUIKAN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        let data = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(backend, data, None).await
    }

    /// Starts a server whose data directory (database for the embedded backend, photos, spool)
    /// is `data` (a small file system, say, to fill), and for PostgreSQL + S3 on the S3 server
    /// `s3` instead of the suite's (one the test may stop).
    pub async fn start_in(
        backend: Backend,
        data: tempfile::TempDir,
        s3: Option<String>,
    ) -> Option<TestServer> {
        let mut env = vec![
            (
                "HUIKAN_BOOTSTRAP_ADMIN".to_owned(),
                format!("{}:{}", ADMIN.0, ADMIN.1),
            ),
            // Checkpoints every second, so tests see them without waiting minutes.
            ("HUIKAN_CHECKPOINT_SECS".to_owned(), "1".to_owned()),
            // Jobs of a killed server come back after 5 s, not 30.
            ("HUIKAN_JOB_LEASE_SECS".to_owned(), "5".to_owned()),
        ];
        let mut database = None;
        if backend == Backend::PostgresS3 {
            if s3.is_some() {
                // The test may stop its S3 server: a read waiting on it gives up in seconds.
                env.push(("HUIKAN_S3_READ_TIMEOUT_SECS".to_owned(), "5".to_owned()));
            }
            let Some(endpoint) = s3.or_else(|| std::env::var("HUIKAN_TEST_S3_ENDPOINT").ok())
            else {
                return unavailable("an S3 server (HUIKAN_TEST_S3_ENDPOINT)");
            };
            let db = match PgDatabase::create().await {
                Ok(db) => db,
                Err(e) => return unavailable(&format!("PostgreSQL at {} ({e})", pg_admin_url())),
            };
            env.push(("DATABASE_URL".to_owned(), db.url.clone()));
            env.push(("HUIKAN_S3_ENDPOINT".to_owned(), endpoint));
            env.push((
                "HUIKAN_S3_BUCKET".to_owned(),
                format!("huikan-test-{}", Uuid::new_v4().simple()),
            ));
            for (key, default) in [
                ("AWS_ACCESS_KEY_ID", "huikan-test"),
                ("AWS_SECRET_ACCESS_KEY", "huikan-test-secret"),
            ] {
                env.push((
                    key.to_owned(),
                    std::env::var(key).unwrap_or_else(|_| default.to_owned()),
                ));
            }
            database = Some(db);
        }
        let setup = Setup {
            data_dir: data.path().to_owned(),
            env,
        };
        let (child, base) = spawn(&setup, &[]).await;
        Some(TestServer {
            backend,
            base,
            child,
            setup,
            extra: Vec::new(),
            _data: data,
            _database: database,
        })
    }

    /// The S3 bucket this server stores photos in (PostgreSQL + S3 only).
    pub fn s3_bucket(&self) -> Option<String> {
        self.setup
            .env
            .iter()
            .find(|(k, _)| k == "HUIKAN_S3_BUCKET")
            .map(|(_, v)| v.clone())
    }

    /// An API client without a token.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.base, None)
    }

    pub async fn admin(&self) -> Api {
        self.anonymous().login(ADMIN.0, ADMIN.1).await
    }

    /// Creates a user with a fresh name and returns a client logged in as it.
    pub async fn user(&self, role: &str, scope: &[&str]) -> Api {
        user_on(&self.base, &self.admin().await, role, scope).await
    }

    /// The whole audit log (up to 1,000 entries), read by a new auditor.
    pub async fn audit_log(&self) -> Vec<serde_json::Value> {
        let auditor = self.user("auditor", &[]).await;
        let mut log: serde_json::Value = auditor
            .get("/v1/audit/log?limit=1000")
            .await
            .json()
            .await
            .expect("the audit log");
        match log["items"].take() {
            serde_json::Value::Array(items) => items,
            other => panic!("not a page of entries: {other}"),
        }
    }

    /// Kills the server with SIGKILL: no shutdown, no flush.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("killing the server");
    }

    /// Asks the server to stop (SIGTERM), as a deployment does; returns once it has exited.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not stop within 30 s of SIGTERM")
            .expect("waiting for the server")
    }

    /// Starts the server again on the same storage; the port changes.
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        let (child, base) = spawn(&self.setup, &[]).await;
        self.child = child;
        self.base = base;
    }

    /// Starts one more server process on the same database and blob store, as a scaled-out
    /// deployment does, and returns its base URL.
    pub async fn another_process(&mut self) -> String {
        let (child, base) = spawn(&self.setup, &[]).await;
        self.extra.push(child);
        base
    }

    /// Starts a further process with extra settings (e.g. smaller limits); returns its URL.
    pub async fn process_with(&mut self, env: &[(&str, &str)]) -> String {
        let (child, base) = spawn(&self.setup, env).await;
        self.extra.push(child);
        base
    }

    /// Runs a `huikan` subcommand against this server's storage (same database, same data dir).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .arg("--data-dir")
            .arg(&self.setup.data_dir)
            .env_remove("DATABASE_URL")
            .envs(self.setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .expect("running huikan")
    }

    /// Runs SQL straight against the server's database, as someone with database access (or
    /// an attacker) could; returns the error text if the database refused it.
    pub async fn sql(&self, statement: &str) -> Result<(), String> {
        match self.backend {
            Backend::Embedded => {
                let url = format!(
                    "sqlite://{}",
                    self.setup.data_dir.join("huikan.db").display()
                );
                run_sql::<sqlx::SqliteConnection>(&url, statement).await
            }
            Backend::PostgresS3 => {
                let url = self
                    ._database
                    .as_ref()
                    .map(|d| d.url.clone())
                    .unwrap_or_default();
                run_sql::<sqlx::PgConnection>(&url, statement).await
            }
        }
    }

    /// The one integer a query over the server's database answers (a count).
    pub async fn count(&self, query: &str) -> i64 {
        use sqlx::Connection;
        match self.backend {
            Backend::Embedded => {
                let url = format!(
                    "sqlite://{}",
                    self.setup.data_dir.join("huikan.db").display()
                );
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(query)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::PostgresS3 => {
                let url = self._database.as_ref().map(|d| d.url.clone()).unwrap();
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(query)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// Waits until the server's job queue is empty: every photo processed and checked, every
    /// household reconciled.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let pending = self
                .count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
                .await;
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} jobs still queued after 120 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.setup.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process id of the further process started last.
    pub fn last_process_pid(&self) -> Option<u32> {
        self.extra.last().and_then(Child::id)
    }
}

/// The password of every user the harness creates.
pub const PASSWORD: &str = "password-123";

pub async fn user_on(base: &str, admin: &Api, role: &str, scope: &[&str]) -> Api {
    let username = format!("{role}-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let password = PASSWORD;
    let response = admin
        .post_json("/v1/users", &serde_json::json!({"username": username, "password": password, "role": role, "scope": scope}))
        .await;
    assert_eq!(
        response.status(),
        201,
        "creating {username}: {}",
        response.text().await.unwrap_or_default()
    );
    Api::new(base, None).login(&username, password).await
}

async fn spawn(setup: &Setup, extra_env: &[(&str, &str)]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(setup.data_dir.join("server.log"))
        .expect("server log");
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&setup.data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("HUIKAN_S3_ENDPOINT")
        .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("HUIKAN_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::from(log)
        })
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
    let stdout = child.stdout.take().expect("server stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the server did not start within 60 s")
        .expect("reading the server's stdout")
        .unwrap_or_else(|| {
            let log =
                std::fs::read_to_string(setup.data_dir.join("server.log")).unwrap_or_default();
            panic!("the server exited before listening:\n{log}")
        });
    let base = line
        .strip_prefix("huikan listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// A PostgreSQL database made for one test and dropped after it.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Result<PgDatabase, sqlx::Error> {
        let admin_url = pg_admin_url();
        let name = format!("huikan_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        Ok(PgDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, so the async drop gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&pg_admin_url())
                    .await
                    .map_err(std::io::Error::other)?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
    }
}
