//! Command line: `serve`, `inject`, `check-config`. Every flag also reads an env var.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Mutating admission webhook that gives Jupyter / Renku / Kubeflow session pods an SSH
/// server, plus offline injection and config validation.
#[derive(Debug, Parser)]
#[command(name = "session-ssh-webhook", version)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "SESSION_SSH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook: `POST /mutate` (AdmissionReview v1) over HTTPS, and
    /// `/healthz`, `/readyz`, `/metrics` on the metrics port.
    Serve(Box<crate::serve::ServeArgs>),
    /// Print the mutated pod (or workload) as YAML, like `istioctl kube-inject`.
    ///
    /// Accepts a Pod, a Deployment / StatefulSet / DaemonSet / ReplicaSet / Job / CronJob
    /// (its pod template is mutated), a List, or several `---` documents. What happened to
    /// each pod goes to stderr. Exits non-zero on input it cannot read.
    Inject(InjectArgs),
    /// Validate a config file and print the effective config (every field, defaults filled in).
    CheckConfig(CheckConfigArgs),
}

/// `inject` flags.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Config file (YAML).
    #[arg(long, env = "SESSION_SSH_CONFIG")]
    pub config: PathBuf,
    /// Input file, `-` for stdin.
    #[arg(short = 'f', long = "filename", env = "SESSION_SSH_INJECT_FILE")]
    pub filename: String,
    /// Print the RFC 6902 JSON patch (one array per document) instead of the mutated YAML.
    #[arg(long, env = "SESSION_SSH_INJECT_PATCH")]
    pub patch: bool,
    /// Inject every pod not opted out, whatever the config's selector says.
    #[arg(long, env = "SESSION_SSH_INJECT_FORCE")]
    pub force: bool,
}

/// `check-config` flags.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file (YAML).
    #[arg(long, env = "SESSION_SSH_CONFIG")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
