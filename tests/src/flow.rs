//! In-process russh server and client over real TCP on 127.0.0.1, for the
//! tests of the russh flow-control patch (`patches/russh-0.65.1-flow-control.patch`).
//!
//! The server runs one behaviour per `exec` command, each consuming its
//! channel only through the public channel API (`wait()` for input, the
//! write half for output), the way init-sshd does:
//! - `hold`: takes nothing until [`FlowServer::release`], then drains the
//!   channel, hashing the data and recording where EOF and CLOSE came;
//! - `echo`: copies input back as output like `cat` (output waits for the
//!   client's window), then exit-status 0, EOF, CLOSE;
//! - `sink`: drains the channel at once (bulk upload);
//! - `source N`: sends N bytes of [`Payload`] (bulk download), then
//!   exit-status 0, EOF, CLOSE.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// Window the test server grants per channel (russh's default, set
/// explicitly because the tests assert against it).
pub const WINDOW: u32 = 2 * 1024 * 1024;
/// Size of the writes the client makes.
pub const CHUNK: usize = 32 * 1024;

/// What a server-side consumer saw on its channel, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub command: String,
    pub bytes: u64,
    pub sha256: String,
    /// Data bytes received before EOF (None: no EOF).
    pub eof_after: Option<u64>,
    /// Data bytes received before CLOSE (None: no CLOSE).
    pub close_after: Option<u64>,
    /// Any data, EOF or CLOSE after CLOSE, or data after EOF.
    pub out_of_order: bool,
}

/// A running in-process server.
pub struct FlowServer {
    pub addr: SocketAddr,
    release: Arc<Notify>,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl FlowServer {
    /// Listen on 127.0.0.1 (kernel-chosen port) and serve every connection.
    pub async fn start() -> Result<Self> {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Listen on `addr` and serve every connection.
    pub async fn start_at(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let release = Arc::new(Notify::new());
        let (report_tx, reports) = mpsc::unbounded_channel();
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key()],
            window_size: WINDOW,
            maximum_packet_size: CHUNK as u32,
            nodelay: true,
            ..Default::default()
        });
        let (rel, tx) = (release.clone(), report_tx.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                let handler = ServerHandler {
                    channels: Default::default(),
                    release: rel.clone(),
                    reports: tx.clone(),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, socket, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            release,
            reports,
        })
    }

    /// Let every `hold` consumer (present and future) start reading.
    pub fn release(&self) {
        self.release.notify_waiters();
        self.release.notify_one();
    }

    /// Next consumer report, or an error after `within`.
    pub async fn report(&mut self, within: Duration) -> Result<Report> {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .context("no consumer report in time")?
            .ok_or_else(|| anyhow!("server gone"))
    }
}

struct ServerHandler {
    channels: std::collections::HashMap<ChannelId, Channel<Msg>>,
    release: Arc<Notify>,
    reports: mpsc::UnboundedSender<Report>,
}

impl russh::server::Handler for ServerHandler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if *key.public_key == *client_key().public_key() {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        let command = String::from_utf8_lossy(data).into_owned();
        let reports = self.reports.clone();
        match command.as_str() {
            "hold" => {
                let release = self.release.clone();
                tokio::spawn(async move {
                    release.notified().await;
                    let _ = reports.send(drain(command, channel).await);
                });
            }
            "echo" => {
                tokio::spawn(async move {
                    let _ = reports.send(echo(command, channel).await);
                });
            }
            "sink" => {
                tokio::spawn(async move {
                    let _ = reports.send(drain(command, channel).await);
                });
            }
            _ => match command.strip_prefix("source ").map(str::parse::<u64>) {
                Some(Ok(total)) => {
                    tokio::spawn(async move {
                        let _ = reports.send(source(command, channel, total).await);
                    });
                }
                _ => return session.channel_failure(id),
            },
        }
        session.channel_success(id)
    }
}

/// Read a channel to its end, recording the order of data, EOF and CLOSE.
async fn drain(command: String, channel: Channel<Msg>) -> Report {
    let (mut read, write) = channel.split();
    let mut report = Report {
        command,
        ..Default::default()
    };
    let mut hash = Sha256::new();
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                report.out_of_order |= report.eof_after.is_some() || report.close_after.is_some();
                report.bytes += data.len() as u64;
                hash.update(&data);
            }
            ChannelMsg::Eof => {
                report.out_of_order |= report.close_after.is_some();
                report.eof_after = Some(report.bytes);
                // Answer like a command that exits once its stdin ends.
                let _ = write.exit_status(0).await;
                let _ = write.eof().await;
                let _ = write.close().await;
            }
            ChannelMsg::Close => {
                report.out_of_order |= report.close_after.is_some();
                report.close_after = Some(report.bytes);
                break;
            }
            _ => {}
        }
    }
    report.sha256 = hex(&hash.finalize());
    report
}

/// `cat`: input back as output; output waits for the client's window.
async fn echo(command: String, channel: Channel<Msg>) -> Report {
    let (mut read, write) = channel.split();
    let mut out = write.make_writer();
    let mut report = Report {
        command,
        ..Default::default()
    };
    let mut hash = Sha256::new();
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                report.bytes += data.len() as u64;
                hash.update(&data);
                if out.write_all(&data).await.is_err() {
                    break;
                }
            }
            ChannelMsg::Eof => {
                report.eof_after = Some(report.bytes);
                let _ = out.flush().await;
                let _ = write.exit_status(0).await;
                let _ = write.eof().await;
                let _ = write.close().await;
            }
            ChannelMsg::Close => {
                report.close_after = Some(report.bytes);
                break;
            }
            _ => {}
        }
    }
    report.sha256 = hex(&hash.finalize());
    report
}

/// Send `total` bytes of [`Payload`], then end the command.
async fn source(command: String, channel: Channel<Msg>, total: u64) -> Report {
    let (_read, write) = channel.split();
    let payload = Payload::new(total);
    let pushed = AtomicU64::new(0);
    let sent = push(&write, &payload, &pushed).await;
    let _ = write.exit_status(u32::from(sent.is_err())).await;
    let _ = write.eof().await;
    let _ = write.close().await;
    Report {
        command,
        bytes: pushed.load(Ordering::SeqCst),
        sha256: payload.sha256(),
        ..Default::default()
    }
}

struct ClientHandler;

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
            if *key == *host_key().public_key()),
        )
    }
}

/// A connected, authenticated russh client.
pub struct FlowClient {
    handle: russh::client::Handle<ClientHandler>,
}

impl FlowClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let config = Arc::new(russh::client::Config {
            window_size: WINDOW,
            maximum_packet_size: CHUNK as u32,
            nodelay: true,
            ..Default::default()
        });
        let mut handle = russh::client::connect(config, addr, ClientHandler).await?;
        let key = PrivateKeyWithHashAlg::new(Arc::new(client_key()), None);
        if !handle.authenticate_publickey("flow", key).await?.success() {
            bail!("public key refused");
        }
        Ok(Self { handle })
    }

    /// A session channel running `command` on the test server.
    pub async fn exec(&self, command: &str) -> Result<Channel<russh::client::Msg>> {
        let channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        Ok(channel)
    }
}

/// Deterministic test data: `total` bytes in [`CHUNK`]-sized writes, each
/// chunk stamped with its index so that reordering changes the hash.
pub struct Payload {
    block: Vec<u8>,
    pub total: u64,
}

impl Payload {
    pub fn new(total: u64) -> Self {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let block = (0..CHUNK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Self { block, total }
    }

    /// The `index`-th chunk (shorter at the end), or None past the end.
    pub fn chunk(&self, index: u64) -> Option<Vec<u8>> {
        let start = index.checked_mul(CHUNK as u64)?;
        if start >= self.total {
            return None;
        }
        let len = (self.total - start).min(CHUNK as u64) as usize;
        let mut chunk = self.block[..len].to_vec();
        let stamp = index.to_le_bytes();
        let n = stamp.len().min(len);
        chunk[..n].copy_from_slice(&stamp[..n]);
        Some(chunk)
    }

    pub fn sha256(&self) -> String {
        let mut hash = Sha256::new();
        let mut i = 0;
        while let Some(c) = self.chunk(i) {
            hash.update(&c);
            i += 1;
        }
        hex(&hash.finalize())
    }
}

/// Write `payload` into the channel's write half, counting what the
/// channel accepted (it only accepts what the server's window allows).
pub async fn push<S>(
    write: &russh::ChannelWriteHalf<S>,
    payload: &Payload,
    pushed: &AtomicU64,
) -> Result<()>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let mut out = write.make_writer();
    let mut i = 0;
    while let Some(chunk) = payload.chunk(i) {
        out.write_all(&chunk).await?;
        pushed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        i += 1;
    }
    out.flush().await?;
    Ok(())
}

/// Wait until `counter` has not moved for `quiet`, at most `within`.
/// Returns the settled value.
pub async fn settle(counter: &AtomicU64, quiet: Duration, within: Duration) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = tokio::time::Instant::now();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(now);
        }
    }
    bail!("counter still moving after {within:?} (at {last})")
}

/// Resident set size of this process, from /proc/self/status.
pub fn rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kib * 1024)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn host_key() -> PrivateKey {
    seeded_key(1)
}

pub fn client_key() -> PrivateKey {
    seeded_key(2)
}

/// Fixed test-only ed25519 keys (no RNG needed, identical every run).
fn seeded_key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}
