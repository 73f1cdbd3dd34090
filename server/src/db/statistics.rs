//! Planner statistics kept current on PostgreSQL. A registry import or a morning's sync can
//! grow a table many times over within a minute; until the table is analysed again the planner
//! still believes it small and picks plans that are slower by orders of magnitude (a queue page
//! measured at 344 ms instead of 0.9 ms). Autovacuum analyses such tables only when it runs at
//! all, after its nap, so the server checks every few seconds itself and analyses what changed
//! much (the same rule as autovacuum's, with a higher floor). `ANALYZE` samples a bounded number
//! of rows and blocks neither reads nor writes. SQLite plans these queries well without
//! statistics, so there is nothing to do there.

use std::time::Duration;

use sqlx::PgPool;

use super::{Db, Pool};

/// How often the tables are looked at.
const EVERY: Duration = Duration::from_secs(10);

/// Tables whose rows changed since their last analysis by more than a tenth of their size
/// (and by more than a few hundred rows), named ready for `ANALYZE`.
const STALE: &str = "SELECT quote_ident(schemaname) || '.' || quote_ident(relname)
    FROM pg_stat_user_tables
    WHERE n_mod_since_analyze > 500 + 0.1 * n_live_tup
    ORDER BY n_mod_since_analyze DESC";

/// Runs for the life of the server.
pub async fn keep_current(db: Db) {
    let Pool::Postgres(pool) = db.write else {
        return;
    };
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = analyse_stale(&pool).await {
            tracing::warn!(error = %e, "refreshing planner statistics");
        }
    }
}

/// Analyses every table [`STALE`] names.
async fn analyse_stale(pool: &PgPool) -> sqlx::Result<()> {
    let stale: Vec<String> = sqlx::query_scalar(STALE).fetch_all(pool).await?;
    for table in &stale {
        let started = std::time::Instant::now();
        // The name comes from the catalogue, quoted by the server itself.
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await?;
        tracing::info!(table, ms = started.elapsed().as_millis() as u64, "analysed");
    }
    Ok(())
}
