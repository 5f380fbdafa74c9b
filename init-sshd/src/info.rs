//! The information file: how to connect to this session, where the user already is (issue
//! 14, item 3). `start` writes it into the home (and DIR/connect.txt); `init-sshd info`
//! prints it. Host, port and SSH user come from the webhook when admission knows them
//! (`--info-host`, `--info-port`, `--info-user`); otherwise the file shows the
//! `kubectl port-forward` way. Writing it never fails the start.

use std::path::{Path, PathBuf};

use clap::Args;
use session_ssh_contract::argv::flag;
use session_ssh_contract::names::file;

/// DIR's copy, which `init-sshd info` prints.
pub const DIR_COPY: &str = "connect.txt";
/// Default name in the home.
pub const DEFAULT_FILE: &str = "ssh-connect.txt";

/// Errors of writing or reading the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host key: {0}")]
    HostKey(std::io::Error),
    #[error(transparent)]
    Write(#[from] crate::hostkey::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `start`'s flags for the information file.
#[derive(Debug, Clone, Default, Args)]
pub struct InfoArgs {
    /// Host name users connect to (the webhook passes it when it knows it).
    #[arg(long = flag::INFO_HOST, env = "INIT_SSHD_INFO_HOST")]
    pub info_host: Option<String>,
    /// Port users connect to (default: 22 with --info-host, else the listen port).
    #[arg(long = flag::INFO_PORT, env = "INIT_SSHD_INFO_PORT")]
    pub info_port: Option<u16>,
    /// SSH user name to connect as (default: the session user's name).
    #[arg(long = flag::INFO_USER, env = "INIT_SSHD_INFO_USER")]
    pub info_user: Option<String>,
    /// Host key line users should trust, when it is not this server's (the SSH gateway's).
    #[arg(long = flag::INFO_HOST_KEY, env = "INIT_SSHD_INFO_HOST_KEY")]
    pub info_host_key: Option<String>,
    /// File name in the home, or `off` for none.
    #[arg(long = flag::INFO_FILE, env = "INIT_SSHD_INFO_FILE", default_value = DEFAULT_FILE)]
    pub info_file: String,
}

/// Where users reach the server, as the file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// None: only through `kubectl port-forward` (then 127.0.0.1).
    pub host: Option<String>,
    pub port: u16,
    pub user: String,
}

/// The file's text for `target` and the host's public key line (`type base64 ...`).
pub fn render(t: &Target, host_key: &str, home: &Path) -> String {
    let host = t.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
    let alias = t
        .host
        .as_deref()
        .and_then(|h| h.split('.').next())
        .filter(|a| !a.is_empty())
        .unwrap_or("mysession");
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    // Through TLS on 443, with or without `Port 443` in the user's config: both names.
    let known = if t.port == 22 {
        format!("{host} {}", key.join(" "))
    } else if t.port == 443 {
        format!("{host},[{host}]:443 {}", key.join(" "))
    } else {
        format!("[{host}]:{} {}", t.port, key.join(" "))
    };
    let tls = t.port == 443;
    let proxy = "    ProxyCommand openssl s_client -quiet -connect %h:443 -servername %h\n";
    let mut s = String::from(
        "# SSH into this session (written by session-ssh; `init-sshd info` prints it)\n\n",
    );
    if t.host.is_none() {
        s.push_str("First, on your computer: kubectl port-forward pod/<this pod> 2222:2222\n\n");
    }
    s.push_str("Connect:\n");
    if tls {
        s.push_str(&format!(
            "    ssh -o 'ProxyCommand=openssl s_client -quiet -connect %h:443 -servername %h' {}@{host}\n\n",
            t.user
        ));
    } else {
        s.push_str(&format!("    ssh -p {} {}@{host}\n\n", t.port, t.user));
    }
    s.push_str("~/.ssh/config on your computer (VS Code Remote-SSH: \"Connect to Host\" -> ");
    s.push_str(&format!(
        "{alias}):\n    Host {alias}\n        HostName {host}\n        Port {}\n        User {}\n",
        t.port, t.user
    ));
    if tls {
        s.push_str(&format!("    {proxy}"));
    }
    s.push_str(&format!(
        "\nknown_hosts line (append to ~/.ssh/known_hosts on your computer):\n    {known}\n\n"
    ));
    s.push_str(&format!(
        "Your public key: add it to {}/.ssh/authorized_keys in this session (one line per key);\n\
         it works within 20 seconds, no restart.\n",
        home.display()
    ));
    s
}

/// Write DIR/connect.txt and, unless turned off, the file in the home; logged, never fatal.
pub fn write_logged(dir: &Path, args: &InfoArgs, listen_port: u16, home: &Path, name: &str) {
    if let Err(e) = write(dir, args, listen_port, home, name) {
        tracing::warn!(error = %e, "connection information file not written");
    }
}

fn write(dir: &Path, args: &InfoArgs, listen_port: u16, home: &Path, name: &str) -> Result<()> {
    let host_key = match &args.info_host_key {
        Some(line) => line.clone(),
        None => std::fs::read_to_string(dir.join(format!("{}.pub", file::HOST_KEY)))
            .map_err(Error::HostKey)?,
    };
    let target = Target {
        host: args.info_host.clone(),
        port: args.info_port.unwrap_or(if args.info_host.is_some() {
            22
        } else {
            listen_port
        }),
        user: args.info_user.clone().unwrap_or_else(|| name.to_owned()),
    };
    let text = render(&target, &host_key, home);
    crate::hostkey::write_atomic(&dir.join(DIR_COPY), text.as_bytes(), 0o644)?;
    if args.info_file != "off" && !args.info_file.contains('/') {
        let path = home.join(&args.info_file);
        crate::hostkey::write_atomic(&path, text.as_bytes(), 0o644)?;
        tracing::info!(path = %path.display(), "connection information written");
    }
    Ok(())
}

/// `init-sshd info`: print DIR/connect.txt; exit status 1 when there is none.
pub fn print(dir: &Path) -> i32 {
    let path = dir.join(DIR_COPY);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            print!("{t}");
            0
        }
        Err(source) => {
            eprintln!("{}", Error::Io { path, source });
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_form_without_a_host_and_tls_form_on_443() {
        let key = "ssh-ed25519 AAAAC3Nz host";
        let home = Path::new("/home/jovyan");
        let mut t = Target {
            host: None,
            port: 2222,
            user: "jovyan".into(),
        };
        let s = render(&t, key, home);
        assert!(s.contains("kubectl port-forward"));
        assert!(s.contains("    ssh -p 2222 jovyan@127.0.0.1\n"));
        assert!(s.contains("[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nz\n"));
        t.host = Some("alice.ssh.example.org".into());
        t.port = 443;
        let s = render(&t, key, home);
        assert!(!s.contains("port-forward"));
        assert!(s.contains("-servername %h' jovyan@alice.ssh.example.org\n"));
        assert!(s.contains("Host alice\n"));
        assert!(s.contains("    alice.ssh.example.org,[alice.ssh.example.org]:443 ssh-ed25519"));
    }

    #[test]
    fn the_gateway_host_key_replaces_the_sessions_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(format!("{}.pub", file::HOST_KEY)),
            "ssh-ed25519 SESSIONKEY x\n",
        )
        .unwrap();
        let args = InfoArgs {
            info_host: Some("ssh.hub.example.org".into()),
            info_port: Some(22),
            info_user: Some("alice@x.org".into()),
            info_host_key: Some("ssh-ed25519 GATEWAYKEY gw".into()),
            info_file: "off".into(),
        };
        write(dir.path(), &args, 2222, Path::new("/home/jovyan"), "jovyan").unwrap();
        let s = std::fs::read_to_string(dir.path().join(DIR_COPY)).unwrap();
        assert!(
            s.contains("    ssh -p 22 alice@x.org@ssh.hub.example.org\n"),
            "{s}"
        );
        assert!(
            s.contains("    ssh.hub.example.org ssh-ed25519 GATEWAYKEY\n"),
            "{s}"
        );
        assert!(!s.contains("SESSIONKEY"));
    }
}
