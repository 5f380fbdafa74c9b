//! A value made from a file and made again only when the file changes: one stat call per
//! look (mtime, size, inode), the work only after a change. Used for authorized_keys and the
//! host certificate, both re-read while the server runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What tells one version of a file from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        mtime: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// The value for a file, kept until the file changes.
pub struct Watched<T> {
    path: PathBuf,
    /// The file's stamp when the value was made (inner None: the file was missing), and
    /// the value; None before the first look.
    cache: Mutex<(Option<Option<Stamp>>, Arc<T>)>,
}

impl<T> Watched<T> {
    /// `initial` serves until the first successful look.
    pub fn new(path: PathBuf, initial: T) -> Watched<T> {
        Watched {
            path,
            cache: Mutex::new((None, Arc::new(initial))),
        }
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value for the file as it is now. `make(exists)` runs only when the file changed
    /// (or appeared, or went) since the value was made; None from it keeps the previous
    /// value and tries again on the next look (a half-written file never wins).
    pub fn get(&self, make: impl FnOnce(bool) -> Option<T>) -> Arc<T> {
        let now = stamp(&self.path);
        let mut guard = match self.cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.0 != Some(now)
            && let Some(v) = make(now.is_some())
        {
            *guard = (Some(now), Arc::new(v));
        }
        guard.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_again_only_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let w = Watched::new(path.clone(), String::new());
        let read = |exists: bool| {
            Some(if exists {
                std::fs::read_to_string(&path).unwrap()
            } else {
                "missing".into()
            })
        };
        assert_eq!(*w.get(read), "missing");
        std::fs::write(&path, "one").unwrap();
        assert_eq!(*w.get(read), "one");
        // No change: not made again.
        assert_eq!(*w.get(|_| panic!("made again without a change")), "one");
        // A failed make keeps the old value and is retried.
        std::fs::write(&path, "two!").unwrap();
        assert_eq!(*w.get(|_| None), "one");
        assert_eq!(*w.get(read), "two!");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*w.get(read), "missing");
    }
}
