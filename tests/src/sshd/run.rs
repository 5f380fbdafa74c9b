//! Running client commands with a deadline, and test data with known checksums.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::reaper::{self, Proc};

/// What a finished (or killed) command produced.
#[derive(Debug)]
pub struct Out {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub what: String,
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Exit code, None when killed by a signal or timed out.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn success(&self) -> bool {
        self.code() == Some(0) && !self.timed_out
    }
    /// Human-readable summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {:?} timed_out: {} elapsed: {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            self.timed_out,
            self.elapsed,
            truncate(&self.stdout_str(), 4000),
            truncate(&self.stderr_str(), 4000)
        )
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[...{} bytes cut...]{}", cut, &s[cut..])
}

/// Printable form of a command line (program and args, shell-ish).
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Run `cmd` with `stdin` bytes, killing it after `limit`.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Out {
    let what = show(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = reaper::spawn(cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    finish(child, stdin.to_vec(), limit, what)
}

/// Run `cmd` with stdin from a file.
pub fn run_stdin_file(cmd: &mut Command, stdin: &Path, limit: Duration) -> Out {
    let what = format!("{} < {}", show(cmd), stdin.display());
    let f = File::open(stdin).unwrap_or_else(|e| panic!("open {}: {e}", stdin.display()));
    cmd.stdin(Stdio::from(f))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = reaper::spawn(cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    finish(child, Vec::new(), limit, what)
}

/// Collect output of a child spawned by [`reaper::spawn`] with a deadline. The child runs in
/// its own process group: at the deadline the whole group is killed (a ProxyCommand too).
pub fn finish(mut child: Proc, stdin: Vec<u8>, limit: Duration, what: String) -> Out {
    let start = Instant::now();
    let writer = child.stdin.take().map(|mut w| {
        thread::spawn(move || {
            let _ = w.write_all(&stdin);
        })
    });
    let out_r = child.stdout.take().map(|mut r| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    });
    let err_r = child.stderr.take().map(|mut r| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > limit => {
                timed_out = true;
                child.kill_group();
                break child.wait().ok();
            }
            Ok(None) => sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    // A grandchild (e.g. ssh's ControlMaster) could hold the pipes; do not wait forever.
    let stdout = out_r.map(join_bounded).unwrap_or_default();
    let stderr = err_r.map(join_bounded).unwrap_or_default();
    Out {
        status,
        stdout,
        stderr,
        timed_out,
        elapsed,
        what,
    }
}

fn join_bounded(h: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let end = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() && Instant::now() < end {
        sleep(Duration::from_millis(10));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        b"<output pipe still open after exit>".to_vec()
    }
}

/// Write `len` bytes of deterministic pseudo-random data (xorshift) and return its sha256 hex.
/// Random rather than zeros so that compression or sparse tricks cannot fake a transfer.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> String {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut hasher = Sha256::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        w.write_all(&buf[..n]).expect("write random file");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    w.flush().expect("flush random file");
    hex(&hasher.finalize())
}

/// sha256 hex of a file.
pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).expect("read for sha256");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// sha256 hex of bytes.
pub fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Quote a string for a POSIX shell.
pub fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
