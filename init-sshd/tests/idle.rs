//! `init-sshd idle` (the pre-pull DaemonSet's container): runs until SIGTERM, then exits 0.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn idle_waits_for_sigterm_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_init-sshd"))
        .arg("idle")
        .spawn()
        .expect("spawn init-sshd idle");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "idle exited on its own"
    );
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "idle ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
