//! A worker thread: one completion port, the parts it drives (an acceptor on
//! worker 0, the connection table, the handler's batch, spare buffers) and the
//! loop of turns over them.
//!
//! Each turn: wait for a batch of completions, handle each (decode what was
//! received, queue native echoes, collect frames for the handler), answer the
//! batch with one handler call, apply the mailbox (sockets handed over, output
//! pushed from other threads), then pump every connection touched this turn:
//! post its send, post its next recv unless backpressure holds it, or finish
//! closing it. Connection events made after the handler call (opens, closes)
//! are answered before the turn ends, so none waits for the next completion.

use std::io;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::acceptor::{Accepted, Acceptor, LISTENER};
use super::answer::answer;
use super::connection::LINGER_CHECK;
use super::event::{CloseReason, Event};
use super::handler::Batch;
use super::letters::{adopt, adopt_to_close, apply};
use super::lock::lock;
use super::mailbox::{Letter, Mailbox};
use super::output::Spares;
use super::pump::pump_dirty;
use super::receive::{on_received, on_sent};
use super::shared::Shared;
use super::shutdown::{check_every, close_expired, close_lingered, finished, Drain};
use super::table::Table;
use super::turn::Turn;
use crate::port::{Address, Backend, Completion, CompletionPort, Outcome, Port, Waker, MAX_BATCH};

/// The usual size of the output buffers a worker keeps for reuse (larger ones
/// are dropped past four times it). Receive memory is the port's own.
const SPARE_OUTPUT_SIZE: usize = 64 << 10;
/// How often a draining worker checks its deadline.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// How long past the drain deadline a worker waits for cancelled ops to complete
/// before it gives up and leaks their buffers (a kernel that never completes them).
const CANCEL_GRACE: Duration = Duration::from_secs(5);

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
                    match shared.mode.handler() {
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
    shared.mailboxes[index].shut();
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

/// One worker: the shared state, and the parts its turns change.
struct Worker {
    shared: Arc<Shared>,
    parts: Parts,
}

/// What a worker's turns change.
struct Parts {
    index: usize,
    port: Port,
    wakers: Vec<Waker>,
    acceptor: Option<Acceptor>,
    table: Table,
    batch: Batch,
    spares: Spares,
    completions: Vec<Completion>,
    letters: Vec<Letter>,
    /// Scratch for the keys being pumped.
    pumping: Vec<usize>,
    drain: Drain,
    /// When idle connections and TLS handshakes were last checked.
    last_expiry_check: Instant,
}

impl Worker {
    fn new(
        index: usize,
        shared: Arc<Shared>,
        port: Port,
        wakers: Vec<Waker>,
        listener: Option<Socket>,
    ) -> Worker {
        let workers = wakers.len();
        let acceptor = listener.map(|socket| {
            Acceptor::new(
                socket,
                Arc::clone(&shared.gate),
                workers,
                shared.config.reuse_port,
            )
        });
        let parts = Parts {
            index,
            port,
            wakers,
            acceptor,
            table: Table::new(index, workers, shared.mode.events()),
            batch: Batch::with_framing(shared.config.framing.clone()),
            spares: Spares::new(SPARE_OUTPUT_SIZE, shared.config.max_output),
            completions: Vec::with_capacity(MAX_BATCH),
            letters: Vec::new(),
            pumping: Vec::new(),
            drain: Drain::default(),
            last_expiry_check: Instant::now(),
        };
        Worker { shared, parts }
    }

    fn run(&mut self) -> io::Result<()> {
        let Worker { shared, parts } = self;
        let index = parts.index;
        if let Some(acceptor) = &mut parts.acceptor {
            acceptor.register(&mut parts.port)?;
            acceptor.post(&mut parts.port);
        }
        let mut drain_deadline = None;
        loop {
            let timeout = timeout(shared, parts.acceptor.as_ref(), &parts.table);
            parts.port.wait(&mut parts.completions, timeout)?;
            let stopping = shared.stopping();
            parts.turn(&Turn::new(shared, index, Instant::now()), stopping);
            if stopping {
                let deadline = *drain_deadline.get_or_insert_with(|| drain_deadline_of(shared));
                let turn = Turn::new(shared, index, Instant::now());
                parts.stop_accepting(&turn);
                if let Some(acceptor) = &mut parts.acceptor {
                    // Collects what the port accepted, or cancels once exhausted.
                    acceptor.post(&mut parts.port);
                }
                parts.drain.step(
                    deadline,
                    &mut parts.table,
                    &mut parts.port,
                    &mut parts.acceptor,
                    shared.config.linger_timeout,
                );
                parts.pump(&turn);
                if finished(&parts.table, &parts.acceptor, &parts.port) {
                    return Ok(());
                }
                if Instant::now() > deadline + CANCEL_GRACE {
                    log::error!(
                        "worker {}: {} ops never completed after cancellation; leaking their buffers",
                        index,
                        parts.port.in_flight()
                    );
                    parts.abandon(&turn);
                    return Ok(());
                }
            }
        }
    }
}

impl Parts {
    /// One turn: the completions collected, the handler's answer, the mailbox,
    /// and the pump (with the accepts and idle checks, unless stopping).
    fn turn(&mut self, turn: &Turn<'_>, stopping: bool) {
        let mut completions = mem::take(&mut self.completions);
        for completion in completions.drain(..) {
            self.on_completion(turn, completion, stopping);
        }
        self.completions = completions;
        answer(
            turn,
            &mut self.table,
            &mut self.port,
            &mut self.batch,
            &mut self.spares,
        );
        turn.mailbox.take(&mut self.letters);
        if !self.letters.is_empty() {
            apply(
                turn,
                &mut self.letters,
                stopping,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                &mut self.spares,
            );
        }
        close_lingered(turn, &mut self.table, &mut self.port);
        if !stopping {
            self.pump(turn);
            if let Some(acceptor) = &mut self.acceptor {
                acceptor.post(&mut self.port);
            }
            close_expired(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.last_expiry_check,
            );
            self.pump(turn);
        }
    }

    /// Pump the touched connections; answer at once the events this made
    /// (closes) or the mailbox made (opens).
    fn pump(&mut self, turn: &Turn<'_>) {
        pump_dirty(
            turn,
            &mut self.table,
            &mut self.port,
            &mut self.batch,
            &mut self.spares,
            &mut self.pumping,
        );
        if !self.batch.is_spent() {
            answer(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                &mut self.spares,
            );
        }
    }

    fn on_completion(&mut self, turn: &Turn<'_>, completion: Completion, stopping: bool) {
        let key = completion.token;
        if key == LISTENER {
            if let Outcome::Accepted(result) = completion.outcome {
                self.on_accept(turn, result, stopping);
            }
            return;
        }
        let key = key as usize;
        let (table, port) = (&mut self.table, &mut self.port);
        match completion.outcome {
            Outcome::Received { buf, result } => on_received(
                turn,
                table,
                port,
                &mut self.batch,
                &mut self.spares,
                key,
                buf,
                result,
            ),
            Outcome::Sent { buf, pos, result } => {
                on_sent(turn, table, port, &mut self.spares, key, buf, pos, result)
            }
            Outcome::Accepted(_) | Outcome::Connected(_) => {
                log::error!(
                    "worker {}: unexpected completion for connection",
                    self.index
                );
            }
        }
    }

    /// Adopt an accepted socket here, or hand it to its worker.
    fn on_accept(
        &mut self,
        turn: &Turn<'_>,
        result: io::Result<(Socket, Address)>,
        stopping: bool,
    ) {
        let acceptor = match &mut self.acceptor {
            Some(acceptor) => acceptor,
            None => return,
        };
        let Accepted {
            worker,
            socket,
            peer,
            admission,
        } = match acceptor.on_accept(result, stopping, turn.counters) {
            Some(accepted) => accepted,
            None => return,
        };
        if stopping {
            adopt_to_close(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                socket,
                peer,
                admission,
            );
        } else if worker == self.index {
            adopt(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                socket,
                peer,
                admission,
            );
        } else {
            let letter = Letter::Adopt {
                socket,
                peer,
                admission,
            };
            hand_over(
                &turn.mailboxes[worker],
                &self.wakers[worker],
                worker,
                letter,
            );
        }
    }

    /// Stop accepting (once): the connections waiting in the listener's
    /// backlog are adopted here, before the drain's first step closes them
    /// with the others.
    fn stop_accepting(&mut self, turn: &Turn<'_>) {
        let backlog = match &mut self.acceptor {
            Some(acceptor) => acceptor.stop(&mut self.port, turn.counters),
            None => return,
        };
        for accepted in backlog {
            adopt_to_close(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                accepted.socket,
                accepted.peer,
                accepted.admission,
            );
        }
    }

    /// Give up on the connections whose ops never completed: their `Close`
    /// events are still made and answered; they are dropped with the worker.
    fn abandon(&mut self, turn: &Turn<'_>) {
        if turn.mode.events() {
            // Those that never opened (a TLS handshake unfinished) get none.
            let opened = self.table.iter().filter(|(_, c)| c.published.is_some());
            for (_, conn) in opened {
                self.batch.push_event(Event::Close {
                    id: conn.id,
                    reason: CloseReason::Shutdown,
                });
            }
            answer(
                turn,
                &mut self.table,
                &mut self.port,
                &mut self.batch,
                &mut self.spares,
            );
        }
    }
}

/// When the drain of a stopping server must end.
fn drain_deadline_of(shared: &Shared) -> Instant {
    let started = (*lock(&shared.drain_started)).unwrap_or_else(Instant::now);
    started + shared.config.drain_timeout
}

/// How long the next wait may block.
fn timeout(shared: &Shared, acceptor: Option<&Acceptor>, table: &Table) -> Option<Duration> {
    if shared.stopping() {
        return Some(DRAIN_TICK);
    }
    let mut timeout = check_every(&shared.config)
        .map(|every| every.clamp(Duration::from_millis(10), Duration::from_secs(1)));
    if let Some(until) = acceptor.and_then(Acceptor::paused_until) {
        let left = until.saturating_duration_since(Instant::now());
        timeout = Some(timeout.map_or(left, |t| t.min(left)));
    }
    if table.any_lingering() {
        timeout = Some(timeout.map_or(LINGER_CHECK, |t| t.min(LINGER_CHECK)));
    }
    timeout
}

/// Post an accepted socket to worker `worker`'s mailbox and wake it.
fn hand_over(mailbox: &Mailbox, waker: &Waker, worker: usize, letter: Letter) {
    match mailbox.post(letter) {
        Ok(true) => {
            if let Err(e) = waker.wake() {
                log::error!("could not wake worker {}: {}", worker, e);
            }
        }
        Ok(false) => {}
        // That worker has stopped: dropping the letter closes the socket
        // and releases its admission.
        Err(_) => {}
    }
}
