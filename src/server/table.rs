//! A worker's connections: the table they live in, their ids, and the list of
//! those touched this turn (to pump at its end).

use std::mem;
use std::time::{Duration, Instant};

use slab::Slab;

use super::connection::{Connection, Phase, LINGER_TIMEOUT};
use super::event::ConnectionId;
use super::ids::IdMap;

/// The connections of one worker.
pub(crate) struct Table {
    conns: Slab<Connection>,
    /// Keys of the connections to pump at the end of this turn.
    dirty: Vec<usize>,
    next_id: ConnectionId,
    /// Ids are unique across workers: worker `i` gives `i`, `i + workers`, ...
    id_stride: u64,
    /// The key of each id, kept only when ids are known outside the worker
    /// (connection events on), for letters addressed to a connection.
    keys: Option<IdMap<usize>>,
    /// The connections lingering, or served on in a
    /// drain (`Connection::served_in_drain`): key, id, and when each began.
    lingering: Vec<(usize, ConnectionId, Instant)>,
}

impl Table {
    /// The empty table of worker `index` of `workers`; `by_id`: connections
    /// are also found by id ([`Table::key_of`]).
    pub(crate) fn new(index: usize, workers: usize, by_id: bool) -> Table {
        Table {
            conns: Slab::new(),
            dirty: Vec::new(),
            next_id: index as u64,
            id_stride: workers as u64,
            keys: if by_id { Some(IdMap::default()) } else { None },
            lingering: Vec::new(),
        }
    }

    /// Add a connection made by `make` from its new id; it is touched.
    pub(crate) fn insert(&mut self, make: impl FnOnce(ConnectionId) -> Connection) -> usize {
        let id = self.next_id;
        self.next_id += self.id_stride;
        let key = self.conns.insert(make(id));
        if let Some(keys) = &mut self.keys {
            keys.insert(id, key);
        }
        self.touch(key);
        key
    }

    /// The connection at `key`, if any.
    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Connection> {
        self.conns.get_mut(key)
    }

    /// The connection at `key` if it is still connection `id` (not a later
    /// one in a reused slot).
    #[inline]
    pub(crate) fn get_live(&mut self, key: usize, id: ConnectionId) -> Option<&mut Connection> {
        match self.conns.get_mut(key) {
            Some(conn) if conn.id == id => Some(conn),
            _ => None,
        }
    }

    /// The key of connection `id`, if it is in this table (only when made
    /// `by_id`: for letters from outside the turn, never per message).
    pub(crate) fn key_of(&self, id: ConnectionId) -> Option<usize> {
        self.keys.as_ref().and_then(|keys| keys.get(&id).copied())
    }

    /// Mark a connection to be pumped at the end of this turn.
    #[inline]
    pub(crate) fn touch(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The keys touched since the last call (cleared of their mark), in `into`.
    pub(crate) fn take_dirty(&mut self, into: &mut Vec<usize>) {
        mem::swap(into, &mut self.dirty);
        into.retain(|&key| match self.conns.get_mut(key) {
            Some(conn) => {
                conn.dirty = false;
                true
            }
            None => false,
        });
    }

    /// Whether any connection was touched since the last [`Table::take_dirty`].
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Remove and return a connection.
    pub(crate) fn remove(&mut self, key: usize) -> Connection {
        let conn = self.conns.remove(key);
        if let Some(keys) = &mut self.keys {
            keys.remove(&conn.id);
        }
        conn
    }

    /// Every key, for a pass over all connections (idle checks, shutdown).
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.conns.iter().map(|(key, _)| key).collect()
    }

    /// Every connection.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> {
        self.conns.iter()
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Note that the connection at `key` began lingering, or being served on
    /// in a drain, at `now`.
    pub(crate) fn lingers(&mut self, key: usize, now: Instant) {
        if let Some(conn) = self.conns.get(key) {
            self.lingering.push((key, conn.id, now));
        }
    }

    /// The keys of the lingering connections whose peer sent nothing for
    /// `quiet` or that lingered [`LINGER_TIMEOUT`] in all, and of those
    /// served in a drain quiet as long or served `served_for` in all, at
    /// `now` (forgotten here: the caller closes them).
    pub(crate) fn lingered_out(
        &mut self,
        now: Instant,
        quiet: Duration,
        served_for: Duration,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let conns = &self.conns;
        self.lingering
            .retain(|&(key, id, began)| match conns.get(key) {
                Some(c)
                    if c.id == id
                        && (c.phase() == Phase::Lingering
                            || (c.phase() == Phase::Open && c.served_in_drain)) =>
                {
                    let longest = if c.phase() == Phase::Open {
                        served_for
                    } else {
                        LINGER_TIMEOUT
                    };
                    let quiet = now.saturating_duration_since(c.last_active) >= quiet;
                    if quiet || now.saturating_duration_since(began) >= longest {
                        out.push(key);
                        false
                    } else {
                        true
                    }
                }
                _ => false,
            });
        out
    }

    /// Whether any connection lingers (the worker then checks every
    /// [`LINGER_CHECK`](super::connection::LINGER_CHECK)).
    pub(crate) fn any_lingering(&self) -> bool {
        !self.lingering.is_empty()
    }
}
