//! `init-sshd start`: the session container's postStart hook. Snapshots the environment,
//! writes the bash_profile block, makes the host key private, launches `serve` fully
//! detached (at most one per DIR), waits briefly for it to listen, then runs the original
//! hook. Only the original hook decides the exit status; every SSH step just logs.

pub mod envsnap;
pub mod profile;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_ssh_contract::argv::{self, flag};
use session_ssh_contract::names::file;

use crate::{hostkey, user};

/// Errors of this module (logged by [`run`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sys(#[from] nix::Error),
    #[error("serve did not report its pid")]
    NoPid,
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// What `start` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// Passed to `serve --tls-listen` when set.
    pub tls_listen: Option<crate::serve::tls::TlsListen>,
    /// Passed to `serve --metrics-listen` when set.
    pub metrics_listen: Option<session_ssh_contract::metrics::Listen>,
    /// How long to wait for serve to accept a TCP connection.
    pub wait: Duration,
    /// How long to wait for an entrypoint script to exec its program before the snapshot.
    pub env_wait: Duration,
    /// Cap of serve's log file (see logfile.rs).
    pub log_max_bytes: u64,
    /// Passed to serve as they are.
    pub gateway: crate::serve::handler::passport::GatewayOpts,
    /// Serve settings from the webhook's config: (flag, value), checked by [`serve_args`].
    pub serve_args: Vec<(String, String)>,
    /// Passed to serve as it is.
    pub audit: crate::serve::audit::AuditOpts,
    /// The original postStart argv to run afterwards (may be empty).
    pub hook: Vec<OsString>,
    /// Root of the proc filesystem (tests use a fake one).
    pub proc_root: PathBuf,
    /// The information file (`init-sshd info`).
    pub info: crate::info::InfoArgs,
}

/// The `--serve-arg NAME=VALUE` settings serve may get: a known name and a number. Any
/// other is logged and skipped, so a bad setting can never keep serve (or the session) down.
pub fn serve_args(raw: &[String]) -> Vec<(String, String)> {
    raw.iter()
        .filter_map(|a| {
            let ok = a.split_once('=').filter(|(n, v)| {
                argv::SERVE_SETTINGS.contains(n) && v.parse::<u64>().is_ok()
            });
            if ok.is_none() {
                tracing::warn!(setting = %a, known = ?argv::SERVE_SETTINGS, "serve setting skipped: not NAME=number with a known NAME");
            }
            ok.map(|(n, v)| (n.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Run all steps; returns the process exit status (the hook's, or 0).
pub fn run(opts: &Options) -> i32 {
    // A bug in the SSH part must never cost the platform its own hook.
    if std::panic::catch_unwind(|| ssh_steps(opts)).is_err() {
        tracing::error!("SSH setup panicked; continuing with the original hook");
    }
    run_hook(&opts.hook)
}

/// Everything but the original hook; each step logs and goes on.
fn ssh_steps(opts: &Options) {
    let dir = &opts.dir;
    let snap = envsnap::capture(&opts.proc_root, opts.env_wait);
    match envsnap::write(dir, &snap) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), vars = snap.vars.len(), "environment snapshot written")
        }
        Err(e) => tracing::warn!(error = %e, "environment snapshot not written"),
    }
    match hostkey::make_private(dir) {
        Ok(p) => tracing::info!(outcome = ?p, "host key is private to this user"),
        Err(e) => tracing::warn!(error = %e, "host key could not be made private"),
    }
    let passwd = fs::read_to_string("/etc/passwd").ok();
    let who = user::resolve(nix::unistd::geteuid().as_raw(), passwd.as_deref(), |k| {
        snap.get(k)
    });
    let env_sh = dir.join(envsnap::ENV_SH);
    match profile::install_block(&who.home, &env_sh) {
        Ok(o) => tracing::info!(home = %who.home.display(), outcome = ?o, "bash_profile block"),
        Err(e) => {
            tracing::warn!(home = %who.home.display(), error = %e, "bash_profile block not written (SSH still works, PATH may be reset)")
        }
    }
    // A POSIX sh login shell (no passwd entry: /bin/sh) reads ~/.profile, not ~/.bash_profile.
    if !who.shell.ends_with("bash") {
        match profile::install_profile_block(&who.home, &env_sh) {
            Ok(o) => {
                tracing::info!(home = %who.home.display(), shell = %who.shell.display(), outcome = ?o, "profile block")
            }
            Err(e) => {
                tracing::warn!(home = %who.home.display(), error = %e, "profile block not written")
            }
        }
    }

    crate::info::write_logged(dir, &opts.info, opts.listen.port(), &who.home, &who.name);

    // Two hooks racing (a restart while the first still runs) must not start two servers.
    let _lock = lock(dir);
    match running_serve(dir, &opts.proc_root) {
        Some(pid) => tracing::info!(
            pid,
            "serve already running for this dir; not starting another"
        ),
        None => match launch(opts, &snap) {
            Ok(pid) => {
                tracing::info!(pid, listen = %opts.listen, "serve launched");
                let pid_file = dir.join(file::SERVE_PID);
                if let Err(e) =
                    hostkey::write_atomic(&pid_file, format!("{pid}\n").as_bytes(), 0o644)
                {
                    tracing::warn!(error = %e, "pid file not written; a second start could not see this serve");
                }
            }
            Err(e) => tracing::error!(error = %e, "serve not launched"),
        },
    }
    drop(_lock);
    let started = Instant::now();
    if wait_for_port(opts.listen, opts.wait) {
        tracing::info!(listen = %opts.listen, waited_ms = started.elapsed().as_millis() as u64, "serve accepts connections");
    } else {
        tracing::warn!(listen = %opts.listen, log = %dir.join(file::LOG).display(), "serve not accepting connections yet; see its log");
    }
}

/// The pid in DIR/serve.pid if that process is alive and is `init-sshd serve` for DIR.
pub fn running_serve(dir: &Path, proc_root: &Path) -> Option<u32> {
    let text = fs::read_to_string(dir.join(file::SERVE_PID)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let arg0 = argv.first()?;
    let is_us = arg0.ends_with(b"init-sshd") && argv.contains(&argv::SERVE.as_bytes());
    let dir_bytes = dir.as_os_str().as_encoded_bytes();
    let canon = fs::canonicalize(dir).ok();
    let dir_flag = argv::long(flag::DIR);
    let same_dir = argv.windows(2).any(|w| {
        w[0] == dir_flag.as_bytes()
            && (w[1] == dir_bytes
                || canon.as_ref().is_some_and(|c| {
                    let arg = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(w[1]);
                    fs::canonicalize(arg).is_ok_and(|p| p == *c)
                }))
    });
    (is_us && same_dir).then_some(pid)
}

/// Mark inherited descriptors (>= 3) close-on-exec, so serve holds none of the hook's
/// pipes: a kubelet exec waits for its output streams to close.
fn cloexec_inherited() {
    let Ok(rd) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fd was listed as open just now; F_SETFD only changes its flags, and a
        // stale number (the read_dir handle itself) just makes fcntl fail.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::fcntl::fcntl(
            borrowed,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// serve's optional listeners, as start was given them (unset: serve's defaults).
fn listen_args(opts: &Options) -> Vec<String> {
    let tls = opts.tls_listen.map(|t| (flag::TLS_LISTEN, t.to_string()));
    let metrics = opts
        .metrics_listen
        .map(|m| (flag::METRICS_LISTEN, m.to_string()));
    tls.into_iter()
        .chain(metrics)
        .flat_map(|(f, v)| [argv::long(f), v])
        .collect()
}

/// Launch serve double-forked in a new session; returns its pid.
fn launch(opts: &Options, snap: &envsnap::Snapshot) -> Result<u32> {
    let dir = &opts.dir;
    let installed = dir.join(file::BIN);
    let bin = if installed.is_file() {
        installed
    } else {
        std::env::current_exe().map_err(io("locating own executable"))?
    };
    let log_path = dir.join(file::LOG);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path);
    let mut cmd = Command::new(&bin);
    cmd.arg(argv::SERVE)
        .arg(argv::long(flag::DIR))
        .arg(dir)
        .arg(argv::long(flag::LISTEN))
        .arg(opts.listen.to_string())
        .env_clear()
        .envs(&snap.vars)
        .current_dir("/")
        .stdin(Stdio::null());
    match log {
        Ok(f) => {
            let f2 = f.try_clone().map_err(io("log file"))?;
            cmd.arg(argv::long(flag::LOG_FILE))
                .arg(&log_path)
                .arg(argv::long(flag::LOG_MAX_BYTES))
                .arg(opts.log_max_bytes.to_string())
                .stdout(Stdio::from(f))
                .stderr(Stdio::from(f2));
        }
        Err(e) => {
            tracing::warn!(path = %log_path.display(), error = %e, "log file not writable; serve logs are discarded");
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.args(listen_args(opts));
    cmd.args(opts.gateway.args());
    cmd.args(opts.audit.args());
    for (name, value) in &opts.serve_args {
        cmd.arg(argv::long(name)).arg(value);
    }
    cloexec_inherited();
    let (pid_r, pid_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let wfd = pid_w.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes syscalls
    // (setsid, fork, _exit, getpid, write); `start` is single-threaded, so no lock can be
    // held by a thread that does not exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Fork again: the session leader exits at once, so serve is not a session
            // leader and can never acquire a controlling terminal by opening a pty.
            match nix::unistd::fork().map_err(std::io::Error::from)? {
                nix::unistd::ForkResult::Parent { .. } => libc::_exit(0),
                nix::unistd::ForkResult::Child => {
                    let pid = std::process::id().to_ne_bytes();
                    let _ = nix::unistd::write(BorrowedFd::borrow_raw(wfd), &pid);
                    Ok(())
                }
            }
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(io(format!("starting {}", bin.display())))?;
    drop(pid_w);
    // Reap the intermediate process (it exits immediately).
    let _ = child.wait();
    let mut buf = [0u8; 4];
    fs::File::from(pid_r)
        .read_exact(&mut buf)
        .map_err(|_| Error::NoPid)?;
    Ok(u32::from_ne_bytes(buf))
}

/// An exclusive flock on DIR/.start.lock, waited for at most 5 s; None when DIR is not
/// writable or the wait times out (start then goes ahead: a session must never block).
fn lock(dir: &Path) -> Option<nix::fcntl::Flock<fs::File>> {
    let path = dir.join(".start.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o666)
        .open(&path)
        .map_err(|e| tracing::info!(path = %path.display(), error = %e, "no start lock"))
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Some(l),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => {
                tracing::warn!(error = %e, "start lock busy for 5 s; going ahead");
                return None;
            }
        }
    }
}

/// The address to probe: loopback of the right family for a wildcard listen address.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Poll until a TCP connect succeeds or `max` passes.
pub fn wait_for_port(listen: SocketAddr, max: Duration) -> bool {
    let addr = probe_addr(listen);
    let deadline = Instant::now() + max;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(10))).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25).min(left));
    }
}

/// Replace this process with the original hook (so its status is ours); 0 without one.
fn run_hook(hook: &[OsString]) -> i32 {
    let Some((prog, args)) = hook.split_first() else {
        return 0;
    };
    tracing::info!(hook = ?hook, "running the original postStart hook");
    let err = Command::new(prog).args(args).exec();
    tracing::error!(hook = ?hook, error = %err, "original postStart hook could not run");
    match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests;
