//! New connections and letters from other threads: adopting an accepted
//! socket (with its `Open` event; with `proxy_protocol`, refusing a peer
//! outside `trusted_proxies`), and applying pushed output (a broadcast:
//! one shared buffer for all its receivers), close and abort requests at the start of a connection's next pump.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use socket2::Socket;

use super::admission::Admission;
use super::connection::Connection;
use super::event::{CloseReason, Event};
use super::handler::Batch;
use super::mailbox::Letter;
use super::output::Spares;
use super::preamble::Preamble;
use super::stats::WorkerCounters;
use super::table::Table;
use super::transport::Transport;
use super::turn::Turn;
use crate::port::{raw_socket, Address, CompletionPort, Port};
use crate::tls::TlsInfo;

/// Make an accepted socket a connection of this worker.
pub(crate) fn adopt(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    socket: Socket,
    peer: Address,
    admission: Admission,
) -> Option<usize> {
    let config = turn.config;
    // A Unix socket's peer is a process of this machine: trusted like loopback.
    let trusted = |peer: &Address| match peer.inet() {
        Some(addr) => config.trusted_proxies.iter().any(|c| c.contains(addr.ip())),
        None => true,
    };
    if config.proxy_protocol && !trusted(&peer) {
        untrusted(turn, peer);
        return None;
    }
    let transport = match turn.tls {
        None => Transport::Plain,
        Some(tls) => match tls.session(turn.now) {
            Ok(session) => Transport::Tls(Box::new(session)),
            Err(e) => {
                log::warn!("no TLS session for connection from {}: {}", peer, e);
                return None;
            }
        },
    };
    if let Err(e) = port.register(raw_socket(&socket)) {
        log::warn!("could not register connection from {}: {}", peer, e);
        WorkerCounters::add(&turn.counters.io_errors, 1);
        return None;
    }
    let plain = transport.is_plain();
    let decoder = turn.config.framing.decoder(turn.config.max_frame);
    let proxy = if config.proxy_protocol {
        Some(Box::new(Preamble::default()))
    } else {
        None
    };
    let waits_for_header = proxy.is_some();
    let key = table.insert(|id| {
        let mut conn = Connection::new(id, socket, peer, transport, decoder, admission);
        conn.proxy = proxy;
        conn
    });
    WorkerCounters::add(&turn.counters.connections_accepted, 1);
    WorkerCounters::add(&turn.counters.connections_open, 1);
    // A TLS connection opens when its handshake finishes, one behind a proxy
    // once its PROXY header is read (`receive.rs`).
    if plain && !waits_for_header && turn.mode.events() {
        if let Some(conn) = table.get_mut(key) {
            opened(turn, conn, batch, None);
        }
    }
    Some(key)
}

/// Adopt a socket accepted while the server stops: it is served until its
/// client is quiet for `linger_timeout`, then closed cleanly, not reset
/// ([`Connection::close_for_drain`]).
///
/// [`Connection::close_for_drain`]: super::connection::Connection::close_for_drain
pub(crate) fn adopt_to_close(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    socket: Socket,
    peer: Address,
    admission: Admission,
) {
    if let Some(key) = adopt(turn, table, port, batch, socket, peer, admission) {
        if let Some(conn) = table.get_mut(key) {
            if conn.close_for_drain(turn.config.linger_timeout) {
                table.lingers(key, turn.now);
            }
        }
    }
}

/// A connection from a peer outside `trusted_proxies`: closed at once (the
/// socket dropped, its admission released), counted, never a connection of
/// the table, so no event.
#[cold]
fn untrusted(turn: &Turn<'_>, peer: Address) {
    log::info!(
        "closing connection from {}: not in trusted_proxies, so it may not send a PROXY header",
        peer
    );
    let counters = turn.counters;
    WorkerCounters::add(&counters.connections_accepted, 1);
    WorkerCounters::add(&counters.connections_closed, 1);
    WorkerCounters::add(&counters.proxy_errors, 1);
}

/// Make the `Open` event of a new connection (with what its TLS handshake
/// negotiated, for a TLS one), and let it be written to from outside.
#[cold]
pub(crate) fn opened(
    turn: &Turn<'_>,
    conn: &mut Connection,
    batch: &mut Batch,
    tls: Option<TlsInfo>,
) {
    let local = conn
        .local_addr()
        .unwrap_or_else(|| Address::Inet(([0, 0, 0, 0], 0).into()));
    let published = Arc::new(AtomicUsize::new(0));
    turn.mailbox.opened(conn.id, Arc::clone(&published));
    conn.published = Some(published);
    batch.push_event(Event::Open {
        id: conn.id,
        peer: conn.peer.clone(),
        local,
        tls: tls.map(Box::new),
    });
}

/// Apply the letters taken from the mailbox, in posting order. While the
/// server stops, sockets handed over are adopted only to be closed cleanly.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    turn: &Turn<'_>,
    letters: &mut Vec<Letter>,
    stopping: bool,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    spares: &mut Spares,
) {
    for letter in letters.drain(..) {
        match letter {
            Letter::Adopt {
                socket,
                peer,
                admission,
            } if stopping => adopt_to_close(turn, table, port, batch, socket, peer, admission),
            Letter::Adopt {
                socket,
                peer,
                admission,
            } => {
                adopt(turn, table, port, batch, socket, peer, admission);
            }
            Letter::Send { id, framed } => {
                if let Some(key) = table.key_of(id) {
                    if let Some(conn) = table.get_mut(key) {
                        conn.output.push(framed, spares);
                    }
                    table.touch(key);
                }
            }
            Letter::Broadcast { shared, ids } => {
                for id in ids {
                    if let Some(key) = table.key_of(id) {
                        if let Some(conn) = table.get_mut(key) {
                            conn.output.push_shared(&shared, spares);
                        }
                        table.touch(key);
                    }
                }
            }
            Letter::Close { id } => {
                if let Some(key) = table.key_of(id) {
                    if let Some(conn) = table.get_mut(key) {
                        conn.flush_then_close(CloseReason::Requested);
                    }
                    table.touch(key);
                }
            }
            Letter::Overflow { id } => {
                if let Some(key) = table.key_of(id) {
                    if let Some(conn) = table.get_mut(key) {
                        // The pump closes it as a slow consumer.
                        conn.output.discard();
                    }
                    table.touch(key);
                }
            }
            Letter::Abort { id } => {
                if let Some(key) = table.key_of(id) {
                    if let Some(conn) = table.get_mut(key) {
                        conn.abort(CloseReason::Requested, port);
                    }
                    table.touch(key);
                }
            }
        }
    }
}
