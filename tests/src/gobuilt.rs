//! The test peers built from Go modules (tests/controlplane, tests/certmanager, tests/helm):
//! the path an env var names (scripts/test-env.sh sets them), else the peer's own build.sh,
//! run once per test process (it returns at once when its inputs are unchanged).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};

/// `$var` if set (it must exist), else `tests/<dir>/build.sh` run once, then
/// `tests/<dir>/<out>`.
pub fn binary(var: &str, dir: &str, out: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!("{var}={} does not exist", path.display());
        }
        return Ok(path);
    }
    static BUILT: Mutex<Option<HashMap<String, std::result::Result<PathBuf, String>>>> =
        Mutex::new(None);
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow!("a build of {dir} panicked"))?;
    built
        .get_or_insert_with(HashMap::new)
        .entry(dir.to_string())
        .or_insert_with(|| build(var, dir, out).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build(var: &str, dir: &str, out: &str) -> Result<PathBuf> {
    let root = crate::repo_root().join("tests").join(dir);
    let run = Command::new(root.join("build.sh"))
        .current_dir(&root)
        .output()
        .with_context(|| format!("run tests/{dir}/build.sh (Go must be on PATH, or set {var})"))?;
    if !run.status.success() {
        bail!(
            "tests/{dir}/build.sh failed: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(root.join(out))
}
