//! One client thread: its port, its share of the connections, and the closed
//! loop each connection runs: connect (under TLS, then handshake); send a
//! frame, read exactly its echo back, compare, repeat. With
//! `--messages-per-connection`, a connection that has echoed that many
//! messages closes and a new one opens in its slot.
//!
//! How a message travels is `plain.rs` (TCP) or `tls_session.rs` (TLS); a
//! completion comes back from them as a [`Step`], which this file acts on:
//! counting, the next message, a reconnect, or closing. `pending` counts the
//! connections on their way somewhere ([`State::is_pending`]); the connect
//! phase and the closed loop each last while it is not zero.
//!
//! Sockets, ops and buffers follow the port contract: a buffer belongs to the
//! port while its op is in flight, and a socket is closed only after its last
//! completion (cancelled ops included).

use std::io;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::arrival::Arrival;
use super::config::Limit;
use super::conn::{finish_send, open_socket, Conn, State, Step};
use super::payload::Messages;
use super::plain;
use super::plan::{Plan, ThreadResult};
use super::shared::Shared;
use super::tls_session::TlsSession;
use crate::port::{raw_socket, Completion, CompletionPort, Op, Outcome, Port, Token};

/// The longest one wait on the port blocks, so a stop request is seen soon.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How long closing waits for the ops of shut-down sockets before cancelling them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long closing waits for the completions of cancelled ops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A connection not through its TLS handshake this long after its connect
/// began fails (a server that never answers must not stall the run).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often handshakes in progress are checked against that limit.
const HANDSHAKE_CHECK: Duration = Duration::from_secs(1);

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

/// A client thread's port and connections.
struct Client<'a> {
    shared: &'a Shared,
    port: Port,
    conns: Vec<Conn>,
    /// Each connection's TLS session, under TLS (else empty).
    sessions: Vec<Option<Box<TlsSession>>>,
    completions: Vec<Completion>,
    window: usize,
    first: usize,
    messages: Messages,
    /// Connections whose state is pending.
    pending: usize,
    /// The closed loop has begun: connections begin messages once established.
    looping: bool,
    measure_start: Instant,
    deadline: Option<Instant>,
    /// Measured messages this thread may still begin (count mode).
    quota: Option<u64>,
    last_completion: Option<Instant>,
    /// When handshakes in progress were last checked against their time limit.
    handshakes_checked: Instant,
    result: ThreadResult,
    published: (u64, u64),
}

/// The TLS session of connection `i`, if it has one.
fn session_of(sessions: &mut [Option<Box<TlsSession>>], i: usize) -> Option<&mut TlsSession> {
    sessions.get_mut(i).and_then(|s| s.as_deref_mut())
}

impl<'a> Client<'a> {
    fn new(shared: &'a Shared, plan: &Plan, port: Port) -> Client<'a> {
        let config = &shared.config;
        let now = Instant::now();
        let sessions = match shared.tls {
            Some(_) => (0..plan.connections).map(|_| None).collect(),
            None => Vec::new(),
        };
        Client {
            shared,
            port,
            conns: (0..plan.connections).map(|_| Conn::new(now)).collect(),
            sessions,
            completions: Vec::new(),
            window: plan.window,
            first: plan.first,
            messages: Messages::new(config.framing, config.size),
            pending: 0,
            looping: false,
            measure_start: now,
            deadline: None,
            quota: plan.quota,
            last_completion: None,
            handshakes_checked: now,
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

    /// Open every connection, at most `window` connects (and handshakes) in
    /// flight at once.
    fn connect_all(&mut self) -> io::Result<()> {
        let mut next = 0;
        while !self.stopped() {
            while self.pending < self.window && next < self.conns.len() {
                self.start_connect(next);
                next += 1;
            }
            if self.pending == 0 && next == self.conns.len() {
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
        self.looping = true;
        let now = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Ready && self.may_begin(now) {
                self.begin(i, now);
            }
        }
        let ended = loop {
            let now = Instant::now();
            if self.pending == 0 || self.stopped() || matches!(self.deadline, Some(d) if now >= d) {
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
    /// On Linux a connection with ops in flight is shut down rather than
    /// cancelled: its receive then completes with end of stream and its send
    /// with `EPIPE`. Cancelling by socket makes io_uring search every op in
    /// flight, which for thousands of connections costs seconds; shutting
    /// down costs one call each. What is still in flight after
    /// [`SHUTDOWN_GRACE`] is cancelled. An established TLS connection says
    /// `close_notify` first; one with a send in flight has only its reading
    /// shut, so that send is not lost.
    fn close_all(&mut self) -> io::Result<()> {
        let shut_down = cfg!(target_os = "linux");
        for i in 0..self.conns.len() {
            let state = self.conns[i].state;
            if matches!(state, State::New | State::Closing | State::Closed) {
                continue;
            }
            if matches!(state, State::Ready | State::Busy) {
                if let Some(session) = session_of(&mut self.sessions, i) {
                    session.close_now(&self.conns[i]);
                }
            }
            // A TLS send in flight (e.g. the client's Finished, which ends
            // the server's handshake) still goes out: only reading is shut.
            let how = match session_of(&mut self.sessions, i) {
                Some(session) if session.sending() => Shutdown::Read,
                _ => Shutdown::Both,
            };
            let conn = &self.conns[i];
            if shut_down && state != State::Connecting && conn.ops > 0 {
                let done = conn.socket.as_ref().map(|s| s.shutdown(how).is_ok());
                if done == Some(true) {
                    self.set_state(i, State::Closing);
                    continue;
                }
            }
            self.abort(i);
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
        let mut batch = std::mem::take(&mut self.completions);
        for completion in batch.drain(..) {
            self.on_completion(completion);
        }
        self.completions = batch;
        if !self.sessions.is_empty() {
            self.expire_handshakes();
        }
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

    /// Move connection `i` to `state`, keeping `pending` true.
    fn set_state(&mut self, i: usize, state: State) {
        let conn = &mut self.conns[i];
        match (conn.state.is_pending(), state.is_pending()) {
            (false, true) => self.pending += 1,
            (true, false) => self.pending -= 1,
            _ => {}
        }
        conn.state = state;
    }

    /// Whether connects and handshakes at `now` count in the measured rates.
    fn counting(&self, now: Instant) -> bool {
        self.looping && now >= self.measure_start && !matches!(self.deadline, Some(d) if now > d)
    }

    fn start_connect(&mut self, i: usize) {
        let addr = self.shared.config.addr;
        let opened = open_socket(addr).and_then(|socket| {
            self.port.register(raw_socket(&socket))?;
            Ok(socket)
        });
        match opened {
            Ok(socket) => {
                self.set_state(i, State::Connecting);
                let conn = &mut self.conns[i];
                conn.raw = raw_socket(&socket);
                conn.socket = Some(socket);
                conn.ops = 1;
                conn.posted = Instant::now();
                let socket = conn.raw;
                self.port.submit(i as Token, Op::Connect { socket, addr });
            }
            Err(e) => self.connect_failed(i, e),
        }
    }

    #[cold]
    fn connect_failed(&mut self, i: usize, e: io::Error) {
        if e.kind() == io::ErrorKind::AddrNotAvailable {
            self.result.addr_not_available += 1;
        }
        self.result.connect_error(e.to_string());
        self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.abort(i);
    }

    #[cold]
    fn handshake_failed(&mut self, i: usize, why: String) {
        self.result.tls_errors += 1;
        self.result
            .connect_error(format!("TLS handshake failed: {}", why));
        self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.abort(i);
    }

    /// Fail the TLS handshakes that have taken too long (checked once a second).
    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        if now.saturating_duration_since(self.handshakes_checked) < HANDSHAKE_CHECK {
            return;
        }
        self.handshakes_checked = now;
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            if conn.state == State::Handshaking
                && now.saturating_duration_since(conn.posted) >= HANDSHAKE_TIMEOUT
            {
                let secs = HANDSHAKE_TIMEOUT.as_secs();
                self.handshake_failed(i, format!("not done {} s after the connect", secs));
            }
        }
    }

    fn on_completion(&mut self, completion: Completion) {
        let i = completion.token as usize;
        if i >= self.conns.len() {
            log::error!("bench: completion for unknown token {}", completion.token);
            return;
        }
        self.conns[i].ops -= 1;
        if self.conns[i].state == State::Closing {
            // An aborted connection's buffers go with it.
            self.finalize_if_idle(i);
            return;
        }
        let token = i as Token;
        let conn = &mut self.conns[i];
        let port = &mut self.port;
        let step = match completion.outcome {
            Outcome::Connected(Ok(())) => return self.on_connected(i),
            Outcome::Connected(Err(e)) => Step::ConnectFailed(e),
            Outcome::Sent { buf, pos, result } => {
                // The client sends only buffers of its own.
                let buf = buf.into_owned().unwrap_or_default();
                match finish_send(conn, port, token, buf, pos, result) {
                    // Part of it went: the rest is posted.
                    None => Step::Wait,
                    Some(sent) => match session_of(&mut self.sessions, i) {
                        Some(session) => session.on_sent(conn, port, token, sent),
                        None => plain::on_sent(conn, sent),
                    },
                }
            }
            Outcome::Received { buf, result } => match session_of(&mut self.sessions, i) {
                Some(session) => session.on_received(conn, port, token, buf, result),
                None => {
                    let frame_len = self.messages.frame_len();
                    plain::on_received(conn, port, token, buf, result, frame_len)
                }
            },
            Outcome::Accepted(_) => {
                log::error!("bench: unexpected accept completion");
                Step::Wait
            }
        };
        self.apply(i, step);
    }

    /// The TCP connect succeeded: established, or under TLS the handshake begins.
    fn on_connected(&mut self, i: usize) {
        let tls = match &self.shared.tls {
            Some(tls) => tls,
            None => return self.apply(i, Step::Established),
        };
        let step = match tls.connect() {
            Ok(tls) => {
                self.set_state(i, State::Handshaking);
                let session = self.sessions[i].insert(Box::new(TlsSession::new(tls)));
                session.start(&mut self.conns[i], &mut self.port, i as Token)
            }
            Err(e) => Step::HandshakeFailed(e.to_string()),
        };
        self.apply(i, step);
    }

    /// Act on what happened on connection `i`.
    fn apply(&mut self, i: usize, step: Step) {
        match step {
            Step::Wait => {}
            Step::Echoed => self.echoed(i),
            Step::Established => self.established(i),
            Step::Retired => {
                self.close_socket(i);
                if self.may_begin(Instant::now()) {
                    self.start_connect(i);
                }
            }
            Step::Failed(why) => self.failed(i, why),
            Step::ConnectFailed(e) => self.connect_failed(i, e),
            Step::HandshakeFailed(why) => self.handshake_failed(i, why),
        }
    }

    /// Connected (under TLS: handshake done): count it, and go if the loop runs.
    fn established(&mut self, i: usize) {
        let now = Instant::now();
        self.set_state(i, State::Ready);
        let conn = &mut self.conns[i];
        conn.echoed = 0;
        if !conn.was_established {
            conn.was_established = true;
            self.result.connected += 1;
            self.shared.connected.fetch_add(1, Ordering::Relaxed);
        }
        if self.counting(now) {
            self.result.connects += 1;
        }
        if self.looping && self.may_begin(now) {
            self.begin(i, now);
        }
    }

    /// A message's echo is back and right: record it, then the next message,
    /// or a new connection once this one has had its share.
    fn echoed(&mut self, i: usize) {
        let now = Instant::now();
        self.set_state(i, State::Ready);
        let conn = &mut self.conns[i];
        conn.echoed += 1;
        if conn.measured && !matches!(self.deadline, Some(d) if now > d) {
            self.result.record(conn.posted, now);
            self.last_completion = Some(now);
        }
        if !self.may_begin(now) {
            return;
        }
        match self.shared.config.messages_per_connection {
            Some(n) if self.conns[i].echoed >= n => self.retire(i),
            _ => self.begin(i, now),
        }
    }

    /// Whether a connection that is free at `now` starts another message.
    fn may_begin(&self, now: Instant) -> bool {
        if self.stopped() || matches!(self.deadline, Some(d) if now >= d) {
            return false;
        }
        now < self.measure_start || self.quota != Some(0)
    }

    /// Send the next message and post the receive of its echo.
    fn begin(&mut self, i: usize, now: Instant) {
        let measured = now >= self.measure_start;
        if measured {
            if let Some(q) = &mut self.quota {
                *q -= 1;
            }
        }
        self.set_state(i, State::Busy);
        let conn = &mut self.conns[i];
        conn.seq += 1;
        conn.measured = measured;
        conn.posted = now;
        let n = self.first + i + conn.seq;
        let (token, port) = (i as Token, &mut self.port);
        let step = match session_of(&mut self.sessions, i) {
            Some(session) => session.begin(conn, port, token, &self.messages, n),
            None => match self.messages.frame_into(n, &mut conn.out) {
                Ok(()) => {
                    plain::begin(conn, port, token, self.messages.frame_len());
                    Step::Wait
                }
                Err(why) => Step::Failed(why),
            },
        };
        self.apply(i, step);
    }

    /// Close connection `i` cleanly after its last message; a new connection
    /// takes its slot once it is closed.
    fn retire(&mut self, i: usize) {
        if self.sessions.is_empty() {
            // Plain TCP: no op is in flight between messages.
            self.close_socket(i);
            return self.start_connect(i);
        }
        self.set_state(i, State::Retiring);
        if let Some(session) = session_of(&mut self.sessions, i) {
            let step = session.retire(&mut self.conns[i], &mut self.port, i as Token);
            self.apply(i, step);
        }
    }

    /// A message went wrong: count it and close the connection.
    #[cold]
    fn failed(&mut self, i: usize, why: String) {
        self.result.message_error(why);
        self.abort(i);
    }

    /// Close a connection: cancel its ops; it is freed once they complete.
    fn abort(&mut self, i: usize) {
        if matches!(self.conns[i].state, State::Closing | State::Closed) {
            return;
        }
        self.set_state(i, State::Closing);
        let conn = &self.conns[i];
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

    /// Close the socket of an aborted connection and free its buffers.
    fn finalize(&mut self, i: usize) {
        self.close_socket(i);
        let conn = &mut self.conns[i];
        conn.out = Vec::new();
        conn.input = Vec::new();
    }

    /// Forget and close connection `i`'s socket and session; no op of it is
    /// in flight. Its buffers stay for the next connection in the slot.
    fn close_socket(&mut self, i: usize) {
        self.set_state(i, State::Closed);
        if let Some(session) = self.sessions.get_mut(i) {
            *session = None;
        }
        let conn = &mut self.conns[i];
        if let Some(socket) = conn.socket.take() {
            if let Err(e) = self.port.deregister(conn.raw) {
                log::debug!("bench: deregister: {}", e);
            }
            drop(socket);
        }
    }
}
