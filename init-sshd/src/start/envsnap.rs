//! The container's environment, captured by `start` for `serve` and for SSH login shells.
//!
//! Sources and precedence: the hook's own environment (what the runtime gives every exec
//! in the container: image ENV + pod env) merged with the environment of the container's
//! main process (PID 1, or the child of a tiny init such as tini/dumb-init). On conflict
//! the main process wins: it started from the same runtime env and then ran the image's
//! entrypoint, whose exports (conda activation, a PATH prefix, NB_USER fix-ups) are what the
//! user's notebook really sees. Variables only the hook has are kept.
//! Per-process and per-session variables are dropped (see [`DROPPED`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name of the NUL-separated snapshot in DIR.
pub const ENV_FILE: &str = "env";
/// File name of the shell version in DIR.
pub const ENV_SH: &str = "env.sh";

/// Variables that describe one process or one login, never the container.
pub const DROPPED: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "TERM",
    "COLUMNS",
    "LINES",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "SSH_AUTH_SOCK",
    "SSH_ORIGINAL_COMMAND",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Names the login shell must not take from the snapshot: serve sets them per login.
const SESSION_OWNED: &[&str] = &["USER", "LOGNAME", "HOME", "SHELL", "MAIL"];

/// Bash variables that are read-only or special: assigning them prints errors at login.
const SHELL_SPECIAL: &[&str] = &[
    "BASHOPTS",
    "BASHPID",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_LINENO",
    "BASH_SOURCE",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
    "GROUPS",
    "FUNCNAME",
    "RANDOM",
    "SECONDS",
    "LINENO",
    "HISTCMD",
];

/// Init processes whose environment is not the entrypoint's.
const TINY_INITS: &[&str] = &[
    "tini",
    "dumb-init",
    "catatonit",
    "docker-init",
    "s6-svscan",
    "pause",
    "podman-init",
    // bubblewrap's own PID 1 when it is not run with --as-pid-1 (sandboxes, the e2e tests).
    "bwrap",
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Write(#[from] crate::hostkey::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// An environment: sorted names to values (bytes, not necessarily UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub vars: BTreeMap<OsString, OsString>,
    /// Where the main-process part came from (`/proc/1/environ`, or None if unreadable).
    pub main_process: Option<PathBuf>,
}

impl Snapshot {
    /// Value of a variable, as a string when it is UTF-8.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(OsStr::new(name))
            .and_then(|v| v.to_str())
            .map(str::to_string)
    }
}

/// Parse a `/proc/PID/environ` blob.
pub fn parse_environ(bytes: &[u8]) -> Vec<(OsString, OsString)> {
    bytes
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let eq = kv.iter().position(|b| *b == b'=')?;
            // A leading '=' is not a name (Windows-isms); skip it.
            (eq > 0).then(|| {
                (
                    OsString::from_vec(kv[..eq].to_vec()),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                )
            })
        })
        .collect()
}

/// Merge: `own` first, then `main` overrides; drop per-process names.
pub fn merge(
    own: impl IntoIterator<Item = (OsString, OsString)>,
    main: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let mut vars: BTreeMap<OsString, OsString> = own.into_iter().collect();
    vars.extend(main);
    vars.retain(|k, _| !k.to_str().is_some_and(|k| DROPPED.contains(&k)));
    vars
}

fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// PIDs whose parent is `ppid`, from /proc/PID/task/PID/children or a /proc scan.
fn children(proc_root: &Path, ppid: u32) -> Vec<u32> {
    let listed = proc_root.join(format!("{ppid}/task/{ppid}/children"));
    if let Ok(text) = fs::read_to_string(listed) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let Ok(rd) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_field(proc_root, *pid, 4) == Some(u64::from(ppid)))
        .collect();
    out.sort_unstable();
    out
}

/// Field `n` (1-based, as numbered in proc(5)) of /proc/PID/stat; comm may hold spaces, so
/// counting starts after its closing parenthesis (field 3 is the first one after it).
fn stat_field(proc_root: &Path, pid: u32, n: usize) -> Option<u64> {
    let s = fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
    let rest = s.rsplit_once(')')?.1;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// The container's first process. Normally PID 1. In a pod with `shareProcessNamespace`,
/// PID 1 is the pod's pause process in another mount namespace; then the oldest process
/// of our own mount namespace (other than us) is this container's entrypoint.
fn container_init(proc_root: &Path) -> u32 {
    let ns = |pid: &str| fs::read_link(proc_root.join(pid).join("ns/mnt")).ok();
    let Some(mine) = ns("self") else {
        return 1;
    };
    match ns("1") {
        Some(one) if one != mine => {}
        _ => return 1,
    }
    let me: Option<u32> = fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|p| p.to_str()?.parse().ok());
    let Ok(rd) = fs::read_dir(proc_root) else {
        return 1;
    };
    let oldest = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != me && ns(&pid.to_string()).as_ref() == Some(&mine))
        .min_by_key(|pid| (stat_field(proc_root, *pid, 22).unwrap_or(u64::MAX), *pid));
    tracing::info!(pid = ?oldest, "shared PID namespace: container init found by mount namespace");
    oldest.unwrap_or(1)
}

/// The process whose environment best represents the container: its first process, or,
/// when that is a tiny init, its oldest child (the entrypoint).
pub fn main_pid(proc_root: &Path) -> u32 {
    let mut pid = container_init(proc_root);
    for _ in 0..3 {
        match comm(proc_root, pid) {
            Some(name) if TINY_INITS.contains(&name.as_str()) => {
                match children(proc_root, pid).into_iter().min() {
                    Some(child) => pid = child,
                    None => break,
                }
            }
            _ => break,
        }
    }
    pid
}

/// Interpreters an entrypoint script runs in. /proc/PID/exe names the interpreter even when
/// comm shows the script's name (`start.sh`).
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox"];

fn is_shell(proc_root: &Path, pid: u32) -> bool {
    let dir = proc_root.join(pid.to_string());
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    exe.or_else(|| comm(proc_root, pid))
        .is_some_and(|n| SHELLS.contains(&n.as_str()))
}

/// Like [`main_pid`], but when the main process is still a shell (an entrypoint script
/// that has not yet `exec`'d the real program, racing with this postStart hook), wait up
/// to `max_wait` for it to exec. If it is still a shell then, a script that runs its program
/// without exec is assumed: its oldest child carries the exports.
pub fn settled_main_pid(proc_root: &Path, max_wait: Duration) -> u32 {
    let deadline = Instant::now() + max_wait;
    loop {
        let pid = main_pid(proc_root);
        if !is_shell(proc_root, pid) {
            return pid;
        }
        if Instant::now() >= deadline {
            let child = children(proc_root, pid).into_iter().min();
            tracing::info!(
                pid,
                child,
                "main process is still a shell; using its oldest child if any"
            );
            return child.unwrap_or(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Capture the snapshot from this process's env and `/proc` (normally `/proc`), waiting at
/// most `max_wait` for an entrypoint script to settle (see [`settled_main_pid`]).
pub fn capture(proc_root: &Path, max_wait: Duration) -> Snapshot {
    let pid = settled_main_pid(proc_root, max_wait);
    let path = proc_root.join(pid.to_string()).join("environ");
    let main = match fs::read(&path) {
        Ok(bytes) => {
            tracing::info!(pid, path = %path.display(), "main process environment read");
            Some(parse_environ(&bytes))
        }
        Err(e) => {
            tracing::info!(pid, path = %path.display(), error = %e, "main process environment not readable; using own");
            None
        }
    };
    let main_process = main.as_ref().map(|_| path);
    let vars = merge(std::env::vars_os(), main.unwrap_or_default());
    tracing::info!(vars = vars.len(), "environment captured");
    Snapshot { vars, main_process }
}

/// A POSIX shell identifier (what `export NAME=` accepts).
pub fn is_shell_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `'...'` quoting: the only character needing care inside single quotes is `'` itself.
pub fn single_quote(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// `NAME=value\0...`, the format of /proc/PID/environ.
pub fn render_env(snap: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in &snap.vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// `export NAME='value'` lines for the login shell. Identity variables are left to serve;
/// LANG/LC_* only fill in what the client did not send.
pub fn render_sh(snap: &Snapshot) -> Vec<u8> {
    let mut out =
        b"# Written by `init-sshd start`: the container's environment, restored in SSH login\n\
# shells by the session-ssh block in ~/.bash_profile. Regenerated at every container start.\n"
            .to_vec();
    for (k, v) in &snap.vars {
        let Some(name) = k.to_str() else { continue };
        if !is_shell_name(k) || SESSION_OWNED.contains(&name) || SHELL_SPECIAL.contains(&name) {
            continue;
        }
        let quoted = single_quote(v.as_bytes());
        if name == "LANG" || name.starts_with("LC_") {
            out.extend_from_slice(format!("[ -n \"${{{name}+x}}\" ] || export {name}=").as_bytes());
        } else {
            out.extend_from_slice(format!("export {name}=").as_bytes());
        }
        out.extend_from_slice(&quoted);
        out.push(b'\n');
    }
    out
}

/// Write DIR/env (0600: it may hold tokens) and DIR/env.sh (0600, read by the same user).
pub fn write(dir: &Path, snap: &Snapshot) -> Result<()> {
    crate::hostkey::write_atomic(&dir.join(ENV_FILE), &render_env(snap), 0o600)?;
    crate::hostkey::write_atomic(&dir.join(ENV_SH), &render_sh(snap), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn environ_parsing() {
        let got = parse_environ(b"A=1\0B=x=y\0=bad\0NOEQ\0EMPTY=\0\0");
        assert_eq!(got, os(&[("A", "1"), ("B", "x=y"), ("EMPTY", "")]));
    }

    #[test]
    fn main_process_wins_and_per_process_vars_drop() {
        let own = os(&[
            ("PATH", "/usr/bin"),
            ("ONLY_HOOK", "h"),
            ("PWD", "/"),
            ("SHLVL", "1"),
        ]);
        let main = os(&[
            ("PATH", "/opt/conda/bin:/usr/bin"),
            ("ONLY_MAIN", "m"),
            ("_", "/x"),
        ]);
        let vars = merge(own, main);
        let keys: Vec<&str> = vars.keys().filter_map(|k| k.to_str()).collect();
        assert_eq!(keys, ["ONLY_HOOK", "ONLY_MAIN", "PATH"]);
        assert_eq!(
            vars[OsStr::new("PATH")],
            OsString::from("/opt/conda/bin:/usr/bin")
        );
    }

    #[test]
    fn shell_rendering_round_trips_through_a_real_shell() {
        let mut snap = Snapshot::default();
        for (k, v) in [
            ("PATH", "/opt/conda/bin:/usr/bin:/bin"),
            ("QUOTES", "it's \"quoted\" $HOME `id` \\n"),
            ("NEWLINE", "a\nb"),
            ("EMPTY", ""),
            ("LANG", "C.UTF-8"),
            ("HOME", "/snapshot-home"),
            ("UID", "0"),
            ("BASH_FUNC_f%%", "() { echo; }"),
            ("1BAD", "x"),
        ] {
            snap.vars.insert(k.into(), v.into());
        }
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap).unwrap();
        let sh = fs::read_to_string(dir.path().join(ENV_SH)).unwrap();
        assert!(!sh.contains("BASH_FUNC") && !sh.contains("1BAD") && !sh.contains("UID="));
        assert!(!sh.contains("export HOME"));
        let script = format!(
            ". '{}'; printf '%s|%s|%s|%s|%s' \"$PATH\" \"$QUOTES\" \"$NEWLINE\" \"${{EMPTY-unset}}\" \"$LANG\"",
            dir.path().join(ENV_SH).display()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("LANG", "de_CH.UTF-8")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/opt/conda/bin:/usr/bin:/bin|it's \"quoted\" $HOME `id` \\n|a\nb||de_CH.UTF-8",
            "client LANG kept, the rest restored verbatim"
        );
        // Without a client LANG, the container's applies.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}'; printf %s \"$LANG\"",
                dir.path().join(ENV_SH).display()
            ))
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "C.UTF-8");
        // The NUL file is exactly the snapshot.
        let raw = fs::read(dir.path().join(ENV_FILE)).unwrap();
        assert_eq!(parse_environ(&raw).len(), snap.vars.len());
    }

    #[test]
    fn tiny_init_is_skipped_to_its_child() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for (pid, comm, ppid) in [
            (1, "tini", 0),
            (7, "start.sh", 1),
            (9, "other", 1),
            (12, "python", 7),
        ] {
            fs::create_dir_all(p.join(format!("{pid}"))).unwrap();
            fs::write(p.join(format!("{pid}/comm")), format!("{comm}\n")).unwrap();
            fs::write(
                p.join(format!("{pid}/stat")),
                format!("{pid} ({comm}) S {ppid} 1 1 0"),
            )
            .unwrap();
        }
        assert_eq!(main_pid(p), 7);
        fs::write(p.join("1/comm"), "jupyterhub-singleuser\n").unwrap();
        assert_eq!(main_pid(p), 1);
    }

    #[test]
    fn shell_entrypoint_is_waited_for_then_its_child_used() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for (pid, comm, ppid) in [(1, "start.sh", 0), (5, "jupyter", 1)] {
            fs::create_dir_all(p.join(format!("{pid}"))).unwrap();
            fs::write(p.join(format!("{pid}/comm")), format!("{comm}\n")).unwrap();
            fs::write(
                p.join(format!("{pid}/stat")),
                format!("{pid} ({comm}) S {ppid} 1"),
            )
            .unwrap();
        }
        // A script: exe is the interpreter.
        std::os::unix::fs::symlink("/usr/bin/bash", p.join("1/exe")).unwrap();
        let t = Instant::now();
        assert_eq!(settled_main_pid(p, Duration::from_millis(200)), 5);
        assert!(t.elapsed() >= Duration::from_millis(200));
        // The script exec'd its program meanwhile: no wait, PID 1 itself.
        fs::remove_file(p.join("1/exe")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3.12", p.join("1/exe")).unwrap();
        let t = Instant::now();
        assert_eq!(settled_main_pid(p, Duration::from_secs(5)), 1);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn shared_pid_namespace_finds_our_containers_init() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        // pid 1: pause (other mount ns); 20: sidecar; 30: our entrypoint; 40: us.
        for (pid, comm, mnt, start) in [
            (1, "pause", "mnt:[1]", 10),
            (20, "envoy", "mnt:[2]", 20),
            (30, "jupyter", "mnt:[3]", 30),
            (35, "kernel", "mnt:[3]", 90),
            (40, "init-sshd", "mnt:[3]", 100),
        ] {
            let d = p.join(format!("{pid}"));
            fs::create_dir_all(d.join("ns")).unwrap();
            fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            let stat = format!(
                "{pid} ({comm}) S 0 {}",
                "0 ".repeat(17) + &start.to_string()
            );
            fs::write(d.join("stat"), stat).unwrap();
            std::os::unix::fs::symlink(mnt, d.join("ns/mnt")).unwrap();
        }
        std::os::unix::fs::symlink("40", p.join("self")).unwrap();
        assert_eq!(stat_field(p, 35, 22), Some(90));
        assert_eq!(main_pid(p), 30);
        // Not shared (PID 1 in our mount namespace): PID 1 as usual.
        fs::remove_file(p.join("1/ns/mnt")).unwrap();
        std::os::unix::fs::symlink("mnt:[3]", p.join("1/ns/mnt")).unwrap();
        fs::write(p.join("1/comm"), "python\n").unwrap();
        assert_eq!(main_pid(p), 1);
    }

    #[test]
    fn capture_reads_a_fake_proc() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("1")).unwrap();
        fs::write(root.path().join("1/comm"), "python\n").unwrap();
        fs::write(root.path().join("1/environ"), b"FROM_PID1=yes\0PWD=/x\0").unwrap();
        let snap = capture(root.path(), Duration::ZERO);
        assert_eq!(snap.get("FROM_PID1").as_deref(), Some("yes"));
        assert!(snap.get("PWD").is_none());
        assert_eq!(snap.main_process, Some(root.path().join("1/environ")));
        // Unreadable /proc: own environment only.
        let snap = capture(&root.path().join("missing"), Duration::ZERO);
        assert!(snap.main_process.is_none());
        assert!(snap.get("FROM_PID1").is_none());
    }
}
