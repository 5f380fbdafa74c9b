//! Runs an injected pod "as far as this machine allows": the `session-ssh-install`
//! init container and the session container's postStart hook, exactly as the pod
//! spec states them (command, args, env, UID/GID, volume mounts at the same paths),
//! inside bubblewrap namespaces. There is no kubelet and no image here, so:
//! - the "image" is this host's /usr, /etc and friends, bound read-only;
//! - each volume is a directory under the sandbox root, bound at every mountPath
//!   (emptyDir 0777 like the kubelet makes it; PVC group-owned by fsGroup, setgid);
//! - Secret volumes are written from the data the caller passes (what the apiserver
//!   holds), missing optional Secrets become empty dirs, downward-API files are
//!   rendered from the pod's labels and annotations;
//! - the init container's image is the init-sshd binary, bound at `command[0]`;
//! - the session container is a PID namespace whose PID 1 is an "entrypoint" shell
//!   that exports its own variables and execs a long sleep, so `/proc/1/environ`
//!   differs from the hook's env as it does in a real container.
//!
//! The network namespace is the host's: tests pass `INIT_SSHD_LISTEN` through the
//! session container's env so the server binds a free 127.0.0.1 port instead of
//! the pod's 0.0.0.0:2222.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, PodSecurityContext, SecurityContext, Volume,
};

use crate::reaper::{self, Proc};

/// Name of the init container the webhook injects.
pub const INSTALL_CONTAINER: &str = "session-ssh-install";
/// `USER` of the init-sshd image (init-sshd/Containerfile), UID and GID.
pub const INIT_IMAGE_USER: u32 = 65532;

/// Secret name -> file name -> bytes, as the apiserver holds them.
pub type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// What the caller supplies that a kubelet would have taken from the cluster.
#[derive(Debug, Default, Clone)]
pub struct SandboxOpts {
    /// The init-sshd binary standing in for the init container's image.
    pub init_sshd_bin: PathBuf,
    /// Secrets the pod's secret volumes refer to.
    pub secrets: Secrets,
    /// Extra env for the session container (e.g. `INIT_SSHD_LISTEN`).
    pub session_env: Vec<(String, String)>,
    /// Variables the image entrypoint exports before it execs the main process.
    pub entrypoint_env: Vec<(String, String)>,
    /// The image's own user, as its /etc/passwd has it (docker-stacks: jovyan 1000:100).
    pub image_user: Option<ImageUser>,
}

/// A user entry of the session image's /etc/passwd.
#[derive(Debug, Clone)]
pub struct ImageUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl ImageUser {
    /// The user of the Jupyter docker-stacks images.
    pub fn jovyan() -> Self {
        Self {
            name: "jovyan".into(),
            uid: 1000,
            gid: 100,
            home: "/home/jovyan".into(),
            shell: "/bin/bash".into(),
        }
    }
}

/// A pod's volumes on disk plus the running session container, if started.
#[derive(Debug)]
pub struct PodSandbox {
    pod: Pod,
    opts: SandboxOpts,
    _root: tempfile::TempDir,
    volumes: BTreeMap<String, PathBuf>,
    /// The image's /etc/passwd, when it differs from the host's.
    passwd: Option<PathBuf>,
    session: Option<Proc>,
    /// Host pid of the session container's PID 1, once it runs.
    pid1: Option<u32>,
}

/// Effective user of a container: container securityContext over the pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: i64,
    pub gid: i64,
    pub fs_group: Option<i64>,
}

impl PodSandbox {
    /// Lays out the pod's volumes under a fresh temporary directory.
    pub fn new(pod: Pod, mut opts: SandboxOpts) -> Result<Self> {
        // bwrap resolves bind sources after changing directory: make the path absolute.
        opts.init_sshd_bin = fs::canonicalize(&opts.init_sshd_bin)
            .with_context(|| format!("init-sshd binary {}", opts.init_sshd_bin.display()))?;
        let root = tempfile::Builder::new().prefix("podrun-").tempdir()?;
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group);
        let mut volumes = BTreeMap::new();
        let spec_volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for vol in &spec_volumes {
            let dir = root.path().join("volumes").join(&vol.name);
            fs::create_dir_all(&dir)?;
            materialize_volume(&pod, vol, &dir, &opts.secrets, fs_group)
                .with_context(|| format!("volume {}", vol.name))?;
            volumes.insert(vol.name.clone(), dir);
        }
        let passwd = match &opts.image_user {
            Some(u) => Some(write_passwd(root.path(), u)?),
            None => None,
        };
        Ok(Self {
            pod,
            opts,
            _root: root,
            volumes,
            passwd,
            session: None,
            pid1: None,
        })
    }

    /// The host directory that stands for a pod volume.
    pub fn volume_dir(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(PathBuf::as_path)
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// Runs the injected init container to completion and returns its output.
    pub fn run_install(&self) -> Result<Output> {
        let c = self
            .init_container(INSTALL_CONTAINER)
            .ok_or_else(|| anyhow!("pod has no init container {INSTALL_CONTAINER}"))?;
        let argv = container_argv(c)?;
        let mut cmd = self.bwrap(c, &[])?;
        // The image of the install container is init-sshd itself.
        cmd.arg("--ro-bind")
            .arg(&self.opts.init_sshd_bin)
            .arg(&argv[0]);
        self.exec_as(&mut cmd, c, &[]);
        cmd.args(&argv);
        let out = cmd.output().context("running the install container")?;
        Ok(out)
    }

    /// Starts the session container (entrypoint as PID 1) and waits until it runs.
    pub fn start_session(&mut self, container: &str) -> Result<()> {
        let c = self
            .container(container)
            .ok_or_else(|| anyhow!("pod has no container {container}"))?
            .clone();
        let mut script = String::new();
        for (k, v) in &self.opts.entrypoint_env {
            script.push_str(&format!("export {k}={}; ", shell_quote(v)));
        }
        script.push_str("exec sleep 86400");
        let mut cmd = self.bwrap(&c, &["--as-pid-1"])?;
        self.exec_as(&mut cmd, &c, &self.opts.session_env);
        cmd.args(["/bin/sh", "-c", &script]);
        cmd.stdin(Stdio::null());
        // Its stdout and stderr are a pipe owned by the container's user, as runc gives
        // them, copied into the container log (what `kubectl logs` shows).
        let (read, write) = nix::unistd::pipe()?;
        let id = self.identity(&c);
        std::os::unix::fs::fchown(
            &write,
            u32::try_from(id.uid).ok(),
            u32::try_from(id.gid).ok(),
        )?;
        let write = fs::File::from(write);
        cmd.stderr(write.try_clone()?).stdout(write);
        // Its own registered group: Ctrl-C, SIGTERM or SIGHUP to this process kills PID 1
        // (and with it the namespace), and a terminal's Ctrl-C cannot kill bwrap first.
        let child = reaper::spawn(&mut cmd).context("starting the session container")?;
        // Our copies of the write end went with `cmd`; the reader ends when PID 1 and
        // everything that inherited its stdout are gone.
        drop(cmd);
        let mut log = fs::File::create(self.container_log())?;
        let mut read = fs::File::from(read);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut read, &mut log);
        });
        self.session = Some(child);
        // PID 1 of the new namespace is our entrypoint once its environ shows it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(pid) = self.find_pid1() {
                self.pid1 = Some(pid);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("session container did not start")
    }

    /// The session container's log: its PID 1's stdout and stderr.
    pub fn container_log(&self) -> PathBuf {
        self._root.path().join("container.log")
    }

    /// Runs the session container's postStart exec hook inside its namespaces.
    pub fn run_post_start(&self, container: &str) -> Result<Output> {
        let c = self
            .container(container)
            .ok_or_else(|| anyhow!("pod has no container {container}"))?;
        let hook = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
            .ok_or_else(|| anyhow!("container {container} has no postStart exec hook"))?;
        let pid1 = self.session_pid1()?;
        let id = self.identity(c);
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(pid1.to_string())
            .args(["--mount", "--pid"]);
        // The hook starts in the container's workingDir: PID 1's cwd (bwrap --chdir).
        cmd.arg("--wd").arg("--");
        cmd.args(setpriv_args(id));
        cmd.arg("env").arg("-i");
        for (k, v) in self.container_env(c, &self.opts.session_env) {
            cmd.arg(format!("{k}={v}"));
        }
        // A pod's 0.0.0.0 is its own network namespace; the sandbox shares the host's, so
        // listen addresses stay on loopback.
        cmd.args(hook.iter().map(|a| match a.strip_prefix("0.0.0.0:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => a.clone(),
        }));
        cmd.output().context("running the postStart hook")
    }

    /// Host pid of the session container's PID 1 (our entrypoint shell/sleep).
    pub fn session_pid1(&self) -> Result<u32> {
        self.pid1
            .ok_or_else(|| anyhow!("session container not started"))
    }

    fn find_pid1(&self) -> Result<u32> {
        let bwrap = self
            .session
            .as_ref()
            .ok_or_else(|| anyhow!("session container not started"))?
            .id();
        // With --as-pid-1, bwrap's direct child is PID 1 of the new namespace.
        let children =
            fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children")).unwrap_or_default();
        let pid: u32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("session PID 1 not found yet"))?;
        // Until the entrypoint has exec'd its main process, the child is still
        // bwrap setting up mounts; entering its namespaces then sees a half root.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"sleep\0") {
            bail!("session container still starting");
        }
        Ok(pid)
    }

    /// The container's identity. Without runAsUser the image's USER applies: the
    /// init-sshd image's 65532:65532 for the install container, the session image's
    /// user (`image_user`) for the others. Without runAsGroup the runtime takes the
    /// primary group of the image's passwd entry for that UID, as containerd does.
    pub fn identity(&self, c: &Container) -> Identity {
        let mut id = identity(&self.pod, c);
        let psc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let stated = |f: fn(&SecurityContext) -> Option<i64>,
                      p: fn(&PodSecurityContext) -> Option<i64>| {
            c.security_context
                .as_ref()
                .and_then(f)
                .or_else(|| psc.and_then(p))
        };
        let stated_user = stated(|s| s.run_as_user, |s| s.run_as_user);
        let stated_group = stated(|s| s.run_as_group, |s| s.run_as_group);
        if stated_user.is_none() {
            if c.name == INSTALL_CONTAINER {
                id.uid = INIT_IMAGE_USER.into();
                if stated_group.is_none() {
                    id.gid = INIT_IMAGE_USER.into();
                }
                return id;
            }
            if let Some(u) = &self.opts.image_user {
                id.uid = i64::from(u.uid);
            }
        }
        if let (None, Some(u)) = (stated_group, &self.opts.image_user)
            && i64::from(u.uid) == id.uid
        {
            id.gid = i64::from(u.gid);
        }
        id
    }

    fn container(&self, name: &str) -> Option<&Container> {
        self.pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == name)
    }

    fn init_container(&self, name: &str) -> Option<&Container> {
        self.pod
            .spec
            .as_ref()?
            .init_containers
            .as_ref()?
            .iter()
            .find(|c| c.name == name)
    }

    /// bwrap with a root made of the host's userland and the container's mounts.
    fn bwrap(&self, c: &Container, extra: &[&str]) -> Result<Command> {
        let mut cmd = Command::new("bwrap");
        cmd.args(["--die-with-parent", "--unshare-pid", "--unshare-ipc"]);
        cmd.args(extra);
        for dir in ["/usr", "/etc"] {
            cmd.args(["--ro-bind", dir, dir]);
        }
        if let Some(passwd) = &self.passwd {
            cmd.arg("--ro-bind").arg(passwd).arg("/etc/passwd");
        }
        for link in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
            match fs::read_link(link) {
                Ok(target) => {
                    cmd.arg("--symlink").arg(target).arg(link);
                }
                Err(_) if Path::new(link).is_dir() => {
                    cmd.args(["--ro-bind", link, link]);
                }
                Err(_) => {}
            }
        }
        cmd.args([
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
        ]);
        // bwrap makes missing parents 0700; a kubelet's are 0755.
        let mut made: Vec<PathBuf> = Vec::new();
        for m in c.volume_mounts.as_deref().unwrap_or_default() {
            for parent in Path::new(&m.mount_path).ancestors().skip(1) {
                let inside_host = ["/usr", "/etc", "/tmp", "/proc", "/dev"]
                    .iter()
                    .any(|h| parent.starts_with(h));
                if parent == Path::new("/") || inside_host || made.iter().any(|p| p == parent) {
                    continue;
                }
                made.push(parent.to_path_buf());
            }
        }
        made.sort_by_key(|p| p.components().count());
        for dir in &made {
            cmd.args(["--perms", "0755", "--dir"]).arg(dir);
        }
        for m in c.volume_mounts.as_deref().unwrap_or_default() {
            let src = self
                .volumes
                .get(&m.name)
                .ok_or_else(|| anyhow!("mount {} names no volume", m.name))?;
            let src = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => src.join(sub),
                _ => src.clone(),
            };
            let flag = if m.read_only == Some(true) {
                "--ro-bind"
            } else {
                "--bind"
            };
            cmd.arg(flag).arg(src).arg(&m.mount_path);
        }
        if let Some(dir) = c.working_dir.as_ref() {
            // Runtimes create a missing workingDir, as the image may not have it.
            cmd.args(["--perms", "0755", "--dir"]).arg(dir);
            cmd.arg("--chdir").arg(dir);
        }
        Ok(cmd)
    }

    /// Appends `setpriv ... env -i K=V...` so the command runs as the pod says.
    fn exec_as(&self, cmd: &mut Command, c: &Container, extra_env: &[(String, String)]) {
        cmd.arg("--");
        cmd.args(setpriv_args(self.identity(c)));
        cmd.arg("env").arg("-i");
        for (k, v) in self.container_env(c, extra_env) {
            cmd.arg(format!("{k}={v}"));
        }
    }

    /// The env a kubelet gives the container: spec env with fieldRefs resolved.
    fn container_env(&self, c: &Container, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), pod_name(&self.pod)),
        ];
        for e in c.env.as_deref().unwrap_or_default() {
            if let Some(v) = resolve_env(&self.pod, e, &self.opts.secrets) {
                env.retain(|(k, _)| k != &e.name);
                env.push((e.name.clone(), v));
            }
        }
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        // Killing PID 1 of the namespace takes every process in it down too. Its pid was
        // kept at start: bwrap may be gone already (a Ctrl-C to the terminal's group).
        if let Some(pid1) = self.pid1.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid1.to_string()])
                .status();
        }
        if let Some(mut child) = self.session.take() {
            child.kill_group();
            let _ = child.wait();
        }
    }
}

/// The container's user and groups, as the kubelet would apply them.
pub fn identity(pod: &Pod, c: &Container) -> Identity {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    // Without runAsUser the image's USER applies; our host "image" runs as root.
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user))
        .unwrap_or(0);
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group))
        .unwrap_or(0);
    Identity {
        uid,
        gid,
        fs_group: psc.and_then(|s| s.fs_group),
    }
}

fn setpriv_args(id: Identity) -> Vec<String> {
    let mut groups = vec![id.gid.to_string()];
    if let Some(g) = id.fs_group {
        groups.push(g.to_string());
    }
    vec![
        "setpriv".into(),
        format!("--reuid={}", id.uid),
        format!("--regid={}", id.gid),
        format!("--groups={}", groups.join(",")),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
        "--no-new-privs".into(),
    ]
}

fn container_argv(c: &Container) -> Result<Vec<String>> {
    let mut argv = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    match argv.first() {
        Some(a) if a.starts_with('/') => Ok(argv),
        _ => bail!(
            "container {} must state an absolute command (no image ENTRYPOINT here)",
            c.name
        ),
    }
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata
        .name
        .clone()
        .or_else(|| {
            pod.metadata
                .generate_name
                .clone()
                .map(|g| format!("{g}x1y2z"))
        })
        .unwrap_or_else(|| "pod".into())
}

fn resolve_env(pod: &Pod, e: &EnvVar, secrets: &Secrets) -> Option<String> {
    if let Some(v) = &e.value {
        return Some(v.clone());
    }
    let from = e.value_from.as_ref()?;
    if let Some(f) = &from.field_ref {
        return field_value(pod, &f.field_path);
    }
    if let Some(s) = &from.secret_key_ref {
        let data = secrets.get(&s.name)?.get(&s.key)?;
        return String::from_utf8(data.clone()).ok();
    }
    None
}

/// Resolves the downward-API field paths a kubelet supports for env and files.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let md = &pod.metadata;
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    if let Some(k) = bracket("metadata.annotations") {
        return md.annotations.as_ref()?.get(&k).cloned();
    }
    if let Some(k) = bracket("metadata.labels") {
        return md.labels.as_ref()?.get(&k).cloned();
    }
    match path {
        "metadata.name" => Some(pod_name(pod)),
        "metadata.namespace" => md.namespace.clone().or(Some("default".into())),
        "metadata.uid" => md
            .uid
            .clone()
            .or(Some("00000000-0000-0000-0000-000000000000".into())),
        "metadata.labels" => Some(kv_lines(md.labels.as_ref())),
        "metadata.annotations" => Some(kv_lines(md.annotations.as_ref())),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.podIP" | "status.hostIP" => Some("127.0.0.1".into()),
        _ => None,
    }
}

fn kv_lines(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    })
    .unwrap_or_default()
}

fn materialize_volume(
    pod: &Pod,
    vol: &Volume,
    dir: &Path,
    secrets: &Secrets,
    fs_group: Option<i64>,
) -> Result<()> {
    if vol.empty_dir.is_some() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))?;
    } else if let Some(s) = &vol.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        match secrets.get(&name) {
            Some(data) => {
                for (file, bytes) in data {
                    let path = dir.join(file);
                    fs::write(&path, bytes)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                    if let Some(g) = fs_group {
                        chown(&path, Some(0), Some(g as u32))?;
                    }
                }
            }
            None if s.optional == Some(true) => {}
            None => bail!("required Secret {name} is missing"),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    } else if let Some(d) = &vol.downward_api {
        for item in d.items.as_deref().unwrap_or_default() {
            let value = item
                .field_ref
                .as_ref()
                .and_then(|f| field_value(pod, &f.field_path))
                .unwrap_or_default();
            let path = dir.join(&item.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&path, value)?;
            let mode = item.mode.or(d.default_mode).unwrap_or(0o644) as u32;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
    } else {
        // PVCs and the rest: a fresh volume the kubelet hands over group-owned by
        // fsGroup with the setgid bit, as it does for volumes that support ownership.
        let (gid, mode) = match fs_group {
            Some(g) => (g as u32, 0o2775),
            None => (0, 0o777),
        };
        chown(dir, Some(0), Some(gid))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The host's passwd with the image user in place of whatever holds its UID.
fn write_passwd(root: &Path, u: &ImageUser) -> Result<PathBuf> {
    let host = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut out: String = host
        .lines()
        .filter(|l| {
            let mut f = l.split(':');
            let name = f.next().unwrap_or_default();
            let uid = f.nth(1).unwrap_or_default();
            name != u.name && uid != u.uid.to_string()
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "{}:x:{}:{}::{}:{}\n",
        u.name, u.uid, u.gid, u.home, u.shell
    ));
    let path = root.join("passwd");
    fs::write(&path, out)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// Single-quotes a value for POSIX sh.
pub fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}
