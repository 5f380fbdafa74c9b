//! A throw-away "container" made with bubblewrap: its own PID and mount namespace, PID 1 is
//! the entrypoint (so /proc/1/environ is the entrypoint's, as in a pod), the host network
//! (everything listens on 127.0.0.1). Commands are run inside with `nsenter`, the way the
//! kubelet runs a postStart exec hook inside a running container.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::procs;
use super::run::shq;
use crate::reaper::{self, Proc};

/// How the container's filesystem is made.
#[derive(Debug, Clone)]
pub enum Fs {
    /// The host's root (the "image" is Debian) with test files bound over it.
    Host {
        /// Replaces /etc/passwd.
        passwd: PathBuf,
        /// Replaces /etc/profile.
        profile: PathBuf,
        /// Bound on `home_in` (under a fresh tmpfs /home).
        home: PathBuf,
        home_in: String,
    },
    /// A root filesystem directory that holds only what the test put there.
    Rootfs(PathBuf),
}

/// A running container; dropping it kills PID 1, which takes the whole PID namespace down.
pub struct Container {
    bwrap: Proc,
    /// Host pid of the container's PID 1.
    pub pid1: u32,
    pub uid: u32,
    pub gid: u32,
    rootfs: bool,
}

impl Container {
    /// Start the container whose PID 1 is `/bin/sh -c 'export ENTRY...; exec sleep'`, running
    /// as uid:gid with exactly `image_env` (plus the entrypoint's exports).
    pub fn spawn(
        fs_spec: &Fs,
        uid: u32,
        gid: u32,
        image_env: &[(String, String)],
        entry_exports: &[(String, String)],
        log: &Path,
    ) -> Container {
        let mut cmd = Command::new("bwrap");
        let rootfs = matches!(fs_spec, Fs::Rootfs(_));
        match fs_spec {
            Fs::Host {
                passwd,
                profile,
                home,
                home_in,
            } => {
                cmd.arg("--dev-bind").arg("/").arg("/");
                cmd.arg("--ro-bind").arg(passwd).arg("/etc/passwd");
                cmd.arg("--ro-bind").arg(profile).arg("/etc/profile");
                cmd.args(["--tmpfs", "/home"]);
                cmd.arg("--bind").arg(home).arg(home_in);
            }
            Fs::Rootfs(root) => {
                cmd.arg("--bind").arg(root).arg("/");
                cmd.args(["--dev", "/dev"]);
            }
        }
        cmd.args([
            "--proc",
            "/proc",
            "--unshare-pid",
            "--as-pid-1",
            "--die-with-parent",
        ]);
        cmd.args(["--chdir", "/", "--"]);
        let mut script = String::new();
        for (k, v) in entry_exports {
            script.push_str(&format!("export {k}={}; ", shq(v)));
        }
        if rootfs {
            // No setpriv in a busybox-only root: PID 1 runs as root there (as the image's
            // entrypoint may), the session tools switch uid with nsenter.
            script.push_str("exec /bin/busybox sleep 2147483647");
            cmd.args(["/bin/busybox", "env", "-i"]);
        } else {
            script.push_str("exec sleep infinity");
            cmd.args(setpriv(uid, gid));
            cmd.args(["--", "/usr/bin/env", "-i"]);
        }
        for (k, v) in image_env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(["/bin/sh", "-c", &script]);
        // PID 1 must not hold the test runner's stdout/stderr pipes.
        let logf = fs::File::create(log).expect("create container log");
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf);
        let what = super::run::show(&cmd);
        let mut bwrap =
            reaper::spawn(&mut cmd).unwrap_or_else(|e| panic!("spawn bwrap ({what}): {e}"));
        let bpid = bwrap.id();
        let end = Instant::now() + Duration::from_secs(10);
        let pid1 = loop {
            let found = procs::descendants(bpid).into_iter().find(|&p| {
                // PID 1 of the new namespace, and already exec'd into its final program:
                // before that, bwrap is still setting up the mounts.
                procs::status_field(p, "NSpid:").is_some_and(|v| {
                    let ids: Vec<&str> = v.split_whitespace().collect();
                    ids.len() >= 2 && ids.last() == Some(&"1")
                }) && {
                    let c = procs::cmdline(p);
                    c.starts_with("sleep ") || c.starts_with("/bin/busybox sleep ")
                }
            });
            if let Some(p) = found {
                break p;
            }
            if let Ok(Some(st)) = bwrap.try_wait() {
                panic!(
                    "bwrap exited early with {st}: {what}\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > end {
                for p in procs::descendants(bpid) {
                    procs::kill9(p);
                }
                let _ = bwrap.kill();
                let _ = bwrap.wait();
                panic!("container PID 1 did not appear within 10 s: {what}");
            }
            sleep(Duration::from_millis(20));
        };
        Container {
            bwrap,
            pid1,
            uid,
            gid,
            rootfs,
        }
    }

    /// A command that runs `argv` inside the container as its uid with exactly `env`.
    pub fn exec(&self, env: &[(String, String)], argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.current_dir("/");
        cmd.args(["-t", &self.pid1.to_string(), "-p", "-m", "-r", "-w"]);
        if self.rootfs {
            cmd.args(["-S", &self.uid.to_string(), "-G", &self.gid.to_string()]);
            cmd.args(["--", "/bin/busybox", "env", "-i"]);
        } else {
            cmd.arg("--");
            cmd.args(setpriv(self.uid, self.gid));
            cmd.args(["--", "/usr/bin/env", "-i"]);
        }
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        cmd
    }

    /// Host pid of the process that is `ns_pid` in this container.
    pub fn host_pid(&self, ns_pid: u32) -> Option<u32> {
        procs::host_pid_in_ns(self.pid1, ns_pid)
    }
}

fn setpriv(uid: u32, gid: u32) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--reuid".into(),
        uid.to_string(),
        "--regid".into(),
        gid.to_string(),
        "--clear-groups".into(),
    ]
}

impl Drop for Container {
    fn drop(&mut self) {
        procs::kill9(self.pid1);
        procs::wait_gone(self.pid1, Duration::from_secs(5));
        let _ = self.bwrap.kill();
        let _ = self.bwrap.wait();
    }
}

/// Lay out a root filesystem holding only busybox (as /bin/busybox and /bin/sh) and the
/// init-sshd binary at /bin/init-sshd, plus empty mount points.
pub fn busybox_rootfs(root: &Path, init_sshd: &Path) {
    for d in ["bin", "proc", "dev", "tmp", "opt/session-ssh", "keys"] {
        fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (Debian busybox-static) is not installed");
    fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink sh");
    fs::copy(init_sshd, root.join("bin/init-sshd")).expect("copy init-sshd");
    set_mode(&root.join("tmp"), 0o1777);
}

/// chmod helper.
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}
