//! `session-ssh-webhook`: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::Parser;
use session_ssh_webhook::cli::{Cli, Command, LogFormat};
use session_ssh_webhook::config::Config;
use session_ssh_webhook::inject;

// The static (musl) build's own malloc is slow under many small allocations; see
// init-sshd's main.rs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-ssh-webhook: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the message
/// above it already quotes.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inject(args) => {
            let mut cfg = Config::load(&args.config)?;
            if args.force {
                cfg.selector.match_labels.clear();
                cfg.selector.has_labels.clear();
                cfg.selector.require_opt_in = false;
            }
            let text = inject::read_input(&args.filename)?;
            let docs = inject::inject_text(&text, &args.filename, &cfg)?;
            for t in docs.iter().flat_map(|d| &d.targets) {
                eprintln!("{}: {}", t.what, t.outcome);
                for w in &t.warnings {
                    eprintln!("  warning: {w}");
                }
            }
            let out = if args.patch {
                inject::render_patches(&docs).context("encoding the patch")?
            } else {
                inject::render_yaml(&docs).context("encoding YAML")?
            };
            print!("{out}");
        }
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(session_ssh_webhook::serve::run(*args))?;
        }
        Command::CheckConfig(args) => {
            let cfg = Config::load(&args.config)?;
            print!("{}", cfg.to_yaml());
            if cfg.host_keys.ca.secret_name.is_some() {
                // The derived pattern is not a field; a comment keeps the output valid YAML.
                let pattern = cfg.host_ca_pattern();
                println!(
                    "# published: @cert-authority {p},[{p}]:* <the CA's public key>",
                    p = pattern.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}
