//! TCP behaviour every SSH server of ours needs on an accepted socket (init-sshd and the
//! gateway): no Nagle on our writes, and no delayed ACK on what we read.
//!
//! Why the second: OpenSSH's client leaves Nagle on for non-interactive sessions. During key
//! exchange it sends KEXINIT and, right after, its ECDH init; Nagle holds the second until the
//! first is acknowledged, and a Linux server delays that ACK by 40 ms when it has nothing to
//! send. About half of all `ssh host true` connections paid those 40 ms. Re-arming
//! `TCP_QUICKACK` after every read makes the kernel acknowledge at once (the flag is not
//! sticky: the kernel drops back to delayed ACKs on its own).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream that acknowledges every read at once (see the module docs).
#[derive(Debug)]
pub struct QuickAck<S> {
    inner: S,
}

impl QuickAck<TcpStream> {
    /// Wraps an accepted or connected socket and turns Nagle off on it.
    pub fn new(sock: TcpStream) -> Self {
        // Best effort: a socket that refuses it still works, only slower.
        let _ = sock.set_nodelay(true);
        set_quickack(&sock);
        QuickAck { inner: sock }
    }
}

impl<S> QuickAck<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn set_quickack(fd: &impl AsRawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int of the size we pass.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl<S: AsyncRead + AsRawFd + Unpin> AsyncRead for QuickAck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            set_quickack(&self.inner);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for QuickAck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that can be cut from outside: after [`Cut::cut`], every read and write fails,
/// which ends whatever task owns it (russh runs a connection in a task of its own, so
/// dropping its handle does not close the socket).
#[derive(Debug)]
pub struct Cuttable<S> {
    inner: S,
    cut: std::sync::Arc<CutState>,
}

#[derive(Debug, Default)]
struct CutState {
    done: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

/// The outside end of a [`Cuttable`].
#[derive(Debug, Clone)]
pub struct Cut(std::sync::Arc<CutState>);

impl Cut {
    /// Fails the stream's pending and future reads and writes.
    pub fn cut(&self) {
        self.0.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let waker = self.0.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<S> Cuttable<S> {
    /// The stream and the handle that cuts it.
    pub fn new(inner: S) -> (Cuttable<S>, Cut) {
        let cut = std::sync::Arc::new(CutState::default());
        (
            Cuttable {
                inner,
                cut: cut.clone(),
            },
            Cut(cut),
        )
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Ready(Err) once cut; else remembers who to wake when it is.
    fn check(&self, cx: &Context<'_>) -> Option<io::Error> {
        if let Ok(mut w) = self.cut.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        self.cut
            .done
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cuttable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cuttable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_both_ways_and_sets_the_flags() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
            back
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut s = QuickAck::new(sock);
        assert!(s.get_ref().nodelay().unwrap());
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(b"pong").await.unwrap();
        assert_eq!(&got, b"ping");
        assert_eq!(&client.await.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn a_cut_ends_a_read_that_waits() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (sock, _) = listener.accept().await.unwrap();
        let (mut s, cut) = Cuttable::new(sock);
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 1];
            s.read(&mut b).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cut.cut();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        let err = got.unwrap().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
