//! The managed block in `~/.bash_profile` that restores the container's environment in SSH
//! login shells (where `/etc/profile` has just reset PATH).
//!
//! - Placed at the TOP of the file, so the user's own lines run after it and still win.
//! - Guarded by `$SSH_CONNECTION`: a terminal in JupyterLab keeps its normal behaviour.
//!   serve sets SSH_CONNECTION for every session, with or without a TTY (VS Code).
//! - Idempotent: the text between the fixed markers is replaced, nothing else is touched.
//! - When we create the file, the block also sources `~/.profile`, because bash reads
//!   `~/.profile` only when `~/.bash_profile` does not exist; that choice is remembered in
//!   the block itself so later runs keep it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// First marker line.
pub const BEGIN: &str =
    "# >>> session-ssh: managed by init-sshd start, edits inside are overwritten >>>";
/// Last marker line.
pub const END: &str = "# <<< session-ssh <<<";
/// Present in the block when it also sources ~/.profile.
const PROFILE_LINE: &str = "if [ -f \"$HOME/.profile\" ]; then . \"$HOME/.profile\"; fi";

/// Errors of this module (start logs them; never fatal).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: home directory missing")]
    NoHome(PathBuf),
    #[error(transparent)]
    Write(#[from] crate::hostkey::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What [`install_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

fn shell_quote(path: &Path) -> String {
    String::from_utf8_lossy(&crate::start::envsnap::single_quote(
        path.as_os_str().as_encoded_bytes(),
    ))
    .into_owned()
}

/// The block for `env_sh` (DIR/env.sh).
pub fn block(env_sh: &Path, source_profile: bool) -> String {
    let q = shell_quote(env_sh);
    let mut b = format!(
        "{BEGIN}\n\
         # Restores the container's environment (PATH, conda, image ENV) for SSH logins.\n\
         if [ -n \"${{SSH_CONNECTION:-}}\" ] && [ -r {q} ]; then . {q}; fi\n"
    );
    if source_profile {
        b.push_str(PROFILE_LINE);
        b.push('\n');
    }
    b.push_str(END);
    b.push('\n');
    b
}

/// Remove an existing block (markers included); returns the rest and whether the block
/// sourced ~/.profile. An unterminated block is removed to the end of the file.
fn strip_block(text: &str) -> (String, Option<bool>) {
    let mut rest = String::with_capacity(text.len());
    let mut inside = false;
    let mut found = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if !inside && trimmed == BEGIN {
            inside = true;
            found = Some(false);
            continue;
        }
        if inside {
            if trimmed == PROFILE_LINE {
                found = Some(true);
            }
            if trimmed == END {
                inside = false;
            }
            continue;
        }
        rest.push_str(line);
    }
    (rest, found)
}

/// Write or refresh the block at the top of `home/.bash_profile`.
pub fn install_block(home: &Path, env_sh: &Path) -> Result<Outcome> {
    write_block(home, ".bash_profile", env_sh, true)
}

/// The same block at the top of `home/.profile`, for login shells that are not bash
/// (dash, busybox ash read only ~/.profile). Never sources anything else.
pub fn install_profile_block(home: &Path, env_sh: &Path) -> Result<Outcome> {
    write_block(home, ".profile", env_sh, false)
}

fn write_block(
    home: &Path,
    name: &str,
    env_sh: &Path,
    may_source_profile: bool,
) -> Result<Outcome> {
    if !home.is_dir() {
        return Err(Error::NoHome(home.to_path_buf()));
    }
    let path = home.join(name);
    let (old, mode) = match fs::read(&path) {
        Ok(bytes) => {
            let mode = fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            (Some(String::from_utf8_lossy(&bytes).into_owned()), mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0o644),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let (rest, source_profile) = match &old {
        None => (String::new(), may_source_profile),
        Some(text) => {
            let (rest, found) = strip_block(text);
            (rest, found.unwrap_or(false))
        }
    };
    let new = format!("{}{rest}", block(env_sh, source_profile));
    if old.as_deref() == Some(new.as_str()) {
        return Ok(Outcome::Unchanged);
    }
    // A symlinked ~/.bash_profile (dotfile managers) is written through, not replaced.
    let target = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    crate::hostkey::write_atomic(&target, new.as_bytes(), mode)?;
    Ok(if old.is_none() {
        Outcome::Created
    } else {
        Outcome::Updated
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn creates_with_profile_and_is_idempotent() {
        let home = tempfile::tempdir().unwrap();
        let env_sh = Path::new("/opt/session-ssh/env.sh");
        assert_eq!(
            install_block(home.path(), env_sh).unwrap(),
            Outcome::Created
        );
        let first = fs::read_to_string(home.path().join(".bash_profile")).unwrap();
        assert!(first.starts_with(BEGIN));
        assert!(first.contains(PROFILE_LINE));
        assert_eq!(
            install_block(home.path(), env_sh).unwrap(),
            Outcome::Unchanged
        );
        // A later run with another DIR updates in place and keeps sourcing ~/.profile.
        assert_eq!(
            install_block(home.path(), Path::new("/other/env.sh")).unwrap(),
            Outcome::Updated
        );
        let text = fs::read_to_string(home.path().join(".bash_profile")).unwrap();
        assert_eq!(text.matches(BEGIN).count(), 1);
        assert!(text.contains("/other/env.sh") && !text.contains("/opt/session-ssh"));
        assert!(text.contains(PROFILE_LINE));
    }

    #[test]
    fn existing_file_keeps_user_lines_after_the_block() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(".bash_profile");
        fs::write(&path, "export MINE=1\n# user stuff\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            install_block(home.path(), Path::new("/d/env.sh")).unwrap(),
            Outcome::Updated
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(BEGIN));
        assert!(text.ends_with("export MINE=1\n# user stuff\n"));
        assert!(
            !text.contains(PROFILE_LINE),
            "the user's file decides about ~/.profile"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A block the user moved to the bottom comes back to the top, once.
        let moved = format!("export MINE=1\n{}", block(Path::new("/d/env.sh"), false));
        fs::write(&path, moved).unwrap();
        install_block(home.path(), Path::new("/d/env.sh")).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(BEGIN) && text.ends_with("export MINE=1\n"));
    }

    #[test]
    fn dot_profile_block_for_posix_shells() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(".profile");
        fs::write(&path, "PATH=\"$HOME/bin:$PATH\"\n").unwrap();
        let env_sh = Path::new("/d/env.sh");
        assert_eq!(
            install_profile_block(home.path(), env_sh).unwrap(),
            Outcome::Updated
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(BEGIN) && text.ends_with("PATH=\"$HOME/bin:$PATH\"\n"));
        assert!(
            !text.contains(PROFILE_LINE),
            "~/.profile must never source itself"
        );
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(
            install_profile_block(fresh.path(), env_sh).unwrap(),
            Outcome::Created
        );
        let text = fs::read_to_string(fresh.path().join(".profile")).unwrap();
        assert!(!text.contains(PROFILE_LINE));
    }

    #[test]
    fn missing_or_readonly_home_is_an_error_not_a_panic() {
        assert!(matches!(
            install_block(Path::new("/nonexistent/home"), Path::new("/d/env.sh")),
            Err(Error::NoHome(_))
        ));
        let home = tempfile::tempdir().unwrap();
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let r = install_block(home.path(), Path::new("/d/env.sh"));
        // Root ignores directory permissions; everyone else must get an error.
        if !nix::unistd::geteuid().is_root() {
            assert!(r.is_err());
        }
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A real bash login shell: /etc/profile-style PATH reset, then the block restores PATH
    /// only when SSH_CONNECTION is set, and the user's later line still wins.
    #[test]
    fn bash_login_shell_restores_environment() {
        if Command::new("bash").arg("--version").output().is_err() {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let env_sh = dir.path().join("env.sh");
        fs::write(
            &env_sh,
            "export PATH='/opt/conda/bin:/usr/bin:/bin'\nexport FROM_IMAGE='yes'\nexport MINE='image'\n",
        )
        .unwrap();
        fs::write(home.path().join(".bash_profile"), "export MINE=user\n").unwrap();
        install_block(home.path(), &env_sh).unwrap();
        let run = |ssh: bool| {
            let mut cmd = Command::new("bash");
            cmd.args(["--login", "-c", "echo \"$PATH|${FROM_IMAGE:-}|$MINE\""])
                .env_clear()
                .env("HOME", home.path())
                .env("PATH", "/usr/local/bin:/usr/bin:/bin");
            if ssh {
                cmd.env("SSH_CONNECTION", "127.0.0.1 5555 127.0.0.1 2222");
            }
            String::from_utf8_lossy(&cmd.output().unwrap().stdout)
                .trim()
                .to_string()
        };
        let with = run(true);
        let without = run(false);
        // /etc/profile on the test machine may rewrite PATH; the block runs after it.
        assert!(
            with.starts_with("/opt/conda/bin:/usr/bin:/bin|yes|user"),
            "{with}"
        );
        assert!(
            !without.contains("/opt/conda") && without.ends_with("||user"),
            "{without}"
        );
    }
}
