//! Linux helpers shared by the io_uring and epoll backends.
//!
//! Rule: only what both backends use lives here, once; it imports nothing of
//! either backend, nor of the front or of [`crate::port`].

mod eventfd;
mod syscall;

pub(crate) use eventfd::EventFd;
pub(crate) use syscall::{cvt, retry_eintr};

/// The capacity of the buffers a Linux port chooses for a recv: the most one
/// such recv returns.
///
/// Kept below glibc's 128 KiB `mmap` threshold, so that a buffer is not a
/// mapping of its own (bench/README.md, "Why the port's buffers are sized as
/// they are"). An idle connection holds no receive buffer on Linux, so the size
/// costs only while bytes are being received.
pub(crate) const LINUX_RECV_SIZE: usize = 124 << 10;
