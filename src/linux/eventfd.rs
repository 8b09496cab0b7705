//! The waker of the Linux ports: an `eventfd` whose counter going above 0
//! makes the port's wait return.
//!
//! Rule: the eventfd is owned by an `Arc<EventFd>` shared by the port and every
//! [`Waker`](crate::contract::Waker) it hands out, so a waker stays valid (and
//! harmless) after its port is dropped.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::syscall::{cvt, retry_eintr};
use crate::contract::Wake;

/// A nonblocking, close-on-exec eventfd.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with its counter at 0.
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the flags are valid constants.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Reset the counter to 0 (nothing to read is fine: another drain got there).
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        let _ = retry_eintr(|| {
            // SAFETY: reads 8 bytes into `value`, which is 8 bytes and valid for writes.
            cvt(unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut value as *mut u64).cast(),
                    mem::size_of::<u64>(),
                )
            })
        });
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        let written = retry_eintr(|| {
            // SAFETY: writes the 8 bytes of `one`, which outlives the call.
            cvt(unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    mem::size_of::<u64>(),
                )
            })
        });
        match written {
            // A saturated counter already means "wake up".
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map(drop),
        }
    }
}
