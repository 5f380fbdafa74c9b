//! The login grace time of a russh server session, shared by init-sshd and the gateway:
//! run the session; if nobody logged in by the deadline, tell the peer and, when it does
//! not go within two seconds (stalled inside the key exchange, where it never reads that
//! message), cut its stream, since russh keeps the socket in a task of its own.

use std::time::Duration;

use russh::Disconnect;
use russh::server::{Handler, RunningSession};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::tcp::Cut;

/// How a session ended.
#[derive(Debug)]
pub struct Ended<E> {
    /// The session's own result.
    pub result: Result<(), E>,
    /// Nobody logged in within the grace time.
    pub grace_exceeded: bool,
}

/// Runs `session` to its end. `startup` (a pre-login slot) is released at login or at the
/// deadline; `logged_in` turns true at login; `cut` is the stream's [`crate::tcp::Cuttable`].
pub async fn run<H, S>(
    session: RunningSession<H>,
    mut logged_in: watch::Receiver<bool>,
    deadline: Instant,
    cut: Cut,
    startup: S,
) -> Ended<H::Error>
where
    H: Handler,
{
    let handle = session.handle();
    let mut session = std::pin::pin!(session);
    let in_time = async {
        tokio::select! {
            r = logged_in.wait_for(|v| *v) => r.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
        }
    };
    tokio::select! {
        result = &mut session => Ended { result, grace_exceeded: false },
        ok = in_time => {
            drop(startup);
            if ok {
                return Ended { result: session.await, grace_exceeded: false };
            }
            let _ = handle
                .disconnect(Disconnect::ByApplication, "login grace time exceeded".into(), String::new())
                .await;
            // The session future is awaited to completion exactly once.
            let result = match tokio::time::timeout(Duration::from_secs(2), &mut session).await {
                Ok(r) => r,
                Err(_) => {
                    cut.cut();
                    session.await
                }
            };
            Ended { result, grace_exceeded: true }
        }
    }
}
