//! Authorized keys re-read from their sources while the session runs (issue 14): every
//! `--keys-refresh-secs`, `serve` runs install's merge again over the sources install
//! recorded in DIR/key-sources.json (the per-user Secret and the annotation, both mounted
//! into the session container too, so the kubelet's updates reach them; the repo files)
//! plus `~/.ssh/authorized_keys` in the home, and rewrites DIR/authorized_keys when the
//! result changed. The handler's `KeyStore` sees the new file on the next login, so a key
//! added anywhere logs in and a removed one is refused within one period. A hand edit of
//! DIR/authorized_keys lasts until a source changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_ssh_contract::names::file;

use crate::install::{self, KEY_SOURCES, Sources};

/// Errors of reading the recorded sources or writing the merged file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing authorized_keys: {0}")]
    Write(#[from] crate::hostkey::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn load(dir: &Path) -> Result<Sources> {
    let path = dir.join(KEY_SOURCES);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Parse { path, source })
}

/// Start re-reading the key sources every `every` (zero: never).
pub fn spawn(dir: &Path, home: &Path, every: Duration) {
    if every.is_zero() {
        tracing::info!("key sources are not re-read (--keys-refresh-secs 0)");
        return;
    }
    let mut sources = match load(dir) {
        Ok(s) => s,
        Err(e) => {
            // Without install's list, a merge of the home file alone would drop every key.
            tracing::warn!(error = %e, "key sources unknown; only DIR/authorized_keys is re-read");
            return;
        }
    };
    let home_file = home
        .join(".ssh")
        .join("authorized_keys")
        .display()
        .to_string();
    if !sources.keys.contains(&home_file) {
        sources.keys.push(home_file);
    }
    tracing::info!(files = ?sources.keys, dirs = ?sources.keys_dirs, every_secs = every.as_secs(), "key sources re-read while serving");
    tokio::spawn(run(dir.join(file::AUTHORIZED_KEYS), sources, every));
}

async fn run(target: PathBuf, sources: Sources, every: Duration) {
    let mut last: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = sources.clone();
        // install's merge logs every file it reads; here only a change is worth a line.
        let merge = move || {
            let quiet = tracing::subscriber::NoSubscriber::default();
            tracing::subscriber::with_default(quiet, || install::merged(&s))
        };
        let Ok(text) = tokio::task::spawn_blocking(merge).await else {
            continue;
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        let unchanged_on_disk =
            last.is_none() && std::fs::read_to_string(&target).is_ok_and(|t| t == text);
        if !unchanged_on_disk {
            match crate::hostkey::write_atomic(&target, text.as_bytes(), 0o644) {
                Ok(()) => {
                    let keys = text.lines().filter(|l| !l.starts_with('#')).count();
                    tracing::info!(keys, "authorized_keys rebuilt from its sources");
                }
                Err(e) => {
                    tracing::warn!(error = %Error::from(e), "authorized_keys not rebuilt");
                    continue;
                }
            }
        }
        last = Some(text);
    }
}
