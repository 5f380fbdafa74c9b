//! `session-ssh-gateway`: parse flags, set up logging, run.

use clap::Parser;
use session_ssh_gateway::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

// The static (musl) build's own malloc is slow under many small allocations.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).init(),
        LogFormat::Plain => fmt.init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("session-ssh-gateway: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(session_ssh_gateway::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-ssh-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
