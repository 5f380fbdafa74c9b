//! SSH activity, reported to the platform so that SSH-only work keeps a session from being
//! culled as idle (issue 14, item 1).
//!
//! The rule: **activity is bytes moved on a shell, exec, subsystem (SFTP) or forwarded
//! channel** since the last report. An open connection with nothing moving, keepalives,
//! window adjustments, authentication and agent forwarding are not activity (a new shell's
//! first prompt is output on a shell channel: it counts, once). With
//! `--activity-counts input` only bytes from the client count (a keystroke, an upload, an
//! SFTP request), so a program left printing into a forgotten terminal does not keep the
//! session alive either.
//!
//! The channel I/O paths only store the time into an atomic ([`from_client`],
//! [`to_client`], which also count the bytes for `serve::metrics`): nothing on a connection waits for the platform. One background task
//! ([`report`]) looks at it once per interval and sends at most one report then.
//!
//! Where to: JupyterHub, the way `jupyterhub-singleuser` does it (`JUPYTERHUB_ACTIVITY_URL`
//! with the server's own `JUPYTERHUB_API_TOKEN`, both in the environment snapshot that
//! `start` passes to serve). Kubeflow's and Renku's cullers read nothing a server in the
//! session can write (README, "Idle culling").

pub mod hub;
pub mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options of `serve` for activity reporting.
#[derive(Debug, Clone, clap::Args)]
pub struct ActivityOpts {
    /// Seconds between activity reports to JupyterHub (JUPYTERHUB_ACTIVITY_URL with
    /// JUPYTERHUB_API_TOKEN from the session's environment; plain http only); at most one
    /// report per interval, and none while nothing moves. Activity: bytes moved on a shell,
    /// exec, SFTP or forwarded channel since the last report; an open idle connection and
    /// keepalives are not. 0: never report.
    #[arg(long, env = "INIT_SSHD_ACTIVITY_INTERVAL_SECS", default_value_t = 60)]
    pub activity_interval_secs: u64,
    /// Which bytes count as activity: `traffic` (either way) or `input` (only from the
    /// client: output of a program left running in a forgotten terminal does not count).
    #[arg(
        long,
        env = "INIT_SSHD_ACTIVITY_COUNTS",
        value_enum,
        default_value_t = Counts::Traffic
    )]
    pub activity_counts: Counts,
}

/// Which direction of channel data counts as activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Counts {
    /// Bytes either way.
    Traffic,
    /// Bytes from the client only.
    Input,
}

/// When channel data last moved, per direction, in Unix seconds (0: never).
#[derive(Debug, Default)]
pub struct Marks {
    from_client: AtomicU64,
    to_client: AtomicU64,
}

/// The server's marks, set by every channel worker.
pub static MARKS: Marks = Marks::new();

/// `n` bytes from the client arrived on a counted channel (also the bytes metric: one
/// hook where channel data is seen, for both).
pub fn from_client(n: usize) {
    Marks::mark(&MARKS.from_client);
    crate::serve::metrics::get().from_client(n);
}

/// `n` bytes went to the client on a counted channel.
pub fn to_client(n: usize) {
    Marks::mark(&MARKS.to_client);
    crate::serve::metrics::get().to_client(n);
}

/// Now in Unix seconds (0 before 1970: a broken clock reports nothing new).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Marks {
    pub const fn new() -> Marks {
        Marks {
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        }
    }

    /// Called per chunk of channel data: a load, and a write at most once a second.
    fn mark(cell: &AtomicU64) {
        let now = unix_now();
        if cell.load(Ordering::Relaxed) < now {
            cell.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The last activity under `rule`, in Unix seconds (0: none yet).
    pub fn last(&self, rule: Counts) -> u64 {
        let input = self.from_client.load(Ordering::Relaxed);
        match rule {
            Counts::Input => input,
            Counts::Traffic => input.max(self.to_client.load(Ordering::Relaxed)),
        }
    }
}

/// Start reporting, if the options and the environment allow it; logs once either way.
pub fn spawn(opts: &ActivityOpts) {
    if opts.activity_interval_secs == 0 {
        tracing::info!("activity reporting off (--activity-interval-secs 0)");
        return;
    }
    let target = match hub::Target::from_env(|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(why) => {
            tracing::info!(reason = %why, "activity reporting off");
            return;
        }
    };
    let interval = Duration::from_secs(opts.activity_interval_secs);
    tracing::info!(
        url = %target.url(),
        interval_secs = interval.as_secs(),
        counts = ?opts.activity_counts,
        "reporting SSH activity to JupyterHub"
    );
    tokio::spawn(report::run(target, &MARKS, opts.activity_counts, interval));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_moved_is_no_activity() {
        let m = Marks::new();
        assert_eq!(m.last(Counts::Traffic), 0);
        assert_eq!(m.last(Counts::Input), 0);
    }

    #[test]
    fn output_counts_only_under_traffic() {
        let m = Marks::new();
        Marks::mark(&m.to_client);
        assert!(m.last(Counts::Traffic) >= unix_now() - 1);
        assert_eq!(m.last(Counts::Input), 0);
    }

    #[test]
    fn input_counts_under_both_rules() {
        let m = Marks::new();
        Marks::mark(&m.from_client);
        let now = unix_now();
        assert!(m.last(Counts::Input) >= now - 1);
        assert_eq!(m.last(Counts::Traffic), m.last(Counts::Input));
    }

    #[test]
    fn marks_never_go_back() {
        let m = Marks::new();
        m.to_client.store(u64::MAX - 1, Ordering::Relaxed);
        Marks::mark(&m.to_client);
        assert_eq!(m.last(Counts::Traffic), u64::MAX - 1);
    }
}
