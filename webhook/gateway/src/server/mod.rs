//! The user's side: a russh server `Handler` per client connection. It decides nothing
//! from keys of its own: a key is accepted here exactly when the session accepts the
//! passport that vouches for it, and every channel is relayed to the session as it is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, Pty, client};
use session_ssh_contract::keys::passport::Holder;

use crate::index::{Index, Route, Target};
use crate::limits::Failures;
use crate::pump;
use crate::upstream::{Downstream, Minter, Pending};

mod handler;

/// Errors that end a client connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every connection shares.
pub struct Shared {
    pub index: Index,
    pub minter: Minter,
    pub hint: String,
    pub failures: Failures,
    /// Hub-token logins (None: keys only).
    pub hub: Option<crate::hub::HubApi>,
}

/// A session channel waiting for its shell, command or subsystem.
struct Opening {
    user: Channel<Msg>,
    session: Channel<client::Msg>,
}

/// One client connection.
pub struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    /// Connected to the session, not yet logged in (and which key is being tried).
    pending: Option<Pending>,
    /// Logged in to the session for this key fingerprint (or `hub-token:<owner>`).
    up: Option<(client::Handle<crate::upstream::Upstream>, String, Target)>,
    downstream: Downstream,
    opening: HashMap<ChannelId, Opening>,
    hinted: bool,
    /// Set at login: ends the login grace time.
    logged_in: tokio::sync::watch::Sender<bool>,
}

impl Conn {
    pub fn new(
        shared: Arc<Shared>,
        id: u64,
        peer: SocketAddr,
        logged_in: tokio::sync::watch::Sender<bool>,
    ) -> Conn {
        Conn {
            shared,
            id,
            peer,
            pending: None,
            up: None,
            downstream: Arc::new(OnceLock::new()),
            opening: HashMap::new(),
            hinted: false,
            logged_in,
        }
    }

    /// The one refusal every failure gets (russh pads it to the rejection time).
    fn refuse(&self, user: &str, fp: &str, why: &str) -> Auth {
        self.shared.failures.record(self.peer.ip());
        crate::metrics::get()
            .logins_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            event = "login",
            outcome = "refused",
            conn = self.id,
            user,
            client = %self.peer,
            fingerprint = fp,
            reason = why,
        );
        Auth::reject()
    }

    /// A hub-token login (password or keyboard-interactive). The token is never logged.
    async fn token_login(&mut self, user: &str, token: &str, method: &str) -> Auth {
        if self.up.is_some() {
            return self.refuse(user, "-", "already logged in upstream with a key");
        }
        match self.try_token(user, token).await {
            Ok(owner) => {
                crate::metrics::get()
                    .logins_accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let session = self.up.as_ref().map(|u| u.2.display()).unwrap_or_default();
                tracing::info!(
                    event = "login",
                    outcome = "accepted",
                    conn = self.id,
                    user,
                    client = %self.peer,
                    token_owner = owner,
                    method,
                    session,
                );
                Auth::Accept
            }
            Err(why) => self.refuse(user, "-", &format!("{method}: {why}")),
        }
    }

    /// The session a login name leads to, or why not (for the log only).
    fn target(&self, user: &str) -> std::result::Result<Target, String> {
        match self.shared.index.lookup(user) {
            Route::Session(t) => Ok(t),
            Route::Unknown => Err("no such session".into()),
            Route::NotReady(t, why) => Err(format!("session {}: {why}", t.display())),
            Route::Ambiguous(pods) => {
                tracing::error!(event = "ambiguous", user, pods = ?pods, "a login name matches several sessions; refused");
                Err(format!("ambiguous: {pods:?}"))
            }
        }
    }

    /// Asks the session whether it accepts this key (one passport login upstream).
    async fn try_key(&mut self, user: &str, fp: &str) -> std::result::Result<(), String> {
        let target = self.target(user)?;
        self.try_upstream(user, target, Holder::Key(fp.to_owned()), fp.to_owned())
            .await
    }

    /// Asks the hub who owns `token` and whether they may use this server, then the
    /// session whether it takes hub-token logins of that user. Returns the owner.
    async fn try_token(&mut self, user: &str, token: &str) -> std::result::Result<String, String> {
        let shared = self.shared.clone();
        let hub = shared.hub.as_ref().ok_or("hub-token logins are off")?;
        let target = self.target(user)?;
        let (hub_user, server) = target
            .hub
            .clone()
            .ok_or_else(|| format!("session {}: no hub user on the pod", target.display()))?;
        let owner = match hub.owner(token).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err("the hub does not accept the token".into()),
            Err(e) => {
                tracing::warn!(conn = self.id, error = %e, "hub-token login: the hub did not answer");
                return Err(e.to_string());
            }
        };
        if !owner.may_access(&hub_user, &server) {
            return Err(format!(
                "token of {} {:?} does not give access to {hub_user:?}/{server:?}",
                owner.kind, owner.name
            ));
        }
        let who = format!("hub-token:{}", owner.name);
        self.try_upstream(user, target, Holder::HubUser(owner.name.clone()), who)
            .await?;
        Ok(owner.name)
    }

    /// One passport login upstream for `holder`; on success the connection is `who`'s.
    async fn try_upstream(
        &mut self,
        user: &str,
        target: Target,
        holder: Holder,
        who: String,
    ) -> std::result::Result<(), String> {
        let stale = self
            .pending
            .as_ref()
            .is_some_and(|p| p.handle.is_closed() || p.target() != &target);
        if stale {
            self.pending = None;
        }
        if self.pending.is_none() {
            let p = self
                .shared
                .minter
                .connect(&target, self.downstream.clone())
                .await
                .map_err(|e| format!("session {}: {e}", target.display()))?;
            self.pending = Some(p);
        }
        let Some(mut p) = self.pending.take() else {
            return Err("no upstream".into());
        };
        let conn_id = format!("{}", self.id);
        match self
            .shared
            .minter
            .login(&mut p, user, holder, self.peer.ip(), &conn_id)
            .await
        {
            Ok(true) => {
                self.up = Some((p.handle, who, target));
                Ok(())
            }
            Ok(false) => {
                self.pending = Some(p);
                Err(format!("session {} refused the login", target.display()))
            }
            Err(e) => Err(format!("session {}: {e}", target.display())),
        }
    }

    fn up(&self) -> Option<&client::Handle<crate::upstream::Upstream>> {
        self.up.as_ref().map(|u| &u.0)
    }

    /// Answers a session-channel request by asking the session the same.
    async fn ask(&mut self, id: ChannelId, session: &mut Session, req: Request<'_>) -> Result<()> {
        let ok = match self.opening.get_mut(&id) {
            Some(o) => req.send(&o.session).await && reply_ok(&mut o.session).await,
            None => false,
        };
        if ok {
            session.channel_success(id)?;
        } else {
            session.channel_failure(id)?;
        }
        Ok(())
    }

    /// The shell, command or subsystem started: relay the channel from now on.
    async fn start(
        &mut self,
        id: ChannelId,
        session: &mut Session,
        req: Request<'_>,
        what: String,
    ) -> Result<()> {
        let ok = match self.opening.get_mut(&id) {
            Some(o) => req.send(&o.session).await && reply_ok(&mut o.session).await,
            None => false,
        };
        if !ok {
            session.channel_failure(id)?;
            return Ok(());
        }
        session.channel_success(id)?;
        if let Some(o) = self.opening.remove(&id) {
            let handle = session.handle();
            self.spawn_relay(o.user, o.session, Some(handle), what);
        }
        Ok(())
    }

    /// A forwarding channel: `open` opens the session's side (None: not logged in
    /// upstream); accept the user's and relay, or refuse it as the session did.
    async fn relay_opened<F>(
        &self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        open: Option<F>,
        what: String,
    ) where
        F: std::future::Future<Output = Result<Channel<client::Msg>, russh::Error>>,
    {
        let Some(open) = open else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        match open.await {
            Ok(sess) => {
                reply.accept().await;
                self.spawn_relay(channel, sess, None, what);
            }
            Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
        }
    }

    fn spawn_relay(
        &self,
        user: Channel<Msg>,
        sess: Channel<client::Msg>,
        exit: Option<russh::server::Handle>,
        what: String,
    ) {
        let (conn, target) = (
            self.id,
            self.up.as_ref().map(|u| u.2.display()).unwrap_or_default(),
        );
        tokio::spawn(async move {
            let moved = pump::relay(user, sess, exit).await;
            let m = crate::metrics::get();
            m.bytes_to_session
                .fetch_add(moved.to_session, std::sync::atomic::Ordering::Relaxed);
            m.bytes_to_user
                .fetch_add(moved.to_user, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                event = "channel",
                conn,
                session = %target,
                kind = %what,
                bytes_to_session = moved.to_session,
                bytes_to_user = moved.to_user,
            );
        });
    }
}

/// A session-channel request to pass on.
enum Request<'a> {
    Pty {
        term: &'a str,
        cols: u32,
        rows: u32,
        pw: u32,
        ph: u32,
        modes: &'a [(Pty, u32)],
    },
    Env(&'a str, &'a str),
    Agent,
    Shell,
    Exec(&'a [u8]),
    Subsystem(&'a str),
}

impl Request<'_> {
    /// Sends it with want-reply set; false when the session side is gone.
    async fn send(&self, ch: &Channel<client::Msg>) -> bool {
        match self {
            Request::Pty {
                term,
                cols,
                rows,
                pw,
                ph,
                modes,
            } => {
                ch.request_pty(true, term, *cols, *rows, *pw, *ph, modes)
                    .await
            }
            Request::Env(k, v) => ch.set_env(true, *k, *v).await,
            Request::Agent => ch.agent_forward(true).await,
            Request::Shell => ch.request_shell(true).await,
            Request::Exec(cmd) => ch.exec(true, cmd.to_vec()).await,
            Request::Subsystem(name) => ch.request_subsystem(true, *name).await,
        }
        .is_ok()
    }
}

/// The session's answer to the request just sent (anything else before it is only window).
async fn reply_ok(ch: &mut Channel<client::Msg>) -> bool {
    let wait = async {
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Success) => return true,
                Some(ChannelMsg::Failure)
                | Some(ChannelMsg::Close)
                | Some(ChannelMsg::Eof)
                | None => return false,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or(false)
}
