//! An injected pod brought up end to end in the pod sandbox: a user key stored
//! in the Secret volumes the injection added, the install init container, the
//! session container with its postStart hook, and an OpenSSH client ready to
//! log in. Shared by the demo and the run-the-pod tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;

use crate::free_port;
use crate::podrun::{Identity, ImageUser, PodSandbox, SandboxOpts, Secrets};

/// Variables a docker-stacks style entrypoint exports before exec'ing the server.
pub const ENTRYPOINT_VAR: (&str, &str) = ("SESSION_ENTRYPOINT_VAR", "exported-by-entrypoint");

/// A running, injected session and how to reach it.
#[derive(Debug)]
pub struct InjectedSession {
    pub sandbox: PodSandbox,
    pub container: String,
    pub identity: Identity,
    pub port: u16,
    /// SSH inside TLS (what an SNI ingress routes to).
    pub tls_port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// The pod's `session-ssh` volume on this host.
    pub dir: PathBuf,
    pub install: Output,
    pub post_start: Output,
    pub secrets: Vec<String>,
}

impl InjectedSession {
    /// Brings `mutated` up; `original` tells which Secret volumes the injection
    /// added (they get the generated user key). `work` must exist and be empty.
    /// The server listens on 127.0.0.1:`preferred_port` when free (0: any port).
    pub fn launch(
        original: &Pod,
        mutated: Pod,
        init_sshd_bin: &Path,
        work: &Path,
        mut secrets: Secrets,
        preferred_port: u16,
    ) -> Result<Self> {
        let key = work.join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "session-ssh-user",
                "-f",
            ])
            .arg(&key)
            .output()?;
        if !out.status.success() {
            bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let pubkey = fs::read(key.with_extension("pub"))?;
        let added = added_secret_volumes(original, &mutated);
        for name in &added {
            secrets.entry(name.clone()).or_insert_with(|| {
                BTreeMap::from([("authorized_keys".to_owned(), pubkey.clone())])
            });
        }
        let container =
            session_container(&mutated).context("no container got the postStart hook")?;
        let port = free_port(preferred_port);
        let tls_port = free_port(0);
        let opts = SandboxOpts {
            init_sshd_bin: init_sshd_bin.to_path_buf(),
            secrets,
            // The host's network namespace: both listeners stay on loopback.
            session_env: vec![
                ("INIT_SSHD_LISTEN".into(), format!("127.0.0.1:{port}")),
                (
                    "INIT_SSHD_TLS_LISTEN".into(),
                    format!("127.0.0.1:{tls_port}"),
                ),
            ],
            entrypoint_env: vec![(ENTRYPOINT_VAR.0.into(), ENTRYPOINT_VAR.1.into())],
            image_user: Some(ImageUser::jovyan()),
        };
        let spec = mutated.spec.clone().context("pod has no spec")?;
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == container)
            .context("session container")?;
        let mut sandbox = PodSandbox::new(mutated, opts)?;
        let identity = sandbox.identity(c);
        let install = sandbox.run_install()?;
        let dir = sandbox
            .volume_dir("session-ssh")
            .context("the pod has no session-ssh volume")?
            .to_path_buf();
        sandbox.start_session(&container)?;
        let post_start = sandbox.run_post_start(&container)?;
        let hostpub =
            fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).with_context(|| {
                format!(
                    "no host key after install\ninstall: {}\npostStart: {}",
                    String::from_utf8_lossy(&install.stderr),
                    String::from_utf8_lossy(&post_start.stderr)
                )
            })?;
        let hostkey: Vec<&str> = hostpub.split_whitespace().take(2).collect();
        let known_hosts = work.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", hostkey.join(" ")),
        )?;
        Ok(Self {
            sandbox,
            container,
            identity,
            port,
            tls_port,
            key,
            known_hosts,
            dir,
            install,
            post_start,
            secrets: added,
        })
    }

    /// OpenSSH client options that trust only this session's host key.
    pub fn ssh_opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "IdentityAgent=none".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    /// Client options that reach the session through its TLS port, as an SNI
    /// ingress would route it, with the ProxyCommand the README documents.
    pub fn ssh_tls_opts(&self) -> Vec<String> {
        let mut opts = self.ssh_opts();
        opts.extend([
            "-o".into(),
            format!(
                "ProxyCommand=openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect 127.0.0.1:{} \
                 -servername %h",
                self.tls_port
            ),
            "-o".into(),
            format!("HostKeyAlias=[127.0.0.1]:{}", self.port),
        ]);
        opts
    }

    /// Runs `cmd` in the session with the real `ssh`.
    pub fn ssh(&self, cmd: &str) -> Result<Output> {
        Ok(Command::new("ssh")
            .args(self.ssh_opts())
            .arg("jovyan@127.0.0.1")
            .arg(cmd)
            .output()?)
    }
}

/// Secret volumes the injection added: the key sources a test fills in.
pub fn added_secret_volumes(before: &Pod, after: &Pod) -> Vec<String> {
    let names = |p: &Pod| -> Vec<String> {
        p.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .map(|v| {
                v.iter()
                    // The host-key Secret is the webhook's own, not a key source: left
                    // out, it is an empty optional volume, as for a first session.
                    .filter(|v| v.name != "session-ssh-host-key")
                    .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = names(before);
    names(after)
        .into_iter()
        .filter(|n| !old.contains(n))
        .collect()
}

/// The container whose postStart hook runs init-sshd.
pub fn session_container(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.containers.iter().find_map(|c| {
        let cmd = c
            .lifecycle
            .as_ref()?
            .post_start
            .as_ref()?
            .exec
            .as_ref()?
            .command
            .as_ref()?;
        cmd.iter()
            .any(|a| Path::new(a).ends_with("init-sshd"))
            .then(|| c.name.clone())
    })
}
