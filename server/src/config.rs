//! Configuration from flags, each mirrored by an environment variable (`HUIKAN_*`, plus the
//! conventional `DATABASE_URL` and `AWS_*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "HUIKAN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the embedded database, photos and temporary files live.
    #[arg(long, env = "HUIKAN_DATA_DIR", default_value = "./huikan-data")]
    pub data_dir: PathBuf,

    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite:…`) URL; unset: SQLite under the data dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    #[command(flatten)]
    pub s3: S3Config,

    /// `name:password` of an admin to create at start when no admin exists yet.
    #[arg(long, env = "HUIKAN_BOOTSTRAP_ADMIN")]
    pub bootstrap_admin: Option<String>,

    /// Largest photo accepted, in bytes.
    #[arg(long, env = "HUIKAN_MAX_PHOTO_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_photo_bytes: u64,

    /// Largest registry file accepted over HTTP, in bytes (`huikan registry import` has no limit).
    #[arg(long, env = "HUIKAN_MAX_IMPORT_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_import_bytes: u64,

    /// Largest JSON request body accepted, in bytes (a push of 500 visits fits well inside).
    #[arg(long, env = "HUIKAN_MAX_JSON_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_json_bytes: usize,

    /// How long a bearer token lives, in hours. Phones work offline for days.
    #[arg(long, env = "HUIKAN_TOKEN_TTL_HOURS", default_value_t = 24 * 30)]
    pub token_ttl_hours: i64,

    /// Hours after which an unfinished resumable upload is discarded.
    #[arg(long, env = "HUIKAN_UPLOAD_EXPIRY_HOURS", default_value_t = 72)]
    pub upload_expiry_hours: i64,

    /// The ed25519 key that signs audit checkpoints and exports (64 hex digits in a file, created
    /// on first start if absent); unset: `audit-signing.key` in the data dir. Server processes
    /// sharing one database should share one key.
    #[arg(long, env = "HUIKAN_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,

    /// Seconds between signed checkpoints of the audit chain's head (taken only when it moved).
    #[arg(long, env = "HUIKAN_CHECKPOINT_SECS", default_value_t = 300)]
    pub checkpoint_secs: u64,

    /// Background workers per process for the job queue (photo processing and checks,
    /// reconciliation); unset: one per core. 0: this process serves requests only, and jobs
    /// wait for another process on the same database to run them.
    #[arg(long, env = "HUIKAN_JOB_WORKERS")]
    pub job_workers: Option<usize>,

    /// Seconds a worker holds a job before another may take it over (its worker died); also the
    /// longest a job may run.
    #[arg(long, env = "HUIKAN_JOB_LEASE_SECS", default_value_t = 30)]
    pub job_lease_secs: u64,

    /// Attempts before a failing job is parked with its error.
    #[arg(long, env = "HUIKAN_JOB_MAX_ATTEMPTS", default_value_t = 5)]
    pub job_max_attempts: i32,

    /// Photos at most this many of 64 bits apart by their copy-detection hashes are near-duplicates
    /// (`photo_near_duplicate`); the default comes from measurements on real photographs.
    #[arg(long, env = "HUIKAN_NEAR_DUPLICATE_BITS", default_value_t = crate::evidence::phash::NEAR_DUPLICATE_BITS)]
    pub near_duplicate_bits: u32,

    /// The income line in yuan per person per year: a visit reporting less fails the income
    /// guarantee (`income_below_line`).
    #[arg(long, env = "HUIKAN_INCOME_LINE_YUAN", default_value_t = 4000.0)]
    pub income_line_yuan: f64,

    /// A photo whose EXIF time is more than this many hours from the visit's `surveyed_at` is
    /// implausible (`photo_time_implausible`).
    #[arg(long, env = "HUIKAN_PHOTO_TIME_HOURS", default_value_t = 12.0)]
    pub photo_time_hours: f64,

    /// A position farther than this many metres (plus its accuracy) from the registered house is
    /// far (`location_far_from_household`).
    #[arg(long, env = "HUIKAN_FAR_METRES", default_value_t = 500.0)]
    pub far_metres: f64,

    /// How long a reviewer's claim on a visit lasts, in seconds (claiming again extends it).
    #[arg(long, env = "HUIKAN_REVIEW_LEASE_SECS", default_value_t = 900)]
    pub review_lease_secs: u64,

    /// The share of clean visits (no open finding), in percent, that enter the review queue
    /// beside every flagged one: 100 puts every visit in the queue, 10 samples one in ten.
    #[arg(long, env = "HUIKAN_REVIEW_SAMPLE_PERCENT", default_value_t = 100)]
    pub review_sample_percent: u32,

    /// Load a small synthetic county (registry, users of every role, visits with photos that
    /// raise every finding) and print the console's address and the logins.
    #[arg(long, env = "HUIKAN_DEMO")]
    pub demo: bool,

    /// Wrong passwords for one username within the login window before further attempts get
    /// 429 `rate_limited` until the oldest leaves the window.
    #[arg(long, env = "HUIKAN_LOGIN_FAILURES_PER_USER", default_value_t = 5)]
    pub login_failures_per_user: usize,

    /// Wrong passwords from one address within the login window (generous: a township office
    /// or a carrier's NAT puts many people behind one address).
    #[arg(long, env = "HUIKAN_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 50)]
    pub login_failures_per_address: usize,

    /// The window over which wrong passwords are counted, in seconds.
    #[arg(long, env = "HUIKAN_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: u64,

    /// How long a presigned photo URL handed out for S3 stays valid, in seconds.
    #[arg(long, env = "HUIKAN_PRESIGN_TTL_SECS", default_value_t = 300)]
    pub presign_ttl_secs: u64,
}

impl Config {
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-signing.key"))
    }
}

#[derive(Args, Clone, Debug, Default)]
pub struct S3Config {
    /// S3 API endpoint (MinIO, Ceph, AWS); setting it stores photos in S3 instead of files.
    #[arg(long, env = "HUIKAN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    #[arg(long, env = "HUIKAN_S3_BUCKET", default_value = "huikan-photos")]
    pub s3_bucket: String,

    #[arg(long, env = "HUIKAN_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Compute and check request/response checksums only where the S3 API requires them, for
    /// older S3-compatible gateways that reject the SDK's default checksums.
    #[arg(
        long,
        env = "HUIKAN_S3_CHECKSUMS_WHEN_REQUIRED",
        default_value_t = false
    )]
    pub s3_checksums_when_required: bool,

    /// How long a read from S3 may wait for its next bytes before the request fails (503): a
    /// store that stops answering mid-transfer must not hold an upload or an export forever.
    #[arg(long, env = "HUIKAN_S3_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub s3_read_timeout_secs: u64,
}
