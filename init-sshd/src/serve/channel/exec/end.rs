//! How a session process ends: its exit reported to the client, or a hang-up when the
//! client went away, and the translation between Unix signals and SSH signal names.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use russh::server::{Handle, Msg};
use russh::{ChannelId, ChannelWriteHalf, Sig};
use tokio::process::Child;

/// How long a hung-up session gets between SIGHUP and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// exit-status, or exit-signal when the child died of a signal.
pub async fn report_exit(
    write: &ChannelWriteHalf<Msg>,
    handle: &Handle,
    id: ChannelId,
    st: ExitStatus,
) {
    if let Some(code) = st.code() {
        let _ = write.exit_status(u32::try_from(code).unwrap_or(255)).await;
        return;
    }
    let sig = st.signal().and_then(|n| Signal::try_from(n).ok());
    let name = sig.map(from_signal).unwrap_or(Sig::KILL);
    // Same ordered queue as the channel data, so it precedes EOF.
    let _ = handle
        .exit_signal_request(id, name, st.core_dumped(), String::new(), String::new())
        .await;
}

/// Hang up a session: SIGHUP (and SIGCONT, for stopped jobs) to every process of its
/// terminal session, as the kernel's tty hang-up plus bash's forwarding to its jobs do under
/// OpenSSH; then SIGKILL for what is left of the leader's own group after a grace period.
/// Jobs that ignore SIGHUP (`nohup`) or left the session (`setsid`) keep running, as there.
pub async fn hangup(child: &mut Child, pgid: Pid, reaped: bool) {
    let _ = killpg(pgid, Signal::SIGHUP);
    let _ = killpg(pgid, Signal::SIGCONT);
    for pid in session_members(pgid) {
        let _ = kill(pid, Signal::SIGHUP);
        let _ = kill(pid, Signal::SIGCONT);
    }
    if !reaped
        && tokio::time::timeout(HANGUP_GRACE, child.wait())
            .await
            .is_ok()
    {
        return;
    }
    if reaped {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Whatever is left of the group ignored SIGHUP.
    if killpg(pgid, Signal::SIGKILL).is_ok() {
        tracing::debug!(pgid = pgid.as_raw(), "session group killed");
    }
    if !reaped {
        let _ = child.wait().await;
    }
}

/// Processes of the session `sid` other than its leader (the session's processes outside
/// the leader's group are its background jobs and their children).
fn session_members(sid: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&p| p != sid && nix::unistd::getsid(Some(p)).is_ok_and(|s| s == sid))
        .collect()
}

pub fn to_signal(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => Signal::SIGUSR2,
            "WINCH" => Signal::SIGWINCH,
            "CONT" => Signal::SIGCONT,
            "STOP" => Signal::SIGSTOP,
            "TSTP" => Signal::SIGTSTP,
            _ => return None,
        },
    })
}

pub fn from_signal(sig: Signal) -> Sig {
    match sig {
        Signal::SIGABRT => Sig::ABRT,
        Signal::SIGALRM => Sig::ALRM,
        Signal::SIGFPE => Sig::FPE,
        Signal::SIGHUP => Sig::HUP,
        Signal::SIGILL => Sig::ILL,
        Signal::SIGINT => Sig::INT,
        Signal::SIGKILL => Sig::KILL,
        Signal::SIGPIPE => Sig::PIPE,
        Signal::SIGQUIT => Sig::QUIT,
        Signal::SIGSEGV => Sig::SEGV,
        Signal::SIGTERM => Sig::TERM,
        Signal::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGKILL,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
        ] {
            assert_eq!(to_signal(&from_signal(s)), Some(s));
        }
        assert_eq!(to_signal(&Sig::Custom("NOPE".into())), None);
    }
}
