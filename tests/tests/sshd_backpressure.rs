//! init-sshd e2e 7: flow control under back-pressure (russh issue #392 and friends).
//! These are the spec for the server's channel I/O: a slow reader must not hang the transfer
//! or the rest of the connection, a command that never reads must not make the server buffer,
//! and a dropped client must take its session's processes with it.

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::net::{free_port, http_get, http_server, wait_port};
use session_ssh_tests::sshd::procs;
use session_ssh_tests::sshd::run::{show, write_random_file};
use session_ssh_tests::sshd::{Builder, Sshd};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// `ssh [extra] host cat < file | slow reader`: the reader first stalls for `stall`, then reads
/// in small chunks with pauses; while stalled, `during_stall` runs. Returns (sha256, bytes).
fn cat_through_slow_reader(
    s: &Sshd,
    extra: &[String],
    len: u64,
    stall: Duration,
    during_stall: impl FnOnce(),
) -> (String, String, u64) {
    let src = s.root.join("bp.bin");
    let want = write_random_file(&src, len, 0xbac4);
    let mut c = s.ssh();
    c.args(extra).arg(s.host()).arg("cat");
    let what = show(&c);
    let mut child = c
        .stdin(Stdio::from(std::fs::File::open(&src).expect("open")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        sleep(stall);
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        let mut chunks = 0u64;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                    chunks += 1;
                    if chunks.is_multiple_of(8) {
                        sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        (
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            n,
        )
    });
    during_stall();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    let finished = child.try_wait().ok().flatten().is_some();
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().ok();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let (got, n) = reader.join().expect("reader");
    assert!(
        finished,
        "{what} < {len} bytes | slow reader hung (got {n} bytes in 180 s)\n{err}\n{}",
        s.logs()
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{what}: {err}\n{}",
        s.logs()
    );
    (want, got, n)
}

#[test]
fn cat_64mib_to_a_slow_reader_completes_with_the_right_sha256() {
    let s = Builder::new().start();
    let (want, got, n) = cat_through_slow_reader(&s, &[], 64 * MIB, Duration::from_secs(3), || {});
    assert_eq!(n, 64 * MIB, "byte count");
    assert_eq!(got, want, "sha256 through ssh host cat");
}

#[test]
fn a_stalled_channel_does_not_block_other_channels_of_the_connection() {
    let s = Builder::new().start();
    let http = http_server("still flowing\n");
    let lport = free_port();
    let extra = vec![
        "-L".to_string(),
        format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port),
    ];
    let port_ok = Arc::new(AtomicBool::new(false));
    let ok2 = port_ok.clone();
    let logs = s.logs();
    let (want, got, _) =
        cat_through_slow_reader(&s, &extra, 32 * MIB, Duration::from_secs(8), move || {
            // While `cat`'s output is stalled (client window full, server blocked writing),
            // a forward over the SAME connection must still work.
            sleep(Duration::from_secs(3));
            assert!(
                wait_port(lport, Duration::from_secs(5)),
                "-L did not listen"
            );
            let r = http_get(lport);
            match r {
                Ok(body) if body.ends_with("still flowing\n") => ok2.store(true, Ordering::SeqCst),
                other => eprintln!("GET during stall: {other:?}\n{logs}"),
            }
        });
    assert_eq!(got, want);
    assert!(
        port_ok.load(Ordering::SeqCst),
        "a channel with a stalled reader blocked the -L channel of the same connection"
    );
}

#[test]
fn pushing_1gib_into_a_command_that_never_reads_keeps_server_rss_low_and_kill_cleans_up() {
    let s = Builder::new().start();
    let serve = s.serve_pid();
    let rss_idle = procs::rss_bytes(serve).expect("serve RSS");
    let mut c = s.ssh();
    c.arg(s.host()).arg("exec sleep 6011");
    let what = show(&c);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let pushed = Arc::new(AtomicU64::new(0));
    let p2 = pushed.clone();
    let _writer = thread::spawn(move || {
        let buf = vec![0x5au8; MIB as usize];
        for _ in 0..1024 {
            if stdin.write_all(&buf).is_err() {
                break;
            }
            p2.fetch_add(MIB, Ordering::SeqCst);
        }
    });
    // Sample the server's RSS while the client pushes.
    let mut max_rss = 0u64;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Some(r) = procs::rss_bytes(serve) {
            max_rss = max_rss.max(r);
        }
        sleep(Duration::from_millis(100));
    }
    let sent = pushed.load(Ordering::SeqCst);
    eprintln!(
        "serve RSS idle {} KiB, max while pushing {} KiB; client wrote {} MiB into ssh",
        rss_idle / 1024,
        max_rss / 1024,
        sent / MIB
    );
    let session: Vec<u32> = procs::descendants(serve);
    assert!(
        session
            .iter()
            .any(|&p| procs::cmdline(p).contains("sleep 6011")),
        "session process not found under serve (children: {:?})\n{}",
        session
            .iter()
            .map(|&p| procs::cmdline(p))
            .collect::<Vec<_>>(),
        s.logs()
    );
    assert!(
        max_rss < 64 * MIB,
        "server RSS reached {} MiB while a client pushed {} MiB into a command that never reads",
        max_rss / MIB,
        sent / MIB
    );

    // Kill the client hard: no process of that session may survive 5 s.
    procs::kill9(child.id());
    let _ = child.wait();
    sleep(Duration::from_secs(5));
    let left: Vec<String> = procs::descendants(serve)
        .into_iter()
        .filter(|&p| procs::alive(p))
        .map(|p| format!("{p}: {}", procs::cmdline(p)))
        .collect();
    assert!(
        left.is_empty(),
        "session processes alive 5 s after the client died: {left:?}\n{}",
        s.logs()
    );
    assert!(procs::alive(serve), "serve died");
    s.exec_ok("true");
}

#[test]
fn killing_a_pty_client_hangs_up_its_shell() {
    let s = Builder::new().start();
    let serve = s.serve_pid();
    let mut c = s.ssh();
    c.arg("-tt").arg(s.host()).arg("sleep 6022; echo after");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh -tt");
    let end = Instant::now() + Duration::from_secs(15);
    while !procs::descendants(serve)
        .iter()
        .any(|&p| procs::cmdline(p).contains("sleep 6022"))
    {
        assert!(
            Instant::now() < end,
            "pty session did not start\n{}",
            s.logs()
        );
        sleep(Duration::from_millis(50));
    }
    procs::kill9(child.id());
    let _ = child.wait();
    sleep(Duration::from_secs(5));
    let left: Vec<String> = procs::descendants(serve)
        .into_iter()
        .filter(|&p| procs::alive(p))
        .map(|p| format!("{p}: {}", procs::cmdline(p)))
        .collect();
    assert!(
        left.is_empty(),
        "pty session alive 5 s after the client died: {left:?}\n{}",
        s.logs()
    );
    s.exec_ok("true");
}

#[test]
fn upload_to_a_slow_consumer_is_not_buffered_by_the_server() {
    // The other direction of the same rule: the server must not read ahead of a slow writer
    // to disk. A consumer that reads 64 MiB slowly still gets every byte, and the server stays
    // small meanwhile.
    let s = Builder::new().start();
    let serve = s.serve_pid();
    let src = s.root.join("up.bin");
    let want = write_random_file(&src, 64 * MIB, 77);
    let mut c = s.ssh();
    c.arg(s.host()).arg(
        "sleep 3; : > slow.bin; last=-1; while :; do \
             dd bs=64k count=16 iflag=fullblock status=none >> slow.bin; \
             n=$(stat -c %s slow.bin); [ \"$n\" = \"$last\" ] && break; last=$n; sleep 0.05; \
             done; sha256sum < slow.bin",
    );
    let what = show(&c);
    let mut child = c
        .stdin(Stdio::from(std::fs::File::open(&src).expect("open")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut max_rss = 0u64;
    let end = Instant::now() + Duration::from_secs(180);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
        if let Some(r) = procs::rss_bytes(serve) {
            max_rss = max_rss.max(r);
        }
        sleep(Duration::from_millis(100));
    }
    let done = child.try_wait().ok().flatten().is_some();
    if !done {
        let _ = child.kill();
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(done, "upload to a slow consumer hung\n{}", s.logs());
    assert_eq!(
        out.split_whitespace().next(),
        Some(want.as_str()),
        "sha256 of the upload"
    );
    assert!(
        max_rss < 64 * MIB,
        "server RSS reached {} MiB",
        max_rss / MIB
    );
}
