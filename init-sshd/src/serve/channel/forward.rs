//! Port forwarding: `direct-tcpip` (`ssh -L`, `ssh -D`), `direct-streamlocal`
//! (VS Code's socket mode) and `tcpip-forward` (`ssh -R`, bound inside the
//! container).
//!
//! Connect first, then accept the channel (a failed connect rejects the open,
//! as OpenSSH does). Name resolution uses tokio's `lookup_host`, i.e. the
//! libc resolver of the binary: musl's reads /etc/hosts and /etc/resolv.conf
//! itself, so no glibc NSS modules are needed in the static build.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::serve::activity;
use crate::serve::connctx::ConnCtx;
use crate::serve::metrics;

/// Errors of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const BUF: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last = Error::NoAddress(host.to_owned());
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Error::Io(e),
            Err(_) => {
                last = Error::Io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
        }
    }
    Err(last)
}

/// `direct-tcpip`: connect, then accept and copy both ways.
pub fn direct_tcpip(
    channel: Channel<Msg>,
    host: String,
    port: u16,
    reply: ChannelOpenHandle,
    ctx: ConnCtx,
) {
    let ConnCtx { id: conn, gone, .. } = ctx;
    tokio::spawn(async move {
        match connect_tcp(&host, port).await {
            Ok(sock) => {
                reply.accept().await;
                let _open = metrics::get().channel(metrics::Channel::DirectTcpip);
                copy_bidi(channel, sock, gone, Counted::Yes).await;
                tracing::debug!(conn, host, port, "direct-tcpip closed");
            }
            Err(e) => {
                tracing::info!(conn, host, port, error = %e, "direct-tcpip connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    });
}

/// `direct-streamlocal@openssh.com`: connect to a unix socket.
pub fn direct_streamlocal(
    channel: Channel<Msg>,
    path: PathBuf,
    reply: ChannelOpenHandle,
    ctx: ConnCtx,
) {
    let ConnCtx { id: conn, gone, .. } = ctx;
    tokio::spawn(async move {
        match UnixStream::connect(&path).await {
            Ok(sock) => {
                reply.accept().await;
                let _open = metrics::get().channel(metrics::Channel::DirectStreamlocal);
                copy_bidi(channel, sock, gone, Counted::Yes).await;
                tracing::debug!(conn, path = %path.display(), "direct-streamlocal closed");
            }
            Err(e) => {
                tracing::info!(conn, path = %path.display(), error = %e, "direct-streamlocal connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    });
}

/// Whether a relayed channel's bytes are activity (`serve::activity`): a forward the user
/// asked for is; the agent, which programs in the session use on their own, is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Yes,
    No,
}

/// Copy between a channel and a socket with half-close in both directions.
/// Ends when the client closes the channel (or the connection drops); the
/// socket side ending sends EOF and CLOSE.
pub async fn copy_bidi<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    channel: Channel<Msg>,
    sock: S,
    mut gone: watch::Receiver<()>,
    counted: Counted,
) {
    let counted = counted == Counted::Yes;
    let (mut ch_read, ch_write) = channel.split();
    let (mut sock_read, mut sock_write) = tokio::io::split(sock);
    let upstream = async {
        // channel → socket; the data arrives as Bytes and is written as is.
        let mut open = true;
        while let Some(msg) = ch_read.wait().await {
            match msg {
                ChannelMsg::Data { data } if open => {
                    if counted && !data.is_empty() {
                        activity::from_client(data.len());
                    }
                    // On a write error keep draining so the connection flows.
                    open = sock_write.write_all(&data).await.is_ok();
                }
                ChannelMsg::Eof if open => {
                    let _ = sock_write.shutdown().await;
                    open = false;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    let downstream = async {
        // socket → channel, each read handed over without a copy.
        let mut buf = BytesMut::with_capacity(BUF);
        loop {
            buf.reserve(BUF);
            match sock_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if counted {
                        activity::to_client(n);
                    }
                    if ch_write.data_bytes(buf.split().freeze()).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = ch_write.eof().await;
        let _ = ch_write.close().await;
    };
    let mut upstream = std::pin::pin!(upstream);
    let mut downstream = std::pin::pin!(downstream);
    let mut down_done = false;
    loop {
        tokio::select! {
            () = &mut downstream, if !down_done => down_done = true,
            () = &mut upstream => break,
            // The connection ended while a side was blocked: drop both.
            _ = gone.changed() => return,
        }
    }
    // The client closed: a writer still waiting for window would wait forever.
    if !down_done {
        let _ = ch_write.close().await;
    }
}

/// Listeners of `ssh -R` for one connection; dropped with the connection.
#[derive(Default)]
pub struct RemoteForwards {
    listeners: HashMap<(String, u16), JoinHandle<()>>,
}

impl Drop for RemoteForwards {
    fn drop(&mut self) {
        for (_, h) in self.listeners.drain() {
            h.abort();
        }
    }
}

/// The address a `tcpip-forward` request binds: always loopback, as OpenSSH does with
/// its default `GatewayPorts no`. A pod's other addresses are reachable from the whole
/// cluster network, so `-R '*:port'` must not open a port there.
fn bind_host(_address: &str) -> &'static str {
    "127.0.0.1"
}

impl RemoteForwards {
    /// Bind and start accepting; returns the bound port (for port 0).
    pub async fn listen(&mut self, address: &str, port: u16, ctx: ConnCtx) -> Result<u16> {
        let ConnCtx {
            id: conn,
            handle,
            gone,
            ..
        } = ctx;
        let listener = TcpListener::bind((bind_host(address), port)).await?;
        let bound = listener.local_addr()?.port();
        let addr = address.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let (sock, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "remote forward accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let handle = handle.clone();
                let addr = addr.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    match handle
                        .channel_open_forwarded_tcpip(
                            addr.clone(),
                            u32::from(bound),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await
                    {
                        Ok(ch) => {
                            let _open = metrics::get().channel(metrics::Channel::ForwardedTcpip);
                            copy_bidi(ch, sock, gone, Counted::Yes).await
                        }
                        Err(e) => {
                            tracing::info!(conn, error = %e, "client refused forwarded-tcpip")
                        }
                    }
                });
            }
        });
        self.listeners.insert((address.to_owned(), bound), task);
        Ok(bound)
    }

    pub fn cancel(&mut self, address: &str, port: u16) -> bool {
        match self.listeners.remove(&(address.to_owned(), port)) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_forwards_bind_loopback_only() {
        assert_eq!(bind_host(""), "127.0.0.1");
        assert_eq!(bind_host("localhost"), "127.0.0.1");
        assert_eq!(bind_host("*"), "127.0.0.1");
        assert_eq!(bind_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(bind_host("10.1.2.3"), "127.0.0.1");
    }

    #[tokio::test]
    async fn resolves_localhost_without_nss() {
        let s = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = s.local_addr().unwrap().port();
        let c = connect_tcp("localhost", port).await;
        assert!(c.is_ok());
    }
}
