//! One SSH connection's state and the helpers its `Handler` callbacks use: key decisions,
//! audit lines, launching a session channel's process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use russh::keys::{HashAlg, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::sync::watch;

use super::Result;
use super::authkeys::KeyStore;
use super::policy::{self, ConnInfo, EnvInputs};
use crate::serve::audit::Login;
use crate::serve::channel::agent::AgentForward;
use crate::serve::channel::detach::{Keep, Registry, attach};
use crate::serve::channel::exec::{Launch, Program, PtyRequest};
use crate::serve::channel::forward::RemoteForwards;
use crate::serve::connctx::ConnCtx;
use crate::serve::metrics::{self, Method};
use crate::user::User;
use session_ssh_contract::keys::{Decision, Permissions};

/// State shared by all connections.
pub struct Shared {
    pub keys: KeyStore,
    pub user: User,
    /// Where agent sockets go (DIR/agent, else /tmp).
    pub runtime_dir: PathBuf,
    /// Terminal shells kept after their client vanished (`attach`).
    pub shells: Arc<Registry>,
    /// The SSH gateway this session accepts logins from, if any.
    pub gateway: Option<super::passport::Trust>,
    /// Login audit lines in the container log.
    pub audit: crate::serve::audit::Audit,
    /// Refused authentication requests after which russh closes a connection.
    pub max_auth_tries: usize,
}

/// A session channel between open and its exec/shell/subsystem request.
#[derive(Default)]
pub(super) struct PendingSession {
    pub(super) channel: Option<Channel<Msg>>,
    pub(super) pty: Option<PtyRequest>,
    pub(super) env: Vec<(String, String)>,
}

/// One SSH connection.
pub struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) info: Option<ConnInfo>,
    pub(super) ssh_user: String,
    pub(super) perms: Option<Permissions>,
    /// Set once a key is accepted: ends the login grace time and frees a startup slot.
    pub(super) authenticated: watch::Sender<bool>,
    pub(super) sessions: HashMap<ChannelId, PendingSession>,
    pub(super) agent: Option<AgentForward>,
    pub(super) remote: RemoteForwards,
    /// Dropped with the connection: wakes every task of it (a task blocked
    /// writing to a stalled child or socket would never see the channel end).
    pub(super) gone: watch::Sender<()>,
    /// One clone per running session process or SFTP server of this
    /// connection, to cap them like OpenSSH's MaxSessions.
    pub(super) live: Arc<()>,
    /// Refused authentication requests so far (the `none` probe included, as russh counts).
    pub(super) tries: usize,
    /// The method of the last attempt: a connection that ends without a login is a refused
    /// login of this method.
    pub(super) last_method: Option<Method>,
    /// The open session channels, by kind, for the metrics (forwards and agent channels
    /// are counted by their workers, once connected).
    pub(super) channels: HashMap<ChannelId, metrics::OpenChannel>,
}

/// Session channels per connection (OpenSSH MaxSessions is 10; VS Code and
/// multiplexed clients open a few more).
pub(super) const MAX_SESSIONS: usize = 32;

impl Conn {
    pub fn new(
        shared: Arc<Shared>,
        id: u64,
        info: Option<ConnInfo>,
        authenticated: watch::Sender<bool>,
    ) -> Conn {
        Conn {
            shared,
            id,
            info,
            ssh_user: String::new(),
            perms: None,
            authenticated,
            sessions: HashMap::new(),
            agent: None,
            remote: RemoteForwards::default(),
            gone: watch::channel(()).0,
            live: Arc::new(()),
            tries: 0,
            last_method: None,
            channels: HashMap::new(),
        }
    }

    /// Channel `id` is open as `kind` now (a session channel changes kind on its request).
    pub(super) fn opened(&mut self, id: ChannelId, kind: metrics::Channel) {
        self.channels.insert(id, metrics::get().channel(kind));
    }

    /// A key offered without a signature is refused (a probe: no audit line, the client may
    /// go on with another key).
    pub(super) fn refuse_offer(&mut self, reason: &str) -> Auth {
        self.tries += 1;
        self.last_method = Some(Method::Publickey);
        metrics::get().auth_failure(metrics::Reason::of(reason));
        Auth::reject()
    }

    /// What this connection's channel workers are given.
    pub(super) fn ctx(&self, session: &Session) -> ConnCtx {
        ConnCtx {
            id: self.id,
            handle: session.handle(),
            gone: self.gone.subscribe(),
            live: self.live.clone(),
        }
    }

    pub(super) fn peer(&self) -> Option<SocketAddr> {
        self.info.map(|i| i.peer)
    }

    pub(super) fn peer_str(&self) -> String {
        self.peer()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".to_owned())
    }

    pub(super) fn decide_key(&self, key: &PublicKey) -> Decision {
        let keys = self.shared.keys.current();
        keys.authorize_key(key, self.peer().map(|p| p.ip()), SystemTime::now())
    }

    pub(super) fn accept(&mut self, user: &str, perms: Permissions, method: Method) -> Auth {
        let kind = method.as_str();
        metrics::get().login(true, method);
        tracing::info!(
            conn = self.id,
            user,
            peer = %self.peer_str(),
            kind,
            fingerprint = %perms.fingerprint,
            source = %perms.source,
            pty = perms.pty,
            port_forwarding = perms.port_forwarding,
            agent_forwarding = perms.agent_forwarding,
            forced_command = perms.command.is_some(),
            "login accepted"
        );
        self.shared.audit.login(&Login {
            outcome: "accepted",
            conn: self.id,
            user,
            peer: &self.peer_str(),
            fingerprint: &perms.fingerprint,
            detail: &format!("{kind} {}", perms.source),
        });
        self.ssh_user = user.to_owned();
        self.last_method = Some(method);
        self.perms = Some(perms);
        self.authenticated.send_replace(true);
        Auth::Accept
    }

    pub(super) fn reject(
        &mut self,
        user: &str,
        fingerprint: &str,
        reason: &str,
        method: Method,
    ) -> Auth {
        tracing::info!(conn = self.id, user, peer = %self.peer_str(), fingerprint, reason, method = method.as_str(), "key rejected");
        self.tries += 1;
        self.last_method = Some(method);
        metrics::get().auth_failure(metrics::Reason::of(reason));
        self.shared.audit.login(&Login {
            outcome: "refused",
            conn: self.id,
            user,
            peer: &self.peer_str(),
            fingerprint,
            detail: reason,
        });
        Auth::reject()
    }

    /// Start what a session channel runs; false when it cannot start.
    pub(super) fn start_session(
        &mut self,
        id: ChannelId,
        requested: Option<String>,
        session: &mut Session,
    ) -> bool {
        let Some(perms) = self.perms.as_ref() else {
            return false;
        };
        let Some(mut pending) = self.sessions.remove(&id) else {
            return false;
        };
        let Some(channel) = pending.channel.take() else {
            return false;
        };
        let (program, original) =
            policy::resolve_program(perms.command.as_deref(), requested.as_deref());
        let auth_sock = self
            .agent
            .as_ref()
            .map(|a| a.socket_path().display().to_string());
        let pty = pending.pty.take();
        let keep = Keep {
            registry: self.shared.shells.clone(),
            owner: perms.fingerprint.clone(),
        };
        if let (None, Program::Command(c)) = (&perms.command, &program)
            && let Some(which) = attach::parse(c)
        {
            tracing::info!(conn = self.id, channel = %id, kind = "attach", "channel");
            attach::start(channel, which, pty, keep, self.ctx(session));
            self.opened(id, metrics::Channel::Attach);
            return true;
        }
        let env_inputs = EnvInputs {
            term: pty.as_ref().map(|p| p.term.as_str()),
            tty: None,
            client_env: &pending.env,
            auth_sock: auth_sock.as_deref(),
            original_command: original.as_deref(),
        };
        let env = policy::session_env(&self.shared.user, self.info.as_ref(), &env_inputs);
        let counted = match program {
            Program::LoginShell => metrics::Channel::Shell,
            Program::Command(_) => metrics::Channel::Exec,
        };
        let kind = match (&program, pty.is_some()) {
            (Program::LoginShell, true) => "shell-pty",
            (Program::LoginShell, false) => "shell",
            (Program::Command(_), true) => "exec-pty",
            (Program::Command(_), false) => "exec",
        };
        tracing::info!(conn = self.id, channel = %id, kind, forced = perms.command.is_some(), "channel");
        let launch = Launch {
            program,
            pty,
            env,
            user: self.shared.user.clone(),
            ctx: self.ctx(session),
            keep: Some(keep),
        };
        match crate::serve::channel::exec::start(channel, launch) {
            Ok(()) => {
                self.opened(id, counted);
                true
            }
            Err(e) => {
                tracing::warn!(conn = self.id, channel = %id, error = %e, "session start failed");
                false
            }
        }
    }

    pub(super) fn forwarding_allowed(&self) -> bool {
        self.perms.as_ref().is_some_and(|p| p.port_forwarding)
    }
}

impl Drop for Conn {
    /// The end of a connection that tried keys and never logged in: a refused login, and
    /// one that used up its tries is also an authentication failure of its own.
    fn drop(&mut self) {
        if self.perms.is_some() {
            return;
        }
        let Some(method) = self.last_method else {
            return;
        };
        let m = metrics::get();
        m.login(false, method);
        if self.tries >= self.shared.max_auth_tries {
            m.auth_failure(metrics::Reason::TooManyTries);
        }
    }
}

pub(super) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

pub(super) fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<()> {
    if ok {
        session.channel_success(id)?;
    } else {
        session.channel_failure(id)?;
    }
    Ok(())
}
