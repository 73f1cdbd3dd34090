//! The metadata database: opens the pool for whichever backend is configured and runs its
//! migrations. Capability modules own their SQL; each query body is written once and compiled
//! for both backends by [`on_pool!`], with dialect differences spelled out where they exist.

pub mod statistics;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A pool on one of the two metadata backends.
#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Expands one block of sqlx code for each backend: inside it `$p` is `&SqlitePool` or
/// `&PgPool`. Plain runtime SQL with `$N` placeholders runs unchanged on both, so a query is
/// written once; where the dialects differ, the block branches on [`Pool::dialect`].
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// The metadata database. SQLite allows one writer at a time, so writes go through a pool of
/// one connection (no SQLITE_BUSY between our own connections) and reads through several;
/// PostgreSQL uses one pool for both.
#[derive(Clone)]
pub struct Db {
    pub write: Pool,
    pub read: Pool,
}

impl Db {
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Db> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::connect_postgres(url).await
            }
            Some(url) if url.starts_with("sqlite:") => {
                let options = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid DATABASE_URL {url:?}"))?;
                Self::connect_sqlite(options).await
            }
            Some(url) => anyhow::bail!(
                "DATABASE_URL must start with postgres:// or sqlite:, got {:?}",
                url.split(':').next().unwrap_or_default()
            ),
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating data directory {}", data_dir.display()))?;
                let options = SqliteConnectOptions::new().filename(data_dir.join("huikan.db"));
                Self::connect_sqlite(options).await
            }
        }
    }

    async fn connect_sqlite(options: SqliteConnectOptions) -> anyhow::Result<Db> {
        // FULL: an acknowledged write survives a power cut, not only a crash of the process.
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 8 MiB of page cache per connection: enough for the hot indexes, and five
            // connections stay well inside a small server's memory.
            .pragma("cache_size", "-8192");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A COMMIT that fails (SQLITE_FULL: the disk filled) may leave the connection
            // believing it is still in a transaction, refusing every later BEGIN. Such a
            // connection is closed on release (after its queued rollback ran) and a fresh one
            // opened, so writes work again as soon as there is space.
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(options.clone())
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("migrations/sqlite")
            .run(&write)
            .await
            .context("migrating the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .context("opening the SQLite database for reading")?;
        Ok(Db {
            write: Pool::Sqlite(write),
            read: Pool::Sqlite(read),
        })
    }

    async fn connect_postgres(url: &str) -> anyhow::Result<Db> {
        let options = PgConnectOptions::from_str(url).context("invalid DATABASE_URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        Ok(Db {
            write: Pool::Postgres(pool.clone()),
            read: Pool::Postgres(pool),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.write.dialect()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(&self.read, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(drop))
    }
}

/// Appends `IN (...)` over the values to a query being built with `sqlx::QueryBuilder`.
#[macro_export]
macro_rules! push_in {
    ($q:ident, $values:expr) => {{
        $q.push(" IN (");
        let mut list = $q.separated(", ");
        for value in $values {
            list.push_bind(value);
        }
        list.push_unseparated(")");
    }};
}

/// Reads a feed counter and, on PostgreSQL, locks its row until the transaction ends, so that
/// feed positions are handed out in commit order. SQLite's single writer connection already
/// excludes every other writer.
pub fn lock_counter_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT value FROM counters WHERE name = $1",
        Dialect::Postgres => "SELECT value FROM counters WHERE name = $1 FOR UPDATE",
    }
}

/// The current time at the precision both databases keep (microseconds), so a time answered
/// before a write equals the one read back after it.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// SQL for "`column` starts with one of these division prefixes", as index-friendly ranges.
/// The prefixes are inlined as literals: each was validated as 2 to 12 digits when it entered
/// the system. No prefix matches nothing.
pub fn prefix_condition(column: &str, prefixes: &[&huikan_shared::DivisionPrefix]) -> String {
    if prefixes.is_empty() {
        return "1 = 0".to_owned();
    }
    let ranges: Vec<String> = prefixes
        .iter()
        .map(|p| {
            let p = p.as_str();
            debug_assert!(p.bytes().all(|b| b.is_ascii_digit()));
            match huikan_shared::division::upper_bound(p) {
                Some(upper) => format!("({column} >= '{p}' AND {column} < '{upper}')"),
                None => format!("{column} >= '{p}'"),
            }
        })
        .collect();
    format!("({})", ranges.join(" OR "))
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`: the write lock is
/// taken at the start, waiting (busy timeout) for another process's writer, rather than at the
/// first write, where a snapshot another process has since moved past fails at once with
/// SQLITE_BUSY_SNAPSHOT (the command-line import, or a second server, beside a running one).
pub trait BeginWrite {
    type Database: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>,
    > + Send;
}

impl BeginWrite for sqlx::SqlitePool {
    type Database = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for sqlx::PgPool {
    type Database = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin()
    }
}
