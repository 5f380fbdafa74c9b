//! Pseudo-terminals: allocate, size, apply the client's terminal modes, and
//! drive the master side from tokio.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
use nix::libc;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    self, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices as Cc,
};
use russh::Pty;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How long the terminal may stay quiet after the shell exited before the drain ends.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// How long after the shell exited the terminal is read at most.
pub const DRAIN_MAX: Duration = Duration::from_secs(1);

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(set_ctty, libc::TIOCSCTTY);

/// A freshly allocated pty pair.
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

/// Window size as sent by the client.
#[derive(Debug, Clone, Copy)]
pub struct WinSize {
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Allocate a pty; both ends close-on-exec so only the dup'd 0/1/2 reach the child.
pub fn open_pair() -> io::Result<PtyPair> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: into_raw_fd hands over sole ownership of a valid open fd.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    fcntl(&master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(PtyPair {
        master,
        slave,
        name,
    })
}

/// TIOCSWINSZ on the master; the kernel sends SIGWINCH to the foreground group.
pub fn resize(fd: &impl AsRawFd, ws: WinSize) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: clamp16(ws.rows),
        ws_col: clamp16(ws.cols),
        ws_xpixel: clamp16(ws.pix_width),
        ws_ypixel: clamp16(ws.pix_height),
    };
    // SAFETY: valid fd and a pointer to a live, initialised winsize.
    unsafe { set_winsize(fd.as_raw_fd(), &w) }?;
    Ok(())
}

/// Apply the client's terminal modes (RFC 4254 §8) to the slave.
pub fn apply_modes(slave: &impl AsFd, modes: &[(Pty, u32)]) -> io::Result<()> {
    let mut t = termios::tcgetattr(slave)?;
    for &(mode, value) in modes {
        let on = value != 0;
        let cc = |idx: Cc| (idx, u8::try_from(value).unwrap_or(0));
        let mut set_cc: Option<(Cc, u8)> = None;
        match mode {
            Pty::VINTR => set_cc = Some(cc(Cc::VINTR)),
            Pty::VQUIT => set_cc = Some(cc(Cc::VQUIT)),
            Pty::VERASE => set_cc = Some(cc(Cc::VERASE)),
            Pty::VKILL => set_cc = Some(cc(Cc::VKILL)),
            Pty::VEOF => set_cc = Some(cc(Cc::VEOF)),
            Pty::VEOL => set_cc = Some(cc(Cc::VEOL)),
            Pty::VEOL2 => set_cc = Some(cc(Cc::VEOL2)),
            Pty::VSTART => set_cc = Some(cc(Cc::VSTART)),
            Pty::VSTOP => set_cc = Some(cc(Cc::VSTOP)),
            Pty::VSUSP => set_cc = Some(cc(Cc::VSUSP)),
            Pty::VREPRINT => set_cc = Some(cc(Cc::VREPRINT)),
            Pty::VWERASE => set_cc = Some(cc(Cc::VWERASE)),
            Pty::VLNEXT => set_cc = Some(cc(Cc::VLNEXT)),
            Pty::VDISCARD => set_cc = Some(cc(Cc::VDISCARD)),
            Pty::IGNPAR => t.input_flags.set(InputFlags::IGNPAR, on),
            Pty::PARMRK => t.input_flags.set(InputFlags::PARMRK, on),
            Pty::INPCK => t.input_flags.set(InputFlags::INPCK, on),
            Pty::ISTRIP => t.input_flags.set(InputFlags::ISTRIP, on),
            Pty::INLCR => t.input_flags.set(InputFlags::INLCR, on),
            Pty::IGNCR => t.input_flags.set(InputFlags::IGNCR, on),
            Pty::ICRNL => t.input_flags.set(InputFlags::ICRNL, on),
            Pty::IXON => t.input_flags.set(InputFlags::IXON, on),
            Pty::IXANY => t.input_flags.set(InputFlags::IXANY, on),
            Pty::IXOFF => t.input_flags.set(InputFlags::IXOFF, on),
            Pty::IMAXBEL => t.input_flags.set(InputFlags::IMAXBEL, on),
            Pty::IUTF8 => t.input_flags.set(InputFlags::IUTF8, on),
            Pty::ISIG => t.local_flags.set(LocalFlags::ISIG, on),
            Pty::ICANON => t.local_flags.set(LocalFlags::ICANON, on),
            Pty::ECHO => t.local_flags.set(LocalFlags::ECHO, on),
            Pty::ECHOE => t.local_flags.set(LocalFlags::ECHOE, on),
            Pty::ECHOK => t.local_flags.set(LocalFlags::ECHOK, on),
            Pty::ECHONL => t.local_flags.set(LocalFlags::ECHONL, on),
            Pty::NOFLSH => t.local_flags.set(LocalFlags::NOFLSH, on),
            Pty::TOSTOP => t.local_flags.set(LocalFlags::TOSTOP, on),
            Pty::IEXTEN => t.local_flags.set(LocalFlags::IEXTEN, on),
            Pty::ECHOCTL => t.local_flags.set(LocalFlags::ECHOCTL, on),
            Pty::ECHOKE => t.local_flags.set(LocalFlags::ECHOKE, on),
            Pty::PENDIN => t.local_flags.set(LocalFlags::PENDIN, on),
            Pty::OPOST => t.output_flags.set(OutputFlags::OPOST, on),
            Pty::ONLCR => t.output_flags.set(OutputFlags::ONLCR, on),
            Pty::OCRNL => t.output_flags.set(OutputFlags::OCRNL, on),
            Pty::ONOCR => t.output_flags.set(OutputFlags::ONOCR, on),
            Pty::ONLRET => t.output_flags.set(OutputFlags::ONLRET, on),
            Pty::CS7 if on => {
                t.control_flags.remove(ControlFlags::CSIZE);
                t.control_flags.insert(ControlFlags::CS7);
            }
            Pty::CS8 if on => {
                t.control_flags.remove(ControlFlags::CSIZE);
                t.control_flags.insert(ControlFlags::CS8);
            }
            Pty::PARENB => t.control_flags.set(ControlFlags::PARENB, on),
            Pty::PARODD => t.control_flags.set(ControlFlags::PARODD, on),
            _ => {}
        }
        if let Some((idx, v)) = set_cc
            && let Some(slot) = t.control_chars.get_mut(idx as usize)
        {
            // 255 means "disabled" on the wire; the kernel uses 0 for that.
            *slot = if v == 255 { 0 } else { v };
        }
    }
    termios::tcsetattr(slave, SetArg::TCSANOW, &t)?;
    Ok(())
}

/// In the child (after fork, before exec): new session, slave on 0/1/2
/// becomes the controlling terminal. Only async-signal-safe calls.
pub fn child_setup() -> io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: fd 0 is the pty slave (stdio was dup'd before pre_exec runs).
    unsafe { set_ctty(0, 0) }?;
    Ok(())
}

/// Non-blocking master driven by the tokio reactor.
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    pub fn new(fd: OwnedFd) -> io::Result<Master> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open
        // and unreplaced for as long as it is registered.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)?
        };
        Ok(Master { fd })
    }

    pub fn raw(&self) -> &OwnedFd {
        self.fd.get_ref()
    }

    /// Read; Ok(0) at end. EIO (every slave fd closed) counts as end.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Read after the shell exited; Ok(0) at EIO (no slave fd left), when nothing comes
    /// for `DRAIN_QUIET`, or at `until`. What the shell wrote last can still be on its
    /// way to the master, so a read that does not wait can lose it on a busy machine; a
    /// background job that keeps the slave open ends the drain after the quiet time, or
    /// at `until` if it keeps writing, instead of holding the channel open.
    pub async fn read_draining(&self, buf: &mut [u8], until: Instant) -> io::Result<usize> {
        let deadline = until.min(Instant::now() + DRAIN_QUIET);
        match tokio::time::timeout_at(deadline, self.read(buf)).await {
            Ok(r) => r,
            Err(_quiet) => Ok(0),
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = data.get(n..).unwrap_or_default(),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
