//! Terminal login shells that survive a dropped connection.
//!
//! Such a shell runs in a task of its own instead of being tied to its channel. While a
//! client is attached, its channel is the terminal (input, window size, signals) and the
//! shell's output goes through a bounded ring (`ring`) to it. When the client vanishes
//! without the shell exiting, the shell is parked in the server's `registry` for
//! `--detached-keep-secs`, still writing into its ring; `ssh -t HOST attach [N]` (`attach`)
//! with the same key takes it back, replaying the ring first. A clean exit reports the
//! status to whichever client is attached; the time running out hangs the shell up like a
//! dropped connection does without this feature (SIGHUP to its session, then reaped).

pub mod attach;
pub mod registry;
mod ring;

use std::process::ExitStatus;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::serve::channel::exec::pty::{self, WinSize};
use crate::serve::channel::exec::{
    ChannelIo, Input, PtyChild, PtyExit, READ_CHUNK, end, input_loop,
};
use crate::serve::connctx::ConnCtx;
pub use registry::{DetachOpts, Registry};
use ring::Ring;

/// Who may take a shell back, and where it is kept.
#[derive(Clone)]
pub struct Keep {
    pub registry: Arc<Registry>,
    /// SHA256 fingerprint of the key that opened the shell.
    pub owner: String,
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keep").field("owner", &self.owner).finish()
    }
}

/// A client attaching to a shell: its channel, connection, and terminal size.
pub struct Client {
    pub io: ChannelIo,
    pub ctx: ConnCtx,
    /// The attaching terminal's size (None: the shell's first client, already sized).
    pub size: Option<WinSize>,
}

/// One detachable shell, owned by its task.
struct Shell {
    number: u32,
    p: PtyChild,
    ring: Arc<Ring>,
    exit: Arc<PtyExit>,
    keep: Keep,
    status: Option<ExitStatus>,
}

/// Run a freshly spawned login shell as a detachable one, attached to its first channel.
pub fn start(io: ChannelIo, p: PtyChild, keep: Keep, ctx: &ConnCtx) {
    let ring = Arc::new(Ring::new(keep.registry.settings().buffer));
    let exit = Arc::new(PtyExit::default());
    let pump = tokio::spawn(pump(p.master.clone(), ring.clone(), exit.clone()));
    let notice = attach::notice(&keep.registry.list(&keep.owner));
    let shell = Shell {
        number: keep.registry.number(),
        p,
        ring,
        exit,
        keep,
        status: None,
    };
    let client = Client {
        io,
        ctx: ctx.clone(),
        size: None,
    };
    tokio::spawn(async move {
        if let Some(n) = notice {
            let _ = client.io.out.write.data_bytes(Bytes::from(n)).await;
        }
        run(shell, client).await;
        pump.abort();
    });
}

async fn run(mut shell: Shell, first: Client) {
    let mut client = first;
    loop {
        if shell.attached(client).await {
            return;
        }
        match shell.detached().await {
            Some(c) => client = c,
            None => return,
        }
    }
}

/// A terminal read returns at most a few KiB, and this buffer lives as long as the shell.
const PTY_READ: usize = 16 * 1024;

/// Read the terminal into the ring, as far as an attached client lets it.
async fn pump(m: Arc<pty::Master>, ring: Arc<Ring>, exit: Arc<PtyExit>) {
    let mut buf = vec![0u8; PTY_READ];
    loop {
        let room = ring.room().await.min(buf.len());
        let Some(slot) = buf.get_mut(..room) else {
            return;
        };
        let n = if let Some(until) = exit.drain_until() {
            // The shell is gone: take what the terminal still holds or is still
            // receiving, without waiting for a background job that keeps it open.
            m.read_draining(slot, until).await.unwrap_or(0)
        } else {
            tokio::select! {
                r = m.read(slot) => r.unwrap_or(0),
                () = exit.notified() => continue,
            }
        };
        match slot.get(..n) {
            Some(b) if n > 0 => ring.push(b),
            _ => {
                ring.end();
                return;
            }
        }
    }
}

/// The attached client's output: the ring, as the client's window allows.
async fn write_out(ring: Arc<Ring>, out: Arc<russh::ChannelWriteHalf<russh::server::Msg>>) -> bool {
    while let Some(chunk) = ring.next(READ_CHUNK).await {
        crate::serve::activity::to_client(chunk.len());
        if out.data_bytes(chunk).await.is_err() {
            return false;
        }
    }
    true
}

impl Shell {
    /// Serve one attached client; true when the shell ended (exit reported), false when
    /// the client went away first.
    async fn attached(&mut self, c: Client) -> bool {
        if let Some(ws) = c.size
            && let Err(e) = pty::resize(self.p.master.raw(), ws)
        {
            tracing::debug!(error = %e, "window size on attach not applied");
        }
        let replay = self.ring.attach();
        tracing::debug!(conn = c.ctx.id, shell = self.number, replay, "attached");
        let ChannelIo { read, out } = c.io;
        let mut writer = tokio::spawn(write_out(self.ring.clone(), out.write.clone()));
        let master = self.p.master.clone();
        let mut input = tokio::spawn(input_loop(read, Input::Pty(master), self.p.pgid));
        let mut gone = c.ctx.gone.clone();
        // Counts as a session of the attached connection (its MaxSessions) while attached.
        let _live = c.ctx.live.clone();
        let mut written = false;
        let ended = loop {
            tokio::select! {
                st = self.p.child.wait(), if self.status.is_none() => match st {
                    Ok(st) => {
                        self.status = Some(st);
                        self.exit.mark();
                    }
                    Err(e) => {
                        tracing::warn!(shell = self.number, error = %e, "wait failed");
                        break false;
                    }
                },
                r = &mut writer, if !written => {
                    written = true;
                    if !matches!(r, Ok(true)) {
                        break false;
                    }
                }
                _ = &mut input => break false,
                _ = gone.changed() => break false,
            }
            if written && self.status.is_some() {
                break true;
            }
        };
        input.abort();
        if ended {
            if let Some(st) = self.status {
                end::report_exit(&out.write, &out.handle, out.id, st).await;
            }
            let _ = out.write.eof().await;
            let _ = out.write.close().await;
            tracing::info!(conn = c.ctx.id, shell = self.number, status = ?self.status, "session ended");
            return true;
        }
        writer.abort();
        self.ring.detach();
        if self.status.is_some() {
            // Exited but its client left before the end of the output: nothing to keep.
            end::hangup(&mut self.p.child, self.p.pgid, true).await;
            return true;
        }
        false
    }

    /// Keep the shell for a client to attach; None when it ended (exit, time, cap).
    async fn detached(&mut self) -> Option<Client> {
        let keep = self.keep.registry.settings().keep;
        let (tx, mut rx) = oneshot::channel();
        let parked = if keep.is_zero() {
            false
        } else {
            match self
                .keep
                .registry
                .park(self.number, &self.keep.owner, &self.p.tty, tx)
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(shell = self.number, error = %e, "not kept: hung up");
                    false
                }
            }
        };
        if !parked {
            self.hang_up().await;
            return None;
        }
        tracing::info!(
            shell = self.number,
            keep_secs = keep.as_secs(),
            held = self.ring.held(),
            "shell detached"
        );
        let got = tokio::select! {
            st = self.p.child.wait() => {
                self.status = st.ok();
                None
            }
            c = &mut rx => c.ok(),
            () = tokio::time::sleep(keep) => None,
        };
        self.keep.registry.unpark(self.number);
        if got.is_some() {
            tracing::info!(shell = self.number, "shell reattached");
            return got;
        }
        rx.close();
        if let Ok(c) = rx.try_recv() {
            let msg = format!("session-ssh: shell {} has just ended", self.number);
            attach::finish(&c.io.out, &[msg], "\r\n", 1).await;
        }
        self.hang_up().await;
        None
    }

    async fn hang_up(&mut self) {
        let reaped = self.status.is_some();
        end::hangup(&mut self.p.child, self.p.pgid, reaped).await;
        tracing::info!(shell = self.number, exited = reaped, "detached shell ended");
    }
}
