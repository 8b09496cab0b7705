//! A Unix domain socket's file: made ready before the bind (a stale socket
//! replaced, nothing else ever deleted) and removed when the server closes,
//! only if it is still the file this server bound.
//!
//! Rules:
//! * Nothing is at the path: bind.
//! * A socket nobody listens on (connecting is refused): a stale file left by
//!   a server that died; it is removed, then bind.
//! * A socket someone listens on: left alone; the bind fails with the
//!   kernel's "address in use".
//! * Anything else (a regular file, a directory, a symbolic link...): left
//!   untouched, an `AlreadyExists` error naming the path.
//! * On close the file is removed only if it is still ours (same device and
//!   inode as right after the bind): a file another server bound there since
//!   is kept.
//!
//! The socket file gets the mode the process's umask leaves (`0o777 & !umask`);
//! connecting needs write permission on it.
//!
//! Linux only (the server refuses `path` elsewhere, see `Config::validate`).

use std::io;
use std::path::{Path, PathBuf};

use socket2::Socket;

/// The file of a bound Unix domain socket; removed when dropped (if still ours).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file right after the bind.
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    /// A listening stream socket bound at `path` (made ready as the module doc
    /// says), nonblocking, with its file.
    pub(crate) fn bind(path: &Path, backlog: i32) -> io::Result<(Socket, SocketFile)> {
        bind_at(path, backlog)
    }

    /// Remove the file if it is still the one this server bound. Idempotent.
    pub(crate) fn remove(&mut self) {
        if let Some(identity) = self.identity.take() {
            if file_identity(&self.path) == Some(identity) {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("could not remove {}: {}", self.path.display(), e);
                }
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(target_os = "linux")]
fn bind_at(path: &Path, backlog: i32) -> io::Result<(Socket, SocketFile)> {
    use socket2::{Domain, SockAddr, Type};

    remove_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let mut file = SocketFile {
        path: path.to_path_buf(),
        identity: file_identity(path),
    };
    if let Err(e) = socket.listen(backlog) {
        file.remove();
        return Err(e);
    }
    Ok((socket, file))
}

#[cfg(not(target_os = "linux"))]
fn bind_at(path: &Path, _backlog: i32) -> io::Result<(Socket, SocketFile)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{}: Unix domain sockets are supported on Linux only",
            path.display()
        ),
    ))
}

/// Make `path` free for a bind if it holds a stale socket; see the module doc.
#[cfg(target_os = "linux")]
fn remove_stale(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixStream;

    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; it is left untouched",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        // Someone listens: the bind fails with "address in use".
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing the stale socket {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        // Not ours to judge (no permission, ...): the bind says why.
        Err(_) => Ok(()),
    }
}

/// The device and inode of the socket file at `path`, if a socket is there.
#[cfg(target_os = "linux")]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_socket() {
        Some((meta.dev(), meta.ino()))
    } else {
        None
    }
}

#[cfg(not(target_os = "linux"))]
fn file_identity(_path: &Path) -> Option<(u64, u64)> {
    None
}
