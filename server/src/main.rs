//! The `huikan` command: `serve` runs the server.

use clap::{Parser, Subcommand};
use huikan_server::config::Config;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
            let addr = listener.local_addr()?;
            // Scripts and tests read this line to learn the port when listening on port 0.
            println!("huikan listening on http://{addr}");
            tracing::info!(%addr, "listening");
            huikan_server::launch(config, listener, shutdown_signal()).await
        }
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
