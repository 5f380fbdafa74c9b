//! A real SNI router for the SSH-ingress tests: Debian's `nginx` with the stream module
//! (`apt-get install nginx libnginx-mod-stream`), configured the way an ingress controller does
//! TLS passthrough: `ssl_preread on` reads the ClientHello's server name, a `map` picks the
//! backend, the TLS bytes are proxied untouched. Run with its own prefix and config in a temp
//! dir (never the system service), listening on 127.0.0.1 only, stopped on drop.

// Test-only support code: a panic with a message IS the failure report.
#![allow(clippy::expect_used)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::reaper::{self, Proc};
use crate::sshd::net;

/// nginx binary: `$SESSION_SSH_NGINX`, else Debian's path.
pub fn nginx_bin() -> PathBuf {
    std::env::var_os("SESSION_SSH_NGINX")
        .map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
}

/// The stream module of Debian's `libnginx-mod-stream`.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// A running nginx stream router; killed on drop.
pub struct SniRouter {
    child: Option<Proc>,
    /// The router's port on 127.0.0.1 (what an ingress's :443 is in a cluster).
    pub port: u16,
    /// Prefix directory: nginx.conf, error.log, access.log, nginx.pid.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// nginx.conf for `routes` (SNI name → backend port on 127.0.0.1); unknown names go to a
/// closed port, as an ingress with no matching route refuses the connection.
pub fn config(dir: &Path, port: u16, routes: &[(&str, u16)]) -> String {
    let d = dir.display();
    let mut map = String::new();
    for (name, backend) in routes {
        let _ = writeln!(map, "    {name} 127.0.0.1:{backend};");
    }
    format!(
        "load_module {STREAM_MODULE};\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         stream {{\n\
         \x20 log_format sni '$remote_addr sni=$ssl_preread_server_name upstream=$upstream_addr status=$status';\n\
         \x20 access_log {d}/access.log sni;\n\
         \x20 map $ssl_preread_server_name $backend {{\n{map}    default 127.0.0.1:9;\n  }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   ssl_preread on;\n\
         \x20   proxy_pass $backend;\n\
         \x20   proxy_connect_timeout 5s;\n\
         \x20   proxy_timeout 10m;\n\
         \x20 }}\n\
         }}\n"
    )
}

/// nginx.conf for a plain TCP load balancer over `backends` on 127.0.0.1 (round robin;
/// a refused backend is skipped), as a cloud load balancer in front of a Deployment is.
pub fn balancer_config(dir: &Path, port: u16, backends: &[u16]) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for b in backends {
        let _ = writeln!(
            servers,
            "    server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;"
        );
    }
    format!(
        "load_module {STREAM_MODULE};\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 2048; }}\n\
         stream {{\n\
         \x20 upstream backends {{\n{servers}  }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   proxy_pass backends;\n\
         \x20   proxy_connect_timeout 2s;\n\
         \x20   proxy_timeout 10m;\n\
         \x20 }}\n\
         }}\n"
    )
}

impl SniRouter {
    /// Write the config, check it with `nginx -t`, start nginx in the foreground and wait
    /// until it accepts.
    pub fn start(routes: &[(&str, u16)]) -> SniRouter {
        Self::start_with(None, |dir, port| config(dir, port, routes))
    }

    /// The same on 127.0.0.1:`port` (443: what the README's `-connect %h:443` reaches).
    pub fn start_on(port: u16, routes: &[(&str, u16)]) -> SniRouter {
        Self::start_with(Some(port), |dir, port| config(dir, port, routes))
    }

    /// A TCP load balancer over `backends` (see [`balancer_config`]).
    pub fn balancer(backends: &[u16]) -> SniRouter {
        Self::start_with(None, |dir, port| balancer_config(dir, port, backends))
    }

    fn start_with(port: Option<u16>, make: impl FnOnce(&Path, u16) -> String) -> SniRouter {
        let tmp = tempfile::Builder::new()
            .prefix("sni-router-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let port = port.unwrap_or_else(net::free_port);
        let conf = dir.join("nginx.conf");
        fs::write(&conf, make(&dir, port)).expect("write nginx.conf");
        let base = |c: &mut Command| {
            c.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"]);
        };
        let mut check = Command::new(nginx_bin());
        base(&mut check);
        let out = check.arg("-t").output().unwrap_or_else(|e| {
            panic!(
                "{}: {e} (apt-get install nginx libnginx-mod-stream)",
                nginx_bin().display()
            )
        });
        assert!(
            out.status.success(),
            "nginx -t failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(nginx_bin());
        base(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own registered group: the workers go with the master on any signal.
        let child = reaper::spawn(&mut cmd).expect("spawn nginx");
        let router = SniRouter {
            child: Some(child),
            port,
            dir,
            _tmp: tmp,
        };
        assert!(
            net::wait_port(port, Duration::from_secs(10)),
            "nginx does not accept on 127.0.0.1:{port}\n{}",
            router.error_log()
        );
        router
    }

    /// nginx's error log (startup problems, upstream refusals).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// One line per proxied connection: `ADDR sni=NAME upstream=ADDR status=N`
    /// (written when a connection ends).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Wait until the access log has a line containing `needle` (lines appear at close).
    pub fn wait_access(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.access_log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for SniRouter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the master stops its workers ("fast shutdown") before exiting.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
