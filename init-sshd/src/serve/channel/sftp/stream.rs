//! The channel stream wrapper that russh-sftp runs on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use russh::ChannelId;
use russh::server::Handle as SessionHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The channel stream as russh-sftp sees it.
///
/// - Fails once the connection is gone: russh-sftp's loop cannot be cancelled
///   from outside, and a write waiting for window on a dead connection would
///   otherwise wait forever. A read reports EOF, which ends that loop.
/// - When the loop ends it drops the stream; that sends exit-status 0 and EOF
///   before the stream's own CLOSE, as OpenSSH does (scp treats a missing
///   exit status as failure).
pub(super) struct SftpStream<S: Send + 'static> {
    pub(super) inner: Option<S>,
    pub(super) gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub(super) end: Option<(SessionHandle, ChannelId)>,
    pub(super) _live: std::sync::Arc<()>,
}

impl<S: Send + 'static> SftpStream<S> {
    fn check(&mut self, cx: &mut Context<'_>, kind: io::ErrorKind) -> Option<io::Error> {
        match self.gone.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(kind, "connection gone")),
            Poll::Pending if self.inner.is_none() => Some(io::Error::new(kind, "closed")),
            Poll::Pending => None,
        }
    }
}

impl<S: Send + 'static> Drop for SftpStream<S> {
    fn drop(&mut self) {
        let inner = self.inner.take();
        if let Some((handle, id)) = self.end.take() {
            tokio::spawn(async move {
                let _ = handle.exit_status_request(id, 0).await;
                let _ = handle.eof(id).await;
                // Dropping the channel stream now queues its CLOSE after these.
                drop(inner);
            });
        }
    }
}

impl<S: AsyncRead + Unpin + Send + 'static> AsyncRead for SftpStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.check(cx, io::ErrorKind::UnexpectedEof) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match self.inner.as_mut() {
            Some(s) => {
                let r = Pin::new(s).poll_read(cx, buf);
                if buf.filled().len() > before {
                    crate::serve::activity::from_client(buf.filled().len() - before);
                }
                r
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncWrite + Unpin + Send + 'static> AsyncWrite for SftpStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.check(cx, io::ErrorKind::BrokenPipe) {
            return Poll::Ready(Err(e));
        }
        match self.inner.as_mut() {
            Some(s) => {
                let r = Pin::new(s).poll_write(cx, buf);
                if let Poll::Ready(Ok(n)) = &r
                    && *n > 0
                {
                    crate::serve::activity::to_client(*n);
                }
                r
            }
            None => Poll::Ready(Ok(0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.check(cx, io::ErrorKind::BrokenPipe) {
            return Poll::Ready(Err(e));
        }
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
