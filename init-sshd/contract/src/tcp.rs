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
}
