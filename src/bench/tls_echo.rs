//! (tests) A small blocking TLS echo server for the load generator's TLS
//! tests: rustls's `ServerConnection` over a std `TcpListener`, a thread per
//! connection, every plaintext byte echoed (so it serves every framing), the
//! server's `close_notify` sent back when the client sends its own. Its
//! certificate and key are the checked-in `tests/certs/` (made by
//! `scripts/make-test-certs`), compiled in so the tests run from anywhere,
//! Wine included.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The test CA: it signed the server's certificate.
pub(super) const CA_PEM: &[u8] = include_bytes!("../../tests/certs/ca.pem");
/// A second CA, which signed nothing the server has.
pub(super) const OTHER_CA_PEM: &[u8] = include_bytes!("../../tests/certs/other-ca.pem");
const SERVER_PEM: &[u8] = include_bytes!("../../tests/certs/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../../tests/certs/server.key");

/// A running TLS echo server on a loopback port; stopped when dropped.
pub(super) struct TlsEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TlsEchoServer {
    /// Listen on 127.0.0.1, a port of the system's choice.
    pub(super) fn start() -> TlsEchoServer {
        let certs = rustls_pemfile::certs(&mut &SERVER_PEM[..])
            .collect::<Result<Vec<_>, _>>()
            .expect("tests/certs/server.pem is PEM");
        let key = rustls_pemfile::private_key(&mut &SERVER_KEY[..])
            .expect("tests/certs/server.key is PEM")
            .expect("tests/certs/server.key holds a key");
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the test certificate and key match");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stopped, counted) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            for socket in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(socket) = socket {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let config = Arc::clone(&config);
                    std::thread::spawn(move || echo(config, socket));
                }
            }
        });
        TlsEchoServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TlsEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve one connection: echo plaintext until the client ends the session.
fn echo(config: Arc<ServerConfig>, socket: TcpStream) {
    // Nagle would hold an echo behind the session tickets until the client's
    // delayed ACK (40 ms on Linux).
    let _ = socket.set_nodelay(true);
    let tls = match ServerConnection::new(config) {
        Ok(tls) => tls,
        Err(_) => return,
    };
    let mut stream = StreamOwned::new(tls, socket);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                // The client's close_notify: answer with ours, then close.
                stream.conn.send_close_notify();
                let _ = stream.flush();
                let _ = stream.sock.shutdown(Shutdown::Both);
                return;
            }
            Ok(n) => {
                if stream
                    .write_all(&buf[..n])
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    return;
                }
            }
            // A failed handshake, or a client gone without close_notify.
            Err(_) => return,
        }
    }
}

/// A PEM file in the temporary folder, removed when dropped (the load
/// generator reads its CA from a file).
pub(super) struct PemFile(pub(super) PathBuf);

impl PemFile {
    /// Write `pem` to a file whose name is unique to this process and `name`.
    pub(super) fn new(name: &str, pem: &[u8]) -> io::Result<PemFile> {
        let path = std::env::temp_dir().join(format!(
            "iocp-echo-bench-{}-{}.pem",
            std::process::id(),
            name
        ));
        std::fs::write(&path, pem)?;
        Ok(PemFile(path))
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
