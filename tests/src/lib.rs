//! The black-box harness: starts the real `huikan` binary on a free port against a backend
//! (SQLite + files, or PostgreSQL + S3), creates and drops what each test needs, and gives
//! typed helpers for talking to it. `backend_tests!` runs each test on every backend.

pub mod api;
pub mod county;
pub mod openrosa;
pub mod photos;
pub mod registry;
pub mod server;
pub mod visits;

pub use api::Api;

/// The `p`th percentile (0–100) of `values`, by nearest rank; NaN when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len().max(1) - 1) as f64).round() as usize;
    sorted.get(rank).copied().unwrap_or(f64::NAN)
}
pub use server::{Backend, TestServer};

/// Generates one `#[tokio::test]` per backend for each named `async fn(TestServer)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(server) = $crate::TestServer::start($crate::Backend::Embedded).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(server) = $crate::TestServer::start($crate::Backend::PostgresS3).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
    };
}
