//! An interactive `ssh -tt` client driven from a test: write lines to it, wait for text in
//! its output, SIGKILL it like a laptop that vanished.

use std::io::{Read, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::reaper::{self, Proc};

/// A running client with its output collected in the background (stdout and stderr).
pub struct Term {
    child: Proc,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    reaped: bool,
}

impl Term {
    /// Spawn `cmd` (an `ssh -tt ...` command) with piped stdio.
    pub fn spawn(cmd: &mut Command) -> Term {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = reaper::spawn(cmd).unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        for mut r in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut o) = out.lock() {
                        o.extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Term {
            child,
            stdin,
            out,
            reaped: false,
        }
    }

    /// Type `text` (include the newline).
    pub fn send(&mut self, text: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = s.write_all(text.as_bytes());
            let _ = s.flush();
        }
    }

    /// Everything it printed so far.
    pub fn text(&self) -> String {
        self.out
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// Wait until the output contains `needle`; false after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            sleep(Duration::from_millis(50));
        }
        self.text().contains(needle)
    }

    /// Exit code once it ended by itself within `limit` (None: still running, or a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.reaped = true;
                return st.code();
            }
            sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: the client vanishes without a word to the server (its socket closes).
    pub fn kill9(mut self) {
        self.child.kill_group();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.child.kill_group();
        let _ = self.child.wait();
    }
}
