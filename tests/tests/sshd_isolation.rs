//! init-sshd e2e 5: no image dependency. UID 4242 with no /etc/passwd entry (setpriv), and a
//! root filesystem that holds only the binary and busybox (bwrap over a temp rootfs).

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::fs;
use std::process::Command;

use session_ssh_tests::sshd::run::{run, sha256_file, write_random_file};
use session_ssh_tests::sshd::{Builder, T};

#[test]
fn uid_4242_without_passwd_entry_falls_back_to_uid_root_dir_and_bin_sh() {
    // Nothing tells the server who it is: no passwd line, no USER/HOME/SHELL.
    let s = Builder::new()
        .uid(4242, 4242, false)
        .unset_image_env("HOME")
        .start();
    let out = s.exec(
        &[],
        "id -u; id -g; echo \"$USER|$LOGNAME|$HOME|$SHELL\"; pwd",
        b"",
        T,
    );
    s.assert_ok(&out);
    assert_eq!(
        out.stdout_str(),
        "4242\n4242\n4242|4242|/|/bin/sh\n/\n",
        "{}",
        s.diag(&out)
    );
    // A PTY shell works too (the fallback shell is /bin/sh).
    let out = s.exec(&["-tt"], "", b"tty; id -u; exit 0\n", T);
    s.assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("/dev/pts/"), "{}", s.diag(&out));
    assert!(text.contains("4242"), "{}", s.diag(&out));
}

#[test]
fn uid_4242_without_passwd_entry_uses_user_home_shell_from_env() {
    let b = Builder::new().uid(4242, 4242, false);
    let s = b
        .image_env("USER", "alice")
        .image_env("HOME", "/home/jovyan")
        .image_env("SHELL", "/bin/bash")
        .start();
    let out = s.exec(
        &[],
        "id -u; echo \"$USER|$HOME|$SHELL\"; pwd; echo $BASH_VERSION | cut -c1",
        b"",
        T,
    );
    s.assert_ok(&out);
    assert_eq!(
        out.stdout_str(),
        "4242\nalice|/home/jovyan|/bin/bash\n/home/jovyan\n5\n",
        "{}",
        s.diag(&out)
    );
    // sftp lands files in that HOME.
    let src = s.root.join("f.bin");
    let sum = write_random_file(&src, 200_000, 3);
    let bfile = s.root.join("b");
    fs::write(&bfile, format!("put {} f.bin\n", src.display())).expect("batch");
    let mut c = Command::new("sftp");
    c.args(s.opts()).arg("-b").arg(&bfile).arg(s.host());
    let out = run(&mut c, b"", T);
    s.assert_ok(&out);
    assert_eq!(sha256_file(&s.home.join("f.bin")), sum);
}

#[test]
fn busybox_only_rootfs_login_exec_pty_and_sftp() {
    let s = Builder::new()
        .busybox_rootfs()
        .uid(4242, 4242, false)
        .unset_image_env("HOME")
        .image_env("PATH", "/bin")
        .start();
    // The whole root: only busybox, the binary, DIR, keys and mount points.
    let out = s.exec(
        &[],
        "echo hello-from-busybox; busybox ls /; busybox ls /usr 2>/dev/null || echo no-usr; busybox id -u",
        b"",
        T,
    );
    s.assert_ok(&out);
    assert_eq!(
        out.stdout_str(),
        "hello-from-busybox\nbin\ndev\nkeys\nopt\nproc\ntmp\nno-usr\n4242\n",
        "{}",
        s.diag(&out)
    );
    // PTY shell on busybox sh.
    let out = s.exec(&["-tt"], "", b"busybox tty; exit 3\n", T);
    assert_eq!(out.code(), Some(3), "{}", s.diag(&out));
    assert!(out.stdout_str().contains("/dev/pts/"), "{}", s.diag(&out));
    // Built-in SFTP: the image has no sftp-server.
    let src = s.root.join("f.bin");
    let sum = write_random_file(&src, 1_000_000, 9);
    let back = s.root.join("f.back");
    let bfile = s.root.join("b");
    fs::write(
        &bfile,
        format!(
            "put {} /tmp/f.bin\nget /tmp/f.bin {}\n",
            src.display(),
            back.display()
        ),
    )
    .expect("batch");
    let mut c = Command::new("sftp");
    c.args(s.opts()).arg("-b").arg(&bfile).arg(s.host());
    let out = run(&mut c, b"", T);
    s.assert_ok(&out);
    assert_eq!(
        sha256_file(&s.root.join("rootfs/tmp/f.bin")),
        sum,
        "uploaded"
    );
    assert_eq!(sha256_file(&back), sum, "downloaded");
}

#[test]
fn binary_is_fully_static() {
    let bin = session_ssh_tests::sshd::init_sshd_bin();
    let out = run(Command::new("ldd").arg(&bin), b"", T);
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "ldd {}: {text}",
        bin.display()
    );
}
