//! The backend front: what every port does the same way, written once over a
//! [`Driver`].
//!
//! [`Front`] turns a driver into a [`CompletionPort`]:
//!
//! * **A failure found at submit is a completion.** An op whose buffer cannot
//!   be used (a recv without spare capacity, a send with nothing after `pos`)
//!   fails at once with [`io::ErrorKind::InvalidInput`], into the ready queue;
//!   so does whatever the driver finds at submit, cancel or deregister time.
//! * **The ready queue first.** `wait` hands out queued completions before the
//!   driver's; if some were handed out it asks the driver only for what is
//!   already there (no blocking), and never more than [`MAX_BATCH`] in all.
//! * **In-flight counting.** One count for every backend: ops submitted whose
//!   completion `wait` has not yet returned.
//!
//! Rule: this module imports only the contract ([`crate::contract`]); it is
//! generic over the driver (static dispatch, no allocation, no lookup per op).

use std::io;
use std::time::Duration;

use crate::contract::errors::{no_spare_capacity, nothing_to_send};
use crate::contract::{
    Completion, CompletionPort, Driver, Op, RawSocket, Ready, Token, Waker, MAX_BATCH,
};

/// A completion port made of a backend's driver and the shared front.
pub struct Front<D> {
    driver: D,
    /// Completions known without waiting, handed out first, in order.
    ready: Ready,
    /// Ops submitted whose completion `wait` has not returned yet.
    in_flight: usize,
}

impl<D: Driver> Front<D> {
    /// A port over `driver`.
    pub fn new(driver: D) -> Front<D> {
        Front {
            driver,
            ready: Ready::new(),
            in_flight: 0,
        }
    }

    /// The backend's driver (its own tests look inside).
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The backend's driver, mutably (its own tests tune it).
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// Hand out ready completions, then the driver's, up to [`MAX_BATCH`].
    fn hand_out(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()> {
        let ready = self.ready.len().min(MAX_BATCH);
        out.extend(self.ready.drain(..ready));
        let room = MAX_BATCH - ready;
        if room == 0 {
            return Ok(());
        }
        // Completions already in hand: only pick up what is there, don't block.
        let timeout = if ready > 0 {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let before = out.len();
        self.driver.reap(out, room, timeout, &mut self.ready)?;
        // What the driver queued while reaping (e.g. epoll's retried ops).
        let more = self.ready.len().min(room - (out.len() - before));
        out.extend(self.ready.drain(..more));
        Ok(())
    }
}

/// Why an op's buffer cannot be used, if it cannot: a caller bug reported as
/// a completion rather than a panic, a fake end of stream or an endless
/// zero-byte send.
#[inline]
fn unusable(op: &Op) -> Option<io::Error> {
    match op {
        Op::Recv { buf, .. } if buf.capacity() > 0 && buf.len() == buf.capacity() => {
            Some(no_spare_capacity())
        }
        Op::Send { buf, pos, .. } if *pos >= buf.len() => Some(nothing_to_send()),
        _ => None,
    }
}

impl<D: Driver> CompletionPort for Front<D> {
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        self.driver.register(socket)
    }

    fn deregister(&mut self, socket: RawSocket) -> io::Result<()> {
        self.driver.deregister(socket, &mut self.ready)
    }

    #[inline]
    fn submit(&mut self, token: Token, op: Op) {
        self.in_flight += 1;
        match unusable(&op) {
            Some(error) => self.ready.push_back(op.fail(token, error)),
            None => self.driver.start(token, op, &mut self.ready),
        }
    }

    fn cancel(&mut self, socket: RawSocket) {
        self.driver.cancel(socket, &mut self.ready);
    }

    fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()> {
        let before = out.len();
        let result = self.hand_out(out, timeout);
        self.in_flight = self.in_flight.saturating_sub(out.len() - before);
        result
    }

    fn waker(&self) -> Waker {
        self.driver.waker()
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.driver.give_buffer(buf);
    }
}

#[cfg(test)]
mod tests;
