//! The server on a Unix domain socket (Linux), on every backend compiled in:
//! echo in every framing, natively and through a handler; the addresses an
//! `Open` event carries (a named and an unnamed client); the socket file's
//! life: a stale socket replaced, anything else at the path left untouched, a
//! live server's path refused, the file removed on close (only if still ours);
//! TLS over a Unix socket.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{backends, config, pattern, read_n, start};
use crate::framing::{ByteOrder, Framing};
use crate::port::Backend;
use crate::server::{Address, Batch, Config, Event, Handler, Server, StartError};
use crate::tls::test_certs::{client_config, server_name, CertFiles, ClientCert};

/// A fresh path in the temporary folder, nothing at it.
fn sock_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "iocp-echo-{}-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        name
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn unix_config(backend: Backend, framing: Framing, path: &Path) -> Config {
    Config {
        path: Some(path.to_path_buf()),
        ..config(backend, framing)
    }
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// `payload` framed as `framing` frames it.
fn framed(framing: &Framing, payload: &[u8]) -> Vec<u8> {
    framing.encode(payload).unwrap()
}

fn framings() -> Vec<Framing> {
    vec![
        Framing::raw(),
        Framing::lines(b"\n").unwrap(),
        Framing::length_prefixed(4, ByteOrder::Big).unwrap(),
    ]
}

/// Echo a few messages of `framing` through `stream` and check them byte-exact.
fn check_echo(stream: &mut UnixStream, framing: &Framing, backend: Backend) {
    for (i, len) in [1usize, 100, 70_000].iter().enumerate() {
        let mut payload = pattern(*len, i as u32);
        if matches!(framing, Framing::Lines { .. }) {
            payload.retain(|b| *b != b'\n');
        }
        let wire = framed(framing, &payload);
        stream.write_all(&wire).unwrap();
        assert_eq!(
            read_n(stream, wire.len()),
            wire,
            "{} {:?}",
            backend,
            framing
        );
    }
}

#[test]
fn native_echo_in_every_framing() {
    for backend in backends() {
        for framing in framings() {
            let path = sock_path("echo");
            let server = start(unix_config(backend, framing.clone(), &path), None);
            assert_eq!(server.address(), &Address::Unix(Some(path.clone())));
            let mut clients: Vec<UnixStream> = (0..3).map(|_| connect(&path)).collect();
            for client in &mut clients {
                check_echo(client, &framing, backend);
            }
            drop(clients);
            server.close().unwrap();
        }
    }
}

/// Answers every frame with itself and records the `Open` events' addresses.
#[derive(Default)]
struct Recorder {
    opened: Mutex<Vec<(Address, Address)>>,
}

impl Handler for Recorder {
    fn wants_events(&self) -> bool {
        true
    }

    fn handle(&self, batch: &mut Batch) {
        for (_, event) in batch.events() {
            if let Event::Open { peer, local, .. } = event {
                self.opened
                    .lock()
                    .unwrap()
                    .push((peer.clone(), local.clone()));
            }
        }
        for i in 0..batch.len() {
            let frame = batch.frame(i).to_vec();
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn a_handler_echoes_and_sees_unix_addresses() {
    for backend in backends() {
        let path = sock_path("handler");
        let recorder = Arc::new(Recorder::default());
        let framing = Framing::lines(b"\n").unwrap();
        let server = start(
            unix_config(backend, framing.clone(), &path),
            Some(recorder.clone()),
        );
        // An unnamed client, then one bound to a path of its own.
        let mut unnamed = connect(&path);
        check_echo(&mut unnamed, &framing, backend);
        let client_path = sock_path("client");
        let named = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        named.bind(&SockAddr::unix(&client_path).unwrap()).unwrap();
        named.connect(&SockAddr::unix(&path).unwrap()).unwrap();
        let mut named: UnixStream = named.into();
        named
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        check_echo(&mut named, &framing, backend);
        let local = Address::Unix(Some(path.clone()));
        assert_eq!(
            *recorder.opened.lock().unwrap(),
            vec![
                (Address::Unix(None), local.clone()),
                (Address::Unix(Some(client_path.clone())), local)
            ],
            "{}",
            backend
        );
        drop((unnamed, named));
        server.close().unwrap();
        let _ = std::fs::remove_file(&client_path);
    }
}

#[test]
fn a_stale_socket_file_is_replaced() {
    for backend in backends() {
        let path = sock_path("stale");
        // A listener that went away without removing its file.
        drop(UnixListener::bind(&path).unwrap());
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let server = start(unix_config(backend, Framing::raw(), &path), None);
        check_echo(&mut connect(&path), &Framing::raw(), backend);
        server.close().unwrap();
    }
}

#[test]
fn a_file_that_is_not_a_socket_is_left_untouched() {
    let backend = backends()[0];
    let path = sock_path("regular");
    std::fs::write(&path, b"precious").unwrap();
    let e = match Server::start(unix_config(backend, Framing::raw(), &path), None) {
        Err(StartError::Io(e)) => e,
        Err(other) => panic!("expected an I/O error, got {}", other),
        Ok(_) => panic!("a server started on a regular file"),
    };
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains(&*path.to_string_lossy()), "{}", e);
    assert!(e.to_string().contains("not a socket"), "{}", e);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();

    let dir = sock_path("directory");
    std::fs::create_dir(&dir).unwrap();
    assert!(Server::start(unix_config(backend, Framing::raw(), &dir), None).is_err());
    assert!(dir.is_dir());
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_live_servers_path_is_refused() {
    let backend = backends()[0];
    let path = sock_path("live");
    let first = start(unix_config(backend, Framing::raw(), &path), None);
    match Server::start(unix_config(backend, Framing::raw(), &path), None) {
        Err(StartError::Io(e)) => assert_eq!(e.kind(), ErrorKind::AddrInUse, "{}", e),
        Err(other) => panic!("expected address in use, got {}", other),
        Ok(_) => panic!("a second server started on a live socket"),
    }
    // The first one still serves, on its own file.
    check_echo(&mut connect(&path), &Framing::raw(), backend);
    first.close().unwrap();
    assert!(!path.exists());
}

#[test]
fn the_file_is_removed_on_close_only_if_still_ours() {
    for backend in backends() {
        let path = sock_path("close");
        let server = start(unix_config(backend, Framing::raw(), &path), None);
        assert!(path.exists());
        server.close().unwrap();
        assert!(!path.exists(), "{}", backend);
        drop(server);

        // Someone replaced the file while the server ran: theirs is kept.
        let server = start(unix_config(backend, Framing::raw(), &path), None);
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        server.close().unwrap();
        drop(server);
        assert!(path.exists(), "{}", backend);
        drop(theirs);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn tls_over_a_unix_socket() {
    let files = CertFiles::new();
    for backend in backends() {
        let path = sock_path("tls");
        let config = Config {
            tls: files.settings(false, &[]),
            ..unix_config(backend, Framing::raw(), &path)
        };
        let server = start(config, None);
        let client = client_config(None, &[], ClientCert::Without);
        let conn = ClientConnection::new(client, server_name()).unwrap();
        let mut stream = StreamOwned::new(conn, connect(&path));
        let message = pattern(50_000, 7);
        stream.write_all(&message).unwrap();
        stream.flush().unwrap();
        assert_eq!(read_n(&mut stream, message.len()), message, "{}", backend);
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.stats().tls_handshakes != 1 {
            assert!(Instant::now() < deadline, "{:?}", server.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        server.close().unwrap();
    }
}
