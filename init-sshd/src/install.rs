//! `init-sshd install`: the init container's job. Copies this binary into DIR, merges the
//! authorized keys from every source, installs the host key and writes a report.
//! Nothing here may fail the pod: every step logs and the command exits 0.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use session_ssh_contract::names::file;
use session_ssh_contract::wildcard;

use crate::hostkey;
use session_ssh_contract::keys::{self, AuthorizedKeys, Entry, Refused};

/// Most files one glob may expand to; a pattern like `/*/*/*` must not walk the world.
const MAX_GLOB_MATCHES: usize = 1000;

/// Errors of this module (each is logged by [`run`], never returned to main).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    HostKey(#[from] hostkey::Error),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// DIR/key-sources.json: the key sources `install` read, so that `serve` can read them
/// again while the session runs ([`merged`]).
pub const KEY_SOURCES: &str = "key-sources.json";

/// The key sources of one session, as `install` got them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sources {
    pub keys: Vec<String>,
    pub keys_dirs: Vec<PathBuf>,
}

/// What `install` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dir: PathBuf,
    pub keys: Vec<String>,
    pub keys_dirs: Vec<PathBuf>,
    pub host_key_dir: Option<PathBuf>,
    /// The session container's UID when known: if we run as it, the host key is 0600 now.
    pub session_uid: Option<u32>,
}

/// One accepted line in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub source: String,
    pub line: usize,
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub comment: String,
}

/// A line whose key was already accepted from an earlier source (first source wins).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Duplicate {
    pub source: String,
    pub line: usize,
    pub fingerprint: String,
    pub first: String,
}

/// A refused line in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefusedLine {
    pub source: String,
    pub line: usize,
    pub reason: String,
}

impl From<Refused> for RefusedLine {
    fn from(r: Refused) -> Self {
        RefusedLine {
            source: r.source,
            line: r.line,
            reason: r.reason,
        }
    }
}

/// Host key part of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostKeyReport {
    pub origin: String,
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `DIR/install-report.json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub accepted: Vec<Accepted>,
    pub refused: Vec<RefusedLine>,
    pub duplicates: Vec<Duplicate>,
    /// Sources that did not exist or could not be read (normal for optional ones).
    pub missing: Vec<String>,
    pub host_key: Option<HostKeyReport>,
    /// Steps that failed (the session still starts; SSH may not work).
    pub errors: Vec<String>,
}

/// Run every step, log each failure, return the report (also written to DIR when possible).
pub fn run(opts: &Options) -> Report {
    let mut report = Report::default();
    let dir = &opts.dir;
    if let Err(e) = fs::create_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create DIR");
    }
    if let Err(e) = copy_self(dir) {
        tracing::error!(error = %e, "binary not installed");
        report.errors.push(format!("binary: {e}"));
    }

    let (entries, refused, missing) = gather(&opts.keys, &opts.keys_dirs);
    report.refused = refused.into_iter().map(RefusedLine::from).collect();
    report.missing = missing;
    let (kept, duplicates) = dedupe(entries);
    report.duplicates = duplicates;
    report.accepted = kept
        .iter()
        .map(|e| Accepted {
            source: e.source().to_string(),
            line: e.line(),
            fingerprint: e.fingerprint().to_string(),
            key_type: e.key_type(),
            comment: e.comment().to_string(),
        })
        .collect();
    for r in &report.refused {
        tracing::warn!(source = %r.source, line = r.line, reason = %r.reason, "key refused");
    }
    for a in &report.accepted {
        tracing::info!(source = %a.source, line = a.line, fingerprint = %a.fingerprint, key_type = %a.key_type, "key accepted");
    }
    if let Err(e) = write_authorized_keys(dir, &kept) {
        tracing::error!(error = %e, "authorized_keys not written");
        report.errors.push(format!("authorized_keys: {e}"));
    }
    let sources = Sources {
        keys: opts.keys.clone(),
        keys_dirs: opts.keys_dirs.clone(),
    };
    if let Err(e) = write_json(&dir.join(KEY_SOURCES), &sources) {
        tracing::error!(error = %e, "key sources not written; keys are not re-read while serving");
    }

    let private = opts
        .session_uid
        .is_some_and(|u| u == nix::unistd::geteuid().as_raw());
    match hostkey::install(dir, opts.host_key_dir.as_deref(), private) {
        Ok(h) => {
            report.host_key = Some(HostKeyReport {
                origin: h.origin.as_str().to_string(),
                fingerprint: h.fingerprint,
                path: match h.origin {
                    hostkey::Origin::Copied(p) => Some(p.display().to_string()),
                    _ => None,
                },
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "host key not installed");
            report.errors.push(format!("host key: {e}"));
        }
    }

    if let Err(e) = write_report(dir, &report) {
        tracing::error!(error = %e, "report not written");
    }
    termination_message(&report);
    tracing::info!(
        dir = %dir.display(),
        accepted = report.accepted.len(),
        refused = report.refused.len(),
        duplicates = report.duplicates.len(),
        missing = report.missing.len(),
        errors = report.errors.len(),
        "install finished"
    );
    report
}

/// Copy the running executable to DIR/bin/init-sshd (temp + rename, 0755), streamed: the
/// install container's memory stays a few MB whatever the binary's size. The file is whole
/// or absent, never torn.
fn copy_self(dir: &Path) -> Result<()> {
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir).map_err(io_err(&bin_dir))?;
    // /proc/self/exe is the running image even if its path is odd; current_exe is the
    // fallback when /proc is not mounted.
    let exe = PathBuf::from("/proc/self/exe");
    let mut src = match fs::File::open(&exe) {
        Ok(f) => f,
        Err(_) => {
            let p = std::env::current_exe().map_err(io_err(&exe))?;
            fs::File::open(&p).map_err(io_err(&p))?
        }
    };
    let target = dir.join(file::BIN);
    let tmp = bin_dir.join(format!(".init-sshd.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let copied = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let n = std::io::copy(&mut src, &mut out).map_err(io_err(&tmp))?;
        // The umask may have narrowed the mode; set it exactly.
        out.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(io_err(&tmp))?;
        out.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        Ok(n)
    })();
    match copied {
        Ok(n) => {
            tracing::info!(path = %target.display(), bytes = n, "binary installed");
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Where the kubelet reads a terminated container's message (`kubectl describe pod`).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Tell the admin what failed in the init container's termination message (best effort:
/// the file exists only in a Kubernetes container).
fn termination_message(report: &Report) {
    if report.errors.is_empty() {
        return;
    }
    let text = format!(
        "session-ssh install: {} (the session starts; SSH may not work)",
        report.errors.join("; ")
    );
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open(TERMINATION_LOG) {
        use std::io::Write;
        let _ = f.write_all(text.as_bytes());
    }
}

/// Parse every source in order. Returns accepted entries, refused lines, and missing sources.
pub fn gather(patterns: &[String], dirs: &[PathBuf]) -> (Vec<Entry>, Vec<Refused>, Vec<String>) {
    let mut entries = Vec::new();
    let mut refused = Vec::new();
    let mut missing = Vec::new();
    let parse_file = |path: &Path, entries: &mut Vec<Entry>, refused: &mut Vec<Refused>| {
        match keys::read_capped(path) {
            Ok(text) => {
                let (k, r) = AuthorizedKeys::parse(&text, &path.display().to_string());
                tracing::info!(source = %path.display(), accepted = k.entries().len(), refused = r.len(), "key source read");
                entries.extend(k.entries().iter().cloned());
                refused.extend(r);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "key source unreadable");
                false
            }
        }
    };
    for pattern in patterns {
        let files = expand(pattern);
        if files.is_empty() {
            tracing::info!(pattern = %pattern, "no key file matches (normal when optional)");
            missing.push(pattern.clone());
        }
        for f in files {
            if !parse_file(&f, &mut entries, &mut refused) {
                missing.push(f.display().to_string());
            }
        }
    }
    for dir in dirs {
        match files_in(dir) {
            Ok(files) => {
                if files.is_empty() {
                    tracing::info!(dir = %dir.display(), "key dir holds no files");
                }
                for f in files {
                    if !parse_file(&f, &mut entries, &mut refused) {
                        missing.push(f.display().to_string());
                    }
                }
            }
            Err(e) => {
                tracing::info!(dir = %dir.display(), error = %e, "key dir not readable (normal when optional)");
                missing.push(dir.display().to_string());
            }
        }
    }
    (entries, refused, missing)
}

/// Regular files of a directory (symlinks followed), skipping dotfiles such as the
/// `..data` / `..2024_...` entries of a Kubernetes Secret or ConfigMap mount. Sorted.
fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    Ok(files)
}

/// First occurrence of a key wins; later ones are reported as duplicates.
pub fn dedupe(entries: Vec<Entry>) -> (Vec<Entry>, Vec<Duplicate>) {
    let mut first: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::new();
    let mut dups = Vec::new();
    for e in entries {
        let here = format!("{}:{}", e.source(), e.line());
        match first.get(e.fingerprint()) {
            Some(at) => {
                tracing::info!(source = %here, first = %at, fingerprint = %e.fingerprint(), "duplicate key skipped");
                dups.push(Duplicate {
                    source: e.source().to_string(),
                    line: e.line(),
                    fingerprint: e.fingerprint().to_string(),
                    first: at.clone(),
                });
            }
            None => {
                first.insert(e.fingerprint().to_string(), here);
                kept.push(e);
            }
        }
    }
    (kept, dups)
}

fn render(entries: &[Entry]) -> String {
    let mut out = String::from(
        "# Written by `init-sshd install` at pod start from the sources named below, and\n\
         # again by `serve` when a source changes; edits here last until then.\n",
    );
    for e in entries {
        // Sources are paths, but keep the comment on one line whatever they contain.
        let source = e.source().replace(['\n', '\r'], "?");
        out.push_str(&format!("# {source}:{}\n{}\n", e.line(), e.text()));
    }
    out
}

fn write_authorized_keys(dir: &Path, entries: &[Entry]) -> Result<()> {
    let out = render(entries);
    hostkey::write_atomic(&dir.join(file::AUTHORIZED_KEYS), out.as_bytes(), 0o644)?;
    Ok(())
}

/// The merged authorized_keys text of `sources` as they are now (install's merge, run
/// again by `serve`); quiet: only what changed is worth a log line there.
pub fn merged(sources: &Sources) -> String {
    let (entries, _refused, _missing) = gather(&sources.keys, &sources.keys_dirs);
    render(&dedupe(entries).0)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    hostkey::write_atomic(path, &json, 0o644)?;
    Ok(())
}

fn write_report(dir: &Path, report: &Report) -> Result<()> {
    write_json(&dir.join(file::INSTALL_REPORT), report)
}

/// Expand `*` and `?` in any path component (no `**`, no brackets). A pattern without
/// wildcards is returned as is when it is a file. Dot-entries only match a component that
/// starts with `.` itself, as in the shell. Results are sorted and bounded.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let is_file = |p: &Path| fs::metadata(p).is_ok_and(|m| m.is_file());
    if !pattern.contains(['*', '?']) {
        let p = PathBuf::from(pattern);
        return if is_file(&p) { vec![p] } else { Vec::new() };
    }
    let root = if pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    let mut current = vec![root];
    for comp in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        for base in &current {
            if !comp.contains(['*', '?']) {
                next.push(base.join(comp));
                continue;
            }
            let read_from = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(rd) = fs::read_dir(read_from) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') || comp.starts_with('.'))
                .filter(|n| wildcard::matches(comp.as_bytes(), n.as_bytes(), false))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
            if next.len() > MAX_GLOB_MATCHES {
                tracing::warn!(
                    pattern,
                    limit = MAX_GLOB_MATCHES,
                    "glob matches too much, truncated"
                );
                next.truncate(MAX_GLOB_MATCHES);
                break;
            }
        }
        current = next;
    }
    current.retain(|p| is_file(p));
    current
}

#[cfg(test)]
mod tests;
