//! A real JupyterHub on 127.0.0.1 (PyPI `jupyterhub` in the tests' `.venv`, npm
//! `configurable-http-proxy` in `.venv/chp`, both installed by `scripts/setup.sh --tests`):
//! DummyAuthenticator, users created through the REST API with a service token, and
//! users' own API tokens requested with their password, as a person would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::reaper::{self, Proc};
use crate::{free_port, repo_root};

/// The password every user has (`DummyAuthenticator.password`).
pub const PASSWORD: &str = "hub-test-password";

/// A running hub and its proxy (one process group).
pub struct Hub {
    /// The hub's own REST API, as a cluster Service would expose it: `http://127.0.0.1:P/hub/api`.
    pub api_url: String,
    /// The public side of the proxy.
    pub public_url: String,
    /// The hub's directory (config, database, log).
    pub dir: PathBuf,
    admin_token: String,
    proc: Proc,
}

/// `jupyterhub` of the tests' venv.
pub fn jupyterhub_bin() -> PathBuf {
    repo_root().join(".venv/bin/jupyterhub")
}

/// `configurable-http-proxy` installed by setup.sh next to the venv.
pub fn chp_bin() -> PathBuf {
    repo_root().join(".venv/chp/node_modules/.bin/configurable-http-proxy")
}

impl Hub {
    /// Starts a hub in `work/hub`; `extra_config` is appended to its `jupyterhub_config.py`
    /// (a spawner, services).
    pub fn start(work: &Path, extra_config: &str) -> Result<Hub> {
        for bin in [jupyterhub_bin(), chp_bin()] {
            if !bin.exists() {
                bail!("{} missing: run scripts/setup.sh --tests", bin.display());
            }
        }
        let dir = work.join("hub");
        std::fs::create_dir_all(&dir)?;
        let (public, hub_port, proxy_api) = (free_port(0), free_port(0), free_port(0));
        let admin_token = random_hex();
        let d = dir.display();
        let config = format!(
            r#"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{PASSWORD}"
c.Authenticator.allow_all = True
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.JupyterHub.db_url = "sqlite:///{d}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{d}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{d}/jupyterhub.pid"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.services = [{{"name": "session-ssh-tests", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [{{"name": "session-ssh-tests", "services": ["session-ssh-tests"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "tokens", "list:users", "read:users"]}}]
{extra_config}
"#,
            chp = chp_bin().display(),
        );
        std::fs::write(dir.join("jupyterhub_config.py"), config)?;
        let log = dir.join("hub.log");
        let f = std::fs::File::create(&log)?;
        let mut cmd = Command::new(jupyterhub_bin());
        cmd.arg("-f")
            .arg(dir.join("jupyterhub_config.py"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        let proc = reaper::spawn(&mut cmd).context("spawn jupyterhub")?;
        let mut hub = Hub {
            api_url: format!("http://127.0.0.1:{hub_port}/hub/api"),
            public_url: format!("http://127.0.0.1:{public}"),
            dir,
            admin_token,
            proc,
        };
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = hub.api("GET", "/", None) {
                break;
            }
            if let Ok(Some(status)) = hub.proc.try_wait() {
                bail!("jupyterhub exited {status}:\n{}", hub.log_text());
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("jupyterhub not up after 90 s:\n{}", hub.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(hub)
    }

    /// The hub's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    /// A REST call with the tests' admin service token: (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        curl(&self.api_url, method, path, body, Some(&self.admin_token))
    }

    /// Creates hub users.
    pub fn create_users(&self, names: &[&str]) -> Result<()> {
        let body = serde_json::json!({ "usernames": names }).to_string();
        match self.api("POST", "/users", Some(&body))? {
            (201, _) => Ok(()),
            other => bail!("create users {names:?}: {other:?}"),
        }
    }

    /// A new API token of `user`, requested by the user with their password (as the hub's
    /// token page would make one); `scopes` None: the token inherits the user's own rights.
    pub fn user_token(&self, user: &str, scopes: Option<&[&str]>) -> Result<String> {
        let mut body = serde_json::json!({
            "auth": { "username": user, "password": PASSWORD },
            "note": "ssh",
            "expires_in": 3600,
        });
        if let Some(s) = scopes {
            body["scopes"] = serde_json::json!(s);
        }
        let path = format!("/users/{user}/tokens");
        match curl(&self.api_url, "POST", &path, Some(&body.to_string()), None)? {
            (201 | 200, text) => {
                let v: serde_json::Value = serde_json::from_str(&text)?;
                v["token"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no token in {text}"))
            }
            other => bail!("token for {user}: {other:?}"),
        }
    }

    /// `GET /users/{user}` as JSON.
    pub fn user_model(&self, user: &str) -> Result<serde_json::Value> {
        match self.api("GET", &format!("/users/{user}"), None)? {
            (200, text) => Ok(serde_json::from_str(&text)?),
            other => bail!("user {user}: {other:?}"),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // SIGTERM first: the hub then stops its proxy, its managed services and the servers
        // it spawned, which it started in sessions of their own (a group kill misses them).
        if let Ok(pid) = i32::try_from(self.proc.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let end = Instant::now() + Duration::from_secs(15);
        while matches!(self.proc.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.proc.kill_group();
        let _ = self.proc.wait();
    }
}

/// One HTTP call with curl: (status, body).
fn curl(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: token {t}"));
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(format!("{base}{path}")).output()?;
    if !out.status.success() {
        bail!(
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse()?, body.to_owned()))
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    // Test tokens only need to be unguessable by other local users for the test's life.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
