//! The `huikan` command: `serve` runs the server; `registry import` and `verify-bundle` work
//! offline.

use clap::{Parser, Subcommand};
use huikan_server::config::Config;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// Many uploads at once allocate and free body buffers on many threads; glibc's per-thread arenas
// keep that memory, mimalloc gives it back, which keeps the server's footprint flat under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "huikan",
    version,
    about = "Sync server for door-to-door look-back surveys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Config),
    /// The household registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Check an audit export offline: signature, manifest, every file, the chain segment.
    /// Exits 1 naming every mismatch.
    VerifyBundle {
        file: std::path::PathBuf,
        /// The server's audit public key (hex) as you know it; the bundle must be signed by it.
        #[arg(long)]
        public_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Import a registry file (CSV in UTF-8 or GBK, or .xlsx) into the configured database.
    Import {
        file: std::path::PathBuf,
        /// The datum of the file's coordinates: wgs84, gcj02 or bd09.
        #[arg(long, default_value = "wgs84")]
        datum: String,
        #[command(flatten)]
        config: Config,
    },
}

fn main() -> anyhow::Result<()> {
    // File writes of uploads run on blocking threads; a small pool keeps hundreds of concurrent
    // uploads from each parking a thread (and its allocator cache): they queue for a few
    // milliseconds instead.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(config) => {
            let listener = TcpListener::bind(config.listen).await?;
            let demo = config.demo;
            let state = huikan_server::open(config).await?;
            let addr = listener.local_addr()?;
            let demo_lines = if demo {
                huikan_server::demo::load(&state).await?
            } else {
                Vec::new()
            };
            // Scripts and tests read this line to learn the port when listening on port 0; it
            // comes once storage is open and migrated, so the server is ready when it appears.
            println!("huikan listening on http://{addr}");
            if demo {
                println!("console: http://{addr}/console/");
                for line in demo_lines {
                    println!("{line}");
                }
            }
            tracing::info!(%addr, "listening");
            huikan_server::serve(state, listener, shutdown_signal()).await
        }
        Command::VerifyBundle { file, public_key } => {
            let report = huikan_server::audit::bundle::verify_bundle(&file, public_key.as_deref());
            println!("bundle {}", file.display());
            for line in &report.checked {
                println!("  checked: {line}");
            }
            for problem in &report.problems {
                println!("  MISMATCH: {problem}");
            }
            if report.ok() {
                println!("OK: the bundle is intact and signed");
                Ok(())
            } else {
                println!("FAILED: {} mismatches", report.problems.len());
                std::process::exit(1);
            }
        }
        Command::Registry(RegistryCommand::Import {
            file,
            datum,
            config,
        }) => {
            let datum = huikan_server::registry::parse_datum(Some(&datum)).map_err(describe)?;
            let db =
                huikan_server::db::Db::connect(config.database_url.as_deref(), &config.data_dir)
                    .await?;
            let source = format!("cli:{}", file.display());
            let started = std::time::Instant::now();
            let report =
                huikan_server::registry::import_file(&db, file, datum, None, "cli", &source)
                    .await
                    .map_err(describe)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!(
                "imported in {:.1} s, peak memory {}",
                started.elapsed().as_secs_f64(),
                peak_memory().unwrap_or_else(|| "unknown".to_owned())
            );
            Ok(())
        }
    }
}

/// This process's peak resident memory, from /proc (Linux).
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(format!("{:.0} MiB", kib / 1024.0))
}

fn describe(e: huikan_server::error::AppError) -> anyhow::Error {
    match e {
        huikan_server::error::AppError::Problem(p) => anyhow::anyhow!("{}", p.detail),
        huikan_server::error::AppError::Internal(e) => e,
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return interrupt.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
    tracing::info!("shutting down: finishing requests in flight");
}
