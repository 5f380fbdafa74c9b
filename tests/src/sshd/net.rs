//! Loopback helpers: free ports, a tiny HTTP server, an echo server, a SOCKS5 client.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago and was not handed out before by this process
/// (tests in one binary run in parallel threads).
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        let mut set = used.lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
}

/// Wait until something accepts on 127.0.0.1:port; true when it does within `limit`.
pub fn wait_port(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

/// A background TCP server on 127.0.0.1 that stops accepting when dropped.
pub struct TcpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_with(handler: fn(TcpStream, &[u8]), payload: Vec<u8>) -> TcpServer {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind server");
    let port = l.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let payload = Arc::new(payload);
    thread::spawn(move || {
        for conn in l.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = conn {
                let p = payload.clone();
                thread::spawn(move || handler(c, &p));
            }
        }
    });
    TcpServer { port, stop }
}

/// Minimal HTTP/1.0 server answering every request with `body`.
pub fn http_server(body: &str) -> TcpServer {
    fn handle(mut c: TcpStream, body: &[u8]) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(body);
        let _ = c.shutdown(Shutdown::Write);
    }
    serve_with(handle, body.as_bytes().to_vec())
}

/// Echo server: every connection gets back what it sends (prefixed once with `greeting`).
pub fn echo_server(greeting: &str) -> TcpServer {
    fn handle(mut c: TcpStream, greeting: &[u8]) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = c.write_all(greeting);
        let mut buf = [0u8; 8192];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = c.shutdown(Shutdown::Write);
    }
    serve_with(handle, greeting.as_bytes().to_vec())
}

/// GET / over an already connected stream; returns the whole response (head and body).
pub fn http_get_on(mut s: TcpStream, host: &str) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

/// GET / from 127.0.0.1:port.
pub fn http_get(port: u16) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(5),
    )?;
    http_get_on(s, "127.0.0.1")
}

/// Connect through a SOCKS5 proxy on 127.0.0.1:proxy_port to host:port (host by name,
/// so the SSH server resolves it).
pub fn socks5_connect(proxy_port: u16, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&[5, 1, 0])?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r)?;
    if r != [5, 0] {
        return Err(std::io::Error::other(format!(
            "socks greeting refused: {r:?}"
        )));
    }
    let name = host.as_bytes();
    let mut req = vec![5, 1, 0, 3, u8::try_from(name.len()).unwrap_or(255)];
    req.extend_from_slice(name);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[1] != 0 {
        return Err(std::io::Error::other(format!(
            "socks connect failed, reply code {}",
            head[1]
        )));
    }
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        other => return Err(std::io::Error::other(format!("socks bad atyp {other}"))),
    };
    let mut rest = vec![0u8; skip];
    s.read_exact(&mut rest)?;
    Ok(s)
}
