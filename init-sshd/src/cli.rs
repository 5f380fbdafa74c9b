//! Command line: `install`, `start`, `serve` (clap derive; every flag also from env).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use session_ssh_contract::argv::{self, flag};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::{install, logfile, serve, start};

const CONTRACT: &str = "\
A static SSH server for session pods, in three steps:

  init-sshd install --dir DIR [--keys PATH_OR_GLOB]... [--keys-dir DIR]... [--host-key-dir DIR]
      (init container) Copies this binary to DIR/bin/init-sshd, merges authorized keys from
      files/globs and from directories of key files into DIR/authorized_keys, installs a host
      key (copied from --host-key-dir, else kept or generated), writes DIR/install-report.json.
      Always exits 0.
  init-sshd start --dir DIR [--listen ADDR:PORT] [-- ORIGINAL_HOOK_ARGV...]
      (postStart hook) Snapshots the environment to DIR/env and DIR/env.sh, writes the managed
      block in ~/.bash_profile, launches `serve` detached (one per DIR), waits up to ~2 s for it
      to accept, then runs the original hook and exits with its status (0 without one).
  init-sshd serve --dir DIR [--listen ADDR:PORT]
      The SSH server in the foreground (default 0.0.0.0:2222).

Files in DIR: bin/init-sshd, authorized_keys, ssh_host_ed25519_key(.pub), install-report.json,
key-sources.json (install); env (NUL-separated), env.sh, serve.pid, connect.txt, init-sshd.log
(+ .1, size-capped) (start/serve). `init-sshd info` prints connect.txt.
Host key privacy: install writes it 0600 when it runs as --session-uid, else readable for the
hand-off; start (the session user) then re-owns it as a 0600 file.

Logs go to stderr (--log-format plain|json; start also appends to DIR/init-sshd.log);
RUST_LOG filters them (default info).";

/// init-sshd: SSH into any session pod.
#[derive(Debug, Parser)]
#[command(name = "init-sshd", version, about, long_about = CONTRACT)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "INIT_SSHD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Also write logs to this size-capped file (rotated to FILE.1). `start` sets it for serve.
    #[arg(long = flag::LOG_FILE, global = true, env = "INIT_SSHD_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Size cap of --log-file in bytes (the rotated copy holds as much again).
    #[arg(long = flag::LOG_MAX_BYTES, global = true, env = "INIT_SSHD_LOG_MAX_BYTES", default_value_t = logfile::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// The three steps.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Init container: install the binary, keys and host key into DIR (always exits 0).
    #[command(name = argv::INSTALL)]
    Install(InstallArgs),
    /// postStart hook: snapshot env, bash_profile block, launch serve, run the original hook.
    #[command(name = argv::START)]
    Start(StartArgs),
    /// The SSH server (foreground).
    #[command(name = argv::SERVE)]
    Serve(serve::ServeOpts),
    /// Print how to connect to this session (the file `start` wrote).
    Info(InfoCmdArgs),
    /// Do nothing until SIGTERM or SIGINT: the pre-pull DaemonSet's container, which keeps
    /// this image on every node and in use.
    Idle,
}

/// `info` flags.
#[derive(Debug, Args)]
pub struct InfoCmdArgs {
    /// Shared directory written by `install` and `start`.
    #[arg(long = flag::DIR, env = "INIT_SSHD_DIR", default_value = "/opt/session-ssh")]
    pub dir: PathBuf,
}

/// `install` flags.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Shared directory (the pod's emptyDir), e.g. /opt/session-ssh.
    #[arg(long = flag::DIR, env = "INIT_SSHD_DIR")]
    pub dir: PathBuf,
    /// authorized_keys file or glob (`*`, `?` in any path component); repeatable; missing is fine.
    #[arg(long = flag::KEYS, env = "INIT_SSHD_KEYS", value_name = "PATH_OR_GLOB")]
    pub keys: Vec<String>,
    /// Directory whose files each hold authorized_keys lines (a mounted Secret); repeatable.
    #[arg(long = flag::KEYS_DIR, env = "INIT_SSHD_KEYS_DIR", value_name = "DIR")]
    pub keys_dirs: Vec<PathBuf>,
    /// Directory holding an OpenSSH private host key (a mounted Secret); ed25519 preferred.
    #[arg(long = flag::HOST_KEY_DIR, env = "INIT_SSHD_HOST_KEY_DIR")]
    pub host_key_dir: Option<PathBuf>,
    /// UID the session container runs as, when known. Installing as that UID writes the host
    /// key 0600 at once; otherwise it is handed off and `start` makes it private.
    #[arg(long = flag::SESSION_UID, env = "INIT_SSHD_SESSION_UID")]
    pub session_uid: Option<u32>,
    #[command(flatten)]
    pub tls: crate::tlscert::TlsNameArgs,
}

/// `start` flags.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Shared directory written by `install`.
    #[arg(long = flag::DIR, env = "INIT_SSHD_DIR")]
    pub dir: PathBuf,
    /// Address serve listens on (passed to `serve --listen`).
    #[arg(long = flag::LISTEN, env = "INIT_SSHD_LISTEN", default_value = "0.0.0.0:2222")]
    pub listen: SocketAddr,
    /// Address serve wraps SSH in TLS on, or `off` (passed to `serve --tls-listen`; unset: serve's default).
    #[arg(long = flag::TLS_LISTEN, env = "INIT_SSHD_TLS_LISTEN")]
    pub tls_listen: Option<crate::serve::tls::TlsListen>,
    /// Address serve answers Prometheus scrapes on, or `off` (passed to `serve
    /// --metrics-listen`; unset: serve's default).
    #[arg(long = flag::METRICS_LISTEN, env = "INIT_SSHD_METRICS_LISTEN")]
    pub metrics_listen: Option<session_ssh_contract::metrics::Listen>,
    /// Milliseconds to wait for serve to accept connections.
    #[arg(long, env = "INIT_SSHD_START_WAIT_MS", default_value_t = 2000)]
    pub wait_ms: u64,
    /// Milliseconds to wait for an entrypoint *script* (PID 1 still a shell) to exec its
    /// program, so the snapshot holds the variables it exports.
    #[arg(long, env = "INIT_SSHD_ENV_WAIT_MS", default_value_t = 2000)]
    pub env_wait_ms: u64,
    /// The information file: --info-host, --info-port, --info-user, --info-file.
    #[command(flatten)]
    pub info: crate::info::InfoArgs,
    /// `NAME=VALUE`, repeatable: a serve setting (`--NAME VALUE`) from the webhook's config;
    /// one with an unknown name or a value that is not a number is logged and skipped.
    #[arg(long = flag::SERVE_ARG, value_name = "NAME=VALUE")]
    pub serve_args: Vec<String>,
    /// Login audit lines in the container log (passed to serve as it is).
    #[command(flatten)]
    pub audit: crate::serve::audit::AuditOpts,
    /// Logins through the SSH gateway (passed to serve as they are).
    #[command(flatten)]
    pub gateway: crate::serve::handler::passport::GatewayOpts,
    /// The original postStart exec hook, run after `--`; its status becomes ours.
    #[arg(last = true, value_name = "ORIGINAL_HOOK_ARGV")]
    pub hook: Vec<OsString>,
}

/// Errors that end the process non-zero (only `serve` can produce them).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Serve(#[from] serve::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn init_logging<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    // A second init (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}

/// Set up logging for the chosen command. `serve` with --log-file logs only to the capped
/// file (its stdout/stderr follow it); the short-lived commands log to stderr and, with
/// --log-file, to the file too.
fn logging(cli: &Cli) {
    // start's output is otherwise invisible (kubelet drops a successful hook's output), so
    // it also goes to serve's log in DIR unless told otherwise.
    let file = match (&cli.log_file, &cli.command) {
        (Some(p), _) => Some(p.clone()),
        (None, Command::Start(a)) => Some(a.dir.join(session_ssh_contract::names::file::LOG)),
        (None, _) => None,
    };
    let capped = file.as_ref().and_then(|p| {
        let serving = matches!(cli.command, Command::Serve(_));
        match logfile::CappedLog::open(p, cli.log_max_bytes, serving) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("init-sshd: {e}; logging to stderr only");
                None
            }
        }
    });
    match (capped, &cli.command) {
        (Some(l), Command::Serve(_)) => init_logging(cli.log_format, l),
        (Some(l), _) => init_logging(cli.log_format, std::io::stderr.and(l)),
        (None, _) => init_logging(cli.log_format, std::io::stderr),
    }
}

/// Run the parsed command line; returns the exit status.
pub fn run(cli: Cli) -> Result<i32> {
    logging(&cli);
    match cli.command {
        Command::Install(a) => {
            let opts = install::Options {
                dir: a.dir,
                keys: a.keys,
                keys_dirs: a.keys_dirs,
                host_key_dir: a.host_key_dir,
                session_uid: a.session_uid,
            };
            // Exit 0 is the contract even for a bug: a session must start without SSH.
            if std::panic::catch_unwind(|| install::run(&opts)).is_err() {
                tracing::error!("install panicked; the session starts without SSH");
            }
            crate::tlscert::install_logged(&opts.dir, &a.tls, a.session_uid);
            Ok(0)
        }
        Command::Info(a) => Ok(crate::info::print(&a.dir)),
        Command::Idle => {
            use nix::sys::signal::{SigSet, Signal};
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGINT);
            // Blocked, then waited for: no handler, no busy loop, 0 CPU.
            let _ = set.thread_block();
            let _ = set.wait();
            Ok(0)
        }
        Command::Start(a) => Ok(start::run(&start::Options {
            dir: a.dir,
            listen: a.listen,
            tls_listen: a.tls_listen,
            metrics_listen: a.metrics_listen,
            wait: Duration::from_millis(a.wait_ms),
            env_wait: Duration::from_millis(a.env_wait_ms),
            log_max_bytes: cli.log_max_bytes,
            gateway: a.gateway,
            serve_args: start::serve_args(&a.serve_args),
            audit: a.audit,
            hook: a.hook,
            proc_root: PathBuf::from("/proc"),
            info: a.info,
        })),
        Command::Serve(opts) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_park(serve::memory::release_if_idle)
                .build()
                .map_err(Error::Runtime)?;
            rt.block_on(serve::run(opts))?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the webhook writes (built by the contract) is what init-sshd reads.
    #[test]
    fn the_argv_the_webhook_builds_parses_to_the_same_values() {
        let install = argv::Install {
            binary: "/init-sshd".into(),
            dir: "/opt/session-ssh".into(),
            session_uid: Some(1000),
            host_key_dir: Some("/session-ssh-host-key".into()),
            keys: vec!["/home/jovyan/*/.ssh/authorized_keys".into(), "/x".into()],
            keys_dirs: vec!["/k1".into(), "/k2".into()],
        };
        let Command::Install(a) = Cli::try_parse_from(install.argv()).unwrap().command else {
            panic!("install");
        };
        assert_eq!(a.dir, PathBuf::from(&install.dir));
        assert_eq!(a.session_uid, Some(1000));
        assert_eq!(
            a.host_key_dir,
            install.host_key_dir.as_ref().map(PathBuf::from)
        );
        assert_eq!(a.keys, install.keys);
        let dirs: Vec<PathBuf> = install.keys_dirs.iter().map(PathBuf::from).collect();
        assert_eq!(a.keys_dirs, dirs);

        let start = argv::Start {
            dir: "/opt/session-ssh".into(),
            listen: argv::listen_all(2022),
            tls_listen: Some("off".into()),
            info: argv::Info {
                host: Some("alice.ssh.example.org".into()),
                port: Some(443),
                user: Some("alice".into()),
                host_key: Some("ssh-ed25519 AAAAgwhost".into()),
                file: Some("off".into()),
            },
            gateway: Some(("ssh-ed25519 AAAAgw".into(), "sess-1".into())),
            gateway_hub_user: Some("alice".into()),
            audit_log: Some(argv::CONTAINER_LOG.into()),
            metrics_listen: Some(argv::metrics_listen_all(Some(9122))),
            serve: vec![("idle-timeout-secs", 900)],
            original_hook: vec!["sh".into(), "-c".into(), "echo --dir".into()],
        };
        let argv = start.argv();
        assert_eq!(argv[0], "/opt/session-ssh/bin/init-sshd");
        let Command::Start(s) = Cli::try_parse_from(&argv).unwrap().command else {
            panic!("start");
        };
        assert_eq!(s.dir, PathBuf::from("/opt/session-ssh"));
        assert_eq!(s.listen, "0.0.0.0:2022".parse().unwrap());
        assert_eq!(s.tls_listen.map(|t| t.to_string()).as_deref(), Some("off"));
        assert_eq!(
            s.metrics_listen.map(|m| m.to_string()).as_deref(),
            Some("0.0.0.0:9122")
        );
        assert_eq!(s.info.info_host.as_deref(), Some("alice.ssh.example.org"));
        assert_eq!(s.info.info_port, Some(443));
        assert_eq!(s.info.info_user.as_deref(), Some("alice"));
        assert_eq!(s.info.info_file, "off");
        assert_eq!(
            s.info.info_host_key.as_deref(),
            Some("ssh-ed25519 AAAAgwhost")
        );
        // start hands the gateway flags to serve, which parses them with the same names.
        assert_eq!(s.gateway.gateway_ca.as_deref(), Some("ssh-ed25519 AAAAgw"));
        assert_eq!(s.gateway.gateway_principal.as_deref(), Some("sess-1"));
        let mut serve = vec![
            "init-sshd".to_owned(),
            "serve".into(),
            "--dir".into(),
            "/d".into(),
        ];
        serve.extend(s.gateway.args());
        let Command::Serve(o) = Cli::try_parse_from(&serve).unwrap().command else {
            panic!("serve");
        };
        assert_eq!(o.gateway.gateway_principal.as_deref(), Some("sess-1"));
        assert_eq!(o.gateway.gateway_hub_user.as_deref(), Some("alice"));
        let hook: Vec<OsString> = start.original_hook.iter().map(OsString::from).collect();
        assert_eq!(s.hook, hook);
        // Without --listen the default is the contract's default port.
        let plain = argv::Start {
            dir: "/d".into(),
            ..Default::default()
        };
        let Command::Start(s) = Cli::try_parse_from(plain.argv()).unwrap().command else {
            panic!("start");
        };
        assert_eq!(
            s.listen.port(),
            session_ssh_contract::names::DEFAULT_SSH_PORT
        );
    }

    #[test]
    fn every_serve_setting_is_a_serve_flag_and_bad_ones_are_skipped() {
        for name in argv::SERVE_SETTINGS {
            let args = [
                "init-sshd",
                "serve",
                "--dir",
                "/d",
                &format!("--{name}"),
                "7",
            ];
            assert!(
                Cli::try_parse_from(args).is_ok(),
                "serve does not take --{name}"
            );
        }
        let raw = [
            "detached-keep-secs=600",
            "max-startups=x",
            "listen=0.0.0.0:1",
            "noequals",
        ]
        .map(str::to_owned);
        assert_eq!(
            start::serve_args(&raw),
            [("detached-keep-secs".to_owned(), "600".to_owned())]
        );
    }

    #[test]
    fn parses_the_contract() {
        let cli = Cli::try_parse_from([
            "init-sshd",
            "install",
            "--dir",
            "/opt/session-ssh",
            "--keys",
            "/home/jovyan/work/*/.ssh/authorized_keys",
            "--keys",
            "/a",
            "--keys-dir",
            "/secret",
            "--host-key-dir",
            "/hk",
        ])
        .unwrap();
        let Command::Install(a) = cli.command else {
            panic!("install expected")
        };
        assert_eq!(a.keys.len(), 2);
        assert_eq!(a.keys_dirs, [PathBuf::from("/secret")]);

        let cli = Cli::try_parse_from([
            "init-sshd",
            "start",
            "--dir",
            "/d",
            "--listen",
            "127.0.0.1:2022",
            "--",
            "sh",
            "-c",
            "echo --dir",
        ])
        .unwrap();
        let Command::Start(a) = cli.command else {
            panic!("start expected")
        };
        assert_eq!(a.listen, "127.0.0.1:2022".parse().unwrap());
        assert_eq!(a.hook, ["sh", "-c", "echo --dir"].map(OsString::from));

        let cli = Cli::try_parse_from(["init-sshd", "serve", "--dir", "/d", "--log-file", "/d/l"])
            .unwrap();
        assert!(matches!(cli.command, Command::Serve(_)));
        assert_eq!(cli.log_file, Some(PathBuf::from("/d/l")));
        assert!(
            Cli::try_parse_from(["init-sshd", "install"]).is_err(),
            "--dir is required"
        );
    }
}
