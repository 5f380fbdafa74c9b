//! Login audit lines where the admin reads them: the session container's own log
//! (`kubectl logs`). serve is started by the postStart hook, so its stdout is not the
//! container's; the main process's is, reachable as `/proc/1/fd/1` in the container's PID
//! namespace when serve runs as the same user. A line written there is in the runtime's
//! log, out of the user's reach to edit later (the file log in DIR stays too).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// `start` and `serve`: where the audit lines also go (start hands it to serve).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuditOpts {
    /// Also write login audit lines to this file: the webhook passes the container log
    /// (`/proc/1/fd/1`, what `kubectl logs` shows). Unset: the file log only.
    #[arg(long = session_ssh_contract::argv::flag::AUDIT_LOG, env = "INIT_SSHD_AUDIT_LOG")]
    pub audit_log: Option<String>,
}

impl AuditOpts {
    /// The flag again, for the serve command line `start` builds.
    pub fn args(&self) -> Vec<String> {
        self.audit_log
            .iter()
            .flat_map(|p| {
                [
                    session_ssh_contract::argv::long(session_ssh_contract::argv::flag::AUDIT_LOG),
                    p.clone(),
                ]
            })
            .collect()
    }

    /// The writer these options ask for.
    pub fn open(&self) -> Audit {
        match &self.audit_log {
            Some(p) => Audit::open(p),
            None => Audit::off(),
        }
    }
}

/// The container log, when it could be opened.
#[derive(Debug)]
pub struct Audit(Option<Mutex<File>>);

/// One login outcome.
#[derive(Debug)]
pub struct Login<'a> {
    pub outcome: &'a str,
    pub conn: u64,
    pub user: &'a str,
    pub peer: &'a str,
    /// The key's fingerprint, or `hub-token:<user>`.
    pub fingerprint: &'a str,
    /// Where the key came from (accepted) or why it was refused.
    pub detail: &'a str,
}

impl Audit {
    /// Opens `path` (the main process's stdout) for appending, non-blocking: a full log
    /// pipe drops a line rather than stall a login.
    pub fn open(path: &str) -> Audit {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match f {
            Ok(f) => {
                tracing::info!(path, "login audit lines also go to the container log");
                Audit(Some(Mutex::new(f)))
            }
            Err(e) => {
                tracing::info!(path, error = %e, "no container log to write audit lines to (main process of another user?)");
                Audit(None)
            }
        }
    }

    /// None: only the file log.
    pub fn off() -> Audit {
        Audit(None)
    }

    /// One JSON line for a login.
    pub fn login(&self, l: &Login<'_>) {
        let Some(f) = &self.0 else {
            return;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "source": "session-ssh",
            "event": "login",
            "outcome": l.outcome,
            "conn": l.conn,
            "user": l.user,
            "client": l.peer,
            "fingerprint": l.fingerprint,
            "detail": l.detail,
            "ts_unix": ts,
        });
        if let Ok(mut f) = f.lock() {
            // One write per line: lines from concurrent logins never interleave.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_login() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "").unwrap();
        let a = Audit::open(path.to_str().unwrap());
        for outcome in ["accepted", "refused"] {
            a.login(&Login {
                outcome,
                conn: 7,
                user: "jovyan",
                peer: "192.0.2.1:5000",
                fingerprint: "SHA256:x",
                detail: "authorized_keys:1",
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["outcome"], "refused");
        assert_eq!(lines[0]["client"], "192.0.2.1:5000");
        // No such file: off, and writing is a no-op.
        Audit::open("/nonexistent/x").login(&Login {
            outcome: "accepted",
            conn: 1,
            user: "u",
            peer: "-",
            fingerprint: "-",
            detail: "-",
        });
    }
}
