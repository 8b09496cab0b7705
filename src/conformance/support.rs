//! What the conformance tests share: opening a port, loopback sockets, and
//! waiting for completions with patience.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::port::{Backend, Completion, CompletionPort, Outcome, Port, RawSocket};

/// How long a test waits for completions before failing (Wine is slow).
const PATIENCE: Duration = Duration::from_secs(20);

/// A port of `backend`.
#[track_caller]
pub(super) fn open(backend: Backend) -> Port {
    match Port::open(backend) {
        Ok(port) => port,
        Err(e) => panic!("opening a {} port: {}", backend, e),
    }
}

/// The raw handle of a socket.
#[cfg(unix)]
pub(super) fn raw(socket: &impl std::os::unix::io::AsRawFd) -> RawSocket {
    socket.as_raw_fd()
}

/// The raw handle of a socket.
#[cfg(windows)]
pub(super) fn raw(socket: &impl std::os::windows::io::AsRawSocket) -> RawSocket {
    socket.as_raw_socket()
}

/// A nonblocking listener on 127.0.0.1, any port.
#[track_caller]
pub(super) fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A connected pair: a std client and its nonblocking server side, registered.
#[track_caller]
pub(super) fn registered_pair(port: &mut Port) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    port.register(raw(&server)).unwrap();
    (client, server)
}

/// Wait until `count` completions arrived; never more than `MAX_BATCH` per wait.
#[track_caller]
pub(super) fn wait_for(port: &mut Port, count: usize) -> Vec<Completion> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {} completions",
            out.len(),
            count
        );
        let before = out.len();
        port.wait(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(out.len() - before <= crate::port::MAX_BATCH);
    }
    assert_eq!(out.len(), count, "more completions than expected");
    out
}

/// The one completion of the next op to finish.
#[track_caller]
pub(super) fn one(port: &mut Port) -> Completion {
    wait_for(port, 1).pop().unwrap()
}

/// Let posted ops reach the kernel; nothing may complete.
#[track_caller]
pub(super) fn assert_nothing_ready(port: &mut Port) {
    let mut out = Vec::new();
    port.wait(&mut out, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

/// The buffer and result of a recv's completion.
#[track_caller]
pub(super) fn received(completion: Completion) -> (Vec<u8>, io::Result<usize>) {
    match completion.outcome {
        Outcome::Received { buf, result } => (buf, result),
        other => panic!("expected Received, got {:?}", other),
    }
}

/// The buffer, position and result of a send's completion.
#[track_caller]
pub(super) fn sent(completion: Completion) -> (Vec<u8>, usize, io::Result<usize>) {
    match completion.outcome {
        Outcome::Sent { buf, pos, result } => (buf, pos, result),
        other => panic!("expected Sent, got {:?}", other),
    }
}

/// Check that an op ended by a cancel failed as cancelled (`ECANCELED` on
/// Linux; on Windows, any error: Wine reports several).
#[track_caller]
pub(super) fn assert_canceled<T: std::fmt::Debug>(result: io::Result<T>) {
    let error = match result {
        Ok(value) => panic!("expected a cancelled op, got {:?}", value),
        Err(error) => error,
    };
    #[cfg(target_os = "linux")]
    assert_eq!(error.raw_os_error(), Some(libc::ECANCELED), "{}", error);
    #[cfg(windows)]
    drop(error);
}

/// Whether a child process would inherit `socket` (it must not).
#[cfg(unix)]
pub(super) fn inheritable(socket: &impl std::os::unix::io::AsRawFd) -> bool {
    // SAFETY: F_GETFD on an open fd takes no pointer.
    let flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0, "F_GETFD: {}", io::Error::last_os_error());
    flags & libc::FD_CLOEXEC == 0
}

/// Whether a child process would inherit `socket` (it must not).
#[cfg(windows)]
pub(super) fn inheritable(socket: &impl std::os::windows::io::AsRawSocket) -> bool {
    use windows_sys::Win32::Foundation::{GetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT};
    let mut flags = 0u32;
    // SAFETY: an open socket handle and a local out-value.
    let ok = unsafe { GetHandleInformation(socket.as_raw_socket() as HANDLE, &mut flags) };
    assert_ne!(
        ok,
        0,
        "GetHandleInformation: {}",
        io::Error::last_os_error()
    );
    flags & HANDLE_FLAG_INHERIT != 0
}
