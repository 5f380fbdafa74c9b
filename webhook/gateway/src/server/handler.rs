//! The russh callbacks of [`Conn`]: each one decides nothing itself, it asks the session.

use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty};
use session_ssh_contract::algorithms::user_key_algorithm_allowed;

use super::{Conn, Error, Opening, Request, Result};

impl Handler for Conn {
    type Error = Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth> {
        let fp = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        if !user_key_algorithm_allowed(offer.algorithm) {
            return Ok(self.refuse(user, &fp, "signature algorithm not allowed"));
        }
        // Logged in upstream already: only that key may finish.
        if let Some((_, accepted, _)) = &self.up {
            return Ok(if *accepted == fp {
                Auth::Accept
            } else {
                self.refuse(user, &fp, "another key was accepted")
            });
        }
        match self.try_key(user, &fp).await {
            Ok(()) => Ok(Auth::Accept),
            Err(why) => Ok(self.refuse(user, &fp, &why)),
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth> {
        let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        // A client may sign without asking first: then this is where the session is asked.
        if self.up.is_none()
            && user_key_algorithm_allowed(key.algorithm)
            && let Err(why) = self.try_key(user, &fp).await
        {
            return Ok(self.refuse(user, &fp, &why));
        }
        match &self.up {
            Some((_, accepted, target)) if *accepted == fp => {
                crate::metrics::get()
                    .logins_accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    event = "login",
                    outcome = "accepted",
                    conn = self.id,
                    user,
                    client = %self.peer,
                    fingerprint = %fp,
                    session = %target.display(),
                );
                Ok(Auth::Accept)
            }
            _ => Ok(self.refuse(user, &fp, "key not accepted by the session")),
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth> {
        Ok(self.token_login(user, password, "password").await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth> {
        // Hub-token logins: one prompt under the hint, its answer is the token.
        if self.shared.hub.is_some() {
            let Some(mut answers) = response else {
                return Ok(Auth::Partial {
                    name: "session-ssh".into(),
                    instructions: self.shared.hint.clone().into(),
                    prompts: vec![("Hub API token: ".into(), false)].into(),
                });
            };
            let token = answers.next().unwrap_or_default();
            let token = String::from_utf8_lossy(&token);
            return Ok(self.token_login(user, &token, "keyboard-interactive").await);
        }
        // No passwords here: a client that got this far with no key accepted sees the hint
        // once (the same text whatever the reason), then the usual refusal.
        if self.hinted {
            return Ok(self.refuse(user, "-", "keyboard-interactive"));
        }
        self.hinted = true;
        Ok(Auth::Partial {
            name: "session-ssh".into(),
            instructions: self.shared.hint.clone().into(),
            prompts: Vec::new().into(),
        })
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<()> {
        let _ = self.downstream.set(session.handle());
        self.pending = None;
        self.logged_in.send_replace(true);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        let Some(up) = self.up() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        match up.channel_open_session().await {
            Ok(sess) => {
                self.opening.insert(
                    channel.id(),
                    Opening {
                        user: channel,
                        session: sess,
                    },
                );
                reply.accept().await;
            }
            Err(e) => {
                tracing::info!(conn = self.id, error = %e, "session refused a session channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        orig_addr: &str,
        orig_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        // The session decides (permitopen, restrict) and connects from inside the pod.
        let what = format!("direct-tcpip {host}:{port}");
        let open = self
            .up()
            .map(|up| up.channel_open_direct_tcpip(host, port, orig_addr, orig_port));
        self.relay_opened(channel, reply, open, what).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        let what = format!("direct-streamlocal {path}");
        let open = self.up().map(|up| up.channel_open_direct_streamlocal(path));
        self.relay_opened(channel, reply, open, what).await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<()> {
        if let Some(o) = self.opening.remove(&channel) {
            let _ = o.session.close().await;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pw: u32,
        ph: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<()> {
        self.ask(
            channel,
            session,
            Request::Pty {
                term,
                cols,
                rows,
                pw,
                ph,
                modes,
            },
        )
        .await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<()> {
        self.ask(channel, session, Request::Env(name, value)).await
    }

    async fn agent_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool> {
        // Answered here, through `ask`; false would make russh answer a second time.
        self.ask(channel, session, Request::Agent).await?;
        Ok(true)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<()> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<()> {
        self.start(channel, session, Request::Shell, "shell".into())
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<()> {
        self.start(channel, session, Request::Exec(data), "exec".into())
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<()> {
        self.start(
            channel,
            session,
            Request::Subsystem(name),
            format!("subsystem {name}"),
        )
        .await
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool> {
        let Some(up) = self.up() else {
            return Ok(false);
        };
        match up.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool> {
        let Some(up) = self.up() else {
            return Ok(false);
        };
        Ok(up.cancel_tcpip_forward(address, port).await.is_ok())
    }

    async fn streamlocal_forward(&mut self, path: &str, _session: &mut Session) -> Result<bool> {
        let Some(up) = self.up() else {
            return Ok(false);
        };
        Ok(up.streamlocal_forward(path).await.is_ok())
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        path: &str,
        _session: &mut Session,
    ) -> Result<bool> {
        let Some(up) = self.up() else {
            return Ok(false);
        };
        Ok(up.cancel_streamlocal_forward(path).await.is_ok())
    }
}
