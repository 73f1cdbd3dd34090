//! huikan (回看): the sync server for door-to-door look-back surveys. Phones push visits and
//! photos; the server keeps the evidence and serves reviewers and auditors.

pub mod audit;
pub mod auth;
pub mod blobs;
pub mod campaigns;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod error;
pub mod evidence;
pub mod http;
pub mod jobs;
pub mod openrosa;
pub mod privacy;
pub mod reconcile;
pub mod registry;
pub mod review;
pub mod store;
pub mod submissions;
pub mod uploads;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Db;
use crate::http::AppState;
use crate::store::spool::SpoolDir;
use crate::store::{BlobStore, FsStore, S3Store};

/// Serves on `listener` until `shutdown` completes; requests in flight then finish before this
/// returns. Storage is opened (and migrated) first with [`open`].
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tokio::spawn(housekeeping(state.clone()));
    tokio::spawn(db::statistics::keep_current(state.db.clone()));
    tokio::spawn(evidence::index::keep_current(
        state.near.clone(),
        state.db.clone(),
    ));
    jobs::start(
        &state,
        jobs::Settings {
            workers: state.config.job_workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
            }),
            lease: std::time::Duration::from_secs(state.config.job_lease_secs.max(1)),
            max_attempts: state.config.job_max_attempts.max(1),
        },
    );
    tokio::spawn(audit::checkpoints::every(
        state.db.clone(),
        state.signer.clone(),
        std::time::Duration::from_secs(state.config.checkpoint_secs.max(1)),
    ));
    let app = http::router(state);
    http::serve_connections(listener, app, shutdown)
        .await
        .context("serving HTTP")
}

/// Periodic clean-up: abandoned resumable uploads and temporary files a crash left behind.
async fn housekeeping(state: AppState) {
    let max_age = chrono::Duration::hours(state.config.upload_expiry_hours);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match uploads::sweep(&state, max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "expired uploads discarded"),
            Err(e) => tracing::warn!(error = ?e, "sweeping expired uploads"),
        }
        if let Err(e) = state
            .spool
            .remove_older_than(std::time::Duration::from_secs(3600))
            .await
        {
            tracing::warn!(error = ?e, "cleaning the temporary directory");
        }
    }
}

/// Connects the database and blob store the configuration names.
pub async fn open(config: Config) -> anyhow::Result<AppState> {
    let db = Db::connect(config.database_url.as_deref(), &config.data_dir).await?;
    let store: Arc<dyn BlobStore> = match &config.s3.s3_endpoint {
        Some(endpoint) => Arc::new(S3Store::connect(endpoint, &config.s3).await?),
        None => {
            Arc::new(FsStore::new(config.data_dir.clone()).context("opening the photo directory")?)
        }
    };
    let spool =
        SpoolDir::new(config.data_dir.join("tmp")).context("creating the temporary directory")?;
    let signer = audit::signing::Signer::load_or_create(&config.audit_key_path())?;
    tracing::info!(public_key = signer.public_key(), "audit signing key");
    if let Some(spec) = &config.bootstrap_admin {
        auth::bootstrap_admin(&db, spec).await?;
    }
    let config_throttle = auth::throttle::Policy {
        per_user: config.login_failures_per_user.max(1),
        per_address: config.login_failures_per_address.max(1),
        window: std::time::Duration::from_secs(config.login_window_secs.max(1)),
    };
    Ok(AppState {
        config: Arc::new(config),
        submissions: submissions::GroupCommit::start(db.clone()),
        db,
        store,
        spool,
        signer: Arc::new(signer),
        jobs: jobs::Wakeup::default(),
        metrics: http::metrics_handle(),
        near: Arc::default(),
        login_throttle: Arc::new(auth::LoginThrottle::new(config_throttle)),
        basic_credentials: Arc::default(),
    })
}
