//! The russh `Handler`: a thin adapter from protocol callbacks to the policy
//! functions in `policy`, and to the channel workers in `session`, `sftp`,
//! `forward` and `agent`. Callbacks decide and reply; all channel I/O runs in
//! per-channel tasks so the connection loop never waits on a consumer.

pub mod authkeys;
pub mod config;
mod conn;
pub mod hostcert;
pub mod passport;
pub mod policy;
mod watched;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use russh::keys::{Certificate, HashAlg};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty};

use crate::serve::channel::agent::AgentForward;
use crate::serve::channel::exec::PtyRequest;
use crate::serve::metrics::{Channel as ChannelKind, Method};
pub use conn::{Conn, Shared};
use conn::{MAX_SESSIONS, PendingSession, fingerprint, reply};
use session_ssh_contract::keys::Decision;

/// Errors of the connection handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ssh protocol: {0}")]
    Ssh(#[from] russh::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Handler for Conn {
    type Error = Error;

    /// The client's `none` probe: refused, and counted as russh counts it toward
    /// --max-auth-tries.
    async fn auth_none(&mut self, _user: &str) -> Result<Auth> {
        self.tries += 1;
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth> {
        if !config::user_key_algorithm_allowed(offer.algorithm) {
            return Ok(self.reject(
                user,
                &fingerprint(offer.public_key),
                "signature algorithm not allowed",
                Method::Publickey,
            ));
        }
        // A certificate's key is offered as a plain key here; russh cannot tell
        // us which it is, so a store with a cert-authority (or a trusted gateway)
        // lets every offer proceed to the signed attempt, where the real decision is made.
        let keys = self.shared.keys.current();
        if self.shared.gateway.is_some() || keys.entries().iter().any(|e| e.is_cert_authority()) {
            return Ok(Auth::Accept);
        }
        Ok(match self.decide_key(offer.public_key) {
            Decision::Accept(_) => Auth::Accept,
            Decision::Reject(reason) => self.refuse_offer(&reason),
        })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth> {
        if !config::user_key_algorithm_allowed(key.algorithm) {
            return Ok(self.reject(
                user,
                &fingerprint(key.public_key),
                "signature algorithm not allowed",
                Method::Publickey,
            ));
        }
        Ok(match self.decide_key(key.public_key) {
            Decision::Accept(perms) => self.accept(user, perms, Method::Publickey),
            Decision::Reject(reason) => self.reject(
                user,
                &fingerprint(key.public_key),
                &reason,
                Method::Publickey,
            ),
        })
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth> {
        let keys = self.shared.keys.current();
        let fp = certificate
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if let Some(gw) = self
            .shared
            .gateway
            .as_ref()
            .filter(|gw| gw.issued(certificate))
        {
            let (decision, via) = gw.authorize(certificate, &keys, SystemTime::now());
            return Ok(match decision {
                Decision::Accept(perms) => {
                    tracing::info!(conn = self.id, via = %via, "through the gateway");
                    self.accept(user, perms, Method::Gateway)
                }
                Decision::Reject(reason) => self.reject(
                    user,
                    &fp,
                    &format!("gateway: {reason} ({via})"),
                    Method::Gateway,
                ),
            });
        }
        Ok(
            match keys.authorize_cert(
                certificate,
                user,
                self.peer().map(|p| p.ip()),
                SystemTime::now(),
            ) {
                Decision::Accept(perms) => {
                    tracing::info!(
                        conn = self.id,
                        key_id = certificate.key_id(),
                        serial = certificate.serial(),
                        "certificate"
                    );
                    self.accept(user, perms, Method::Certificate)
                }
                Decision::Reject(reason) => self.reject(user, &fp, &reason, Method::Certificate),
            },
        )
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        let id = channel.id();
        let open = self.sessions.len() + Arc::strong_count(&self.live) - 1;
        if open >= MAX_SESSIONS {
            tracing::warn!(
                conn = self.id,
                open,
                "session channel refused: too many sessions"
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.sessions.insert(
            id,
            PendingSession {
                channel: Some(channel),
                ..Default::default()
            },
        );
        self.opened(id, ChannelKind::Session);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<()> {
        self.sessions.remove(&channel);
        self.channels.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<()> {
        let allowed = self.perms.as_ref().is_some_and(|p| p.pty);
        let ok = match self.sessions.get_mut(&channel) {
            Some(p) if allowed && p.pty.is_none() => {
                p.pty = Some(PtyRequest {
                    term: term.to_owned(),
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: modes.to_vec(),
                });
                true
            }
            _ => false,
        };
        if !ok {
            tracing::info!(conn = self.id, channel = %channel, allowed, "pty request refused");
        }
        reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<()> {
        let ok = policy::env_allowed(name)
            && match self.sessions.get_mut(&channel) {
                Some(p) if p.env.len() < 64 => {
                    p.env.push((name.to_owned(), value.to_owned()));
                    true
                }
                _ => false,
            };
        tracing::debug!(conn = self.id, channel = %channel, name, accepted = ok, "env request");
        reply(session, channel, ok)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<()> {
        // No X11 forwarding; the explicit failure keeps the client's reply
        // queue in step (an unanswered request would shift every later reply).
        tracing::info!(conn = self.id, channel = %channel, "x11 forwarding refused");
        reply(session, channel, false)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<()> {
        let ok = self.start_session(channel, None, session);
        reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<()> {
        let command = String::from_utf8_lossy(data).into_owned();
        let ok = self.start_session(channel, Some(command), session);
        reply(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<()> {
        let forced = self.perms.as_ref().is_some_and(|p| p.command.is_some());
        if forced {
            // A forced command also replaces subsystems; like OpenSSH with
            // `Subsystem sftp internal-sftp`, SSH_ORIGINAL_COMMAND names it.
            let original = if name == "sftp" {
                "internal-sftp"
            } else {
                name
            };
            let ok = self.start_session(channel, Some(original.to_owned()), session);
            return reply(session, channel, ok);
        }
        let ok = if name == "sftp" {
            match self
                .sessions
                .remove(&channel)
                .and_then(|mut p| p.channel.take())
            {
                Some(ch) => {
                    tracing::info!(conn = self.id, channel = %channel, kind = "sftp", "channel");
                    crate::serve::channel::sftp::start(
                        ch,
                        self.ctx(session),
                        self.shared.user.home.clone(),
                    );
                    self.opened(channel, ChannelKind::Sftp);
                    true
                }
                None => false,
            }
        } else {
            tracing::info!(conn = self.id, channel = %channel, name, "unknown subsystem refused");
            false
        };
        reply(session, channel, ok)
    }

    async fn agent_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool> {
        let allowed = self.perms.as_ref().is_some_and(|p| p.agent_forwarding);
        if !allowed {
            tracing::info!(conn = self.id, channel = %channel, "agent forwarding refused by key options");
            return Ok(false);
        }
        if self.agent.is_none() {
            match AgentForward::start(&self.shared.runtime_dir, self.ctx(session)) {
                Ok(a) => self.agent = Some(a),
                Err(e) => {
                    tracing::warn!(conn = self.id, error = %e, "agent forwarding setup failed");
                    return Ok(false);
                }
            }
        }
        tracing::info!(conn = self.id, channel = %channel, kind = "agent", "channel");
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<()> {
        let allowed = match (self.perms.as_ref(), u16::try_from(port)) {
            (Some(p), Ok(port)) => p.may_open(host, port),
            _ => false,
        };
        tracing::info!(conn = self.id, kind = "direct-tcpip", host, port, originator = %format!("{originator_address}:{originator_port}"), allowed, "channel");
        match u16::try_from(port) {
            Ok(port) if allowed => crate::serve::channel::forward::direct_tcpip(
                channel,
                host.to_owned(),
                port,
                reply,
                self.ctx(session),
            ),
            _ => {
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<()> {
        // permitopen cannot name a socket; like OpenSSH, a key with
        // permitopen restrictions gets no unix socket forwarding.
        let allowed = self
            .perms
            .as_ref()
            .is_some_and(|p| p.port_forwarding && p.permitopen.is_empty());
        tracing::info!(
            conn = self.id,
            kind = "direct-streamlocal",
            path = socket_path,
            allowed,
            "channel"
        );
        if allowed {
            crate::serve::channel::forward::direct_streamlocal(
                channel,
                PathBuf::from(socket_path),
                reply,
                self.ctx(session),
            );
        } else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool> {
        if !self.forwarding_allowed() {
            tracing::info!(
                conn = self.id,
                address,
                port = *port,
                "remote forward refused by key options"
            );
            return Ok(false);
        }
        let Ok(p16) = u16::try_from(*port) else {
            return Ok(false);
        };
        match self.remote.listen(address, p16, self.ctx(session)).await {
            Ok(bound) => {
                tracing::info!(
                    conn = self.id,
                    kind = "tcpip-forward",
                    address,
                    port = bound,
                    "remote forward listening"
                );
                *port = u32::from(bound);
                Ok(true)
            }
            Err(e) => {
                tracing::info!(conn = self.id, address, port = *port, error = %e, "remote forward bind failed");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool> {
        let ok = u16::try_from(port).is_ok_and(|p| self.remote.cancel(address, p));
        tracing::info!(
            conn = self.id,
            address,
            port,
            cancelled = ok,
            "cancel remote forward"
        );
        Ok(ok)
    }
}
