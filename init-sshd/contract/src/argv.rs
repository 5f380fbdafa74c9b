//! The command lines the webhook writes into the pod spec and init-sshd parses: built here
//! by one function each, with the flag names init-sshd's parser is declared with.

use crate::names;

/// Subcommand of the init container.
pub const INSTALL: &str = "install";
/// Subcommand of the postStart hook.
pub const START: &str = "start";
/// Subcommand of the server that `start` launches.
pub const SERVE: &str = "serve";
/// What separates `start`'s own flags from the chained original hook.
pub const HOOK_SEPARATOR: &str = "--";

/// Long flag names (without `--`).
pub mod flag {
    /// The shared directory (install, start, serve).
    pub const DIR: &str = "dir";
    /// An authorized_keys file or glob (install, repeatable).
    pub const KEYS: &str = "keys";
    /// A directory of key files, e.g. a mounted Secret (install, repeatable).
    pub const KEYS_DIR: &str = "keys-dir";
    /// Where the host-key Secret is mounted (install).
    pub const HOST_KEY_DIR: &str = "host-key-dir";
    /// The UID the session runs as, when the pod states it (install).
    pub const SESSION_UID: &str = "session-uid";
    /// Plain SSH listen address (start, serve).
    pub const LISTEN: &str = "listen";
    /// SSH-inside-TLS listen address, or `off` (start, serve).
    pub const TLS_LISTEN: &str = "tls-listen";
    /// The host certificate file (serve).
    pub const HOST_CERT: &str = "host-cert";
    /// serve's size-capped log file (start passes it).
    pub const LOG_FILE: &str = "log-file";
    /// The cap of that log (start passes it).
    pub const LOG_MAX_BYTES: &str = "log-max-bytes";
    /// The host name users connect to, when admission knows it (start: the information file).
    pub const INFO_HOST: &str = "info-host";
    /// The port users connect to (start: the information file).
    pub const INFO_PORT: &str = "info-port";
    /// The SSH user name users connect as, e.g. through the gateway (start).
    pub const INFO_USER: &str = "info-user";
    /// The public host key line users should trust, when it is not this server's own (the
    /// SSH gateway's; start: the information file).
    pub const INFO_HOST_KEY: &str = "info-host-key";
    /// The information file's name in the home, or `off` (start).
    pub const INFO_FILE: &str = "info-file";
    /// The SSH gateway's user CA public key (start, serve).
    pub const GATEWAY_CA: &str = "gateway-ca";
    /// The principal gateway certificates must name: the session id (start, serve).
    pub const GATEWAY_PRINCIPAL: &str = "gateway-principal";
    /// The one hub user whose hub-token logins through the gateway this session accepts
    /// (start, serve; unset: none).
    pub const GATEWAY_HUB_USER: &str = "gateway-hub-user";
    /// `NAME=VALUE`: a setting `start` hands to serve as `--NAME VALUE` (start; NAME from
    /// [`super::SERVE_SETTINGS`]).
    pub const SERVE_ARG: &str = "serve-arg";
    /// Where serve also writes its login audit lines: the container log, through the main
    /// process's stdout (start, serve).
    pub const AUDIT_LOG: &str = "audit-log";
    /// Prometheus metrics listen address, or `off` (start, serve).
    pub const METRICS_LISTEN: &str = "metrics-listen";
}

/// The session container's log as serve can reach it: PID 1's stdout.
pub const CONTAINER_LOG: &str = "/proc/1/fd/1";

/// The serve settings the webhook's config may set (numbers of seconds, counts, bytes),
/// each passed by `start` to serve as the flag of the same name.
pub const SERVE_SETTINGS: &[&str] = &[
    "detached-keep-secs",
    "detached-max",
    "detached-buffer-bytes",
    "idle-timeout-secs",
    "keepalive-secs",
    "keepalive-count",
    "max-connections",
    "max-startups",
    "login-grace-secs",
    "version-timeout-secs",
    "keys-refresh-secs",
    "activity-interval-secs",
];

/// `--NAME` of a flag name.
pub fn long(flag: &str) -> String {
    format!("--{flag}")
}

/// `init-sshd install ...` as the init container runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// The binary in the init container's image.
    pub binary: String,
    /// The shared directory.
    pub dir: String,
    /// The session's UID when the pod spec states it (root included).
    pub session_uid: Option<i64>,
    /// Where the host-key Secret is mounted, when the pod has one.
    pub host_key_dir: Option<String>,
    /// Key files and globs, as the session container sees them.
    pub keys: Vec<String>,
    /// Directories of key files.
    pub keys_dirs: Vec<String>,
}

impl Install {
    /// The argv, in a fixed order (golden files depend on it).
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![self.binary.clone(), INSTALL.to_owned()];
        push(&mut v, flag::DIR, &self.dir);
        if let Some(uid) = self.session_uid {
            push(&mut v, flag::SESSION_UID, &uid.to_string());
        }
        if let Some(d) = &self.host_key_dir {
            push(&mut v, flag::HOST_KEY_DIR, d);
        }
        for f in &self.keys {
            push(&mut v, flag::KEYS, f);
        }
        for d in &self.keys_dirs {
            push(&mut v, flag::KEYS_DIR, d);
        }
        v
    }
}

/// `DIR/bin/init-sshd start ...` as the postStart hook runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// The shared directory (the binary is `DIR/bin/init-sshd`).
    pub dir: String,
    /// Plain SSH listen address when not the default `0.0.0.0:2222`.
    pub listen: Option<String>,
    /// SSH inside TLS: `0.0.0.0:PORT`, `off`, or None for the default port.
    pub tls_listen: Option<String>,
    /// What users connect to, for the information file (`init-sshd info`).
    pub info: Info,
    /// The gateway's user CA line and this session's principal, when a gateway is set up.
    pub gateway: Option<(String, String)>,
    /// With a gateway: the hub user whose hub-token logins this session accepts.
    pub gateway_hub_user: Option<String>,
    /// Where login audit lines also go ([`CONTAINER_LOG`]).
    pub audit_log: Option<String>,
    /// Metrics: `0.0.0.0:PORT`, `off`, or None for serve's default.
    pub metrics_listen: Option<String>,
    /// Serve settings (a name of [`SERVE_SETTINGS`], its value) from the webhook's config.
    pub serve: Vec<(&'static str, u64)>,
    /// The container's own exec hook, run after the server is up.
    pub original_hook: Vec<String>,
}

/// What `start` writes into the information file that the session cannot know itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// The host key line to trust (None: the session's own).
    pub host_key: Option<String>,
    /// The file's name in the home; `off` writes none (None: init-sshd's default).
    pub file: Option<String>,
}

impl Start {
    /// The argv, in a fixed order (golden files depend on it).
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![names::bin_in(&self.dir), START.to_owned()];
        push(&mut v, flag::DIR, &self.dir);
        if let Some(l) = &self.listen {
            push(&mut v, flag::LISTEN, l);
        }
        if let Some(t) = &self.tls_listen {
            push(&mut v, flag::TLS_LISTEN, t);
        }
        if let Some((ca, principal)) = &self.gateway {
            push(&mut v, flag::GATEWAY_CA, ca);
            push(&mut v, flag::GATEWAY_PRINCIPAL, principal);
            if let Some(u) = &self.gateway_hub_user {
                push(&mut v, flag::GATEWAY_HUB_USER, u);
            }
        }
        let info = &self.info;
        let port = info.port.map(|p| p.to_string());
        for (f, val) in [
            (flag::INFO_HOST, &info.host),
            (flag::INFO_PORT, &port),
            (flag::INFO_USER, &info.user),
            (flag::INFO_HOST_KEY, &info.host_key),
            (flag::INFO_FILE, &info.file),
        ] {
            if let Some(val) = val {
                push(&mut v, f, val);
            }
        }
        if let Some(a) = &self.audit_log {
            push(&mut v, flag::AUDIT_LOG, a);
        }
        if let Some(m) = &self.metrics_listen {
            push(&mut v, flag::METRICS_LISTEN, m);
        }
        for (name, value) in &self.serve {
            push(&mut v, flag::SERVE_ARG, &format!("{name}={value}"));
        }
        if !self.original_hook.is_empty() {
            v.push(HOOK_SEPARATOR.to_owned());
            v.extend(self.original_hook.iter().cloned());
        }
        v
    }
}

/// `0.0.0.0:PORT`, or None for the default port (the argv then leaves the flag out).
pub fn listen_all(port: u16) -> Option<String> {
    (port != names::DEFAULT_SSH_PORT).then(|| format!("0.0.0.0:{port}"))
}

/// The metrics listener for `ports.metrics`: `0.0.0.0:PORT`, or `none` for none (not `off`:
/// `inject` writes YAML, and YAML 1.1 readers such as kubectl's read a bare `off` as
/// `false`). Always explicit, so a session's port is the webhook's choice whatever serve's
/// default.
pub fn metrics_listen_all(port: Option<u16>) -> String {
    port.map_or_else(|| "none".to_owned(), |p| format!("0.0.0.0:{p}"))
}

/// The TLS listener for `ports.sshTls`: `off` for none, None for the default port.
pub fn tls_listen_all(port: Option<u16>) -> Option<String> {
    match port {
        None => Some("off".to_owned()),
        Some(p) if p == names::DEFAULT_SSH_TLS_PORT => None,
        Some(p) => Some(format!("0.0.0.0:{p}")),
    }
}

fn push(v: &mut Vec<String>, flag: &str, value: &str) {
    v.push(long(flag));
    v.push(value.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_order_is_fixed() {
        let a = Install {
            binary: "/init-sshd".into(),
            dir: "/opt/session-ssh".into(),
            session_uid: Some(1000),
            host_key_dir: Some(names::HOST_KEY_MOUNT.into()),
            keys: vec!["/home/a/*/.ssh/authorized_keys".into()],
            keys_dirs: vec!["/k".into()],
        };
        assert_eq!(
            a.argv(),
            [
                "/init-sshd",
                "install",
                "--dir",
                "/opt/session-ssh",
                "--session-uid",
                "1000",
                "--host-key-dir",
                "/session-ssh-host-key",
                "--keys",
                "/home/a/*/.ssh/authorized_keys",
                "--keys-dir",
                "/k"
            ]
        );
    }

    #[test]
    fn start_chains_the_original_hook() {
        let s = Start {
            dir: "/opt/session-ssh".into(),
            listen: listen_all(2022),
            tls_listen: tls_listen_all(Some(2022 + 1)),
            info: Info::default(),
            gateway: Some(("ssh-ed25519 AAAA gw".into(), "0123abcd".into())),
            gateway_hub_user: Some("alice@x.org".into()),
            audit_log: None,
            metrics_listen: Some(metrics_listen_all(Some(9122))),
            serve: vec![("detached-keep-secs", 600)],
            original_hook: vec!["sh".into(), "-c".into(), "echo hi".into()],
        };
        assert_eq!(
            s.argv(),
            [
                "/opt/session-ssh/bin/init-sshd",
                "start",
                "--dir",
                "/opt/session-ssh",
                "--listen",
                "0.0.0.0:2022",
                "--tls-listen",
                "0.0.0.0:2023",
                "--gateway-ca",
                "ssh-ed25519 AAAA gw",
                "--gateway-principal",
                "0123abcd",
                "--gateway-hub-user",
                "alice@x.org",
                "--metrics-listen",
                "0.0.0.0:9122",
                "--serve-arg",
                "detached-keep-secs=600",
                "--",
                "sh",
                "-c",
                "echo hi"
            ]
        );
        assert_eq!(listen_all(2222), None);
        assert_eq!(tls_listen_all(Some(names::DEFAULT_SSH_TLS_PORT)), None);
        assert_eq!(tls_listen_all(None).as_deref(), Some("off"));
        assert_eq!(metrics_listen_all(None), "none");
    }
}
