//! A worker thread: one completion port, the connections it owns, and the loop
//! that turns completions into frames, frames into replies and replies into sends.
//!
//! Each turn: wait for a batch of completions, handle each (decode what was
//! received, queue native echoes, collect frames for the handler), call the
//! handler once for the whole batch, take newly accepted sockets from the
//! inbox, then "pump" every connection touched this turn: post its send, post
//! its next recv unless backpressure holds it, or finish closing it.
//!
//! Recvs let the port choose their memory (an empty `Vec`), so an idle
//! connection with its recv posted holds no buffer; received buffers go back
//! to the port with `give_buffer` once decoded (for the native raw echo, once
//! sent; with a handler, a buffer holding frames once they are answered, as the
//! batch hands them to the handler without copying them).

use std::io;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::Socket;

use super::accept::{Listener, LISTENER};
use super::connection::{Connection, Phase};
use super::decode::decode;
use super::handler::{Batch, Reply};
use super::stats::WorkerCounters;
use super::{lock, Shared};
use crate::framing::Framing;
use crate::port::{
    raw_socket, Backend, Completion, CompletionPort, Op, Outcome, Port, Token, Waker,
};

/// How often a draining worker checks its deadline.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// How long past the drain deadline a worker waits for cancelled ops to complete
/// before it gives up and leaks their buffers (a kernel that never completes them).
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Idle pooled buffers kept per worker.
const POOL_LIMIT: usize = 256;
/// Spare output buffers the native raw echo keeps before it hands sent buffers
/// back to the port.
const RAW_OUTPUT_SPARES: usize = 8;

/// What `Server::start` hands a worker thread.
pub(crate) struct Startup {
    pub(crate) index: usize,
    pub(crate) backend: Backend,
    pub(crate) listener: Option<Socket>,
    /// Reports the worker's waker, or why its port could not be opened.
    pub(crate) ready: Sender<io::Result<Waker>>,
    /// Says whether every worker started (true: run; false: exit).
    pub(crate) go: Receiver<bool>,
}

/// The body of a worker thread.
pub(crate) fn run(shared: Arc<Shared>, startup: Startup) {
    let index = startup.index;
    match Port::open(startup.backend) {
        Err(e) => {
            let _ = startup.ready.send(Err(e));
        }
        Ok(port) => {
            let _ = startup.ready.send(Ok(port.waker()));
            if let Ok(true) = startup.go.recv() {
                let wakers = lock(&shared.wakers).clone();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let mut worker =
                        Worker::new(index, Arc::clone(&shared), port, wakers, startup.listener);
                    match shared.handler.clone() {
                        Some(handler) => {
                            let mut result = Ok(());
                            handler.worker_scope(&mut || result = worker.run());
                            result
                        }
                        None => worker.run(),
                    }
                }));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => shared.fail(format!("worker {} stopped: {}", index, e)),
                    Err(panic) => shared.fail(format!(
                        "worker {} panicked: {}",
                        index,
                        panic_message(panic.as_ref())
                    )),
                }
            }
        }
    }
    let mut running = lock(&shared.running);
    *running -= 1;
    shared.finished.notify_all();
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) port: Port,
    pub(super) wakers: Vec<Waker>,
    pub(super) listener: Option<Listener>,
    pub(super) conns: Slab<Connection>,
    pub(super) next_id: u64,
    pub(super) next_worker: usize,
    pub(super) completions: Vec<Completion>,
    pub(super) batch: Batch,
    pub(super) dirty: Vec<usize>,
    /// Spare buffers for queued output. (Received buffers belong to the port's
    /// pool: see `give_buffer`.)
    pub(super) pool: Vec<Vec<u8>>,
    pub(super) draining: bool,
    pub(super) last_idle_check: Instant,
    /// When this turn's completions were collected: the time of every message
    /// in the turn (one clock read per turn, not two per message).
    pub(super) now: Instant,
}

impl Worker {
    fn new(
        index: usize,
        shared: Arc<Shared>,
        port: Port,
        wakers: Vec<Waker>,
        listener: Option<Socket>,
    ) -> Worker {
        let listener = listener.map(|socket| Listener {
            socket,
            in_flight: 0,
            paused_until: None,
        });
        let batch = Batch::with_framing(shared.config.framing.clone());
        Worker {
            index,
            shared,
            port,
            wakers,
            listener,
            conns: Slab::new(),
            // Ids are unique across workers: the worker index in the low bits.
            next_id: index as u64,
            next_worker: 0,
            completions: Vec::with_capacity(crate::port::MAX_BATCH),
            batch,
            dirty: Vec::new(),
            pool: Vec::new(),
            draining: false,
            last_idle_check: Instant::now(),
            now: Instant::now(),
        }
    }

    pub(super) fn counters(&self) -> &WorkerCounters {
        &self.shared.counters[self.index]
    }

    fn run(&mut self) -> io::Result<()> {
        if let Some(listener) = &self.listener {
            self.port.register(raw_socket(&listener.socket))?;
        }
        self.post_accepts();
        let mut drain_deadline = None;
        loop {
            let timeout = self.timeout();
            self.port.wait(&mut self.completions, timeout)?;
            self.now = Instant::now();
            let mut completions = mem::take(&mut self.completions);
            for completion in completions.drain(..) {
                self.on_completion(completion);
            }
            self.completions = completions;
            self.answer_batch();
            self.take_inbox();

            if self.shared.stopping.load(Ordering::SeqCst) {
                let deadline = *drain_deadline.get_or_insert_with(|| self.drain_deadline());
                self.drain(deadline);
                self.pump_dirty();
                if self.finished() {
                    return Ok(());
                }
                if Instant::now() > deadline + CANCEL_GRACE {
                    log::error!(
                        "worker {}: {} ops never completed after cancellation; leaking their buffers",
                        self.index,
                        self.port.in_flight()
                    );
                    return Ok(());
                }
            } else {
                self.pump_dirty();
                self.post_accepts();
                self.close_idle();
            }
        }
    }

    fn drain_deadline(&self) -> Instant {
        let started = (*lock(&self.shared.drain_started)).unwrap_or_else(Instant::now);
        started + self.shared.config.drain_timeout
    }

    /// How long the next wait may block.
    fn timeout(&self) -> Option<Duration> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Some(DRAIN_TICK);
        }
        let mut timeout = self
            .shared
            .config
            .idle_timeout
            .map(|idle| (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        if let Some(until) = self.listener.as_ref().and_then(|l| l.paused_until) {
            let left = until.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        timeout
    }

    fn on_completion(&mut self, completion: Completion) {
        let key = completion.token;
        if key == LISTENER {
            if let Outcome::Accepted(result) = completion.outcome {
                self.on_accept(result);
            }
            return;
        }
        let key = key as usize;
        match completion.outcome {
            Outcome::Received { buf, result } => self.on_received(key, buf, result),
            Outcome::Sent { buf, pos, result } => self.on_sent(key, buf, pos, result),
            Outcome::Accepted(_) | Outcome::Connected(_) => {
                log::error!(
                    "worker {}: unexpected completion for connection",
                    self.index
                );
            }
        }
    }

    fn on_received(&mut self, key: usize, mut buf: Vec<u8>, result: io::Result<usize>) {
        let shared = &self.shared;
        let counters = &shared.counters[self.index];
        let now = self.now;
        let conn = match self.conns.get_mut(key) {
            Some(c) => c,
            None => return,
        };
        conn.recv_in_flight = false;
        let mut abort = false;
        match result {
            _ if conn.phase != Phase::Open => {}
            Ok(0) => {
                // The peer finished sending: answer what it sent, then close.
                conn.phase = Phase::Flushing;
                let decoded = decode(key, conn, None, shared, counters, &mut self.batch);
                abort = decoded.is_err();
            }
            Ok(n) => {
                WorkerCounters::add(&counters.bytes_received, n as u64);
                let echo_raw = shared.handler.is_none() && shared.config.framing == Framing::Raw;
                if echo_raw && conn.pending.is_empty() && !conn.send_in_flight {
                    // The native raw echo sends the received buffer itself.
                    WorkerCounters::add(&counters.frames_received, 1);
                    WorkerCounters::add(&counters.frames_sent, 1);
                    conn.pending = mem::take(&mut buf);
                    conn.last_active = now;
                } else {
                    if conn.pending.capacity() == 0 && shared.handler.is_none() {
                        conn.pending = self.pool.pop().unwrap_or_default();
                    }
                    match decode(key, conn, Some(&buf), shared, counters, &mut self.batch) {
                        // Only a complete message counts as activity, so a
                        // client trickling a frame byte by byte still times out.
                        Ok(0) => {}
                        Ok(_) => conn.last_active = now,
                        Err(()) => abort = true,
                    }
                }
            }
            Err(e) => {
                log::debug!("recv from {}: {}", conn.peer, e);
                WorkerCounters::add(&counters.io_errors, 1);
                abort = true;
            }
        }
        // A chunk holding frames for the handler stays in the batch until they
        // are answered (then goes back to the port); any other goes back now.
        if let Some(buf) = self.batch.keep_chunk(buf) {
            self.port.give_buffer(buf);
        }
        if abort {
            self.abort(key);
        }
        self.touch(key);
    }

    fn on_sent(&mut self, key: usize, mut buf: Vec<u8>, pos: usize, result: io::Result<usize>) {
        let counters = &self.shared.counters[self.index];
        let conn = match self.conns.get_mut(key) {
            Some(c) => c,
            None => return,
        };
        conn.send_in_flight = false;
        match result {
            Ok(n) if conn.phase != Phase::Closing => {
                WorkerCounters::add(&counters.bytes_sent, n as u64);
                let pos = pos + n;
                if pos < buf.len() {
                    // A partial send: post the rest before anything queued behind it.
                    conn.sending = buf.len() - pos;
                    conn.send_in_flight = true;
                    let socket = conn.raw();
                    self.port
                        .submit(key as Token, Op::Send { socket, buf, pos });
                    return;
                }
                // Output counts as activity once a whole send completes, so a
                // reader taking a byte at a time still times out.
                conn.sending = 0;
                conn.last_active = self.now;
            }
            Ok(_) => conn.sending = 0,
            Err(e) => {
                conn.sending = 0;
                if conn.phase != Phase::Closing {
                    log::debug!("send to {}: {}", conn.peer, e);
                    WorkerCounters::add(&counters.io_errors, 1);
                    self.abort(key);
                }
            }
        }
        let config = &self.shared.config;
        let echo_raw = self.shared.handler.is_none() && config.framing == Framing::Raw;
        if echo_raw && self.pool.len() >= RAW_OUTPUT_SPARES {
            // The native raw echo mostly sends the buffers the port received
            // into: they go back to the port, once the worker keeps a few
            // spares of its own for the output it queues behind a send.
            self.port.give_buffer(buf);
        } else {
            buf.clear();
            recycle(&mut self.pool, buf, config.recv_buffer);
        }
        self.touch(key);
    }

    /// Call the handler once for every frame collected this turn, and queue the replies.
    ///
    /// The handler frames its replies straight into the output buffers of their
    /// connections (lent to the batch when their frames were pushed); they are
    /// given back here, in order, and sent as they are by `pump`.
    fn answer_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let pool = &mut self.pool;
        self.batch.provide_buffers(|| pool.pop());
        if let Some(handler) = &self.shared.handler {
            handler.handle(&mut self.batch);
        }
        let counters = &self.shared.counters[self.index];
        let mut failed = Vec::new();
        for i in 0..self.batch.len() {
            let (key, id) = self.batch.owners[i];
            let conn = match self.conns.get(key) {
                Some(c) if c.id == id && c.phase != Phase::Closing => c,
                _ => continue,
            };
            if failed.last() == Some(&key) {
                continue;
            }
            match &self.batch.outcomes[i] {
                Reply::Nothing => {}
                Reply::Data(..) => WorkerCounters::add(&counters.frames_sent, 1),
                Reply::Unframable(e) => {
                    log::error!("handler reply to {} cannot be framed: {}", conn.peer, e);
                    WorkerCounters::add(&counters.handler_errors, 1);
                    failed.push(key);
                }
                Reply::Fail => {
                    WorkerCounters::add(&counters.handler_errors, 1);
                    failed.push(key);
                }
            }
        }
        // Give each connection its output back. A failed connection's replies
        // are never sent: `abort` below closes it without flushing.
        for ((key, id), output) in self.batch.take_outputs() {
            match self.conns.get_mut(key) {
                Some(conn) if conn.id == id => {
                    if conn.pending.is_empty() {
                        // Its only entry (or the first with anything in it).
                        let spare = mem::replace(&mut conn.pending, output);
                        recycle(&mut self.pool, spare, self.shared.config.recv_buffer);
                    } else {
                        // A second entry of the same connection this turn
                        // (its frames were not adjacent): rare, so copied.
                        conn.pending.extend_from_slice(&output);
                        recycle(&mut self.pool, output, self.shared.config.recv_buffer);
                    }
                    if conn.pending.is_empty() {
                        // An idle connection keeps no output buffer.
                        let spare = mem::take(&mut conn.pending);
                        recycle(&mut self.pool, spare, self.shared.config.recv_buffer);
                    }
                }
                _ => recycle(&mut self.pool, output, self.shared.config.recv_buffer),
            }
        }
        let port = &mut self.port;
        self.batch.clear(|chunk| port.give_buffer(chunk));
        for key in failed {
            self.abort(key);
        }
    }

    /// Mark a connection to be pumped at the end of this turn.
    pub(super) fn touch(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Pump every connection touched this turn.
    ///
    /// Pumping can touch connections again (a flushed connection is closed, and
    /// its end must be pumped too), so this runs until nothing is left: the
    /// next wait may block indefinitely.
    pub(super) fn pump_dirty(&mut self) {
        while !self.dirty.is_empty() {
            let mut dirty = mem::take(&mut self.dirty);
            for key in dirty.drain(..) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.dirty = false;
                    self.pump(key);
                }
            }
            if self.dirty.is_empty() {
                // Keep the allocation for the next turn.
                self.dirty = dirty;
            }
        }
    }

    /// Post what a connection needs next: its send, its next recv, or its end.
    fn pump(&mut self, key: usize) {
        let config = &self.shared.config;
        let counters = &self.shared.counters[self.index];
        let conn = &mut self.conns[key];
        if conn.phase == Phase::Closing {
            if !conn.busy() {
                self.finalize(key);
            }
            return;
        }
        if !conn.send_in_flight && !conn.pending.is_empty() {
            // An idle connection keeps no output buffer; one is taken from the pool
            // when a reply is queued.
            let buf = mem::take(&mut conn.pending);
            conn.sending = buf.len();
            conn.send_in_flight = true;
            let socket = conn.raw();
            self.port.submit(
                key as Token,
                Op::Send {
                    socket,
                    buf,
                    pos: 0,
                },
            );
        }
        let queued = conn.queued_output();
        if conn.paused && queued <= config.low_water {
            conn.paused = false;
        } else if !conn.paused && queued > config.high_water {
            conn.paused = true;
            WorkerCounters::add(&counters.backpressure_pauses, 1);
        }
        match conn.phase {
            Phase::Open if !conn.paused && !conn.recv_in_flight => {
                conn.recv_in_flight = true;
                let socket = conn.raw();
                // Capacity 0: the port chooses the memory when bytes arrive.
                let buf = Vec::new();
                self.port.submit(key as Token, Op::Recv { socket, buf });
            }
            Phase::Flushing if !conn.send_in_flight => self.abort(key),
            _ => {}
        }
    }

    /// Close a connection now: cancel its ops; it is freed once they complete.
    pub(super) fn abort(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        if conn.busy() {
            end_ops(&mut self.port, conn);
        }
        self.touch(key);
    }

    /// Free a connection whose ops have all completed.
    fn finalize(&mut self, key: usize) {
        let conn = self.conns.remove(key);
        if let Err(e) = self.port.deregister(conn.raw()) {
            log::debug!("deregister {}: {}", conn.peer, e);
        }
        drop(conn);
        self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
        let counters = self.counters();
        WorkerCounters::sub(&counters.connections_open, 1);
        WorkerCounters::add(&counters.connections_closed, 1);
    }
}

/// Make a closing connection's ops in flight complete soon.
///
/// On Linux, `shutdown` does it: a pending recv completes with end of stream and
/// a pending send with `EPIPE`, at O(1) cost. Cancelling by socket instead makes
/// io_uring search every op in flight, which is quadratic when thousands of
/// connections close at once. Windows cancels (`CancelIoEx` looks only at the
/// socket's own ops), as does any socket that `shutdown` refuses.
fn end_ops(port: &mut Port, conn: &mut Connection) {
    #[cfg(not(windows))]
    {
        if conn.socket.shutdown(std::net::Shutdown::Both).is_ok() {
            return;
        }
    }
    conn.cancelled = true;
    port.cancel(conn.raw());
}

/// Return a buffer to a pool (emptied), unless the pool is full or the buffer
/// grew large.
fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>, size: usize) {
    if pool.len() < POOL_LIMIT && buf.capacity() <= 4 * size && buf.capacity() > 0 {
        buf.clear();
        pool.push(buf);
    }
}
