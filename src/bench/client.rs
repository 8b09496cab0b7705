//! One client thread: its port, its share of the connections, and the closed
//! loop each connection runs (connect; then send a frame and read exactly its
//! length back, compare, repeat).
//!
//! A connection's two buffers (`out`, the frame sent, and `input`, the reply)
//! are handed to the port with each op and come back with its completion. The
//! send and the receive of a message are posted together; the message is done
//! when both have completed, and only then are the bytes compared and the next
//! message built into the same buffers. The receive buffer's capacity is the
//! frame length exactly, so a receive can never read into the next reply.

use std::io;
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::arrival::Arrival;
use super::config::Limit;
use super::plan::{Plan, ThreadResult};
use super::shared::Shared;
use crate::framing::Framing;
use crate::port::{raw_socket, Completion, CompletionPort, Op, Outcome, Port, RawSocket, Token};

/// The longest one wait on the port blocks, so a stop request is seen soon.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How long closing waits for the ops of shut-down sockets before cancelling them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long closing waits for the completions of cancelled ops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Payload bytes cycle through these 64 characters (no `\n`, so any slice is a
/// valid `lines` payload); each message starts at a different offset.
const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/";

/// The body of a client thread: run `plan` and send back what it measured.
pub(crate) fn run(shared: Arc<Shared>, plan: Plan, results: Sender<ThreadResult>) {
    let mut arrival = Arrival {
        shared: &shared,
        arrived: false,
    };
    let result = match Port::open(shared.backend) {
        Ok(port) => Client::new(&shared, &plan, port).run(&mut arrival),
        Err(e) => {
            let mut result = ThreadResult::new();
            result.failure = Some(e);
            result
        }
    };
    drop(arrival);
    if result.failure.is_some() {
        shared.stop.store(true, Ordering::SeqCst);
    }
    // The coordinator may have given up waiting; nobody else wants the result.
    let _ = results.send(result);
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not yet asked to connect.
    New,
    /// A connect is in flight.
    Connecting,
    /// Connected, no message in flight.
    Ready,
    /// A message's send and receive are in flight.
    Busy,
    /// Cancelled; closes when its last op completes.
    Closing,
    /// The socket is closed (or was never opened).
    Closed,
}

/// One connection of the closed loop.
struct Conn {
    socket: Option<Socket>,
    raw: RawSocket,
    state: State,
    /// Ops in flight on the socket.
    ops: u8,
    /// The frame of the current message (empty while the port holds it).
    out: Vec<u8>,
    /// The reply so far (empty while the port holds it).
    input: Vec<u8>,
    sent: bool,
    received: bool,
    /// Messages this connection has sent.
    seq: usize,
    /// When the current message was posted.
    posted: Instant,
    /// Whether the current message counts (it began after the warm-up).
    measured: bool,
}

/// A client thread's port and connections.
struct Client<'a> {
    shared: &'a Shared,
    port: Port,
    conns: Vec<Conn>,
    completions: Vec<Completion>,
    window: usize,
    first: usize,
    codec: Framing,
    /// `ALPHABET` repeated over `size + 64` bytes: payloads are slices of it.
    pattern: Vec<u8>,
    size: usize,
    frame_len: usize,
    /// Connects in flight.
    connecting: usize,
    /// Connections with a message in flight.
    busy: usize,
    measure_start: Instant,
    deadline: Option<Instant>,
    /// Measured messages this thread may still begin (count mode).
    quota: Option<u64>,
    last_completion: Option<Instant>,
    result: ThreadResult,
    published: (u64, u64),
}

impl<'a> Client<'a> {
    fn new(shared: &'a Shared, plan: &Plan, port: Port) -> Client<'a> {
        let config = &shared.config;
        let codec = config.framing.codec();
        let now = Instant::now();
        let conns = (0..plan.connections)
            .map(|_| Conn {
                socket: None,
                raw: Default::default(),
                state: State::New,
                ops: 0,
                out: Vec::new(),
                input: Vec::new(),
                sent: false,
                received: false,
                seq: 0,
                posted: now,
                measured: false,
            })
            .collect();
        Client {
            shared,
            port,
            conns,
            completions: Vec::new(),
            window: plan.window,
            first: plan.first,
            pattern: ALPHABET
                .iter()
                .copied()
                .cycle()
                .take(config.size + ALPHABET.len())
                .collect(),
            size: config.size,
            frame_len: config.size + codec.overhead(),
            codec,
            connecting: 0,
            busy: 0,
            measure_start: now,
            deadline: None,
            quota: plan.quota,
            last_completion: None,
            result: ThreadResult::new(),
            published: (0, 0),
        }
    }

    /// Connect, wait for the other threads, run the closed loop, close.
    fn run(mut self, arrival: &mut Arrival<'_>) -> ThreadResult {
        let connected = self.connect_all();
        let start = arrival.wait();
        let looped = connected.and_then(|()| self.closed_loop(start));
        let closed = self.close_all();
        self.publish();
        self.result.failure = looped.and(closed).err();
        self.result
    }

    /// Open every connection, at most `window` connects in flight at once.
    fn connect_all(&mut self) -> io::Result<()> {
        let mut next = 0;
        while !self.stopped() {
            while self.connecting < self.window && next < self.conns.len() {
                self.start_connect(next);
                next += 1;
            }
            if self.connecting == 0 && next == self.conns.len() {
                break;
            }
            self.turn(Some(WAIT_SLICE))?;
        }
        Ok(())
    }

    /// Run messages on every connection until the limit, a stop, or until no
    /// connection is left.
    fn closed_loop(&mut self, start: Instant) -> io::Result<()> {
        let config = &self.shared.config;
        self.measure_start = start + config.warmup;
        if let Limit::Duration(d) = config.limit {
            self.deadline = Some(self.measure_start + d);
        }
        let now = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Ready && self.may_begin(now) {
                self.begin(i, now);
            }
        }
        let ended = loop {
            let now = Instant::now();
            if self.busy == 0 || self.stopped() || matches!(self.deadline, Some(d) if now >= d) {
                break now;
            }
            let timeout = match self.deadline {
                Some(d) => (d - now).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            self.turn(Some(timeout))?;
        };
        let end = match self.deadline {
            Some(deadline) => ended.min(deadline),
            None => self.last_completion.unwrap_or(ended),
        };
        self.result.measured = end.saturating_duration_since(self.measure_start);
        Ok(())
    }

    /// End whatever is in flight and close every socket once its ops are back.
    ///
    /// On Linux a busy connection is shut down rather than cancelled: its
    /// receive then completes with end of stream and its send with `EPIPE`.
    /// Cancelling by socket makes io_uring search every op in flight, which
    /// for thousands of connections costs seconds; shutting down costs one
    /// call each. What is still in flight after [`SHUTDOWN_GRACE`] is cancelled.
    fn close_all(&mut self) -> io::Result<()> {
        let shut_down = cfg!(target_os = "linux");
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            if shut_down && conn.state == State::Busy {
                let done = conn
                    .socket
                    .as_ref()
                    .map(|s| s.shutdown(std::net::Shutdown::Both).is_ok());
                if done == Some(true) {
                    self.busy -= 1;
                    self.conns[i].state = State::Closing;
                    continue;
                }
            }
            if !matches!(conn.state, State::New | State::Closed) {
                self.abort(i);
            }
        }
        let started = Instant::now();
        let mut cancelled = false;
        while self.port.in_flight() > 0 {
            let waited = started.elapsed();
            if waited >= CLOSE_GRACE {
                log::error!(
                    "bench: {} ops never completed after cancellation; leaking them",
                    self.port.in_flight()
                );
                break;
            }
            if shut_down && !cancelled && waited >= SHUTDOWN_GRACE {
                cancelled = true;
                for conn in &self.conns {
                    if conn.state == State::Closing && conn.ops > 0 {
                        self.port.cancel(conn.raw);
                    }
                }
            }
            self.turn(Some(WAIT_SLICE))?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Wait for a batch of completions and handle each.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.port.wait(&mut self.completions, timeout)?;
        let mut batch = mem::take(&mut self.completions);
        for completion in batch.drain(..) {
            self.on_completion(completion);
        }
        self.completions = batch;
        self.publish();
        Ok(())
    }

    /// Add this batch's messages and errors to the live totals.
    fn publish(&mut self) {
        let (messages, errors) = (self.result.messages, self.result.errors);
        let shared = self.shared;
        if messages != self.published.0 {
            shared
                .messages
                .fetch_add(messages - self.published.0, Ordering::Relaxed);
        }
        if errors != self.published.1 {
            shared
                .errors
                .fetch_add(errors - self.published.1, Ordering::Relaxed);
        }
        self.published = (messages, errors);
    }

    fn start_connect(&mut self, i: usize) {
        let addr = self.shared.config.addr;
        let opened = open_socket(addr).and_then(|socket| {
            let raw = raw_socket(&socket);
            self.port.register(raw)?;
            Ok(socket)
        });
        match opened {
            Ok(socket) => {
                let conn = &mut self.conns[i];
                conn.raw = raw_socket(&socket);
                conn.socket = Some(socket);
                conn.state = State::Connecting;
                conn.ops = 1;
                self.connecting += 1;
                let socket = conn.raw;
                self.port.submit(i as Token, Op::Connect { socket, addr });
            }
            Err(e) => self.connect_failed(i, e),
        }
    }

    #[cold]
    fn connect_failed(&mut self, i: usize, e: io::Error) {
        let result = &mut self.result;
        result.connect_errors += 1;
        if e.kind() == io::ErrorKind::AddrNotAvailable {
            result.addr_not_available += 1;
        }
        if result.first_connect_error.is_none() {
            result.first_connect_error = Some(e.to_string());
        }
        self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.finalize(i);
    }

    fn on_completion(&mut self, completion: Completion) {
        let i = completion.token as usize;
        if i >= self.conns.len() {
            log::error!("bench: completion for unknown token {}", completion.token);
            return;
        }
        self.conns[i].ops -= 1;
        match completion.outcome {
            Outcome::Connected(result) => self.on_connected(i, result),
            Outcome::Sent { buf, pos, result } => {
                // The client sends only buffers of its own.
                let buf = buf.into_owned().unwrap_or_default();
                self.on_sent(i, buf, pos, result)
            }
            Outcome::Received { buf, result } => self.on_received(i, buf, result),
            Outcome::Accepted(_) => log::error!("bench: unexpected accept completion"),
        }
    }

    fn on_connected(&mut self, i: usize, result: io::Result<()>) {
        self.connecting -= 1;
        if self.conns[i].state == State::Closing {
            self.finalize_if_idle(i);
            return;
        }
        match result {
            Ok(()) => {
                self.conns[i].state = State::Ready;
                self.result.connected += 1;
                self.shared.connected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.connect_failed(i, e),
        }
    }

    fn on_sent(&mut self, i: usize, buf: Vec<u8>, pos: usize, result: io::Result<usize>) {
        let conn = &mut self.conns[i];
        if conn.state == State::Closing {
            conn.out = buf;
            self.finalize_if_idle(i);
            return;
        }
        match result {
            Ok(n) if n > 0 => {
                let pos = pos + n;
                if pos < buf.len() {
                    // A partial send: post the rest.
                    conn.ops += 1;
                    let socket = conn.raw;
                    let buf = buf.into();
                    self.port.submit(i as Token, Op::Send { socket, buf, pos });
                    return;
                }
                conn.out = buf;
                conn.sent = true;
                if conn.received {
                    self.complete(i);
                }
            }
            Ok(_) => {
                conn.out = buf;
                self.failed(i, "send wrote nothing".to_string());
            }
            Err(e) => {
                conn.out = buf;
                self.failed(i, format!("send failed: {}", e));
            }
        }
    }

    fn on_received(&mut self, i: usize, buf: Vec<u8>, result: io::Result<usize>) {
        let frame_len = self.frame_len;
        let conn = &mut self.conns[i];
        if conn.state == State::Closing {
            conn.input = buf;
            self.finalize_if_idle(i);
            return;
        }
        match result {
            Ok(0) => {
                let got = buf.len();
                conn.input = buf;
                self.failed(
                    i,
                    format!(
                        "the server closed the connection after {} of {} reply bytes",
                        got, frame_len
                    ),
                );
            }
            Ok(_) if buf.len() < frame_len => {
                // Part of the reply: read the rest into the same buffer.
                conn.ops += 1;
                let socket = conn.raw;
                self.port.submit(i as Token, Op::Recv { socket, buf });
            }
            Ok(_) => {
                conn.input = buf;
                conn.received = true;
                if conn.sent {
                    self.complete(i);
                }
            }
            Err(e) => {
                conn.input = buf;
                self.failed(i, format!("recv failed: {}", e));
            }
        }
    }

    /// Both halves of a message are back: compare, record, go again.
    fn complete(&mut self, i: usize) {
        let now = Instant::now();
        let conn = &mut self.conns[i];
        if conn.input != conn.out {
            let at = conn
                .input
                .iter()
                .zip(&conn.out)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let len = conn.out.len();
            self.failed(
                i,
                format!("echo mismatch at byte {} of a {}-byte frame", at, len),
            );
            return;
        }
        conn.state = State::Ready;
        self.busy -= 1;
        if conn.measured && !matches!(self.deadline, Some(d) if now > d) {
            let nanos = now.saturating_duration_since(conn.posted).as_nanos();
            self.result
                .histogram
                .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX).max(1));
            self.result.messages += 1;
            self.last_completion = Some(now);
        }
        if self.may_begin(now) {
            self.begin(i, now);
        }
    }

    /// Whether a connection that is free at `now` starts another message.
    fn may_begin(&self, now: Instant) -> bool {
        if self.stopped() || matches!(self.deadline, Some(d) if now >= d) {
            return false;
        }
        now < self.measure_start || self.quota != Some(0)
    }

    /// Build the next frame and post its send and the receive of its echo.
    fn begin(&mut self, i: usize, now: Instant) {
        let measured = now >= self.measure_start;
        if measured {
            if let Some(q) = &mut self.quota {
                *q -= 1;
            }
        }
        let frame_len = self.frame_len;
        let conn = &mut self.conns[i];
        conn.seq += 1;
        let shift = (self.first + i + conn.seq) % ALPHABET.len();
        let payload = &self.pattern[shift..shift + self.size];
        conn.out.clear();
        if let Err(e) = self.codec.encode_into(payload, &mut conn.out) {
            // Cannot happen: payloads have no delimiter and fit a 4-byte length.
            self.failed(i, format!("cannot frame the message: {}", e));
            return;
        }
        // Exactly the frame's length: a receive can never take more.
        if conn.input.capacity() != frame_len {
            conn.input = Vec::with_capacity(frame_len);
        }
        conn.input.clear();
        conn.sent = false;
        conn.received = false;
        conn.measured = measured;
        conn.posted = now;
        conn.state = State::Busy;
        conn.ops += 2;
        self.busy += 1;
        let socket = conn.raw;
        let buf = mem::take(&mut conn.out).into();
        self.port.submit(
            i as Token,
            Op::Send {
                socket,
                buf,
                pos: 0,
            },
        );
        let buf = mem::take(&mut conn.input);
        self.port.submit(i as Token, Op::Recv { socket, buf });
    }

    /// A message went wrong: count it and close the connection.
    #[cold]
    fn failed(&mut self, i: usize, why: String) {
        self.result.errors += 1;
        if self.result.first_error.is_none() {
            self.result.first_error = Some(why);
        }
        self.abort(i);
    }

    /// Close a connection: cancel its ops; it is freed once they complete.
    fn abort(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        match conn.state {
            State::Closing | State::Closed => return,
            State::Busy => self.busy -= 1,
            _ => {}
        }
        conn.state = State::Closing;
        if conn.ops > 0 {
            self.port.cancel(conn.raw);
        } else {
            self.finalize(i);
        }
    }

    fn finalize_if_idle(&mut self, i: usize) {
        if self.conns[i].ops == 0 {
            self.finalize(i);
        }
    }

    /// Forget and close a connection's socket; no op of it is in flight.
    fn finalize(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        conn.state = State::Closed;
        if let Some(socket) = conn.socket.take() {
            if let Err(e) = self.port.deregister(conn.raw) {
                log::debug!("bench: deregister: {}", e);
            }
            drop(socket);
        }
        conn.out = Vec::new();
        conn.input = Vec::new();
    }
}

/// A nonblocking TCP socket for `addr`'s family, with Nagle off (each message
/// is one write and waits for its echo).
fn open_socket(addr: std::net::SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    Ok(socket)
}
