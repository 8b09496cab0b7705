//! Clean closes, on every backend compiled in (so under Wine for IOCP too):
//! a connection the server closes lingers for its client's end of stream
//! instead of answering late input with a reset, and connections still
//! waiting in the listener's backlog when the server stops are closed
//! cleanly, not reset.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::{backends, config, connect, read_n, start};
use crate::framing::Framing;
use crate::server::{Batch, Handler};

/// Read until the end of stream: `Ok` with what came before it, or the
/// error (a reset) that ended the stream instead.
fn read_to_end_of_stream(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn input_after_the_servers_close_is_read_and_dropped_not_reset() {
    for backend in backends() {
        let mut config = config(backend, Framing::raw());
        config.workers = 1;
        // Long enough that the client's late sends fall inside the linger.
        config.linger_timeout = Duration::from_secs(10);
        config.drain_timeout = Duration::from_secs(20);
        let server = Arc::new(start(config, None));
        let mut client = connect(&server);
        client.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut client, 4), b"ping", "{}", backend);
        let closer = {
            let server = Arc::clone(&server);
            thread::spawn(move || server.close())
        };
        // The server's end of stream, cleanly.
        assert_eq!(
            read_to_end_of_stream(&mut client).unwrap(),
            b"",
            "{}",
            backend
        );
        // Sent after it: a server that closed outright would answer the first
        // with a reset, and the second send would fail.
        for late in [&b"late 1"[..], b"late 2"] {
            thread::sleep(Duration::from_millis(100));
            if let Err(e) = client.write_all(late) {
                panic!(
                    "{}: a send after the server's end of stream failed: {}",
                    backend, e
                );
            }
        }
        // The client's own end of stream ends the linger.
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(closer.join().unwrap(), Ok(()), "{}", backend);
        let stats = server.stats();
        assert_eq!(stats.connections_open, 0, "{}", backend);
        assert_eq!(
            stats.bytes_received, 4,
            "{}: lingering input is not counted",
            backend
        );
    }
}

/// Holds its worker inside `handle` on "hold" until released.
#[derive(Default)]
struct Holder {
    held: Mutex<Option<bool>>,
    changed: Condvar,
}

impl Holder {
    /// Wait until a batch is held (`Some(false)`).
    fn wait_held(&self) {
        let mut held = self.held.lock().unwrap();
        while *held != Some(false) {
            held = self.changed.wait(held).unwrap();
        }
    }

    fn release(&self) {
        *self.held.lock().unwrap() = Some(true);
        self.changed.notify_all();
    }
}

impl Handler for Holder {
    fn handle(&self, batch: &mut Batch) {
        for i in 0..batch.len() {
            let frame = batch.frame(i).to_vec();
            if frame == b"hold" {
                let mut held = self.held.lock().unwrap();
                if held.is_none() {
                    *held = Some(false);
                    self.changed.notify_all();
                }
                while *held != Some(true) {
                    held = self.changed.wait(held).unwrap();
                }
            }
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn connections_waiting_to_be_accepted_when_the_server_stops_end_cleanly() {
    for backend in backends() {
        let mut config = config(backend, Framing::lines(b"\n").unwrap());
        // One worker, the acceptor's: held in the handler, it accepts nothing.
        config.workers = 1;
        let holder = Arc::new(Holder::default());
        let server = Arc::new(start(config, Some(holder.clone())));
        let mut first = connect(&server);
        first.write_all(b"hold\n").unwrap();
        holder.wait_held();
        // These finish their handshakes in the kernel's backlog (or in an
        // accept posted before the hold) and send at once.
        let mut waiting: Vec<TcpStream> = (0..20).map(|_| connect(&server)).collect();
        for stream in &mut waiting {
            stream.write_all(b"hello\n").unwrap();
        }
        let closer = {
            let server = Arc::clone(&server);
            thread::spawn(move || server.close())
        };
        // Let close() mark the server stopping before the worker runs on
        // (were it later, these connections would be served: still clean).
        thread::sleep(Duration::from_millis(200));
        holder.release();
        assert_eq!(
            read_to_end_of_stream(&mut first).unwrap(),
            b"hold\n",
            "{}",
            backend
        );
        for (i, stream) in waiting.iter_mut().enumerate() {
            match read_to_end_of_stream(stream) {
                Ok(got) => assert!(
                    got.is_empty() || got == b"hello\n",
                    "{}: connection {} got {:?}",
                    backend,
                    i,
                    got
                ),
                Err(e) => panic!("{}: connection {} was reset: {}", backend, i, e),
            }
            // Its end ends the server's linger.
            let _ = stream.shutdown(Shutdown::Write);
        }
        assert_eq!(closer.join().unwrap(), Ok(()), "{}", backend);
        assert_eq!(server.stats().connections_open, 0, "{}", backend);
    }
}
