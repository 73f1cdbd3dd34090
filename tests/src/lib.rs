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

/// A process's resident memory now and at its peak, in bytes, from `/proc/PID/status` (Linux);
/// `pid` 0 is this process.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let path = match pid {
        0 => "/proc/self/status".to_owned(),
        pid => format!("/proc/{pid}/status"),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

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
