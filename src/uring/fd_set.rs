//! A set of file descriptors, indexed by descriptor: the sockets registered
//! with a ring, answered with one bounds-checked load per op (no hashing).

use crate::contract::RawSocket;

/// Descriptors in the set; grows to the largest one inserted.
#[derive(Debug, Default)]
pub(super) struct FdSet {
    members: Vec<bool>,
}

impl FdSet {
    /// Whether `fd` is in the set.
    #[inline]
    pub(super) fn contains(&self, fd: RawSocket) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.members.get(i).copied())
            .unwrap_or(false)
    }

    /// Add `fd`; false if it was already there or is negative.
    pub(super) fn insert(&mut self, fd: RawSocket) -> bool {
        let Ok(i) = usize::try_from(fd) else {
            return false;
        };
        if i >= self.members.len() {
            self.members.resize(i + 1, false);
        }
        !std::mem::replace(&mut self.members[i], true)
    }

    /// Remove `fd`; false if it was not there.
    pub(super) fn remove(&mut self, fd: RawSocket) -> bool {
        match usize::try_from(fd)
            .ok()
            .and_then(|i| self.members.get_mut(i))
        {
            Some(member) => std::mem::replace(member, false),
            None => false,
        }
    }
}
