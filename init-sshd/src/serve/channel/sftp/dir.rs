//! Directory listings read a batch at a time, so a huge directory never sits in
//! memory whole.

use std::fs;
use std::io;
use std::path::PathBuf;

use russh_sftp::protocol::File;

use super::{DIR_BATCH, entry};

/// Where a directory listing stands.
pub(super) struct DirCursor {
    path: PathBuf,
    /// `.` and `..` still to be sent (first batch).
    dots: bool,
    entries: fs::ReadDir,
}

impl DirCursor {
    /// Open `path` for listing (blocking).
    pub(super) fn open(path: PathBuf) -> io::Result<DirCursor> {
        let entries = fs::read_dir(&path)?;
        Ok(DirCursor {
            path,
            dots: true,
            entries,
        })
    }

    /// Up to [`DIR_BATCH`] entries (blocking: runs on the blocking pool).
    pub(super) fn next_batch(&mut self) -> io::Result<Vec<File>> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.dots) {
            for name in [".", ".."] {
                if let Ok(m) = fs::metadata(self.path.join(name)) {
                    out.push(entry(name.to_owned(), Some(&m)));
                }
            }
        }
        while out.len() < DIR_BATCH {
            let Some(e) = self.entries.next() else { break };
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            out.push(entry(name, e.metadata().ok().as_ref()));
        }
        Ok(out)
    }
}
