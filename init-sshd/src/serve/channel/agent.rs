//! Agent forwarding (`ssh -A`): a unix socket in a private directory whose
//! path the session gets as SSH_AUTH_SOCK; every connection to it becomes an
//! `auth-agent@openssh.com` channel to the client.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::serve::channel::forward::{Counted, copy_bidi};
use crate::serve::connctx::ConnCtx;
use crate::serve::metrics;

/// Longest base directory we try; sun_path holds 108 bytes with the NUL.
const MAX_DIR_LEN: usize = 64;
const MAX_SOCKET_PATH: usize = 107;

/// The forwarded agent of one connection; removed when dropped.
pub struct AgentForward {
    dir: PathBuf,
    socket: PathBuf,
    task: JoinHandle<()>,
}

/// Where agent socket directories go: `base` when its path leaves room for
/// a socket name, else /tmp.
pub fn runtime_dir(base: &Path) -> PathBuf {
    if base.as_os_str().len() < MAX_DIR_LEN && base.is_dir() {
        base.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    }
}

impl AgentForward {
    /// Create `<base>/ssh-agent.<pid>.<conn>.<nanos>` (0700) with a listening socket.
    pub fn start(base: &Path, ctx: ConnCtx) -> io::Result<AgentForward> {
        let ConnCtx {
            id: conn,
            handle,
            gone,
            ..
        } = ctx;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("ssh-agent.{}.{conn}.{nanos}", std::process::id());
        let mut dir = base.join(&name);
        if dir.as_os_str().len() + "/agent.sock".len() > MAX_SOCKET_PATH {
            dir = Path::new("/tmp").join(&name);
        }
        // create (not create_all): fails if it exists, so nobody can pre-plant it.
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("agent.sock");
        let listener = match UnixListener::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "agent socket accept failed");
                        return;
                    }
                };
                let handle = handle.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    match handle.channel_open_agent().await {
                        Ok(ch) => {
                            let _open = metrics::get().channel(metrics::Channel::Agent);
                            copy_bidi(ch, stream, gone, Counted::No).await
                        }
                        Err(e) => tracing::info!(conn, error = %e, "client refused agent channel"),
                    }
                });
            }
        });
        tracing::info!(conn, socket = %socket.display(), "agent forwarding enabled");
        Ok(AgentForward { dir, socket, task })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for AgentForward {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
