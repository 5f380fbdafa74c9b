//! Who the sessions run as: name, home and shell of the server's own uid.
//!
//! The server never switches users; it serves as whatever uid it was started
//! with. Containers often run an arbitrary uid with no passwd entry, so the
//! lookup must never fail: `/etc/passwd` parsed directly (no NSS, works in a
//! static binary), else `$USER`/`$HOME`/`$SHELL`, else the numeric uid, `/`
//! and `/bin/sh`.

use std::path::{Path, PathBuf};

/// Errors of this module (none today: resolution always yields a user).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the passwd file failed for a reason other than absence.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The account sessions run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl User {
    /// Resolve the current process's user.
    pub fn current() -> User {
        let uid = nix::unistd::getuid().as_raw();
        let passwd = match read_passwd(Path::new("/etc/passwd")) {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!(error = %e, "no usable /etc/passwd");
                None
            }
        };
        let user = resolve(uid, passwd.as_deref(), |k| std::env::var(k).ok());
        tracing::info!(uid, name = %user.name, home = %user.home.display(), shell = %user.shell.display(), "session user");
        user
    }

    /// argv[0] for a login shell: "-" + basename of the shell ("-bash").
    pub fn login_argv0(&self) -> String {
        login_argv0(&self.shell)
    }
}

fn read_passwd(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Pure resolution from a passwd text and an environment lookup.
pub fn resolve(uid: u32, passwd: Option<&str>, env: impl Fn(&str) -> Option<String>) -> User {
    let entry = passwd.and_then(|text| find_uid(text, uid));
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (p_name, p_home, p_shell) = match entry {
        Some((n, h, s)) => (
            non_empty(Some(n.to_owned())),
            non_empty(Some(h.to_owned())),
            non_empty(Some(s.to_owned())),
        ),
        None => (None, None, None),
    };
    let name = p_name
        .or_else(|| non_empty(env("USER")))
        .or_else(|| non_empty(env("LOGNAME")))
        .unwrap_or_else(|| uid.to_string());
    let home = p_home
        .or_else(|| non_empty(env("HOME")))
        .unwrap_or_else(|| "/".to_owned());
    // A nologin/false shell in passwd (common for service uids in images)
    // would make every login fail; fall back like the no-entry case.
    let shell = p_shell
        .filter(|s| !is_nologin(s))
        .or_else(|| non_empty(env("SHELL")).filter(|s| !is_nologin(s)))
        .unwrap_or_else(|| "/bin/sh".to_owned());
    User {
        uid,
        name,
        home: PathBuf::from(home),
        shell: PathBuf::from(shell),
    }
}

fn is_nologin(shell: &str) -> bool {
    shell.ends_with("/nologin") || shell.ends_with("/false")
}

/// Find `name:pw:uid:gid:gecos:home:shell` for `uid`.
fn find_uid(text: &str, uid: u32) -> Option<(&str, &str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            match f.as_slice() {
                [name, _pw, u, _gid, _gecos, home, shell] if u.parse::<u32>().ok() == Some(uid) => {
                    Some((*name, *home, *shell))
                }
                _ => None,
            }
        })
}

fn login_argv0(shell: &Path) -> String {
    let base = shell
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".to_owned());
    format!("-{base}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment\njovyan:x:1000:100::/home/jovyan:/bin/bash\nsvc:x:999:999::/srv:/usr/sbin/nologin\nbroken line\n";

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn passwd_entry_wins() {
        let u = resolve(
            1000,
            Some(PASSWD),
            env_of(&[("USER", "other"), ("HOME", "/tmp")]),
        );
        assert_eq!(u.name, "jovyan");
        assert_eq!(u.home, PathBuf::from("/home/jovyan"));
        assert_eq!(u.shell, PathBuf::from("/bin/bash"));
        assert_eq!(u.login_argv0(), "-bash");
    }

    #[test]
    fn env_when_no_entry() {
        let u = resolve(
            4242,
            Some(PASSWD),
            env_of(&[
                ("USER", "alice"),
                ("HOME", "/home/alice"),
                ("SHELL", "/bin/zsh"),
            ]),
        );
        assert_eq!(u.name, "alice");
        assert_eq!(u.home, PathBuf::from("/home/alice"));
        assert_eq!(u.shell, PathBuf::from("/bin/zsh"));
    }

    #[test]
    fn numeric_fallback() {
        let u = resolve(4242, None, env_of(&[]));
        assert_eq!(u.name, "4242");
        assert_eq!(u.home, PathBuf::from("/"));
        assert_eq!(u.shell, PathBuf::from("/bin/sh"));
        assert_eq!(u.login_argv0(), "-sh");
    }

    #[test]
    fn nologin_shell_replaced() {
        let u = resolve(999, Some(PASSWD), env_of(&[]));
        assert_eq!(u.name, "svc");
        assert_eq!(u.shell, PathBuf::from("/bin/sh"));
    }
}
