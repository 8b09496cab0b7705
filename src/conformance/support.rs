//! What the port tests share: opening a port, loopback sockets, posting
//! recvs with port-chosen memory, and waiting for completions with patience.
//!
//! Written for any [`CompletionPort`]: the conformance properties drive a
//! [`Port`], each backend's own tests (`crate::uring::tests`,
//! `crate::epoll::tests`, `crate::iocp::tests`) drive their `Front` with the
//! same helpers. Rust 1.63 code: it also builds for Windows.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::contract::{Completion, CompletionPort, Op, Outcome, RawSocket, Token, MAX_BATCH};
use crate::port::{Backend, Port};

/// How long a test waits for completions before failing (Wine is slow).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

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
pub(crate) fn raw(socket: &impl std::os::unix::io::AsRawFd) -> RawSocket {
    socket.as_raw_fd()
}

/// The raw handle of a socket.
#[cfg(windows)]
pub(crate) fn raw(socket: &impl std::os::windows::io::AsRawSocket) -> RawSocket {
    socket.as_raw_socket()
}

/// A nonblocking listener on 127.0.0.1, any port.
#[track_caller]
pub(crate) fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A connected pair: a std client and its nonblocking server side.
#[track_caller]
pub(crate) fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// A connected pair: a std client and its nonblocking server side, registered.
#[track_caller]
pub(crate) fn registered_pair(port: &mut impl CompletionPort) -> (TcpStream, TcpStream) {
    let (client, server) = connected_pair();
    port.register(raw(&server)).unwrap();
    (client, server)
}

/// Post a recv with port-chosen memory (a buffer of capacity 0) on `socket`.
pub(crate) fn chosen_recv(port: &mut impl CompletionPort, token: Token, socket: &TcpStream) {
    port.submit(
        token,
        Op::Recv {
            socket: raw(socket),
            buf: Vec::new(),
        },
    );
}

/// `n` registered pairs, each with a chosen recv waiting on its server side
/// (token: its index); nothing has completed.
#[track_caller]
pub(crate) fn waiting_chosen_recvs(
    port: &mut impl CompletionPort,
    n: usize,
) -> Vec<(TcpStream, TcpStream)> {
    let mut pairs = Vec::new();
    for token in 0..n {
        let (client, server) = registered_pair(port);
        chosen_recv(port, token as Token, &server);
        pairs.push((client, server));
    }
    assert_nothing_ready(port);
    assert_eq!(port.in_flight(), n);
    pairs
}

/// Send each client of `pairs` its own message and check that the recv
/// waiting on its server side (token: its index) gets exactly it; the
/// buffers are given back to the port.
#[track_caller]
pub(crate) fn assert_each_gets_its_own_bytes(
    port: &mut impl CompletionPort,
    pairs: &mut [(TcpStream, TcpStream)],
) {
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        client.write_all(format!("m{}", i).as_bytes()).unwrap();
    }
    let mut seen = vec![false; pairs.len()];
    for completion in wait_for(port, pairs.len()) {
        let token = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("m{}", token).as_bytes());
        assert!(!seen[token], "token {} completed twice", token);
        seen[token] = true;
        port.give_buffer(buf);
    }
    assert_eq!(port.in_flight(), 0);
}

/// Wait until `count` completions arrived; never more than `MAX_BATCH` per wait.
#[track_caller]
pub(crate) fn wait_for(port: &mut impl CompletionPort, count: usize) -> Vec<Completion> {
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
        assert!(out.len() - before <= MAX_BATCH);
    }
    assert_eq!(out.len(), count, "more completions than expected");
    out
}

/// The one completion of the next op to finish.
#[track_caller]
pub(crate) fn one(port: &mut impl CompletionPort) -> Completion {
    wait_for(port, 1).pop().unwrap()
}

/// Let posted ops reach the kernel; nothing may complete.
#[track_caller]
pub(crate) fn assert_nothing_ready(port: &mut impl CompletionPort) {
    let mut out = Vec::new();
    port.wait(&mut out, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

/// The buffer and result of a recv's completion.
#[track_caller]
pub(crate) fn received(completion: Completion) -> (Vec<u8>, io::Result<usize>) {
    match completion.outcome {
        Outcome::Received { buf, result } => (buf, result),
        other => panic!("expected Received, got {:?}", other),
    }
}

/// The (owned) buffer, position and result of a send's completion.
#[track_caller]
pub(crate) fn sent(completion: Completion) -> (Vec<u8>, usize, io::Result<usize>) {
    match completion.outcome {
        Outcome::Sent { buf, pos, result } => {
            let buf = buf.into_owned().expect("the owned buffer of the send");
            (buf, pos, result)
        }
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
