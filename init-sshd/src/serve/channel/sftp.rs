//! Built-in SFTP subsystem (so `sftp` and OpenSSH's `scp` work in images
//! without an sftp-server): russh-sftp's protocol over the channel stream,
//! real filesystem operations as the server's user. Relative paths are
//! relative to the user's home, like OpenSSH's sftp-server.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use russh::Channel;
use russh::server::Msg;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use crate::serve::connctx::ConnCtx;

mod dir;
mod stream;

use dir::DirCursor;

use stream::SftpStream;

/// Errors of SFTP requests, mapped onto SFTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("unknown handle")]
    BadHandle,
    #[error("end of file")]
    Eof,
    #[error("operation not supported")]
    Unsupported,
    #[error("too many open handles (limit {MAX_HANDLES})")]
    TooManyHandles,
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for StatusReply {
    fn from(e: Error) -> StatusReply {
        let code = match &e {
            Error::Io(io) => match io.kind() {
                io::ErrorKind::NotFound => StatusCode::NoSuchFile,
                io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
                _ => StatusCode::Failure,
            },
            Error::BadHandle | Error::TooManyHandles => StatusCode::Failure,
            Error::Eof => StatusCode::Eof,
            Error::Unsupported => StatusCode::OpUnsupported,
        };
        code.with_message(e.to_string())
    }
}

/// Largest read answered at once (clients ask for 32–255 KiB).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per READDIR reply.
const DIR_BATCH: usize = 128;

/// Open files and directories per SFTP session: each holds a descriptor, and the
/// descriptors are shared with every other session of the server.
const MAX_HANDLES: usize = 256;

enum OpenHandle {
    File(Arc<fs::File>),
    /// Read a batch at a time, so a huge directory never sits in memory whole.
    /// `None` while a batch is being read on the blocking pool.
    Dir(Option<DirCursor>),
}

/// One SFTP session.
pub struct Sftp {
    home: PathBuf,
    conn: u64,
    handles: HashMap<String, OpenHandle>,
    next: u64,
}

/// Serve SFTP on an accepted `subsystem sftp` channel.
pub fn start(channel: Channel<Msg>, ctx: ConnCtx, home: PathBuf) {
    let ConnCtx {
        id: conn,
        handle,
        gone,
        live,
    } = ctx;
    let id = channel.id();
    let stream = SftpStream {
        inner: Some(channel.into_stream()),
        gone: Box::pin(async move {
            let mut gone = gone;
            let _ = gone.changed().await;
        }),
        end: Some((handle, id)),
        _live: live,
    };
    tokio::spawn(serve(stream, home, conn));
}

/// The SFTP server on any byte stream: russh-sftp's packet framing and request decoding,
/// then this module's handler. `start` gives it the channel; the fuzz target
/// `sftp_request` an in-memory pipe. The server loop runs as its own task (russh-sftp
/// spawns it) until the stream ends.
pub async fn serve<S>(stream: S, home: PathBuf, conn: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = Sftp {
        home,
        conn,
        handles: HashMap::new(),
        next: 0,
    };
    let cfg = russh_sftp::server::Config {
        // Room for a 255 KiB write plus header (OpenSSH's client max).
        max_client_packet_len: 512 * 1024,
    };
    russh_sftp::server::run_with_config(stream, handler, cfg).await;
}

/// Resolve a client path: relative to home, "" and "." mean home.
pub fn resolve(home: &Path, path: &str) -> PathBuf {
    if path.is_empty() {
        return home.to_path_buf();
    }
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        home.join(p)
    }
}

/// Lexical normalisation for REALPATH when the path does not exist
/// (clients call realpath on upload targets).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn unix_secs(t: io::Result<std::time::SystemTime>) -> Option<u32> {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// File attributes with the real type bits (a symlink stays a symlink).
fn attrs(m: &fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(m.len()),
        uid: Some(m.uid()),
        user: None,
        gid: Some(m.gid()),
        group: None,
        permissions: Some(m.mode()),
        atime: unix_secs(m.accessed()),
        mtime: unix_secs(m.modified()),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `ls -l` date: "Nov 23 18:22" within half a year, else "Nov 23  2024" (UTC).
fn ls_date(t: u64, now: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let days = (t / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = MONTHS.get((month - 1) as usize).copied().unwrap_or("???");
    if now.abs_diff(t) < 180 * 86_400 {
        let secs = t % 86_400;
        format!("{mon} {day:>2} {:02}:{:02}", secs / 3600, (secs / 60) % 60)
    } else {
        format!("{mon} {day:>2}  {year}")
    }
}

/// A READDIR entry with an `ls -l` style longname that knows every file type
/// (russh-sftp's own only knows directories).
fn entry(name: String, m: Option<&fs::Metadata>) -> File {
    let Some(m) = m else {
        return File {
            longname: name.clone(),
            filename: name,
            attrs: FileAttributes::empty(),
        };
    };
    let a = attrs(m);
    let kind = match m.mode() & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mode = m.mode();
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let perms: String = [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        bit(0o100, 'x'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        bit(0o010, 'x'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        bit(0o001, 'x'),
    ]
    .into_iter()
    .collect();
    let longname = format!(
        "{kind}{perms} {:>3} {:<8} {:<8} {:>8} {} {name}",
        m.nlink(),
        m.uid(),
        m.gid(),
        m.len(),
        ls_date(a.mtime.unwrap_or(0).into(), now_secs())
    );
    File {
        filename: name,
        longname,
        attrs: a,
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// Apply SETSTAT attributes: size, permissions, times (uid/gid changes are
/// not possible for an unprivileged server and are ignored like OpenSSH does
/// when they are unchanged).
fn set_attrs(path: &Path, a: &FileAttributes) -> io::Result<()> {
    if let Some(size) = a.size {
        fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(size)?;
    }
    if let Some(mode) = a.permissions {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let (Some(at), Some(mt)) = (a.atime, a.mtime) {
        let f = fs::File::options()
            .write(true)
            .open(path)
            .or_else(|_| fs::File::open(path))?;
        let times = fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(at.into()))
            .set_modified(UNIX_EPOCH + Duration::from_secs(mt.into()));
        f.set_times(times)?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Error::Io),
        Err(e) => Err(Error::Io(io::Error::other(e))),
    }
}

impl Sftp {
    fn path(&self, p: &str) -> PathBuf {
        resolve(&self.home, p)
    }

    fn insert(&mut self, h: OpenHandle) -> Result<String> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Error::TooManyHandles);
        }
        self.next += 1;
        let key = self.next.to_string();
        self.handles.insert(key.clone(), h);
        Ok(key)
    }

    fn file(&self, handle: &str) -> Result<Arc<fs::File>> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(f)) => Ok(f.clone()),
            _ => Err(Error::BadHandle),
        }
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = Error;

    fn unimplemented(&self) -> Error {
        Error::Unsupported
    }

    async fn init(&mut self, version: u32, _ext: HashMap<String, String>) -> Result<Version> {
        tracing::debug!(conn = self.conn, version, "sftp init");
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle> {
        let path = self.path(&filename);
        let mut opts: fs::OpenOptions = pflags.into();
        if !pflags.contains(OpenFlags::READ) && !pflags.contains(OpenFlags::WRITE) {
            opts.read(true);
        }
        opts.mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        let file = blocking(move || opts.open(path)).await?;
        let handle = self.insert(OpenHandle::File(Arc::new(file)))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(Error::BadHandle),
        }
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Result<Data> {
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ) as usize;
        let data = blocking(move || {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            // Fill the request unless at EOF: short reads confuse no client,
            // but fewer round trips are faster.
            while got < len {
                let n =
                    file.read_at(buf.get_mut(got..).unwrap_or_default(), offset + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await?;
        if data.is_empty() {
            return Err(Error::Eof);
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status> {
        let file = self.file(&handle)?;
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs> {
        let p = self.path(&path);
        let m = blocking(move || fs::symlink_metadata(p)).await?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs> {
        let p = self.path(&path);
        let m = blocking(move || fs::metadata(p)).await?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs> {
        let file = self.file(&handle)?;
        let m = blocking(move || file.metadata()).await?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn setstat(&mut self, id: u32, path: String, a: FileAttributes) -> Result<Status> {
        let p = self.path(&path);
        blocking(move || set_attrs(&p, &a)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(&mut self, id: u32, handle: String, a: FileAttributes) -> Result<Status> {
        let file = self.file(&handle)?;
        blocking(move || {
            if let Some(size) = a.size {
                file.set_len(size)?;
            }
            if let Some(mode) = a.permissions {
                file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let (Some(at), Some(mt)) = (a.atime, a.mtime) {
                let times = fs::FileTimes::new()
                    .set_accessed(UNIX_EPOCH + Duration::from_secs(at.into()))
                    .set_modified(UNIX_EPOCH + Duration::from_secs(mt.into()));
                file.set_times(times)?;
            }
            Ok(())
        })
        .await?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle> {
        let path = self.path(&path);
        let cursor = blocking(move || DirCursor::open(path)).await?;
        let handle = self.insert(OpenHandle::Dir(Some(cursor)))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name> {
        let Some(OpenHandle::Dir(slot)) = self.handles.get_mut(&handle) else {
            return Err(Error::BadHandle);
        };
        let mut cursor = slot.take().ok_or(Error::BadHandle)?;
        let (cursor, files) = blocking(move || {
            let files = cursor.next_batch();
            Ok((cursor, files))
        })
        .await?;
        // The handle may have been closed meanwhile; then the cursor is dropped here.
        if let Some(OpenHandle::Dir(slot)) = self.handles.get_mut(&handle) {
            *slot = Some(cursor);
        }
        let files = files?;
        if files.is_empty() {
            Err(Error::Eof)
        } else {
            Ok(Name { id, files })
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status> {
        let p = self.path(&filename);
        blocking(move || fs::remove_file(p)).await?;
        Ok(ok(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, a: FileAttributes) -> Result<Status> {
        let p = self.path(&path);
        blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(a.permissions.map_or(0o777, |m| m & 0o7777))
                .create(p)
        })
        .await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status> {
        let p = self.path(&path);
        blocking(move || fs::remove_dir(p)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name> {
        let p = self.path(&path);
        let real =
            blocking(move || Ok(fs::canonicalize(&p).unwrap_or_else(|_| normalize(&p)))).await?;
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        blocking(move || fs::rename(from, to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name> {
        let p = self.path(&path);
        let target = blocking(move || fs::read_link(p)).await?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(&mut self, id: u32, linkpath: String, targetpath: String) -> Result<Status> {
        // OpenSSH's sftp-server swaps the arguments relative to the draft
        // (SSH_FXP_SYMLINK sends targetpath first); the OpenSSH client does
        // the same, and russh-sftp decodes in draft order, so the names
        // arrive swapped: "linkpath" holds the target.
        let link = self.path(&targetpath);
        let target = PathBuf::from(linkpath);
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests;
