//! `session-ssh-certs`: make the webhook's CA and serving certificate.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use session_ssh_certs::{Ca, CaSpec, ServerCertSpec, TlsBundle};

/// CA and serving certificates for the session-ssh webhook Service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write ca.crt, tls.crt and tls.key (0600) into a directory; print the caBundle.
    Pem {
        #[command(flatten)]
        issue: IssueArgs,
        /// Output directory.
        #[arg(long, env = "SESSION_SSH_CERTS_OUT_DIR")]
        out_dir: PathBuf,
        /// Also write the CA private key here (needed to issue again from the same CA).
        #[arg(long, env = "SESSION_SSH_CERTS_CA_KEY_OUT")]
        ca_key_out: Option<PathBuf>,
    },
    /// Print a kubernetes.io/tls Secret manifest (with ca.crt) on stdout.
    Secret {
        #[command(flatten)]
        issue: IssueArgs,
        /// Secret name.
        #[arg(
            long,
            env = "SESSION_SSH_CERTS_SECRET_NAME",
            default_value = "session-ssh-webhook-tls"
        )]
        secret_name: String,
        /// Write the caBundle to this file as well.
        #[arg(long, env = "SESSION_SSH_CERTS_CA_BUNDLE_OUT")]
        ca_bundle_out: Option<PathBuf>,
    },
    /// Print the base64 caBundle of an existing CA certificate.
    CaBundle {
        /// CA certificate, PEM.
        #[arg(long, env = "SESSION_SSH_CERTS_CA_CERT")]
        ca_cert: PathBuf,
    },
    /// Print a certificate's notAfter; exit 1 when it expires within --within-days.
    Check {
        /// Certificate, PEM.
        #[arg(long, env = "SESSION_SSH_CERTS_CERT")]
        cert: PathBuf,
        /// Renewal window in days.
        #[arg(long, env = "SESSION_SSH_CERTS_WITHIN_DAYS", default_value_t = 30)]
        within_days: u64,
    },
}

#[derive(Args)]
struct IssueArgs {
    /// Service name (SANs NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local).
    #[arg(
        long,
        env = "SESSION_SSH_CERTS_SERVICE",
        default_value = "session-ssh-webhook"
    )]
    service: String,
    /// Service namespace.
    #[arg(
        long,
        env = "SESSION_SSH_CERTS_NAMESPACE",
        default_value = "session-ssh"
    )]
    namespace: String,
    /// Extra DNS subjectAltName (repeatable).
    #[arg(long = "dns", env = "SESSION_SSH_CERTS_DNS", value_delimiter = ',')]
    dns: Vec<String>,
    /// Extra IP subjectAltName (repeatable), e.g. 127.0.0.1 for local tests.
    #[arg(long = "ip", env = "SESSION_SSH_CERTS_IP", value_delimiter = ',')]
    ip: Vec<IpAddr>,
    /// Serving certificate lifetime in days.
    #[arg(long, env = "SESSION_SSH_CERTS_DAYS", default_value_t = 365)]
    days: u64,
    /// Issue from this existing CA certificate (with --ca-key) instead of a new CA.
    #[arg(long, env = "SESSION_SSH_CERTS_CA_CERT", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The existing CA's private key.
    #[arg(long, env = "SESSION_SSH_CERTS_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
}

impl IssueArgs {
    fn issue(&self) -> Result<(Ca, TlsBundle)> {
        let ca = match (&self.ca_cert, &self.ca_key) {
            (Some(c), Some(k)) => {
                let cert = read(c)?;
                let key = read(k)?;
                Ca::from_pem(&cert, &key).with_context(|| format!("loading CA {}", c.display()))?
            }
            _ => Ca::generate_with(&CaSpec::default())?,
        };
        let mut spec = ServerCertSpec::for_service(&self.service, &self.namespace)
            .with_validity(Duration::from_secs(self.days.saturating_mul(86_400)));
        spec.dns_names.extend(self.dns.iter().cloned());
        spec.ip_addresses.extend(self.ip.iter().copied());
        let bundle = ca.issue_bundle(&spec)?;
        Ok((ca, bundle))
    }
}

fn read(p: &PathBuf) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pem {
            issue,
            out_dir,
            ca_key_out,
        } => {
            let (ca, bundle) = issue.issue()?;
            bundle.write_pem_files(&out_dir)?;
            if let Some(path) = ca_key_out {
                write_private(&path, &ca.key_pem())?;
            }
            eprintln!("wrote ca.crt, tls.crt, tls.key to {}", out_dir.display());
            println!("{}", bundle.ca_bundle());
        }
        Command::Secret {
            issue,
            secret_name,
            ca_bundle_out,
        } => {
            let (_ca, bundle) = issue.issue()?;
            print!(
                "{}",
                bundle.secret_manifest(&secret_name, &issue.namespace)?
            );
            if let Some(path) = ca_bundle_out {
                std::fs::write(&path, bundle.ca_bundle())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::CaBundle { ca_cert } => {
            println!("{}", session_ssh_certs::ca_bundle(&read(&ca_cert)?));
        }
        Command::Check { cert, within_days } => {
            let pem = read(&cert)?;
            let end = session_ssh_certs::not_after(&pem)?;
            let now = SystemTime::now();
            let secs = end
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let left = end
                .duration_since(now)
                .map(|d| d.as_secs() / 86_400)
                .unwrap_or(0);
            println!("notAfter={secs} (unix seconds), {left} days left");
            let window = Duration::from_secs(within_days.saturating_mul(86_400));
            if session_ssh_certs::expires_within(&pem, window, now)? {
                eprintln!("{}: expires within {within_days} days", cert.display());
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &PathBuf, data: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
