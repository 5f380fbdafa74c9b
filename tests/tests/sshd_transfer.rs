//! init-sshd e2e 2: sftp put/get of 64 MiB, scp both ways (SFTP and legacy protocol),
//! rsync -a of a small tree.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use session_ssh_tests::sshd::run::{run, sha256_file, write_random_file};
use session_ssh_tests::sshd::{Builder, Sshd, T};

const BIG: u64 = 64 * 1024 * 1024;
const LONG: Duration = Duration::from_secs(180);

fn sftp(s: &Sshd, batch: &str) -> session_ssh_tests::sshd::run::Out {
    let bfile = s.root.join("sftp.batch");
    fs::write(&bfile, batch).expect("batch");
    let mut c = Command::new("sftp");
    c.args(s.opts()).arg("-b").arg(&bfile).arg(s.host());
    run(&mut c, b"", LONG)
}

#[test]
fn sftp_put_and_get_64mib_with_matching_sha256() {
    let s = Builder::new().start();
    let src = s.root.join("big.bin");
    let sum = write_random_file(&src, BIG, 0x5eed);
    let back = s.root.join("big.back");
    let out = sftp(
        &s,
        &format!(
            "put {} up.bin\nls -l up.bin\nget up.bin {}\n",
            src.display(),
            back.display()
        ),
    );
    s.assert_ok(&out);
    // The file landed in the user's HOME inside the container, owned by the session user.
    let remote = s.home.join("up.bin");
    assert_eq!(sha256_file(&remote), sum, "uploaded content");
    assert_eq!(sha256_file(&back), sum, "downloaded content");
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&remote).expect("stat"));
    assert_eq!(uid, 1000, "uploaded file owner");
}

#[test]
fn sftp_directory_ops_rename_remove_and_errors() {
    let s = Builder::new().start();
    let out = sftp(
        &s,
        "mkdir d1\ncd d1\npwd\nput /etc/hostname h\nrename h h2\nls\nchmod 600 h2\n\
         ln -s h2 link\nrm h2\nrm link\ncd ..\nrmdir d1\n-get does-not-exist /tmp/x\n",
    );
    s.assert_ok(&out);
    let text = out.stdout_str();
    assert!(
        text.contains(&format!("{}/d1", s.home_in)),
        "pwd\n{}",
        s.diag(&out)
    );
    assert!(!s.home.join("d1").exists(), "d1 removed");
    // A missing file is an error, not an empty file.
    let bad = sftp(
        &s,
        &format!("get does-not-exist {}\n", s.root.join("x").display()),
    );
    assert_ne!(
        bad.code(),
        Some(0),
        "get of a missing file must fail\n{}",
        s.diag(&bad)
    );
    assert!(!s.root.join("x").exists());
}

fn scp_roundtrip(legacy: bool) {
    let s = Builder::new().start();
    let src = s.root.join("scp.bin");
    let sum = write_random_file(&src, 5 * 1024 * 1024 + 17, 42);
    let mut up = Command::new("scp");
    up.args(s.opts());
    if legacy {
        up.arg("-O");
    }
    up.arg(&src).arg(format!("{}:scp-up.bin", s.host()));
    let out = run(&mut up, b"", LONG);
    s.assert_ok(&out);
    assert_eq!(sha256_file(&s.home.join("scp-up.bin")), sum, "scp upload");

    let back = s.root.join("scp.back");
    let mut down = Command::new("scp");
    down.args(s.opts()).arg("-p");
    if legacy {
        down.arg("-O");
    }
    down.arg(format!("{}:scp-up.bin", s.host())).arg(&back);
    let out = run(&mut down, b"", LONG);
    s.assert_ok(&out);
    assert_eq!(sha256_file(&back), sum, "scp download");
}

#[test]
fn scp_both_ways() {
    // OpenSSH 9's scp speaks SFTP by default.
    scp_roundtrip(false);
}

#[test]
fn scp_legacy_protocol_both_ways() {
    // `scp -O`: the old protocol, i.e. `scp -t/-f` exec'd through the user's shell with
    // binary stdin/stdout (works when the image has scp, as here).
    scp_roundtrip(true);
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    fs::write(root.join("top.txt"), "top\n").expect("w");
    fs::write(root.join("a/one.txt"), "one\n".repeat(1000)).expect("w");
    fs::write(root.join("a/b/exec.sh"), "#!/bin/sh\necho hi\n").expect("w");
    fs::set_permissions(root.join("a/b/exec.sh"), fs::Permissions::from_mode(0o750))
        .expect("chmod");
    write_random_file(&root.join("a/b/c/blob.bin"), 3 * 1024 * 1024, 7);
    symlink("../one.txt", root.join("a/b/link")).expect("symlink");
    fs::create_dir(root.join("empty")).expect("mkdir");
}

/// (relative path, kind, mode, size or link target) of every entry, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    fn walk(base: &Path, p: &Path, v: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(p).expect("read_dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(base).expect("rel").display().to_string();
            let md = fs::symlink_metadata(&path).expect("lstat");
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                v.push(format!(
                    "{rel} link {:?}",
                    fs::read_link(&path).expect("readlink")
                ));
            } else if md.is_dir() {
                v.push(format!("{rel} dir {mode:o}"));
                walk(base, &path, v);
            } else {
                let mtime = std::os::unix::fs::MetadataExt::mtime(&md);
                v.push(format!(
                    "{rel} file {mode:o} {} {mtime} {}",
                    md.len(),
                    sha256_file(&path)
                ));
            }
        }
    }
    walk(root, root, &mut v);
    v
}

#[test]
fn rsync_archive_of_a_small_tree_both_ways() {
    let s = Builder::new().start();
    let src = s.root.join("tree");
    make_tree(&src);
    let e = format!("ssh {}", s.opts().join(" "));
    let mut up = Command::new("rsync");
    up.args(["-a", "-e", &e])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}:tree-copy/", s.host()));
    let out = run(&mut up, b"", LONG);
    s.assert_ok(&out);
    assert_eq!(
        listing(&s.home.join("tree-copy")),
        listing(&src),
        "tree after rsync up"
    );

    // Change one file remotely, pull back with the delta algorithm.
    let out = s.exec(&[], "echo changed >> tree-copy/top.txt", b"", T);
    s.assert_ok(&out);
    let back = s.root.join("tree-back");
    let mut down = Command::new("rsync");
    down.args(["-a", "-e", &e])
        .arg(format!("{}:tree-copy/", s.host()))
        .arg(format!("{}/", back.display()));
    let out = run(&mut down, b"", LONG);
    s.assert_ok(&out);
    assert_eq!(
        listing(&back),
        listing(&s.home.join("tree-copy")),
        "tree after rsync down"
    );
    assert_eq!(
        fs::read_to_string(back.join("top.txt")).expect("r"),
        "top\nchanged\n"
    );
}
