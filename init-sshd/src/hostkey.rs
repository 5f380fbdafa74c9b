//! The server's host key in DIR: chosen by `install`, made private to the session user by
//! `start`, read by `serve`.
//!
//! Ownership design (the init container may run as another UID than the session, e.g. the
//! image's default user when the pod spec states no `runAsUser`):
//! - `install --session-uid UID` (the webhook knows the UID when the spec states it) and the
//!   installer runs as that UID: the key is written 0600 straight away.
//! - Otherwise install cannot know who will serve, so it writes the key 0644 ("hand-off"
//!   mode). The volume is an emptyDir mounted only by our init container and the session
//!   container, and the window lasts until the postStart hook runs.
//! - `start` runs as the session user and always calls [`make_private`]: if the key is not
//!   its own it copies it to a new 0600 file it owns and renames that over the old one
//!   (emptyDir is writable by every UID of the pod); if it is its own it chmods it 0600.
//!   From then on only the session user (and root) can read the key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};
use session_ssh_contract::names::file::HOST_KEY;

/// Largest file considered as a candidate key (a real key is a few KiB).
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness from the kernel: {0}")]
    Random(String),
    #[error("encoding the host key: {0}")]
    Encode(String),
    #[error("{path} holds no usable private key: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the installed host key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Copied from a file in `--host-key-dir`.
    Copied(PathBuf),
    /// DIR already held a valid key (install ran again in the same pod): kept, so clients'
    /// known_hosts stay valid.
    Kept,
    /// Freshly generated ed25519 key.
    Generated,
}

impl Origin {
    /// `copied|kept|generated` for the report.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Copied(_) => "copied",
            Origin::Kept => "kept",
            Origin::Generated => "generated",
        }
    }
}

/// Outcome of [`install`].
#[derive(Debug, Clone)]
pub struct Installed {
    pub origin: Origin,
    pub fingerprint: String,
    pub algorithm: String,
    /// File mode written (0o600 or 0o644 in hand-off mode).
    pub mode: u32,
}

/// Read `path` as a private key; encrypted or foreign files are `Unusable`.
pub fn read_key(path: &Path) -> Result<PrivateKey> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() || meta.len() > MAX_KEY_BYTES {
        return Err(Error::Unusable {
            path: path.to_path_buf(),
            reason: "not a regular file of key size".to_string(),
        });
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| Error::Unusable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(Error::Unusable {
            path: path.to_path_buf(),
            reason: "encrypted".to_string(),
        });
    }
    Ok(key)
}

/// Preference when a directory holds several keys: ed25519, then ECDSA, then RSA.
fn rank(key: &PrivateKey) -> u8 {
    let alg = key.algorithm();
    if alg.clone().is_ed25519() {
        0
    } else if alg.clone().is_ecdsa() {
        1
    } else if alg.is_rsa() {
        2
    } else {
        3
    }
}

/// Scan a directory (e.g. a mounted Secret) for private keys. Dotfiles (Kubernetes'
/// `..data` machinery) are skipped; symlinked files are followed. Returns the best key.
pub fn find_in(dir: &Path) -> Option<(PathBuf, PrivateKey)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "host key dir not readable, will generate");
            return None;
        }
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut best: Option<(PathBuf, PrivateKey)> = None;
    for path in names {
        if path.extension().is_some_and(|x| x == "pub") {
            continue;
        }
        match read_key(&path) {
            Ok(key) if rank(&key) < 3 => {
                tracing::debug!(path = %path.display(), algorithm = %key.algorithm(), "host key candidate");
                if best.as_ref().is_none_or(|(_, b)| rank(&key) < rank(b)) {
                    best = Some((path, key));
                }
            }
            Ok(key) => {
                tracing::info!(path = %path.display(), algorithm = %key.algorithm(), "unsupported host key type skipped");
            }
            Err(e) => tracing::info!(error = %e, "file in host key dir skipped"),
        }
    }
    best
}

/// A new ed25519 key from the kernel's CSPRNG.
pub fn generate() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    Ok(key)
}

/// Write `bytes` to `path` atomically (temp file in the same dir, fsync, rename) with `mode`.
/// The temp file is created with `mode` already, so the key is never briefly readable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The umask may have narrowed `mode`; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write the key and its `.pub` into `dir`.
pub fn write(dir: &Path, key: &PrivateKey, mode: u32) -> Result<()> {
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Encode(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Encode(e.to_string()))?;
    write_atomic(&dir.join(HOST_KEY), pem.as_bytes(), mode)?;
    write_atomic(
        &dir.join(format!("{HOST_KEY}.pub")),
        format!("{public}\n").as_bytes(),
        0o644,
    )
}

/// Install the host key into `dir`: from `source_dir` when it holds a key, else keep a valid
/// key already in `dir`, else generate. `private` selects 0600 over hand-off 0644.
pub fn install(dir: &Path, source_dir: Option<&Path>, private: bool) -> Result<Installed> {
    let target = dir.join(HOST_KEY);
    let (key, origin) = match source_dir.and_then(find_in) {
        Some((path, key)) => (key, Origin::Copied(path)),
        None => match read_key(&target) {
            Ok(key) => (key, Origin::Kept),
            Err(_) => (generate()?, Origin::Generated),
        },
    };
    let mode = if private { 0o600 } else { 0o644 };
    write(dir, &key, mode)?;
    let installed = Installed {
        fingerprint: key.public_key().fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().to_string(),
        origin,
        mode,
    };
    tracing::info!(
        origin = installed.origin.as_str(),
        source = ?installed.origin,
        fingerprint = %installed.fingerprint,
        algorithm = %installed.algorithm,
        mode = format_args!("{:o}", mode),
        "host key installed"
    );
    Ok(installed)
}

/// What [`make_private`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Already ours and 0600.
    AlreadyPrivate,
    /// Ours, mode tightened to 0600.
    Chmodded,
    /// Another UID's file: copied to a 0600 file we own, renamed over it.
    Copied,
}

/// Make DIR's host key a 0600 file owned by the calling UID (run by `start`).
pub fn make_private(dir: &Path) -> Result<Privacy> {
    let path = dir.join(HOST_KEY);
    let meta = fs::metadata(&path).map_err(io_err(&path))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() == uid {
        if meta.mode() & 0o077 == 0 {
            return Ok(Privacy::AlreadyPrivate);
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(&path))?;
        return Ok(Privacy::Chmodded);
    }
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    write_atomic(&path, &bytes, 0o600)?;
    Ok(Privacy::Copied)
}

/// Load DIR's host key (for `serve`).
pub fn load(dir: &Path) -> Result<PrivateKey> {
    read_key(&dir.join(HOST_KEY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    fn keygen(dir: &Path, name: &str, kind: &str) {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "test-only", "-f"])
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn generates_when_no_source_and_keeps_on_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let a = install(dir.path(), None, true).unwrap();
        assert_eq!(a.origin, Origin::Generated);
        assert_eq!(a.algorithm, "ssh-ed25519");
        assert_eq!(mode(&dir.path().join(HOST_KEY)), 0o600);
        assert_eq!(mode(&dir.path().join("ssh_host_ed25519_key.pub")), 0o644);
        let loaded = load(dir.path()).unwrap();
        assert_eq!(
            loaded.public_key().fingerprint(HashAlg::Sha256).to_string(),
            a.fingerprint
        );
        // Second install in the same pod keeps the key (stable known_hosts).
        let b = install(dir.path(), Some(&dir.path().join("missing")), false).unwrap();
        assert_eq!(b.origin, Origin::Kept);
        assert_eq!(b.fingerprint, a.fingerprint);
        assert_eq!(mode(&dir.path().join(HOST_KEY)), 0o644);
        // Two generated keys differ.
        let other = tempfile::tempdir().unwrap();
        let c = install(other.path(), None, true).unwrap();
        assert_ne!(c.fingerprint, a.fingerprint);
        // ssh-keygen reads what we wrote.
        let out = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(other.path().join(HOST_KEY))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pubfile = fs::read_to_string(other.path().join("ssh_host_ed25519_key.pub")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(1),
            pubfile.split_whitespace().nth(1)
        );
    }

    #[test]
    fn copies_from_secret_like_dir_preferring_ed25519() {
        let src = tempfile::tempdir().unwrap();
        // Kubernetes Secret layout: ..data -> ..2024_x/, files are symlinks into ..data.
        let real = src.path().join("..2024_01_01");
        fs::create_dir(&real).unwrap();
        keygen(&real, "a_rsa", "rsa");
        keygen(&real, "b_ed", "ed25519");
        fs::write(real.join("garbage"), "not a key").unwrap();
        std::os::unix::fs::symlink("..2024_01_01", src.path().join("..data")).unwrap();
        for f in ["a_rsa", "b_ed", "garbage", "b_ed.pub"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), src.path().join(f)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let got = install(dir.path(), Some(src.path()), true).unwrap();
        assert_eq!(got.origin, Origin::Copied(src.path().join("b_ed")));
        let want = read_key(&real.join("b_ed")).unwrap();
        assert_eq!(
            want.public_key().fingerprint(HashAlg::Sha256).to_string(),
            got.fingerprint
        );
        // With only the RSA key, it is used (the file name stays fixed).
        fs::remove_file(src.path().join("b_ed")).unwrap();
        let got = install(dir.path(), Some(src.path()), true).unwrap();
        assert_eq!(got.algorithm, "ssh-rsa");
    }

    #[test]
    fn encrypted_and_garbage_keys_are_skipped() {
        let src = tempfile::tempdir().unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(src.path().join("enc"))
            .status()
            .unwrap();
        assert!(st.success());
        fs::write(src.path().join("junk"), [0u8, 1, 2, 255]).unwrap();
        assert!(find_in(src.path()).is_none());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            install(dir.path(), Some(src.path()), true).unwrap().origin,
            Origin::Generated
        );
    }

    #[test]
    fn make_private_tightens_own_file() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), None, false).unwrap();
        let path = dir.path().join(HOST_KEY);
        assert_eq!(mode(&path), 0o644);
        assert_eq!(make_private(dir.path()).unwrap(), Privacy::Chmodded);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(make_private(dir.path()).unwrap(), Privacy::AlreadyPrivate);
    }

    #[test]
    fn make_private_copies_another_uids_file() {
        // Needs root to create a file owned by someone else.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), None, false).unwrap();
        let path = dir.path().join(HOST_KEY);
        let before = load(dir.path()).unwrap();
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        assert_eq!(make_private(dir.path()).unwrap(), Privacy::Copied);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), 0);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap().public_key(), before.public_key());
    }
}
