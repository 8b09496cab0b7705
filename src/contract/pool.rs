//! A port's pool of spare receive buffers, for recvs with port-chosen memory.
//!
//! Rule: a buffer is kept only if a full recv fits in it and it is not far
//! larger than that (see [`BufferPool::give`]); at most a fixed number are kept.

/// A port's pool of spare receive buffers, refilled by
/// [`CompletionPort::give_buffer`]: so that recvs with port-chosen memory
/// allocate nothing per message in steady traffic.
#[derive(Debug)]
pub(crate) struct BufferPool {
    spare: Vec<Vec<u8>>,
    /// The capacity of a buffer made when the pool is empty.
    size: usize,
}

impl BufferPool {
    /// At most this many spare buffers are kept.
    const LIMIT: usize = 256;

    /// An empty pool whose new buffers have capacity `size` (at least 1).
    pub(crate) fn new(size: usize) -> BufferPool {
        BufferPool {
            spare: Vec::new(),
            size: size.max(1),
        }
    }

    /// An empty buffer with at least `size` bytes of capacity.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Keep `buf` (emptied) for a later [`BufferPool::take`], unless the pool is
    /// full or its capacity is below the pool's size or far above it.
    ///
    /// A smaller buffer is dropped rather than kept: a recv into it returns
    /// less, so a large message would take more recvs (see bench/README.md).
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if self.spare.len() < Self::LIMIT && capacity >= self.size && capacity <= 4 * self.size {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Spare buffers held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spare.len()
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn the_pool_keeps_only_buffers_a_full_recv_fits_in() {
        let mut pool = BufferPool::new(1024);
        pool.give(Vec::with_capacity(700));
        pool.give(Vec::with_capacity(8192));
        assert_eq!(pool.len(), 0, "kept a buffer too small or too large");
        let mut kept = Vec::with_capacity(1024);
        kept.extend_from_slice(b"old bytes");
        pool.give(kept);
        assert_eq!(pool.len(), 1);
        let taken = pool.take();
        assert!(taken.is_empty() && taken.capacity() >= 1024);
        assert!(pool.take().capacity() >= 1024, "a new buffer is full size");
    }
}
