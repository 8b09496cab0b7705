//! Connection events and output pushed from outside a turn, on every backend
//! compiled in (so under Wine for IOCP too): open and close with ids and
//! addresses, each close reason, order with frames, push and close by id from
//! other threads, ids spread over several workers. The recording handler is
//! shared with `bound`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{backends, closed_by_server, config, connect, read_n, start};
use crate::framing::{FrameError, Framing};
use crate::port::{Address, Backend};
use crate::server::{Batch, CloseReason, ConnectionId, Event, Handler, SendError, Server};

/// What a recording handler saw, in the order it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Open(ConnectionId, Address, Address),
    Frame(ConnectionId, Vec<u8>),
    Pause(ConnectionId),
    Resume(ConnectionId),
    Close(ConnectionId, CloseReason),
}

/// Echoes every frame except "fail" (failed), "quiet" (no reply) and "big N"
/// (N bytes of `b`), and records events and frames in the order the batch gives them.
#[derive(Default)]
pub(super) struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Handler for Recorder {
    fn wants_events(&self) -> bool {
        true
    }

    fn handle(&self, batch: &mut Batch) {
        let mut seen = self.seen.lock().unwrap();
        let events = batch.events().to_vec();
        let mut next = 0;
        for i in 0..=batch.len() {
            while next < events.len() && events[next].0 == i {
                seen.push(match events[next].1.clone() {
                    Event::Open {
                        id,
                        peer,
                        local,
                        tls: _,
                    } => Seen::Open(id, peer, local),
                    Event::PauseWriting { id } => Seen::Pause(id),
                    Event::ResumeWriting { id } => Seen::Resume(id),
                    Event::Close { id, reason } => Seen::Close(id, reason),
                });
                next += 1;
            }
            if i == batch.len() {
                break;
            }
            let frame = batch.frame(i).to_vec();
            seen.push(Seen::Frame(batch.connection(i), frame.clone()));
            match &frame[..] {
                b"fail" => batch.fail(i),
                b"quiet" => {}
                _ => match big_reply(&frame) {
                    Some(n) => batch.reply(i, &vec![b'b'; n]),
                    None => batch.reply(i, &frame),
                },
            }
        }
        assert_eq!(next, events.len(), "an event placed past the last frame");
    }
}

/// The reply size `n` asked for by a frame "big n".
fn big_reply(frame: &[u8]) -> Option<usize> {
    let n = frame.strip_prefix(b"big ")?;
    std::str::from_utf8(n).ok()?.parse().ok()
}

impl Recorder {
    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Wait (30 s at most) until `condition` holds of what was seen.
    #[track_caller]
    pub(super) fn wait_until(&self, what: &str, condition: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition(&self.seen()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}: {:?}",
                what,
                self.seen()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The id of the connection whose client end is `client`, once opened.
    #[track_caller]
    pub(super) fn id_of(&self, client: &TcpStream) -> ConnectionId {
        let me = client.local_addr().unwrap();
        // Compared by IP and port only (valgrind saw a whole-value compare
        // read bytes the kernel's address never set).
        let is_me = |peer: &Address| matches!(peer, Address::Inet(a) if a.ip() == me.ip() && a.port() == me.port());
        self.wait_until("the open event", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Open(_, peer, _) if is_me(peer)))
        });
        self.seen()
            .iter()
            .find_map(|s| match s {
                Seen::Open(id, peer, _) if is_me(peer) => Some(*id),
                _ => None,
            })
            .unwrap()
    }

    /// The close reason of connection `id`, once closed.
    #[track_caller]
    pub(super) fn reason_of(&self, id: ConnectionId) -> CloseReason {
        self.wait_until("the close event", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Close(c, _) if *c == id))
        });
        self.seen()
            .iter()
            .find_map(|s| match s {
                Seen::Close(c, reason) if *c == id => Some(reason.clone()),
                _ => None,
            })
            .unwrap()
    }
}

/// The server closed `client` (connection `id`), for `reason`.
#[track_caller]
pub(super) fn assert_closed_for(
    recorder: &Recorder,
    client: &mut TcpStream,
    id: ConnectionId,
    reason: CloseReason,
    backend: Backend,
) {
    assert!(closed_by_server(client), "{}", backend);
    assert_eq!(recorder.reason_of(id), reason, "{}", backend);
}

/// Every connection seen: opened once, closed once, nothing of it before its
/// open or after its close. Returns each connection's frames.
#[track_caller]
pub(super) fn check_lifecycles(seen: &[Seen]) -> HashMap<ConnectionId, Vec<Vec<u8>>> {
    let mut state: HashMap<ConnectionId, (bool, bool, Vec<Vec<u8>>)> = HashMap::new();
    for s in seen {
        match s {
            Seen::Open(id, ..) => {
                let fresh = state.insert(*id, (true, false, Vec::new())).is_none();
                assert!(fresh, "{} opened twice: {:?}", id, seen);
            }
            Seen::Frame(id, frame) => {
                let entry = state.get_mut(id).expect("a frame before its open");
                assert!(!entry.1, "a frame of {} after its close: {:?}", id, seen);
                entry.2.push(frame.clone());
            }
            Seen::Pause(id) | Seen::Resume(id) => {
                let entry = state
                    .get_mut(id)
                    .expect("a pause or resume before its open");
                assert!(!entry.1, "a pause or resume of {} after its close", id);
            }
            Seen::Close(id, _) => {
                let entry = state.get_mut(id).expect("a close before its open");
                assert!(!entry.1, "{} closed twice: {:?}", id, seen);
                entry.1 = true;
            }
        }
    }
    for (id, (_, closed, _)) in &state {
        assert!(closed, "{} never closed: {:?}", id, seen);
    }
    state.into_iter().map(|(id, (_, _, f))| (id, f)).collect()
}

pub(super) fn lines() -> Framing {
    Framing::lines(b"\n").unwrap()
}

pub(super) fn recording(server_config: crate::server::Config) -> (Server, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let server = start(server_config, Some(recorder.clone()));
    (server, recorder)
}

#[test]
fn open_and_close_come_once_in_order_with_ids_and_addresses() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.workers = 3;
        let (server, recorder) = recording(cfg);
        let mut clients: Vec<TcpStream> = (0..6).map(|_| connect(&server)).collect();
        for (n, client) in clients.iter_mut().enumerate() {
            let wire = format!("a{}\nb{}\n", n, n);
            client.write_all(wire.as_bytes()).unwrap();
            assert_eq!(read_n(client, wire.len()), wire.as_bytes(), "{}", backend);
        }
        let ids: Vec<ConnectionId> = clients.iter().map(|c| recorder.id_of(c)).collect();
        for (client, id) in clients.iter().zip(&ids) {
            let open = recorder
                .seen()
                .into_iter()
                .find(|s| matches!(s, Seen::Open(i, ..) if i == id));
            assert_eq!(
                open,
                Some(Seen::Open(
                    *id,
                    Address::Inet(client.local_addr().unwrap()),
                    server.address().clone()
                )),
                "{}",
                backend
            );
            client.shutdown(Shutdown::Write).unwrap();
        }
        for id in &ids {
            assert_eq!(
                recorder.reason_of(*id),
                CloseReason::PeerClosed,
                "{}",
                backend
            );
        }
        // Round robin over three workers: every worker's ids, all distinct.
        let mut workers: Vec<u64> = ids.iter().map(|id| id % 3).collect();
        workers.sort_unstable();
        workers.dedup();
        assert_eq!(workers, vec![0, 1, 2], "{}: {:?}", backend, ids);
        server.close().unwrap();
        let frames = check_lifecycles(&recorder.seen());
        assert_eq!(frames.len(), 6, "{}", backend);
        for (n, id) in ids.iter().enumerate() {
            let want = vec![
                format!("a{}", n).into_bytes(),
                format!("b{}", n).into_bytes(),
            ];
            assert_eq!(frames[id], want, "{}", backend);
        }
    }
}

#[test]
fn each_close_reason_is_reported() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.max_frame = 16;
        let (server, recorder) = recording(cfg);

        let mut bad_frame = connect(&server);
        let mut failing = connect(&server);
        let mut staying = connect(&server);
        let bad_frame_id = recorder.id_of(&bad_frame);
        let failing_id = recorder.id_of(&failing);
        let staying_id = recorder.id_of(&staying);

        bad_frame.write_all(&[b'x'; 100]).unwrap();
        assert!(closed_by_server(&mut bad_frame), "{}", backend);
        match recorder.reason_of(bad_frame_id) {
            CloseReason::Frame(FrameError::TooLarge { .. }) => {}
            other => panic!("{}: {:?}", backend, other),
        }

        failing.write_all(b"ok\n").unwrap();
        assert_eq!(read_n(&mut failing, 3), b"ok\n");
        failing.write_all(b"fail\n").unwrap();
        assert_closed_for(
            &recorder,
            &mut failing,
            failing_id,
            CloseReason::HandlerFailed,
            backend,
        );

        staying.write_all(b"still\n").unwrap();
        assert_eq!(read_n(&mut staying, 6), b"still\n");
        server.close().unwrap();
        assert_eq!(
            recorder.reason_of(staying_id),
            CloseReason::Shutdown,
            "{}",
            backend
        );
        check_lifecycles(&recorder.seen());
        assert!(closed_by_server(&mut staying), "{}", backend);

        let mut cfg = config(backend, lines());
        cfg.idle_timeout = Some(Duration::from_millis(200));
        let (server, recorder) = recording(cfg);
        let mut idle = connect(&server);
        let idle_id = recorder.id_of(&idle);
        assert_closed_for(
            &recorder,
            &mut idle,
            idle_id,
            CloseReason::IdleTimeout,
            backend,
        );
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn a_push_from_another_thread_arrives_framed_in_order_after_earlier_replies() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.workers = 3;
        let (server, recorder) = recording(cfg);
        let sender = server.sender();
        let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
        for client in &mut clients {
            // A reply queued in the turn the frame arrived, before the push.
            client.write_all(b"first\n").unwrap();
            let id = recorder.id_of(client);
            recorder.wait_until("the first frame", |seen| {
                seen.contains(&Seen::Frame(id, b"first".to_vec()))
            });
            let pusher = {
                let sender = sender.clone();
                thread::spawn(move || {
                    for n in 0..100 {
                        sender.send(id, format!("push {}", n).as_bytes()).unwrap();
                    }
                })
            };
            pusher.join().unwrap();
            let mut want = b"first\n".to_vec();
            for n in 0..100 {
                want.extend_from_slice(format!("push {}\n", n).as_bytes());
            }
            assert!(read_n(client, want.len()) == want, "{}", backend);
        }
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn sends_to_several_connections_at_once_keep_each_connections_order() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.workers = 3;
        let (server, recorder) = recording(cfg);
        let sender = server.sender();
        let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
        let ids: Vec<ConnectionId> = clients.iter().map(|c| recorder.id_of(c)).collect();
        let texts: Vec<(ConnectionId, String)> = (0..40)
            .map(|n| (ids[n % 4], format!("each {}", n)))
            .collect();
        let mut payloads: Vec<(ConnectionId, &[u8])> =
            texts.iter().map(|(id, t)| (*id, t.as_bytes())).collect();
        payloads.insert(3, (1_000_001, b"nobody"));
        payloads.insert(7, (ids[1], b"two\nlines"));
        let failed = sender.send_each(&payloads);
        assert_eq!(
            failed,
            vec![
                (3, SendError::Closed),
                (7, SendError::Unframable(FrameError::DelimiterInPayload))
            ],
            "{}",
            backend
        );
        for (k, client) in clients.iter_mut().enumerate() {
            let want: Vec<u8> = (0..40)
                .filter(|n| n % 4 == k)
                .flat_map(|n| format!("each {}\n", n).into_bytes())
                .collect();
            assert!(read_n(client, want.len()) == want, "{}", backend);
        }
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn the_sender_is_send_sync_and_cloneable() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<crate::server::ConnectionSender>();
}

#[test]
fn a_push_to_a_closed_or_unknown_id_says_closed() {
    for backend in backends() {
        let (server, recorder) = recording(config(backend, lines()));
        let sender = server.sender();
        assert_eq!(sender.send(1_000_001, b"nobody"), Err(SendError::Closed));
        let mut client = connect(&server);
        let id = recorder.id_of(&client);
        assert_eq!(
            sender.send(id, b"two\nlines"),
            Err(SendError::Unframable(FrameError::DelimiterInPayload)),
            "{}",
            backend
        );
        client.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut client), "{}", backend);
        recorder.reason_of(id);
        assert_eq!(
            sender.send(id, b"late"),
            Err(SendError::Closed),
            "{}",
            backend
        );
        assert_eq!(sender.close(id), Err(SendError::Closed), "{}", backend);
        server.close().unwrap();
        assert_eq!(sender.send(0, b"after close"), Err(SendError::Closed));

        // A handler without events: no id is open for sending.
        let echo = start(config(backend, lines()), None);
        let mut client = connect(&echo);
        client.write_all(b"hi\n").unwrap();
        assert_eq!(read_n(&mut client, 3), b"hi\n");
        assert_eq!(echo.sender().send(0, b"x"), Err(SendError::Closed));
        assert_eq!(echo.sender().send(1, b"x"), Err(SendError::Closed));
        echo.close().unwrap();
    }
}

#[test]
fn close_from_another_thread_flushes_then_closes() {
    for backend in backends() {
        let (server, recorder) = recording(config(backend, lines()));
        let mut client = connect(&server);
        let id = recorder.id_of(&client);
        let sender = server.sender();
        thread::spawn(move || {
            sender.send(id, b"bye").unwrap();
            sender.close(id).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(read_n(&mut client, 4), b"bye\n", "{}", backend);
        assert_closed_for(&recorder, &mut client, id, CloseReason::Requested, backend);
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn abort_from_another_thread_drops_queued_output() {
    for backend in backends() {
        // Room for the 64 MiB pushed below: the abort, not max_output, ends it.
        let config = crate::server::Config {
            max_output: 128 << 20,
            ..config(backend, lines())
        };
        let (server, recorder) = recording(config);
        let mut client = connect(&server);
        let id = recorder.id_of(&client);
        let sender = server.sender();
        let chunk = vec![b'a'; 1 << 20];
        thread::spawn(move || {
            for _ in 0..64 {
                sender.send(id, &chunk).unwrap();
            }
            sender.abort(id).unwrap();
        })
        .join()
        .unwrap();
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        assert!(
            received < 64 << 20,
            "{}: {} bytes arrived",
            backend,
            received
        );
        assert_eq!(
            recorder.reason_of(id),
            CloseReason::Requested,
            "{}",
            backend
        );
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

/// Counts the events it is given without asking for them.
#[derive(Default)]
struct Plain {
    events: Mutex<usize>,
}

impl Handler for Plain {
    fn handle(&self, batch: &mut Batch) {
        *self.events.lock().unwrap() += batch.events().len();
        for i in 0..batch.len() {
            let frame = batch.frame(i).to_vec();
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn a_handler_that_does_not_ask_gets_no_events() {
    for backend in backends() {
        let plain = Arc::new(Plain::default());
        let server = start(config(backend, lines()), Some(plain.clone()));
        for _ in 0..3 {
            let mut client = connect(&server);
            client.write_all(b"x\n").unwrap();
            assert_eq!(read_n(&mut client, 2), b"x\n");
        }
        server.close().unwrap();
        assert_eq!(*plain.events.lock().unwrap(), 0, "{}", backend);
    }
}
