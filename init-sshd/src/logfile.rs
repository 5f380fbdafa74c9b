//! A log file with a hard size cap, so a long-running `serve` cannot fill the shared volume.
//!
//! Design: the writer counts the bytes it writes; before a write that would pass the cap it
//! renames `init-sshd.log` to `init-sshd.log.1` (replacing the previous one) and starts a
//! new file, so the two together never exceed twice the cap. In `serve`, the new file is
//! also dup2'ed onto stdout and stderr: output that bypasses tracing (a panic message)
//! lands in the current file instead of a renamed one. If renaming fails the file is
//! truncated instead: the cap wins over history.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Default cap per file (the rotated `.1` holds as much again).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
struct Inner {
    file: File,
    written: u64,
}

/// A size-capped, rotating log file; cheap to clone.
#[derive(Debug, Clone)]
pub struct CappedLog {
    path: PathBuf,
    max: u64,
    redirect_stdio: bool,
    inner: Arc<Mutex<Inner>>,
}

fn open_append(path: &Path) -> io::Result<File> {
    // The log names users and source addresses: keep it to the session user.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn redirect(file: &File) {
    // Best effort: a failure only means stray output goes where it went before.
    let _ = nix::unistd::dup2_stdout(file);
    let _ = nix::unistd::dup2_stderr(file);
}

impl CappedLog {
    /// Open (append) `path`, counting what is already there toward the cap.
    /// With `redirect_stdio`, fds 1 and 2 follow the current file.
    pub fn open(path: &Path, max: u64, redirect_stdio: bool) -> Result<CappedLog> {
        let err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = open_append(path).map_err(err)?;
        let written = file.metadata().map_err(err)?.len();
        if redirect_stdio {
            redirect(&file);
        }
        Ok(CappedLog {
            path: path.to_path_buf(),
            max: max.max(1024),
            redirect_stdio,
            inner: Arc::new(Mutex::new(Inner { file, written })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a usable file handle; keep logging.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rotate(&self, inner: &mut Inner) {
        let old = self.path.with_file_name(format!(
            "{}.1",
            self.path
                .file_name()
                .map_or_else(|| "log".into(), |n| n.to_string_lossy())
        ));
        let reopened = fs::rename(&self.path, &old)
            .and_then(|()| open_append(&self.path))
            .and_then(|f| {
                // Another writer may have appended since; the cap is per file.
                f.set_len(0)?;
                Ok(f)
            });
        match reopened {
            Ok(f) => {
                if self.redirect_stdio {
                    redirect(&f);
                }
                inner.file = f;
            }
            Err(_) => {
                let _ = inner.file.set_len(0);
            }
        }
        inner.written = 0;
    }

    /// Write one record, rotating first when it would pass the cap. Records longer than
    /// the cap are cut.
    pub fn write_record(&self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.lock();
        let len = buf.len() as u64;
        if inner.written + len > self.max {
            self.rotate(&mut inner);
        }
        let take = buf
            .len()
            .min(usize::try_from(self.max).unwrap_or(usize::MAX));
        let chunk = buf.get(..take).unwrap_or(buf);
        inner.file.write_all(chunk)?;
        inner.written += chunk.len() as u64;
        // Report the whole record as written so callers do not retry the cut part.
        Ok(buf.len())
    }
}

/// The per-event writer handed out to tracing.
#[derive(Debug)]
pub struct Writer(CappedLog);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CappedLog {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        Writer(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &Path) -> u64 {
        fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn cap_holds_and_rotates_to_dot_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init-sshd.log");
        let log = CappedLog::open(&path, 4096, false).unwrap();
        let line = [b'x'; 100];
        for _ in 0..1000 {
            let mut w = Writer(log.clone());
            w.write_all(&line).unwrap();
        }
        let one = dir.path().join("init-sshd.log.1");
        assert!(size(&path) <= 4096, "{}", size(&path));
        assert!(size(&one) <= 4096 && size(&one) > 3000, "{}", size(&one));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "only the file and its .1");
    }

    #[test]
    fn existing_content_counts_and_huge_records_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        fs::write(&path, vec![b'a'; 3000]).unwrap();
        let log = CappedLog::open(&path, 4096, false).unwrap();
        log.write_record(&[b'b'; 2000]).unwrap();
        assert_eq!(size(&path), 2000, "rotated before passing the cap");
        assert_eq!(size(&dir.path().join("l.1")), 3000);
        log.write_record(&[b'c'; 100_000]).unwrap();
        assert!(size(&path) <= 4096);
    }

    #[test]
    fn concurrent_writers_stay_under_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let log = CappedLog::open(&path, 8192, false).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        log.write_record(&[b'z'; 77]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(size(&path) <= 8192);
        assert!(size(&dir.path().join("l.1")) <= 8192);
    }
}
