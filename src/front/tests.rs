//! The front over a fake driver, without a kernel or a socket: the fake
//! records what it is asked to do and finishes each op where the test tells
//! it to, so every rule of the front's module doc is checked on its own. The
//! contract as a whole is checked on real kernels by `crate::conformance`.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Front;
use crate::contract::errors::{already_registered, not_registered};
use crate::contract::{
    Completion, CompletionPort, Driver, Op, Outcome, RawSocket, Ready, Token, Wake, Waker,
    MAX_BATCH,
};

/// Sockets the ops of the tests work on (the fake never touches them).
const A: RawSocket = 10;
const B: RawSocket = 11;
const C: RawSocket = 12;

/// What the fake driver was asked to do.
#[derive(Debug, PartialEq)]
enum Call {
    Register(RawSocket),
    Deregister(RawSocket),
    Start(Token),
    Cancel(RawSocket),
    Reap {
        limit: usize,
        timeout: Option<Duration>,
    },
}

/// Where the fake puts the completion of an op it starts.
#[derive(Clone, Copy)]
enum Finish {
    /// In the kernel: a later reap appends it to `out`, unless a cancel or
    /// deregister of its socket pushes it to the ready queue first.
    Kernel,
    /// Into the ready queue at once (an op that finished inside its start).
    AtStart,
    /// Into the ready queue during the next reap (as epoll's retried ops).
    AtReap,
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A driver that records every call and finishes ops as scripted. Every op
/// ends with an error of kind `Other` (the front never looks at outcomes).
struct Fake {
    calls: Vec<Call>,
    /// Where the next ops started finish.
    finish: Finish,
    /// Completions of ops in the kernel, in order, with their socket.
    kernel: VecDeque<(RawSocket, Completion)>,
    /// Completions the next reap pushes to the ready queue.
    at_reap: Vec<Completion>,
    /// What the next reap fails with.
    reap_error: Option<io::ErrorKind>,
    registered: Vec<RawSocket>,
    wakes: Arc<Wakes>,
    /// Buffers handed back through `give_buffer`.
    given: Vec<Vec<u8>>,
}

impl Fake {
    /// Every op in the kernel on `socket` ends at once, into `ready`.
    fn end_ops_on(&mut self, socket: RawSocket, ready: &mut Ready) {
        let mut left = VecDeque::new();
        for (on, completion) in self.kernel.drain(..) {
            if on == socket {
                ready.push_back(completion);
            } else {
                left.push_back((on, completion));
            }
        }
        self.kernel = left;
    }
}

impl Driver for Fake {
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        self.calls.push(Call::Register(socket));
        if self.registered.contains(&socket) {
            return Err(already_registered(socket));
        }
        self.registered.push(socket);
        Ok(())
    }

    fn deregister(&mut self, socket: RawSocket, ready: &mut Ready) -> io::Result<()> {
        self.calls.push(Call::Deregister(socket));
        if !self.registered.contains(&socket) {
            return Err(not_registered(socket));
        }
        self.registered.retain(|&s| s != socket);
        self.end_ops_on(socket, ready);
        Ok(())
    }

    fn start(&mut self, token: Token, op: Op, ready: &mut Ready) {
        self.calls.push(Call::Start(token));
        let socket = op.socket();
        let completion = op.fail(token, io::ErrorKind::Other.into());
        match self.finish {
            Finish::Kernel => self.kernel.push_back((socket, completion)),
            Finish::AtStart => ready.push_back(completion),
            Finish::AtReap => self.at_reap.push(completion),
        }
    }

    fn cancel(&mut self, socket: RawSocket, ready: &mut Ready) {
        self.calls.push(Call::Cancel(socket));
        self.end_ops_on(socket, ready);
    }

    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        limit: usize,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> io::Result<()> {
        self.calls.push(Call::Reap { limit, timeout });
        assert!(limit >= 1, "the driver was asked for no completion");
        if let Some(kind) = self.reap_error.take() {
            return Err(kind.into());
        }
        for _ in 0..limit {
            match self.kernel.pop_front() {
                Some((_, completion)) => out.push(completion),
                None => break,
            }
        }
        ready.extend(self.at_reap.drain(..));
        Ok(())
    }

    fn waker(&self) -> Waker {
        Arc::clone(&self.wakes) as Waker
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.given.push(buf);
    }
}

fn front() -> Front<Fake> {
    Front::new(Fake {
        calls: Vec::new(),
        finish: Finish::Kernel,
        kernel: VecDeque::new(),
        at_reap: Vec::new(),
        reap_error: None,
        registered: Vec::new(),
        wakes: Arc::default(),
        given: Vec::new(),
    })
}

/// An op with no buffer, on `socket`.
fn connect(socket: RawSocket) -> Op {
    Op::Connect {
        socket,
        addr: "127.0.0.1:9".parse().unwrap(),
    }
}

/// A send with nothing to send: the front fails it at submit.
fn empty_send(socket: RawSocket) -> Op {
    Op::Send {
        socket,
        buf: Vec::new().into(),
        pos: 0,
    }
}

/// What one `wait` appends, from an empty `out`.
#[track_caller]
fn wait(port: &mut Front<Fake>, timeout: Option<Duration>) -> Vec<Completion> {
    let mut out = Vec::new();
    port.wait(&mut out, timeout).unwrap();
    out
}

fn tokens(out: &[Completion]) -> Vec<Token> {
    out.iter().map(|c| c.token).collect()
}

fn last_call(port: &Front<Fake>) -> &Call {
    port.driver()
        .calls
        .last()
        .expect("the driver was never called")
}

/// The buffer of a recv or send that failed with `InvalidInput`.
#[track_caller]
fn invalid_input(completion: &Completion) -> &[u8] {
    match &completion.outcome {
        Outcome::Received {
            buf,
            result: Err(e),
        } if e.kind() == io::ErrorKind::InvalidInput => buf,
        Outcome::Sent {
            buf,
            result: Err(e),
            ..
        } if e.kind() == io::ErrorKind::InvalidInput => buf.single().expect("one buffer"),
        other => panic!("not an InvalidInput failure: {:?}", other),
    }
}

#[test]
fn unusable_buffers_fail_at_once_and_never_reach_the_driver() {
    let mut port = front();
    let mut full = Vec::with_capacity(4);
    full.resize(full.capacity(), b'x');
    let full_at = full.as_ptr();
    port.submit(
        1,
        Op::Recv {
            socket: A,
            buf: full,
        },
    );
    let sent = b"sent".to_vec();
    let sent_at = sent.as_ptr();
    port.submit(
        2,
        Op::Send {
            socket: A,
            buf: sent.into(),
            pos: 4,
        },
    );
    port.submit(
        3,
        Op::Send {
            socket: A,
            buf: b"sent".to_vec().into(),
            pos: 9,
        },
    );
    port.submit(4, empty_send(A));
    assert!(
        port.driver().calls.is_empty(),
        "an unusable op reached the driver: {:?}",
        port.driver().calls
    );

    let out = wait(&mut port, None);
    assert_eq!(tokens(&out), [1, 2, 3, 4]);
    assert_eq!(invalid_input(&out[0]).as_ptr(), full_at, "not its buffer");
    assert_eq!(invalid_input(&out[1]).as_ptr(), sent_at, "not its buffer");
    assert_eq!(invalid_input(&out[2]), b"sent");
    assert!(invalid_input(&out[3]).is_empty());
    assert!(matches!(out[1].outcome, Outcome::Sent { pos: 4, .. }));
    assert!(matches!(out[2].outcome, Outcome::Sent { pos: 9, .. }));
    assert!(
        wait(&mut port, Some(Duration::ZERO)).is_empty(),
        "an op failed at submit completed twice"
    );
}

#[test]
fn usable_buffers_reach_the_driver() {
    let mut port = front();
    // Capacity 0: the port chooses the memory.
    port.submit(
        1,
        Op::Recv {
            socket: A,
            buf: Vec::new(),
        },
    );
    let mut spare = Vec::with_capacity(8);
    spare.push(b'x');
    port.submit(
        2,
        Op::Recv {
            socket: A,
            buf: spare,
        },
    );
    port.submit(
        3,
        Op::Send {
            socket: A,
            buf: b"sent".to_vec().into(),
            pos: 3,
        },
    );
    port.submit(4, Op::Accept { listener: A });
    port.submit(5, connect(A));
    assert_eq!(
        port.driver().calls,
        [1, 2, 3, 4, 5].map(Call::Start),
        "a usable op did not reach the driver"
    );
}

#[test]
fn completions_found_at_start_cancel_and_deregister_come_first_in_order() {
    let mut port = front();
    port.register(A).unwrap();
    port.submit(1, connect(A));
    port.submit(2, connect(B));
    port.driver_mut().finish = Finish::AtStart;
    port.submit(3, connect(C));
    port.driver_mut().finish = Finish::Kernel;
    port.cancel(B);
    port.submit(4, connect(C));
    port.deregister(A).unwrap();
    port.submit(5, empty_send(C));

    let out = wait(&mut port, None);
    // 3 at start, 2 at cancel, 1 at deregister, 5 failed at submit; then the
    // driver's 4, picked up without blocking.
    assert_eq!(tokens(&out), [3, 2, 1, 5, 4]);
    assert_eq!(
        *last_call(&port),
        Call::Reap {
            limit: MAX_BATCH - 4,
            timeout: Some(Duration::ZERO)
        }
    );
}

#[test]
fn with_nothing_in_hand_the_driver_gets_the_callers_timeout() {
    let timeouts = [
        None,
        Some(Duration::ZERO),
        Some(Duration::from_micros(1)),
        Some(Duration::from_secs(5)),
    ];
    for timeout in timeouts {
        let mut port = front();
        port.submit(1, connect(A));
        assert_eq!(tokens(&wait(&mut port, timeout)), [1]);
        assert_eq!(
            *last_call(&port),
            Call::Reap {
                limit: MAX_BATCH,
                timeout
            }
        );
    }
}

#[test]
fn a_wait_hands_out_at_most_max_batch_and_the_rest_in_order_next() {
    let mut port = front();
    let extra = 3;
    let queued = (MAX_BATCH + extra) as Token;
    port.driver_mut().finish = Finish::AtStart;
    for token in 0..queued {
        port.submit(token, connect(A));
    }
    port.driver_mut().finish = Finish::Kernel;
    port.submit(queued, connect(A));

    let first = wait(&mut port, None);
    assert_eq!(tokens(&first), (0..MAX_BATCH as Token).collect::<Vec<_>>());
    let second = wait(&mut port, None);
    assert_eq!(
        tokens(&second),
        (MAX_BATCH as Token..=queued).collect::<Vec<_>>()
    );
    assert_eq!(
        *last_call(&port),
        Call::Reap {
            limit: MAX_BATCH - extra,
            timeout: Some(Duration::ZERO)
        }
    );
}

#[test]
fn the_driver_is_asked_for_what_is_left_of_the_batch() {
    let mut port = front();
    let reaped = (MAX_BATCH + 5) as Token;
    for token in 0..reaped {
        port.submit(token, connect(A));
    }
    port.submit(reaped, empty_send(A));
    port.submit(reaped + 1, empty_send(A));

    let first = wait(&mut port, None);
    assert_eq!(first.len(), MAX_BATCH);
    assert_eq!(tokens(&first[..2]), [reaped, reaped + 1]);
    assert_eq!(
        tokens(&first[2..]),
        (0..MAX_BATCH as Token - 2).collect::<Vec<_>>()
    );
    assert_eq!(
        *last_call(&port),
        Call::Reap {
            limit: MAX_BATCH - 2,
            timeout: Some(Duration::ZERO)
        }
    );
    let second = wait(&mut port, None);
    assert_eq!(
        tokens(&second),
        (MAX_BATCH as Token - 2..reaped).collect::<Vec<_>>()
    );
    assert_eq!(
        *last_call(&port),
        Call::Reap {
            limit: MAX_BATCH,
            timeout: None
        }
    );
}

#[test]
fn completions_queued_while_reaping_follow_within_the_batch() {
    let mut port = front();
    let reaped = (MAX_BATCH - 1) as Token;
    for token in 0..reaped {
        port.submit(token, connect(A));
    }
    port.driver_mut().finish = Finish::AtReap;
    for token in reaped..reaped + 3 {
        port.submit(token, connect(A));
    }

    let first = wait(&mut port, None);
    assert_eq!(tokens(&first), (0..=reaped).collect::<Vec<_>>());
    let second = wait(&mut port, None);
    assert_eq!(tokens(&second), [reaped + 1, reaped + 2]);
}

#[test]
fn in_flight_counts_ops_until_wait_returns_them() {
    let mut port = front();
    assert_eq!(port.in_flight(), 0);
    port.submit(1, connect(A));
    port.submit(2, empty_send(A));
    port.driver_mut().finish = Finish::AtStart;
    port.submit(3, connect(A));
    assert_eq!(port.in_flight(), 3, "an op failed or finished at submit");
    port.cancel(A);
    assert_eq!(port.in_flight(), 3, "a cancel ended no wait");

    // The caller does not empty `out`: only what a wait appends counts.
    let mut out = Vec::new();
    port.wait(&mut out, None).unwrap();
    assert_eq!(tokens(&out), [2, 3, 1]);
    assert_eq!(port.in_flight(), 0);
    port.driver_mut().finish = Finish::Kernel;
    for token in 0..=MAX_BATCH as Token {
        port.submit(token, connect(A));
    }
    assert_eq!(port.in_flight(), MAX_BATCH + 1);
    port.wait(&mut out, None).unwrap();
    assert_eq!(port.in_flight(), 1);
    port.wait(&mut out, None).unwrap();
    assert_eq!(port.in_flight(), 0);
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(port.in_flight(), 0);
    assert_eq!(out.len(), MAX_BATCH + 4);
}

#[test]
fn a_failed_reap_loses_no_completion() {
    let mut port = front();
    port.submit(1, empty_send(A));
    port.submit(2, connect(A));
    port.driver_mut().reap_error = Some(io::ErrorKind::PermissionDenied);

    let mut out = Vec::new();
    let error = port.wait(&mut out, None).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(tokens(&out), [1], "the completion in hand is handed out");
    assert_eq!(port.in_flight(), 1);
    assert_eq!(tokens(&wait(&mut port, None)), [2]);
    assert_eq!(port.in_flight(), 0);
}

#[test]
fn register_deregister_waker_and_give_buffer_are_passed_through() {
    let mut port = front();
    port.register(A).unwrap();
    let twice = port.register(A).unwrap_err();
    assert_eq!(twice.kind(), io::ErrorKind::AlreadyExists);
    let unknown = port.deregister(B).unwrap_err();
    assert_eq!(unknown.kind(), io::ErrorKind::NotFound);
    port.deregister(A).unwrap();
    assert_eq!(
        port.driver().calls,
        [
            Call::Register(A),
            Call::Register(A),
            Call::Deregister(B),
            Call::Deregister(A)
        ]
    );

    port.waker().wake().unwrap();
    assert_eq!(port.driver().wakes.0.load(Ordering::SeqCst), 1);

    let buf = Vec::with_capacity(64);
    let at = buf.as_ptr();
    port.give_buffer(buf);
    let given = &port.driver().given;
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].as_ptr(), at, "not the buffer given");
}
