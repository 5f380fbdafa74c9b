//! Pure policy decisions of the server: what a key's options allow, which
//! client environment variables are taken, what command runs and with which
//! environment. No I/O here, so every rule is unit-tested.

use std::net::SocketAddr;

use crate::serve::channel::exec::Program;
use crate::user::User;
use session_ssh_contract::keys::Permissions;

/// Client `env` requests we honour (OpenSSH's usual `AcceptEnv LANG LC_*`).
pub fn env_allowed(name: &str) -> bool {
    name == "LANG" || (name.starts_with("LC_") && name.len() > 3)
}

/// Apply a forced `command="..."` to what the client asked for. Returns the
/// program and the value of SSH_ORIGINAL_COMMAND (only with a forced command
/// and a client command).
pub fn resolve_program(forced: Option<&str>, requested: Option<&str>) -> (Program, Option<String>) {
    match (forced, requested) {
        (Some(f), req) => (Program::Command(f.to_owned()), req.map(str::to_owned)),
        (None, Some(r)) => (Program::Command(r.to_owned()), None),
        (None, None) => (Program::LoginShell, None),
    }
}

/// Unix-socket forwarding: permitopen cannot name a socket, so like OpenSSH
/// a key restricted with permitopen gets none.
pub fn streamlocal_allowed(perms: &Permissions) -> bool {
    perms.port_forwarding && perms.permitopen.is_empty()
}

/// Connection facts that end up in the session environment.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Inputs for the environment of a session's child process.
#[derive(Debug, Default)]
pub struct EnvInputs<'a> {
    pub term: Option<&'a str>,
    pub tty: Option<&'a str>,
    pub client_env: &'a [(String, String)],
    pub auth_sock: Option<&'a str>,
    pub original_command: Option<&'a str>,
}

/// Variables added on top of serve's own (inherited) environment.
pub fn session_env(
    user: &User,
    conn: Option<&ConnInfo>,
    inp: &EnvInputs<'_>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        ("HOME".to_owned(), user.home.display().to_string()),
        ("SHELL".to_owned(), user.shell.display().to_string()),
    ];
    if let Some(c) = conn {
        env.push((
            "SSH_CONNECTION".to_owned(),
            format!(
                "{} {} {} {}",
                c.peer.ip(),
                c.peer.port(),
                c.local.ip(),
                c.local.port()
            ),
        ));
        env.push((
            "SSH_CLIENT".to_owned(),
            format!("{} {} {}", c.peer.ip(), c.peer.port(), c.local.port()),
        ));
    }
    for (k, v) in inp.client_env {
        if env_allowed(k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if let Some(t) = inp.term {
        env.push(("TERM".to_owned(), t.to_owned()));
    }
    if let Some(t) = inp.tty {
        env.push(("SSH_TTY".to_owned(), t.to_owned()));
    }
    if let Some(s) = inp.auth_sock {
        env.push(("SSH_AUTH_SOCK".to_owned(), s.to_owned()));
    }
    if let Some(c) = inp.original_command {
        env.push(("SSH_ORIGINAL_COMMAND".to_owned(), c.to_owned()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn user() -> User {
        User {
            uid: 1000,
            name: "jovyan".into(),
            home: PathBuf::from("/home/jovyan"),
            shell: PathBuf::from("/bin/bash"),
        }
    }

    #[test]
    fn env_filter() {
        assert!(env_allowed("LANG"));
        assert!(env_allowed("LC_ALL"));
        assert!(!env_allowed("LC_"));
        assert!(!env_allowed("PATH"));
        assert!(!env_allowed("LD_PRELOAD"));
        assert!(!env_allowed("TERM"));
    }

    #[test]
    fn forced_command_wins() {
        assert_eq!(
            resolve_program(Some("/bin/backup"), Some("rm -rf /")),
            (
                Program::Command("/bin/backup".into()),
                Some("rm -rf /".into())
            )
        );
        assert_eq!(
            resolve_program(Some("x"), None),
            (Program::Command("x".into()), None)
        );
        assert_eq!(
            resolve_program(None, Some("ls")),
            (Program::Command("ls".into()), None)
        );
        assert_eq!(resolve_program(None, None), (Program::LoginShell, None));
    }

    fn perms() -> Permissions {
        Permissions {
            pty: true,
            port_forwarding: true,
            agent_forwarding: true,
            x11_forwarding: false,
            command: None,
            permitopen: Vec::new(),
            fingerprint: "SHA256:x".into(),
            source: "f:1".into(),
        }
    }

    #[test]
    fn streamlocal_policy() {
        assert!(streamlocal_allowed(&perms()));
        let mut p = perms();
        p.port_forwarding = false;
        assert!(!streamlocal_allowed(&p));
        let mut p = perms();
        p.permitopen = vec![session_ssh_contract::keys::PermitOpen::parse("localhost:80").unwrap()];
        assert!(!streamlocal_allowed(&p));
        assert!(p.may_open("localhost", 80));
        assert!(!p.may_open("localhost", 81));
    }

    #[test]
    fn env_contents() {
        let conn = ConnInfo {
            peer: "10.0.0.5:50000".parse().unwrap(),
            local: "10.0.0.9:2222".parse().unwrap(),
        };
        let client_env = vec![
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("PATH".to_owned(), "/evil".to_owned()),
        ];
        let env = session_env(
            &user(),
            Some(&conn),
            &EnvInputs {
                term: Some("xterm"),
                tty: Some("/dev/pts/3"),
                client_env: &client_env,
                auth_sock: Some("/tmp/a/agent.1"),
                original_command: None,
            },
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("USER"), Some("jovyan"));
        assert_eq!(get("HOME"), Some("/home/jovyan"));
        assert_eq!(get("SSH_CONNECTION"), Some("10.0.0.5 50000 10.0.0.9 2222"));
        assert_eq!(get("SSH_CLIENT"), Some("10.0.0.5 50000 2222"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("PATH"), None);
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("SSH_TTY"), Some("/dev/pts/3"));
        assert_eq!(get("SSH_AUTH_SOCK"), Some("/tmp/a/agent.1"));
        assert_eq!(get("SSH_ORIGINAL_COMMAND"), None);
    }
}
