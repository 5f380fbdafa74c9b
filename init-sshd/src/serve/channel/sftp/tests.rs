//! Unit tests of the SFTP handler, without a channel.

use super::*;
use russh_sftp::server::Handler;

fn session(home: &Path) -> Sftp {
    Sftp {
        home: home.to_owned(),
        conn: 0,
        handles: HashMap::new(),
        next: 0,
    }
}

#[tokio::test]
async fn directories_are_listed_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        fs::write(dir.path().join(format!("f{i}")), "").unwrap();
    }
    let mut s = session(dir.path());
    let h = s.opendir(1, ".".into()).await.unwrap().handle;
    let mut names = Vec::new();
    loop {
        match s.readdir(2, h.clone()).await {
            Ok(n) => {
                assert!(n.files.len() <= DIR_BATCH);
                names.extend(n.files.into_iter().map(|f| f.filename));
            }
            Err(Error::Eof) => break,
            Err(e) => panic!("readdir: {e}"),
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 302, "300 files plus . and ..");
    assert!(names.iter().any(|n| n == ".."));
    s.close(3, h).await.unwrap();
    assert!(s.handles.is_empty());
}

async fn open(s: &mut Sftp) -> Result<String> {
    let h = s.open(1, "f".into(), OpenFlags::READ, FileAttributes::default());
    Ok(h.await?.handle)
}

#[tokio::test]
async fn open_handles_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "x").unwrap();
    let mut s = session(dir.path());
    let mut held = Vec::new();
    for _ in 0..MAX_HANDLES {
        held.push(open(&mut s).await.unwrap());
    }
    assert!(matches!(open(&mut s).await, Err(Error::TooManyHandles)));
    assert!(matches!(
        s.opendir(2, ".".into()).await,
        Err(Error::TooManyHandles)
    ));
    s.close(3, held.pop().unwrap()).await.unwrap();
    assert!(open(&mut s).await.is_ok());
}

#[test]
fn relative_to_home() {
    let home = Path::new("/home/u");
    assert_eq!(resolve(home, ""), PathBuf::from("/home/u"));
    assert_eq!(resolve(home, "."), PathBuf::from("/home/u/."));
    assert_eq!(resolve(home, "a/b"), PathBuf::from("/home/u/a/b"));
    assert_eq!(resolve(home, "/etc/x"), PathBuf::from("/etc/x"));
}

#[test]
fn normalize_lexically() {
    assert_eq!(
        normalize(Path::new("/home/u/./a/../b")),
        PathBuf::from("/home/u/b")
    );
    assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
}

#[test]
fn ls_dates() {
    // 2026-11-23 18:22:00 UTC
    let t = 1_795_458_120;
    assert_eq!(ls_date(t, t + 60), "Nov 23 18:22");
    assert_eq!(ls_date(0, t), "Jan  1  1970");
    assert_eq!(ls_date(951_782_400, t), "Feb 29  2000");
}

#[test]
fn longname_marks_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let e = entry("l".into(), Some(&fs::symlink_metadata(&link).unwrap()));
    assert!(e.longname.starts_with("lrwxrwxrwx"), "{}", e.longname);
    assert!(e.longname.ends_with(" l"));
}

#[test]
fn symlink_attrs_keep_type() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let a = attrs(&fs::symlink_metadata(&link).unwrap());
    assert_eq!(a.permissions.unwrap() & 0o170000, 0o120000);
}
