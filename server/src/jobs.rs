//! The durable job queue in the metadata database: work that a change needs done later, never on
//! the request path. A job is enqueued in the same transaction as the change ([`enqueue_jobs!`]),
//! claimed with a lease by in-process workers (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
//! any number of server processes share the work), retried with exponential backoff, and parked
//! with its error after `HUIKAN_JOB_MAX_ATTEMPTS`. A worker that dies mid-job holds nothing: its
//! lease runs out and another worker takes the job. Handlers are idempotent, since a job may run
//! again after a crash between its effect and its removal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::db::{BeginWrite, Dialect};
use crate::http::AppState;
use crate::on_pool;

/// What a job does; its `subject` says to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Subject: a blob's SHA-256.
    ProcessPhoto,
    /// Subject: a submission id. Runs once all the visit's photos are processed, in batches.
    CheckPhotos,
    /// Subject: a household id. Runs in batches: a registry import can touch a whole county.
    Reconcile,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::ProcessPhoto, Kind::CheckPhotos, Kind::Reconcile];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ProcessPhoto => "process_photo",
            Kind::CheckPhotos => "check_photos",
            Kind::Reconcile => "reconcile",
        }
    }

    /// How many jobs of this kind a worker claims and runs together: one transaction for many
    /// small jobs instead of one each.
    fn batch(self) -> i64 {
        match self {
            // Small enough that a batch's transaction, which holds SQLite's one writer, stays
            // short beside the requests waiting for it; large enough that a county's
            // re-reconciliation is hundreds of transactions, not tens of thousands.
            Kind::Reconcile => 64,
            // Each visit's photos are looked up in the near-duplicate index: a few at a time.
            Kind::CheckPhotos => 4,
            Kind::ProcessPhoto => 1,
        }
    }

    /// After a batch of this kind that did not fill, the worker waits this long before claiming
    /// again, so that what is enqueued meanwhile runs together: under a steady stream of visits,
    /// a few large reconciliation transactions a second instead of one per handful of visits,
    /// which leaves SQLite's one writer to the visits coming in.
    fn gather(self) -> Duration {
        match self {
            Kind::Reconcile => Duration::from_millis(250),
            Kind::CheckPhotos | Kind::ProcessPhoto => Duration::ZERO,
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Runs one job. Errors are the job's, retried later; they never stop the worker.
async fn run(state: &AppState, kind: Kind, subject: &str) -> anyhow::Result<()> {
    match kind {
        Kind::ProcessPhoto => crate::evidence::process_photo(state, subject).await,
        Kind::CheckPhotos | Kind::Reconcile => {
            run_batch(state, kind, &[subject], None).await.map(drop)
        }
    }
}

/// The jobs a batch holds, for a handler to remove in the same transaction that records their
/// effect ([`remove_claimed!`]): a batch then costs one transaction to claim and one to finish,
/// not four.
pub struct Claim {
    worker: String,
    ids: Vec<i64>,
}

/// Removes the jobs of `$claim` (an `Option<&Claim>`) inside the open transaction `$tx`, those
/// still leased to the claiming worker: one enqueued again meanwhile was released, and stays to
/// run once more.
#[macro_export]
macro_rules! remove_claimed {
    ($tx:ident, $claim:expr) => {{
        let claim: Option<&$crate::jobs::Claim> = $claim;
        if let Some(claim) = claim {
            claim.removal().build().execute(&mut *$tx).await?;
        }
    }};
}

impl Claim {
    #[doc(hidden)]
    pub fn removal<DB: sqlx::Database>(&self) -> sqlx::QueryBuilder<'_, DB>
    where
        String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let mut q = sqlx::QueryBuilder::new("DELETE FROM jobs WHERE leased_by = ");
        q.push_bind(self.worker.clone()).push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in &self.ids {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
        q
    }
}

/// Runs a batch of jobs of a kind that batches, all or nothing. True when the handler removed
/// the claimed jobs itself, in its own transaction.
async fn run_batch(
    state: &AppState,
    kind: Kind,
    subjects: &[&str],
    claim: Option<&Claim>,
) -> anyhow::Result<bool> {
    match kind {
        Kind::CheckPhotos => crate::evidence::reuse::check_photos(state, subjects)
            .await
            .map(|()| false),
        Kind::Reconcile => crate::reconcile::reconcile_households(state, subjects, claim).await,
        Kind::ProcessPhoto => {
            anyhow::bail!("jobs of kind {} do not run in batches", kind.as_str())
        }
    }
}

/// Enqueues `(kind, subject)` jobs inside an open transaction `$tx`; a job already queued for the
/// same subject is not doubled. A job that is running when it is enqueued again is released to
/// run once more (its worker's finish no longer matches it): the run under way may have read the
/// world from before this change. A macro because it runs in both arms of `on_pool!`. Wake the
/// workers with [`Wakeup::notify`] after the commit.
#[macro_export]
macro_rules! enqueue_jobs {
    ($tx:ident, $kind:expr, $subjects:expr) => {{
        let kind: $crate::jobs::Kind = $kind;
        let subjects: &[&str] = $subjects;
        let now = $crate::db::now();
        for chunk in subjects.chunks(1000) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO jobs (kind, subject, ready_at, enqueued_at) ");
            q.push_values(chunk, |mut b, subject| {
                b.push_bind(kind.as_str())
                    .push_bind(*subject)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (kind, subject) DO UPDATE
                  SET ready_at = excluded.ready_at, leased_by = NULL, attempts = 0
                  WHERE jobs.leased_by IS NOT NULL",
            );
            q.build().execute(&mut *$tx).await?;
        }
    }};
}

/// Tells this process's idle workers that jobs were enqueued (other processes find them on
/// their next poll).
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn notify(&self) {
        self.0.notify_waiters();
    }
}

/// How workers behave: from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub workers: usize,
    pub lease: Duration,
    pub max_attempts: i32,
}

/// An idle worker looks for work at least this often, for jobs other processes enqueued and
/// leases that ran out.
const POLL: Duration = Duration::from_millis(500);
/// The first retry waits this long, each further one twice as long, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

#[derive(sqlx::FromRow)]
struct Claimed {
    id: i64,
    kind: String,
    subject: String,
    attempts: i32,
}

/// Claims up to `$4` more ready jobs of kind `$5` for a batch.
fn claim_more_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE jobs SET attempts = attempts + 1, ready_at = $1, leased_by = $2
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND ready_at <= $3 AND kind = $5
                          ORDER BY ready_at, id LIMIT $4)
             RETURNING id, kind, subject, attempts"
        }
        Dialect::Postgres => {
            "UPDATE jobs SET attempts = attempts + 1, ready_at = $1, leased_by = $2
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND ready_at <= $3 AND kind = $5
                          ORDER BY ready_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, subject, attempts"
        }
    }
}

fn claim_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE jobs SET attempts = attempts + 1, ready_at = $1, leased_by = $2
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND ready_at <= $3
                         ORDER BY ready_at, id LIMIT 1)
             RETURNING id, kind, subject, attempts"
        }
        Dialect::Postgres => {
            "UPDATE jobs SET attempts = attempts + 1, ready_at = $1, leased_by = $2
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND ready_at <= $3
                         ORDER BY ready_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, subject, attempts"
        }
    }
}

/// Starts the workers and the queue's gauges; they run for as long as the process does.
pub fn start(state: &AppState, settings: Settings) {
    let process = uuid::Uuid::new_v4().simple().to_string();
    if settings.workers == 0 {
        tracing::info!("no job workers in this process: jobs wait for another process to run them");
    }
    for n in 0..settings.workers {
        let name = format!("{}-{n}", &process[..8]);
        tokio::spawn(work(state.clone(), settings, name));
    }
    tokio::spawn(gauges(state.clone()));
}

async fn work(state: AppState, settings: Settings, name: String) {
    loop {
        // Registered before looking, so a wakeup between the look and the wait is not lost.
        let woken = state.jobs.0.notified();
        match claim(&state, &settings, &name).await {
            Ok(mut jobs) if !jobs.is_empty() => {
                match Kind::parse(&jobs[0].kind) {
                    Some(kind) if kind.batch() > 1 => {
                        let filled = jobs.len() as i64 >= kind.batch();
                        handle_batch(&state, &settings, &name, jobs).await;
                        if !filled {
                            tokio::time::sleep(kind.gather()).await;
                        }
                    }
                    _ => {
                        if let Some(job) = jobs.pop() {
                            handle(&state, &settings, &name, job).await;
                        }
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "claiming jobs"),
        }
        let _ = tokio::time::timeout(POLL, woken).await;
    }
}

/// Claims the oldest ready job and, for a kind that batches, more of its kind, in one
/// transaction.
async fn claim(state: &AppState, settings: &Settings, name: &str) -> anyhow::Result<Vec<Claimed>> {
    let now = crate::db::now();
    let lease_end = now + chrono::Duration::from_std(settings.lease)?;
    let dialect = state.db.dialect();
    Ok(on_pool!(&state.db.write, |p| {
        let mut tx = p.begin_write().await?;
        let first: Option<Claimed> = sqlx::query_as(claim_sql(dialect))
            .bind(lease_end)
            .bind(name)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let mut claimed = Vec::new();
        if let Some(first) = first {
            let batch = Kind::parse(&first.kind).map_or(1, Kind::batch);
            let kind = first.kind.clone();
            claimed.push(first);
            if batch > 1 {
                let more: Vec<Claimed> = sqlx::query_as(claim_more_sql(dialect))
                    .bind(lease_end)
                    .bind(name)
                    .bind(now)
                    .bind(batch - 1)
                    .bind(kind)
                    .fetch_all(&mut *tx)
                    .await?;
                claimed.extend(more);
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(claimed)
    })?)
}

/// Runs jobs of one kind together and removes them in one statement. If the batch fails, each
/// job runs alone, so one bad subject is retried and parked by itself, not with its batch.
async fn handle_batch(state: &AppState, settings: &Settings, name: &str, jobs: Vec<Claimed>) {
    let (fresh, worn): (Vec<Claimed>, Vec<Claimed>) = jobs
        .into_iter()
        .partition(|job| job.attempts <= settings.max_attempts);
    for job in worn {
        handle(state, settings, name, job).await;
    }
    let Some(kind) = fresh.first().and_then(|job| Kind::parse(&job.kind)) else {
        return;
    };
    let labels = [("kind", kind.as_str())];
    let started = Instant::now();
    let subjects: Vec<&str> = fresh.iter().map(|job| job.subject.as_str()).collect();
    let claim = Claim {
        worker: name.to_owned(),
        ids: fresh.iter().map(|job| job.id).collect(),
    };
    let span = tracing::info_span!("jobs", kind = kind.as_str(), count = subjects.len());
    let result = tokio::time::timeout(
        settings.lease,
        tracing::Instrument::instrument(run_batch(state, kind, &subjects, Some(&claim)), span),
    )
    .await;
    metrics::histogram!("job_batch_duration_seconds", &labels).record(started.elapsed());
    match result {
        Ok(Ok(removed)) => {
            metrics::counter!("jobs_done_total", &labels).increment(fresh.len() as u64);
            if !removed {
                let removal = on_pool!(&state.db.write, |p| {
                    claim.removal().build().execute(p).await.map(drop)
                });
                if let Err(e) = removal {
                    tracing::warn!(error = ?e, "recording a batch of jobs as done");
                }
            }
        }
        failed => {
            let error = match failed {
                Ok(Err(e)) => format!("{e:#}"),
                _ => format!("did not finish within its lease of {:?}", settings.lease),
            };
            tracing::warn!(kind = kind.as_str(), count = fresh.len(), %error, "a batch of jobs failed; running each alone");
            for job in fresh {
                handle(state, settings, name, job).await;
            }
        }
    }
}

async fn handle(state: &AppState, settings: &Settings, name: &str, job: Claimed) {
    let Some(kind) = Kind::parse(&job.kind) else {
        let error = format!("no handler for jobs of kind {:?}", job.kind);
        return finish(state, &job, name, Outcome::Park(error)).await;
    };
    let labels = [("kind", kind.as_str())];
    if job.attempts > settings.max_attempts {
        // Claimed that often without an outcome: its worker died each time (killed, or the
        // process crashed on it). Running it again would do the same.
        let error = format!(
            "its worker stopped {} times while running it",
            job.attempts - 1
        );
        metrics::counter!("jobs_parked_total", &labels).increment(1);
        return finish(state, &job, name, Outcome::Park(error)).await;
    }
    let started = Instant::now();
    let span = tracing::info_span!("job", kind = kind.as_str(), subject = %job.subject, attempt = job.attempts);
    let result = tokio::time::timeout(
        settings.lease,
        tracing::Instrument::instrument(run(state, kind, &job.subject), span),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "did not finish within its lease of {:?}",
            settings.lease
        ))
    });
    metrics::histogram!("job_duration_seconds", &labels).record(started.elapsed());
    let outcome = match result {
        Ok(()) => {
            metrics::counter!("jobs_done_total", &labels).increment(1);
            Outcome::Done
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::warn!(kind = kind.as_str(), subject = %job.subject, attempt = job.attempts, %error, "job failed");
            metrics::counter!("job_failures_total", &labels).increment(1);
            if job.attempts >= settings.max_attempts {
                metrics::counter!("jobs_parked_total", &labels).increment(1);
                Outcome::Park(error)
            } else {
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (job.attempts - 1).clamp(0, 20))
                    .min(BACKOFF_MAX);
                Outcome::Retry(error, wait)
            }
        }
    };
    finish(state, &job, name, outcome).await;
}

enum Outcome {
    Done,
    Retry(String, Duration),
    Park(String),
}

/// Records the outcome, if the job is still this worker's (a lease that ran out may have passed
/// it to another worker, whose outcome then counts).
async fn finish(state: &AppState, job: &Claimed, name: &str, outcome: Outcome) {
    let now = crate::db::now();
    let result = on_pool!(&state.db.write, |p| {
        let (sql, extra): (&str, Option<(DateTime<Utc>, &str)>) = match &outcome {
            Outcome::Done => (
                "DELETE FROM jobs WHERE id = $1 AND leased_by = $2 AND attempts = $3",
                None,
            ),
            Outcome::Retry(error, wait) => (
                "UPDATE jobs SET ready_at = $4, last_error = $5, leased_by = NULL
                 WHERE id = $1 AND leased_by = $2 AND attempts = $3",
                Some((
                    now + chrono::Duration::from_std(*wait).unwrap_or_default(),
                    error.as_str(),
                )),
            ),
            Outcome::Park(error) => (
                "UPDATE jobs SET state = 'parked', ready_at = $4, last_error = $5, leased_by = NULL
                 WHERE id = $1 AND leased_by = $2 AND attempts = $3",
                Some((now, error.as_str())),
            ),
        };
        let mut q = sqlx::query(sql).bind(job.id).bind(name).bind(job.attempts);
        if let Some((at, error)) = extra {
            q = q.bind(at).bind(error);
        }
        q.execute(p).await.map(drop)
    });
    if let Err(e) = result {
        tracing::warn!(error = ?e, job = job.id, "recording a job's outcome");
    }
}

/// Per kind and state: how many jobs, and the oldest `ready_at`.
type QueueRow = (String, String, i64, Option<DateTime<Utc>>);

/// Queue depth, parked jobs and lag (how long the oldest ready job has waited), per kind, for
/// `/metrics`.
async fn gauges(state: AppState) {
    // Every second: the lag is a figure people watch (findings behind ingest), not only a trend.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rows: Result<Vec<QueueRow>, sqlx::Error> = on_pool!(&state.db.read, |p| {
            sqlx::query_as(
                "SELECT kind, state, COUNT(*), MIN(ready_at) FROM jobs GROUP BY kind, state",
            )
            .fetch_all(p)
            .await
        });
        let Ok(rows) = rows else { continue };
        let now = Utc::now();
        for kind in Kind::ALL {
            let labels = [("kind", kind.as_str())];
            let row = |state: &str| rows.iter().find(|r| r.0 == kind.as_str() && r.1 == state);
            let queued = row("queued");
            metrics::gauge!("jobs_queued", &labels).set(queued.map_or(0, |r| r.2) as f64);
            metrics::gauge!("jobs_parked", &labels).set(row("parked").map_or(0, |r| r.2) as f64);
            let lag = queued
                .and_then(|r| r.3)
                .map_or(0.0, |oldest| (now - oldest).as_seconds_f64().max(0.0));
            metrics::gauge!("jobs_lag_seconds", &labels).set(lag);
        }
    }
}
