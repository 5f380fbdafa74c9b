//! Nothing a test run starts outlives it.
//!
//! Every process the harness starts runs in a process group of its own, registered here.
//! SIGINT (Ctrl-C), SIGTERM (`timeout`, CI) and SIGHUP (a closed terminal) kill every
//! registered group with SIGKILL before the process dies of the signal as it would have.
//!
//! SIGKILL of a group, sent from outside, also reaches a sandbox's PID 1 (the entrypoint of a
//! bubblewrap PID namespace), and its death takes down everything in that namespace: the
//! detached `init-sshd serve` and its sessions. A plain SIGTERM would not: PID 1 of a
//! namespace ignores every signal it has no handler for. Nor would bwrap's
//! `--die-with-parent`, whose death signal the kernel clears when the sandbox switches to the
//! session's UID.
//!
//! Own groups also keep a terminal's Ctrl-C (sent to the foreground group) from killing a
//! fixture before the clean-up that needs it has run.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;

const SLOTS: usize = 1024;
/// Registered process-group ids; 0 is a free slot. Lock-free: the handler reads them.
static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
/// Write end of the waiter's pipe, or -1 when no one waits (then the signal is re-raised).
static WAITER: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// A registered process group; dropping it unregisters the group (drop it after the
/// process has been reaped, so a recycled id is never killed).
#[derive(Debug)]
pub struct Registration {
    slot: Option<usize>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            GROUPS[i].store(0, Ordering::SeqCst);
        }
    }
}

/// A child that leads its own registered process group; it derefs to the [`Child`].
/// The group is unregistered when this is dropped: kill and wait for it first.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    _reg: Registration,
}

impl Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Proc {
    /// SIGKILL to the whole group (a ProxyCommand or a worker that outlived its leader too).
    pub fn kill_group(&self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory effects; a gone group gives ESRCH.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Spawns `cmd` as the leader of a new process group and registers that group.
pub fn spawn(cmd: &mut Command) -> io::Result<Proc> {
    install();
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let reg = register(child.id());
    Ok(Proc { child, _reg: reg })
}

/// Registers process group `pgid` for SIGKILL on SIGINT, SIGTERM and SIGHUP.
pub fn register(pgid: u32) -> Registration {
    install();
    let Ok(pgid) = i32::try_from(pgid) else {
        return Registration { slot: None };
    };
    for (i, g) in GROUPS.iter().enumerate() {
        if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Registration { slot: Some(i) };
        }
    }
    // More than SLOTS live groups in one test process is a harness bug; say so loudly.
    eprintln!("reaper: all {SLOTS} slots in use; process group {pgid} is not covered");
    Registration { slot: None }
}

/// Catches SIGINT, SIGTERM and SIGHUP instead of dying of them, for a program that cleans
/// up before it exits: from [`Waiter::new`] on, a signal kills the registered groups and
/// wakes [`Waiter::wait`].
#[derive(Debug)]
pub struct Waiter {
    read: libc::c_int,
}

impl Waiter {
    /// From now on a signal is caught (set this up before telling the user to press Ctrl-C).
    pub fn new() -> io::Result<Waiter> {
        install();
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        WAITER.store(fds[1], Ordering::SeqCst);
        Ok(Waiter { read: fds[0] })
    }

    /// Blocks until a signal arrives (the registered groups are killed by then) and
    /// returns its number.
    pub fn wait(self) -> io::Result<i32> {
        let mut sig = [0u8; 1];
        loop {
            // SAFETY: reads at most one byte into a one-byte buffer.
            let n = unsafe { libc::read(self.read, sig.as_mut_ptr().cast(), 1) };
            if n == 1 {
                return Ok(i32::from(sig[0]));
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP now (spawning through this module
/// does it too): a program calls it first so that a signal at any point cleans up.
pub fn install() {
    INSTALL.call_once(|| {
        for sig in SIGNALS {
            // SAFETY: the handler only calls async-signal-safe functions (kill, write,
            // signal, raise) and reads atomics.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

fn kill_registered() {
    for g in &GROUPS {
        let pgid = g.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill is async-signal-safe; a group that is gone gives ESRCH.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    kill_registered();
    let fd = WAITER.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [u8::try_from(sig).unwrap_or(0)];
        // SAFETY: write is async-signal-safe; the waiter reads this byte.
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
        return;
    }
    // SAFETY: back to the default action and die of the same signal, so the parent sees
    // the usual status (130 for Ctrl-C in a shell).
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
