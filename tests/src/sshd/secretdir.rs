//! A directory written the way the kubelet writes a Secret or downward-API volume: the files
//! live in a timestamped hidden directory, `..data` points at it, each visible name is a
//! symlink through `..data`, and an update swaps `..data` with one rename.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Make `dir` hold exactly `files` (name, content), atomically like the kubelet.
pub fn update(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir secret dir");
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst);
    let ts = format!("..gen_{}_{generation}", std::process::id());
    let data = dir.join(&ts);
    fs::create_dir(&data).expect("mkdir generation");
    for (name, content) in files {
        fs::write(data.join(name), content).expect("write secret file");
    }
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&ts, &tmp).expect("symlink ..data_tmp");
    let old = fs::read_link(dir.join("..data")).ok();
    fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("symlink name");
        }
    }
    // Names no longer in the volume lose their link, as with the kubelet.
    for e in fs::read_dir(dir).expect("read secret dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !files.iter().any(|(n, _)| *n == name) {
            let _ = fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        let _ = fs::remove_dir_all(dir.join(old));
    }
}
