//! Harness for the init-sshd end-to-end tests: every test gets its own temp dir, a "container"
//! (bubblewrap: own PID + mount namespace, PID 1 = entrypoint, non-root uid), runs the REAL
//! `init-sshd install` and `init-sshd start` inside it, and connects with the real OpenSSH
//! client, checking the host key against `DIR/ssh_host_ed25519_key.pub`.
//!
//! Binary: `INIT_SSHD_BIN`, else the musl release build, else `target/release`, else
//! `target/debug` (the choice is printed).

// This module is test-only support code: a panic with a message IS the test failure report,
// so expect() is the honest error path here (as in the tests themselves).
#![allow(clippy::expect_used)]

pub mod container;
pub mod net;
pub mod procs;
pub mod run;
pub mod secretdir;
pub mod term;

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use self::container::{Container, Fs, set_mode};
use self::run::{Out, show};
use crate::reaper::{self, Proc};

/// The SSH login name used by the tests (any name is accepted; the keys decide).
pub const USER: &str = "jovyan";
/// Default uid/gid of the "session image" user (Jupyter's jovyan:users).
pub const UID: u32 = 1000;
pub const GID: u32 = 100;
/// Default time limit for one client command.
pub const T: Duration = Duration::from_secs(60);

/// Root of the cargo workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The init-sshd binary under test (see module docs); panics with a build hint if missing.
pub fn init_sshd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let chosen = match std::env::var_os("INIT_SSHD_BIN") {
            Some(p) => {
                let p = PathBuf::from(p);
                if p.is_absolute() { p } else { root.join(p) }
            }
            None => [
                "target/x86_64-unknown-linux-musl/release/init-sshd",
                "target/release/init-sshd",
                "target/debug/init-sshd",
            ]
            .iter()
            .map(|r| root.join(r))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no init-sshd binary: build it with `cargo build -p init-sshd --release \
                     --target x86_64-unknown-linux-musl` or set INIT_SSHD_BIN"
                )
            }),
        };
        assert!(
            chosen.is_file(),
            "INIT_SSHD_BIN={} is not a file",
            chosen.display()
        );
        eprintln!("init-sshd under test: {}", chosen.display());
        chosen
    })
    .clone()
}

/// Python for the interop tests: `SESSION_SSH_PYTHON`, default `.venv/bin/python` in the workspace.
pub fn python() -> PathBuf {
    match std::env::var_os("SESSION_SSH_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".venv/bin/python"),
    }
}

/// An ssh key pair on disk.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    /// The `.pub` line: "type base64 comment".
    pub public: String,
}

impl KeyPair {
    /// The base64 blob of the public key.
    pub fn blob(&self) -> &str {
        self.public.split_whitespace().nth(1).unwrap_or("")
    }
    /// SHA256 fingerprint as printed by `ssh-keygen -l` ("SHA256:...").
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.private.with_extension("pub"))
            .output()
            .expect("ssh-keygen -l");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    }
}

/// `ssh-keygen -t kind` into dir/name (no passphrase).
pub fn keygen(dir: &Path, name: &str, kind: &str) -> KeyPair {
    let private = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C"])
        .arg(format!("{name}@e2e"))
        .arg("-f")
        .arg(&private)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen (Debian openssh-client)");
    assert!(st.success(), "ssh-keygen -t {kind} failed");
    let public = fs::read_to_string(private.with_extension("pub"))
        .expect("read .pub")
        .trim()
        .to_string();
    KeyPair { private, public }
}

/// How the server is launched after install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `init-sshd start` (detaches serve), the pod's postStart path.
    Start,
    /// `init-sshd serve` in the foreground, for tests where start is not the point.
    Serve,
}

/// Configures one server; `start()` runs install + start and returns a connected-ready [`Sshd`].
pub struct Builder {
    tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub client: KeyPair,
    authorized: Option<String>,
    uid: u32,
    gid: u32,
    in_passwd: bool,
    image_env: Vec<(String, String)>,
    entry_exports: Vec<(String, String)>,
    profile: String,
    launch: Launch,
    rootfs: bool,
    keys_dir: bool,
    home_files: Vec<(String, String)>,
}

/// An /etc/profile that resets PATH the way Debian's does and leaves a marker, so a test can
/// prove a login shell really read it.
pub const RESETTING_PROFILE: &str = "# e2e /etc/profile: resets PATH like Debian's\n\
PATH=\"/usr/local/bin:/usr/bin:/bin:/usr/games\"\nexport PATH\n\
E2E_ETC_PROFILE_READ=yes\nexport E2E_ETC_PROFILE_READ\n";

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        let tmp = tempfile::Builder::new()
            .prefix("sshd-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        set_mode(&root, 0o755);
        let cdir = root.join("client");
        fs::create_dir(&cdir).expect("mkdir client");
        set_mode(&cdir, 0o700);
        let client = keygen(&cdir, "id_ed25519", "ed25519");
        Builder {
            tmp,
            root,
            client,
            authorized: None,
            uid: UID,
            gid: GID,
            in_passwd: true,
            image_env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), format!("/home/{USER}")),
                // The SNI/TLS listener (issue 6) defaults to 0.0.0.0:2443; tests stay on
                // loopback and run in parallel, so it is off (serve reads it from the env
                // that `start` passes on).
                ("INIT_SSHD_TLS_LISTEN".into(), "off".into()),
                // Likewise the metrics endpoint (default 0.0.0.0:9122); the metrics test
                // sets a loopback port of its own.
                ("INIT_SSHD_METRICS_LISTEN".into(), "off".into()),
            ],
            entry_exports: Vec::new(),
            profile: RESETTING_PROFILE.into(),
            launch: Launch::Start,
            rootfs: false,
            keys_dir: false,
            home_files: Vec::new(),
        }
    }

    /// A further client key pair (in the client dir).
    pub fn keygen(&self, name: &str, kind: &str) -> KeyPair {
        keygen(&self.root.join("client"), name, kind)
    }

    /// The authorized_keys source file content (default: the client key's line).
    pub fn authorized_keys(mut self, text: &str) -> Self {
        self.authorized = Some(text.to_string());
        self
    }

    /// Run as uid:gid; `in_passwd` false leaves the uid without any /etc/passwd entry.
    pub fn uid(mut self, uid: u32, gid: u32, in_passwd: bool) -> Self {
        self.uid = uid;
        self.gid = gid;
        self.in_passwd = in_passwd;
        self
    }

    /// Set (or replace) a variable of the image environment (what `start` itself sees).
    pub fn image_env(mut self, k: &str, v: &str) -> Self {
        self.image_env.retain(|(kk, _)| kk != k);
        self.image_env.push((k.into(), v.into()));
        self
    }

    /// Drop a variable from the image environment.
    pub fn unset_image_env(mut self, k: &str) -> Self {
        self.image_env.retain(|(kk, _)| kk != k);
        self
    }

    /// A variable that only the entrypoint (PID 1) exports before exec'ing its main process.
    pub fn entry_export(mut self, k: &str, v: &str) -> Self {
        self.entry_exports.push((k.into(), v.into()));
        self
    }

    /// A file in the user's home before start (path relative to HOME).
    pub fn home_file(mut self, rel: &str, content: &str) -> Self {
        self.home_files.push((rel.into(), content.into()));
        self
    }

    /// Launch `serve` in the foreground instead of `start`.
    pub fn serve_foreground(mut self) -> Self {
        self.launch = Launch::Serve;
        self
    }

    /// Also pass `install --keys-dir ROOT/keys-secret`, a directory laid out like a mounted
    /// Secret (see [`secretdir`]), empty at start.
    pub fn keys_dir(mut self) -> Self {
        self.keys_dir = true;
        self
    }

    /// Use a root filesystem holding only busybox and the binary.
    pub fn busybox_rootfs(mut self) -> Self {
        self.rootfs = true;
        self
    }

    /// Install, start, and wait until the server accepts.
    pub fn start(self) -> Sshd {
        let bin = init_sshd_bin();
        let root = self.root.clone();
        let uid = self.uid;
        let gid = self.gid;
        let home_in = format!("/home/{USER}");
        let (fs_spec, dir, dir_in, home, keys_src, keys_in, bin_in) = if self.rootfs {
            let rootfs = root.join("rootfs");
            container::busybox_rootfs(&rootfs, &bin);
            let dir = rootfs.join("opt/session-ssh");
            let keys = rootfs.join("keys/authorized_keys");
            (
                Fs::Rootfs(rootfs.clone()),
                dir,
                "/opt/session-ssh".to_string(),
                rootfs.join("tmp"),
                keys,
                "/keys/authorized_keys".to_string(),
                "/bin/init-sshd".to_string(),
            )
        } else {
            let etc = root.join("etc");
            fs::create_dir(&etc).expect("mkdir etc");
            let mut passwd = String::from("root:x:0:0:root:/root:/bin/bash\n");
            passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
            if self.in_passwd {
                passwd.push_str(&format!(
                    "{USER}:x:{uid}:{gid}:Jovyan:{home_in}:/bin/bash\n"
                ));
            }
            fs::write(etc.join("passwd"), passwd).expect("write passwd");
            fs::write(etc.join("profile"), &self.profile).expect("write profile");
            let home = root.join("home");
            fs::create_dir(&home).expect("mkdir home");
            let dir = root.join("dir");
            let keys = root.join("keys-src/authorized_keys");
            fs::create_dir_all(keys.parent().expect("parent")).expect("mkdir keys-src");
            (
                Fs::Host {
                    passwd: etc.join("passwd"),
                    profile: etc.join("profile"),
                    home: home.clone(),
                    home_in: home_in.clone(),
                },
                dir.clone(),
                dir.display().to_string(),
                home,
                keys.clone(),
                keys.display().to_string(),
                bin.display().to_string(),
            )
        };
        fs::create_dir_all(&dir).expect("mkdir DIR");
        chown(&dir, Some(uid), Some(gid)).expect("chown DIR");
        chown(&home, Some(uid), Some(gid)).expect("chown HOME");
        for (rel, content) in &self.home_files {
            let p = home.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("mkdir in home");
                chown(parent, Some(uid), Some(gid)).expect("chown");
            }
            fs::write(&p, content).expect("write home file");
            chown(&p, Some(uid), Some(gid)).expect("chown");
        }
        let authorized = self
            .authorized
            .clone()
            .unwrap_or_else(|| format!("{}\n", self.client.public));
        fs::write(&keys_src, authorized).expect("write authorized_keys source");

        let keys_dir = (self.keys_dir && !self.rootfs).then(|| {
            let d = root.join("keys-secret");
            secretdir::update(&d, &[]);
            d.display().to_string()
        });
        let ct = Container::spawn(
            &fs_spec,
            uid,
            gid,
            &self.image_env,
            &self.entry_exports,
            &root.join("container.log"),
        );

        let install = run::run(
            &mut ct.exec(
                &self.image_env,
                &install_argv(&bin_in, &dir_in, &keys_in, keys_dir.as_deref()),
            ),
            b"",
            T,
        );
        assert!(
            install.success(),
            "init-sshd install must exit 0:\n{}",
            install.describe()
        );

        let port = net::free_port();
        let listen = format!("127.0.0.1:{port}");
        let served_bin = format!("{dir_in}/bin/init-sshd");
        let mut fg = None;
        let mut start_out = None;
        match self.launch {
            Launch::Start => {
                let out = run::run(
                    &mut ct.exec(
                        &self.image_env,
                        &[&served_bin, "start", "--dir", &dir_in, "--listen", &listen],
                    ),
                    b"",
                    T,
                );
                assert!(
                    out.success(),
                    "init-sshd start must exit 0:\n{}\n--- install ---\n{}\n--- log ---\n{}",
                    out.describe(),
                    install.describe(),
                    fs::read_to_string(dir.join("init-sshd.log")).unwrap_or_default()
                );
                start_out = Some(out);
            }
            Launch::Serve => {
                let log = fs::File::create(root.join("serve-foreground.log")).expect("log");
                let mut cmd = ct.exec(
                    &self.image_env,
                    &[&served_bin, "serve", "--dir", &dir_in, "--listen", &listen],
                );
                cmd.stdin(Stdio::null())
                    .stdout(log.try_clone().expect("dup"))
                    .stderr(log);
                let what = show(&cmd);
                fg = Some(reaper::spawn(&mut cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}")));
            }
        }
        let sshd = Sshd {
            container: Some(ct),
            fg,
            _tmp: self.tmp,
            root: root.clone(),
            dir,
            dir_in,
            home,
            home_in,
            port,
            client: self.client,
            known_hosts: root.join("client/known_hosts"),
            install_out: install,
            start_out,
        };
        if !net::wait_port(port, Duration::from_secs(10)) {
            panic!(
                "nothing accepts on {listen} 10 s after launch\n{}",
                sshd.logs()
            );
        }
        sshd.write_known_hosts();
        sshd
    }
}

fn install_argv<'a>(
    bin: &'a str,
    dir: &'a str,
    keys: &'a str,
    keys_dir: Option<&'a str>,
) -> Vec<&'a str> {
    let mut v = vec![bin, "install", "--dir", dir, "--keys", keys];
    if let Some(d) = keys_dir {
        v.extend(["--keys-dir", d]);
    }
    v
}

/// A running init-sshd in its container; dropping it kills every process of it.
pub struct Sshd {
    container: Option<Container>,
    fg: Option<Proc>,
    _tmp: tempfile::TempDir,
    /// Test temp root (client keys, data files).
    pub root: PathBuf,
    /// DIR as seen from the host, and as passed to init-sshd.
    pub dir: PathBuf,
    pub dir_in: String,
    /// The user's HOME as seen from the host, and inside the container.
    pub home: PathBuf,
    pub home_in: String,
    pub port: u16,
    pub client: KeyPair,
    pub known_hosts: PathBuf,
    pub install_out: Out,
    pub start_out: Option<Out>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Killing PID 1 tears down the whole PID namespace (serve and every session).
        self.container.take();
        if let Some(mut c) = self.fg.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Sshd {
    fn write_known_hosts(&self) {
        let pubfile = self.dir.join("ssh_host_ed25519_key.pub");
        let line = fs::read_to_string(&pubfile)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", pubfile.display(), self.logs()));
        let mut it = line.split_whitespace();
        let (Some(kind), Some(blob)) = (it.next(), it.next()) else {
            panic!("bad host public key line {line:?}");
        };
        assert_eq!(kind, "ssh-ed25519", "host key type");
        fs::write(
            &self.known_hosts,
            format!("[127.0.0.1]:{} {kind} {blob}\n", self.port),
        )
        .expect("write known_hosts");
    }

    /// The container (for exec and pid translation).
    pub fn container(&self) -> &Container {
        self.container.as_ref().expect("container alive")
    }

    /// Common OpenSSH options (no identity): strict host key check against our known_hosts.
    pub fn base_opts(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=15",
            "-o",
            &format!("Port={}", self.port),
            "-o",
            &format!("User={USER}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Options for the default client key with no agent.
    pub fn opts(&self) -> Vec<String> {
        self.opts_with_key(&self.client.private)
    }

    /// Options for a given identity file with no agent.
    pub fn opts_with_key(&self, key: &Path) -> Vec<String> {
        let mut v = self.base_opts();
        v.extend([
            "-o".to_string(),
            "IdentityAgent=none".to_string(),
            "-o".to_string(),
            format!("IdentityFile={}", key.display()),
        ]);
        v
    }

    /// The host argument.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `ssh` with the default options; append extra options, then `.arg(s.host())`, then the command.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.opts());
        c.env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ssh ... host cmd` with stdin bytes, bounded by `limit`.
    pub fn exec(&self, extra: &[&str], remote: &str, stdin: &[u8], limit: Duration) -> Out {
        let mut c = self.ssh();
        c.args(extra).arg(self.host());
        if !remote.is_empty() {
            c.arg(remote);
        }
        run::run(&mut c, stdin, limit)
    }

    /// `ssh host cmd` that must succeed; returns stdout.
    pub fn exec_ok(&self, remote: &str) -> String {
        let out = self.exec(&[], remote, b"", T);
        self.assert_ok(&out);
        out.stdout_str()
    }

    /// Panic with the command's output and the server log unless it exited 0.
    pub fn assert_ok(&self, out: &Out) {
        assert!(out.success(), "{}", self.diag(out));
    }

    /// Command output plus server logs, for assertion messages.
    pub fn diag(&self, out: &Out) -> String {
        format!("{}\n{}", out.describe(), self.logs())
    }

    /// Tail of the server's logs (DIR/init-sshd.log and the foreground log).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in [
            self.dir.join("init-sshd.log"),
            self.root.join("serve-foreground.log"),
        ] {
            if let Ok(t) = fs::read_to_string(&p) {
                let tail: Vec<&str> = t.lines().rev().take(60).collect();
                s.push_str(&format!(
                    "--- {} (last {} lines) ---\n",
                    p.display(),
                    tail.len()
                ));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// The whole of DIR/init-sshd.log (`logs` shows only its tail).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("init-sshd.log")).unwrap_or_default()
    }

    /// Wait until `n` lines of DIR/init-sshd.log contain `what` (a line may be written just
    /// after the client saw the connection end); false after `limit`.
    pub fn wait_log(&self, what: &str, n: usize, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        loop {
            if self.log_text().lines().filter(|l| l.contains(what)).count() >= n {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Host pid of the running serve (from DIR/serve.pid, or the foreground child).
    pub fn serve_pid(&self) -> u32 {
        let ct = self.container();
        if let Some(p) = self.fg.as_ref().and_then(|fg| {
            procs::descendants(fg.id())
                .into_iter()
                .find(|&p| procs::cmdline(p).contains(" serve "))
        }) {
            return p;
        }
        let ns_pid = procs::read_pid_file(&self.dir.join("serve.pid"))
            .unwrap_or_else(|| panic!("no readable DIR/serve.pid\n{}", self.logs()));
        ct.host_pid(ns_pid)
            .unwrap_or_else(|| panic!("serve.pid {ns_pid} is not a live process in the container"))
    }

    /// DIR/install-report.json.
    pub fn report(&self) -> serde_json::Value {
        let p = self.dir.join("install-report.json");
        let t = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}\n{t}", p.display()))
    }
}

/// A background child killed (and reaped) on drop, e.g. `ssh -N -L ...`.
pub struct Bg {
    pub child: Proc,
    pub what: String,
}

impl Bg {
    pub fn spawn(cmd: &mut Command) -> Bg {
        let what = show(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = reaper::spawn(cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Bg { child, what }
    }

    /// Stop it and return what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
