//! Maps keyed by connection id, hashed for ids the server makes itself
//! (sequential per worker, never chosen by a peer, so no flooding to guard
//! against): one multiplication per lookup where the standard SipHash costs
//! tens of nanoseconds. The mailbox and the table look ids up once per
//! receiver of a broadcast.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::event::ConnectionId;

/// A map from connection id, with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<ConnectionId, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing's multiplier: 2^64 divided by the golden ratio (odd).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hasher of [`IdMap`]: the id times [`K`], its well-mixed high bits
/// rotated down to where the table takes its bucket (ids of one worker step
/// by the number of workers, so their own low bits repeat).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    #[inline]
    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(K);
    }

    /// Not used by `u64` keys; any bytes still hash.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdMap;

    #[test]
    fn ids_of_a_worker_among_several_spread_and_are_found() {
        let workers = 4;
        let mut map = IdMap::default();
        for id in (1..40_000).step_by(workers) {
            map.insert(id, id * 2);
        }
        for id in (1..40_000).step_by(workers) {
            assert_eq!(map.get(&id), Some(&(id * 2)));
        }
        assert_eq!(map.get(&2), None);
    }
}
