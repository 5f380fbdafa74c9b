//! Child processes of session channels: `exec`, `shell`, with or without a PTY.
//!
//! Shape per channel (see notes/russh-flow-control.md): the channel is split;
//! one task reads it (data → child stdin, EOF → close stdin, window-change /
//! signal → apply), one task per output stream writes with the write half
//! (which waits for the client's window), and a supervisor waits for the
//! child. After the child is reaped and both outputs ended: exit-status (or
//! exit-signal), EOF, close. If the channel or connection goes away first,
//! the session's process group gets SIGHUP (SIGKILL after a grace period)
//! and is reaped.

pub mod end;
pub mod pty;

use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::detach::Keep;
use crate::serve::activity;
use crate::serve::connctx::ConnCtx;
use crate::user::User;

/// Errors of starting a session process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pty setup: {0}")]
    Pty(io::Error),
    #[error("spawning {shell}: {source}")]
    Spawn { shell: String, source: io::Error },
    #[error("child has no pid")]
    NoPid,
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a session channel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The user's login shell, argv[0] "-bash".
    LoginShell,
    /// `$SHELL -c command`.
    Command(String),
}

/// Output read size; one read becomes one or more 32 KiB SSH packets.
pub const READ_CHUNK: usize = 64 * 1024;

/// A client's `pty-req`.
#[derive(Debug, Clone)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
    pub modes: Vec<(Pty, u32)>,
}

/// Everything needed to start a session's process.
#[derive(Debug)]
pub struct Launch {
    pub program: Program,
    pub pty: Option<PtyRequest>,
    /// Added on top of serve's own environment.
    pub env: Vec<(String, String)>,
    pub user: User,
    /// The connection (its handle, end and liveness token).
    pub ctx: ConnCtx,
    /// Set when a login shell on a terminal may outlive its connection (`detach`).
    pub keep: Option<Keep>,
}

/// `$SHELL -c cmd` (argv[0] = basename) or the login shell (argv[0] = "-bash").
fn command(launch: &Launch) -> Command {
    let shell = &launch.user.shell;
    let mut cmd = Command::new(shell);
    match &launch.program {
        Program::LoginShell => {
            cmd.arg0(launch.user.login_argv0());
        }
        Program::Command(c) => {
            let base = shell
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".to_owned());
            cmd.arg0(base).arg("-c").arg(c);
        }
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let home: &Path = &launch.user.home;
    cmd.current_dir(if home.is_dir() { home } else { Path::new("/") });
    cmd.kill_on_drop(false);
    cmd
}

/// In the child before exec: a session starts with default signal handling,
/// whatever serve inherited (a `nohup` or a non-interactive `&` launch
/// leaves SIGHUP/SIGINT/SIGQUIT ignored, and ignored signals survive exec:
/// Ctrl-C and our hang-up would not reach the session).
fn default_signals() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, signal, sigprocmask};
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGPIPE,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGCHLD,
    ] {
        // SAFETY: installing SIG_DFL has no handler to be unsafe about.
        unsafe { signal(sig, SigHandler::SigDfl) }?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

/// Spawn the process for a session channel and its I/O tasks.
pub fn start(channel: Channel<Msg>, mut launch: Launch) -> Result<()> {
    let id = channel.id();
    let (read, write) = channel.split();
    let io = ChannelIo {
        read,
        out: ChannelOut {
            id,
            write: Arc::new(write),
            handle: launch.ctx.handle.clone(),
        },
    };
    match launch.pty.take() {
        None => start_piped(io, &launch),
        Some(req) => {
            let shell = spawn_pty(&mut launch, &req)?;
            match launch.keep.take() {
                Some(keep) if launch.program == Program::LoginShell => {
                    super::detach::start(io, shell, keep, &launch.ctx);
                    Ok(())
                }
                _ => {
                    start_pty(io, &launch, shell);
                    Ok(())
                }
            }
        }
    }
}

/// One channel's halves and its connection, as the workers of a session take them.
pub struct ChannelIo {
    pub read: ChannelReadHalf,
    pub out: ChannelOut,
}

/// What a channel's process is reported to: the channel's write half and its connection.
pub struct ChannelOut {
    pub id: ChannelId,
    pub write: Arc<ChannelWriteHalf<Msg>>,
    pub handle: Handle,
}

/// A process just started on a terminal of its own.
pub struct PtyChild {
    pub child: Child,
    pub pgid: Pid,
    pub master: Arc<pty::Master>,
    /// The terminal's name (/dev/pts/N).
    pub tty: String,
}

/// The tasks that move one process's data.
struct Workers {
    input: JoinHandle<InputEnd>,
    outputs: Vec<JoinHandle<io::Result<()>>>,
    /// With a terminal: how its output ended.
    pty_exit: Option<Arc<PtyExit>>,
}

fn spawn_error(launch: &Launch) -> impl FnOnce(io::Error) -> Error {
    let shell = launch.user.shell.display().to_string();
    move |source| Error::Spawn { shell, source }
}

/// The child's pid, which is also its process group (setsid in the child).
fn pgid_of(child: &Child) -> Result<Pid> {
    child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw)
        .ok_or(Error::NoPid)
}

/// exec without a terminal: stdin, stdout and stderr as three pipes.
fn start_piped(io: ChannelIo, launch: &Launch) -> Result<()> {
    let mut cmd = command(launch);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls; runs in the forked child.
    unsafe {
        cmd.pre_exec(|| {
            default_signals()?;
            nix::unistd::setsid().map(drop).map_err(io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(spawn_error(launch))?;
    let pgid = pgid_of(&child)?;
    tracing::debug!(conn = launch.ctx.id, channel = %io.out.id, pid = pgid.as_raw(), "spawned");
    let stdin = child.stdin.take();
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(pump(o, io.out.write.clone(), None)));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(pump(e, io.out.write.clone(), Some(1))));
    let workers = Workers {
        input: tokio::spawn(input_loop(io.read, Input::Pipe(stdin), pgid)),
        outputs: [out, err].into_iter().flatten().collect(),
        pty_exit: None,
    };
    Supervised::spawn(io.out, launch, child, pgid, workers);
    Ok(())
}

/// Start a shell or command on a terminal of its own.
fn spawn_pty(launch: &mut Launch, req: &PtyRequest) -> Result<PtyChild> {
    let pair = pty::open_pair().map_err(Error::Pty)?;
    let ws = pty::WinSize {
        cols: req.cols,
        rows: req.rows,
        pix_width: req.pix_width,
        pix_height: req.pix_height,
    };
    pty::resize(&pair.master, ws).map_err(Error::Pty)?;
    if let Err(e) = pty::apply_modes(&pair.slave, &req.modes) {
        tracing::debug!(error = %e, "terminal modes not applied");
    }
    launch.env.push(("SSH_TTY".to_owned(), pair.name.clone()));
    let mut cmd = command(launch);
    let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(Error::Pty);
    cmd.stdin(Stdio::from(dup(&pair.slave)?))
        .stdout(Stdio::from(dup(&pair.slave)?))
        .stderr(Stdio::from(pair.slave));
    // SAFETY: sigaction, sigprocmask, setsid and ioctl(TIOCSCTTY) are
    // async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(|| {
            default_signals()?;
            pty::child_setup()
        });
    }
    let child = cmd.spawn().map_err(spawn_error(launch))?;
    // Drop our copies of the slave now, so EIO on the master means the
    // session's processes closed the terminal.
    drop(cmd);
    let pgid = pgid_of(&child)?;
    tracing::debug!(conn = launch.ctx.id, pid = pgid.as_raw(), tty = %pair.name, "spawned with pty");
    let master = Arc::new(pty::Master::new(pair.master).map_err(Error::Pty)?);
    Ok(PtyChild {
        child,
        pgid,
        master,
        tty: pair.name,
    })
}

/// A command on a terminal, ended with its connection.
fn start_pty(io: ChannelIo, launch: &Launch, p: PtyChild) {
    let exit = Arc::new(PtyExit::default());
    let out = tokio::spawn(pump_pty(
        p.master.clone(),
        io.out.write.clone(),
        exit.clone(),
    ));
    let workers = Workers {
        input: tokio::spawn(input_loop(io.read, Input::Pty(p.master), p.pgid)),
        outputs: vec![out],
        pty_exit: Some(exit),
    };
    Supervised::spawn(io.out, launch, p.child, p.pgid, workers);
}

/// Where client input goes.
pub enum Input {
    Pipe(Option<ChildStdin>),
    Pty(Arc<pty::Master>),
}

/// How the input side ended.
#[derive(Debug)]
pub enum InputEnd {
    /// The client closed the channel or the connection went away.
    Hangup,
}

pub async fn input_loop(mut read: ChannelReadHalf, mut input: Input, pgid: Pid) -> InputEnd {
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if !data.is_empty() {
                    activity::from_client(data.len());
                }
                match &mut input {
                    Input::Pipe(stdin) => {
                        if let Some(s) = stdin
                            && s.write_all(&data).await.is_err()
                        {
                            // The child stopped reading (exited or closed stdin):
                            // keep draining the channel so the connection flows.
                            *stdin = None;
                        }
                    }
                    Input::Pty(m) => {
                        if let Err(e) = m.write_all(&data).await {
                            tracing::debug!(error = %e, "pty write failed");
                        }
                    }
                }
            }
            ChannelMsg::Eof => {
                if let Input::Pipe(stdin) = &mut input {
                    *stdin = None;
                }
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Input::Pty(m) = &input {
                    let ws = pty::WinSize {
                        cols: col_width,
                        rows: row_height,
                        pix_width,
                        pix_height,
                    };
                    if let Err(e) = pty::resize(m.raw(), ws) {
                        tracing::debug!(error = %e, "window change failed");
                    }
                }
            }
            ChannelMsg::Signal { signal } => {
                if let Some(sig) = end::to_signal(&signal) {
                    // With a terminal the target is its foreground job (what
                    // Ctrl-C would hit); without, the session's group.
                    let target = match &input {
                        Input::Pty(m) => nix::unistd::tcgetpgrp(m.raw()).unwrap_or(pgid),
                        Input::Pipe(_) => pgid,
                    };
                    tracing::debug!(pgid = target.as_raw(), ?sig, "signal from client");
                    let _ = killpg(target, sig);
                }
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    InputEnd::Hangup
}

/// Copy a child output pipe into the channel; each read is handed over as
/// `Bytes` without another copy, and the write waits for the client's window.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    w: Arc<ChannelWriteHalf<Msg>>,
    ext: Option<u32>,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        send(&w, ext, buf.split().freeze()).await?;
    }
}

async fn send(w: &ChannelWriteHalf<Msg>, ext: Option<u32>, chunk: Bytes) -> io::Result<()> {
    activity::to_client(chunk.len());
    let r = match ext {
        None => w.data_bytes(chunk).await,
        Some(e) => w.extended_data_bytes(e, chunk).await,
    };
    r.map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
}

/// Tells the PTY pump that the shell exited, so it drains what the terminal
/// still holds and stops instead of waiting for a background job to close it.
#[derive(Default)]
pub struct PtyExit {
    /// Set when the shell exited: the end of the drain, `pty::DRAIN_MAX` later.
    drain_until: OnceLock<Instant>,
    notify: Notify,
}

impl PtyExit {
    /// The shell exited: the pump drains what is buffered and stops.
    pub fn mark(&self) {
        self.drain_until
            .get_or_init(|| Instant::now() + pty::DRAIN_MAX);
        self.notify.notify_one();
    }

    /// Once the shell exited, how long the pump may still read the terminal.
    pub fn drain_until(&self) -> Option<Instant> {
        self.drain_until.get().copied()
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

async fn pump_pty(
    m: Arc<pty::Master>,
    w: Arc<ChannelWriteHalf<Msg>>,
    exit: Arc<PtyExit>,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = if let Some(until) = exit.drain_until() {
            m.read_draining(&mut buf, until).await?
        } else {
            tokio::select! {
                r = m.read(&mut buf) => r?,
                _ = exit.notify.notified() => continue,
            }
        };
        if n == 0 {
            return Ok(());
        }
        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        send(&w, None, chunk).await?;
    }
}

struct Supervised {
    id: ChannelId,
    conn: u64,
    child: Child,
    pgid: Pid,
    write: Arc<ChannelWriteHalf<Msg>>,
    handle: Handle,
    input: JoinHandle<InputEnd>,
    outputs: Vec<JoinHandle<io::Result<()>>>,
    pty_exit: Option<Arc<PtyExit>>,
    gone: watch::Receiver<()>,
    _live: Arc<()>,
}

impl Supervised {
    /// Watch the process in a task of its own until it and its workers are done.
    fn spawn(out: ChannelOut, launch: &Launch, child: Child, pgid: Pid, w: Workers) {
        tokio::spawn(supervise(Supervised {
            id: out.id,
            conn: launch.ctx.id,
            child,
            pgid,
            write: out.write,
            handle: out.handle,
            input: w.input,
            outputs: w.outputs,
            pty_exit: w.pty_exit,
            gone: launch.ctx.gone.clone(),
            _live: launch.ctx.live.clone(),
        }));
    }
}

async fn supervise(mut s: Supervised) {
    let mut status: Option<ExitStatus> = None;
    let mut outputs = std::mem::take(&mut s.outputs);
    let finished = loop {
        if status.is_some() && outputs.is_empty() {
            break true;
        }
        let first_output = async {
            match outputs.first_mut() {
                Some(h) => {
                    let _ = h.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = s.child.wait(), if status.is_none() => {
                match st {
                    Ok(st) => status = Some(st),
                    Err(e) => {
                        tracing::warn!(conn = s.conn, error = %e, "wait failed");
                        break false;
                    }
                }
                if let Some(p) = &s.pty_exit {
                    p.mark();
                }
            }
            () = first_output => {
                outputs.remove(0);
            }
            end = &mut s.input => {
                tracing::debug!(conn = s.conn, channel = %s.id, ?end, "channel input ended");
                break false;
            }
            _ = s.gone.changed() => {
                tracing::debug!(conn = s.conn, channel = %s.id, "connection gone");
                break false;
            }
        }
    };
    if finished {
        s.input.abort();
        if let Some(st) = status {
            end::report_exit(&s.write, &s.handle, s.id, st).await;
        }
        let _ = s.write.eof().await;
        let _ = s.write.close().await;
        tracing::info!(conn = s.conn, channel = %s.id, status = ?status, "session ended");
        return;
    }
    // Client went away (or closed the channel) first: hang up the session.
    for o in &outputs {
        o.abort();
    }
    s.input.abort();
    end::hangup(&mut s.child, s.pgid, status.is_some()).await;
    tracing::info!(conn = s.conn, channel = %s.id, "session hung up");
}
