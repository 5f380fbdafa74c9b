//! The gateway's leg to a session: a russh client that pins the session's host key, logs in
//! with a passport (a certificate minted for this one connection) and hands the channels the
//! session opens towards the user (`-R` connections, the agent) back to the user's side.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use russh::Channel;
use russh::client::ChannelOpenHandle;
use russh::client::{self, Msg, Session};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{Certificate, HashAlg, PrivateKey, PublicKey, PublicKeyOrCertificate};
use session_ssh_contract::keys::passport::{self, Holder, Vouched};
use session_ssh_contract::tcp::QuickAck;
use tokio::net::TcpStream;

use crate::index::Target;
use crate::pump;

/// Errors of the upstream leg.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    #[error("timed out")]
    Timeout,
    #[error("no randomness: {0}")]
    Random(String),
    #[error("minting the certificate: {0}")]
    Mint(#[from] russh::keys::ssh_key::Error),
    #[error("the session has no address or host key")]
    NoTarget,
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The user's side of the connection, once it exists: where session-opened channels go.
pub type Downstream = Arc<OnceLock<russh::server::Handle>>;

/// Handles the session's side of the upstream connection.
pub struct Upstream {
    pinned: PublicKey,
    target: String,
    downstream: Downstream,
}

impl client::Handler for Upstream {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let offered = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key(),
        };
        let ok = offered == self.pinned.key_data();
        if !ok {
            tracing::error!(
                session = %self.target,
                pinned = %self.pinned.fingerprint(HashAlg::Sha256),
                "session host key does not match the published one; refused"
            );
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(down) = self.downstream.get().cloned() else {
            return Ok(());
        };
        let (a, o) = (connected_address.to_owned(), originator_address.to_owned());
        hand_back(channel, reply, async move {
            down.channel_open_forwarded_tcpip(a, connected_port, o, originator_port)
                .await
        });
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(down) = self.downstream.get().cloned() else {
            return Ok(());
        };
        let path = socket_path.to_owned();
        hand_back(channel, reply, async move {
            down.channel_open_forwarded_streamlocal(path).await
        });
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(down) = self.downstream.get().cloned() else {
            return Ok(());
        };
        hand_back(
            channel,
            reply,
            async move { down.channel_open_agent().await },
        );
        Ok(())
    }
}

/// A channel the session opened towards the user (`-R`, agent): open the user's side with
/// `open`, then accept the session's and relay; the session's is refused when the user's
/// cannot be opened. In a task, so the upstream connection's loop never waits on the user.
fn hand_back<F>(channel: Channel<Msg>, reply: ChannelOpenHandle, open: F)
where
    F: Future<Output = Result<Channel<russh::server::Msg>, russh::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        match open.await {
            Ok(user_side) => {
                reply.accept().await;
                pump::relay(user_side, channel, None).await;
            }
            Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
        }
    });
}

/// A connected (not yet logged-in) upstream, with the key its passports certify.
pub struct Pending {
    pub handle: client::Handle<Upstream>,
    key: Arc<PrivateKey>,
    target: Target,
}

impl Pending {
    /// The session this connection goes to.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// What the gateway needs to mint passports and reach sessions.
pub struct Minter {
    pub ca: PrivateKey,
    pub config: Arc<client::Config>,
    pub timeout: Duration,
}

impl Minter {
    /// TCP + key exchange to the session, its host key checked against the pinned one.
    pub async fn connect(&self, target: &Target, downstream: Downstream) -> Result<Pending> {
        let (Some(addr), Some(pinned)) = (target.addr, target.host_key.clone()) else {
            return Err(Error::NoTarget);
        };
        let handler = Upstream {
            pinned,
            target: target.display(),
            downstream,
        };
        let work = async {
            let sock = TcpStream::connect(addr)
                .await
                .map_err(|source| Error::Connect { addr, source })?;
            let handle =
                client::connect_stream(self.config.clone(), QuickAck::new(sock), handler).await?;
            Ok::<_, Error>(handle)
        };
        let started = std::time::Instant::now();
        let handle = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Error::Timeout)??;
        crate::metrics::get().upstream_connect(started.elapsed());
        Ok(Pending {
            handle,
            key: Arc::new(ephemeral_key()?),
            target: target.clone(),
        })
    }

    /// One login attempt on `up` for `holder` from `client`: true when the session accepts.
    pub async fn login(
        &self,
        up: &mut Pending,
        user: &str,
        holder: Holder,
        client: IpAddr,
        conn_id: &str,
    ) -> Result<bool> {
        let cert = self.passport(up, holder, client, conn_id)?;
        let auth = up
            .handle
            .authenticate_openssh_cert(user, up.key.clone(), cert);
        let res = tokio::time::timeout(self.timeout, auth)
            .await
            .map_err(|_| Error::Timeout)??;
        Ok(res.success())
    }

    fn passport(
        &self,
        up: &Pending,
        holder: Holder,
        client: IpAddr,
        conn_id: &str,
    ) -> Result<Certificate> {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        let vouched = Vouched {
            holder,
            client,
            key_id: format!("session-ssh-gateway {conn_id}"),
        };
        Ok(passport::mint(
            &self.ca,
            up.key.public_key(),
            &up.target.principal,
            &vouched,
            nonce,
            SystemTime::now(),
        )?)
    }
}

/// A fresh ed25519 key: the subject of this connection's passports, never stored.
fn ephemeral_key() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}
