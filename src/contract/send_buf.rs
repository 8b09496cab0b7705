//! The bytes of a send: a buffer the caller owns outright, one shared
//! (reference-counted) by many sends at once, such as a broadcast framed once
//! for every receiver, or several of those gathered into one send.
//!
//! Either way the port owns its [`SendBuf`] from submission until the
//! completion hands it back: for a shared buffer the port holds one of its
//! references, which keeps the bytes alive (and unchanged: they are never
//! written through a `SendBuf`) while the kernel reads them.
//!
//! **Gathered sends.** A [`Gather`] holds up to [`MAX_GATHER`] parts, each an
//! owned or a shared buffer, sent by one vectored call (`sendmsg` on Linux,
//! `WSASend` with several `WSABUF`s on Windows): the kernel reads them in
//! order, as if they were one buffer, and nothing is copied. The `pos` of a
//! send counts bytes over that concatenation, so a partial send that ends
//! inside any part is resumed exactly like a single buffer's: submit the same
//! `SendBuf` again at the new `pos`.
//!
//! A gather is a variant of `SendBuf`, not an op of its own, so that one op
//! ([`Op::Send`](super::Op::Send)), one completion and one partial-send path
//! serve both forms, and a single-buffer send is unchanged: the port looks at
//! the variant once. A gather is a container to reuse: it comes back in the
//! completion like any buffer, and [`Gather::drain`] hands its parts back
//! (owned ones to be reused) while it keeps its memory, both its list of parts
//! and the slice array the port describes them with ([`Gather::io_slices`]),
//! which the port keeps alive with the gather until the completion. So a
//! gathered send allocates nothing once its container has been used.

use std::fmt;
use std::io::IoSlice;
use std::sync::Arc;
use std::vec::Drain;

/// The most parts one [`Gather`] holds, so the most buffers one send passes
/// to the kernel. Linux refuses a `sendmsg` of more than `IOV_MAX` (1024)
/// buffers; Windows documents no limit for `WSASend` (Wine hands the buffers
/// to the host's `sendmsg`, so 1024 holds there too). 1024 parts of a 64-byte
/// broadcast are 64 KiB: about what one send takes on loopback.
pub const MAX_GATHER: usize = 1024;

/// The longest slice one buffer description can hold: `WSABUF` has a 32-bit
/// length.
#[cfg(windows)]
const MAX_SLICE: usize = u32::MAX as usize;
/// The longest slice one buffer description can hold.
#[cfg(not(windows))]
const MAX_SLICE: usize = isize::MAX as usize;

/// The buffer of a send.
#[derive(Clone, Debug)]
pub enum SendBuf {
    /// Bytes of the caller's own, handed back in the completion to be reused.
    Owned(Vec<u8>),
    /// Bytes shared with other sends (and other threads); never copied.
    Shared(Arc<[u8]>),
    /// Several owned or shared buffers sent as one (see the module doc);
    /// boxed, so that a `SendBuf` stays as small as a `Vec` and a gather
    /// moves as one pointer.
    Gathered(Box<Gather>),
}

impl SendBuf {
    /// The number of bytes (of every part, for a gathered send).
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            SendBuf::Owned(buf) => buf.len(),
            SendBuf::Shared(buf) => buf.len(),
            SendBuf::Gathered(gather) => gather.len,
        }
    }

    /// Whether there are no bytes to send.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of an owned or shared buffer; `None` for a gathered one,
    /// whose bytes are not contiguous (see [`SendBuf::parts`]).
    #[inline]
    pub fn single(&self) -> Option<&[u8]> {
        match self {
            SendBuf::Owned(buf) => Some(buf),
            SendBuf::Shared(buf) => Some(buf),
            SendBuf::Gathered(_) => None,
        }
    }

    /// The bytes in sending order, one slice per part (one slice for an
    /// owned or shared buffer).
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let parts: &[SendBuf] = match self {
            SendBuf::Gathered(gather) => &gather.parts,
            _ => std::slice::from_ref(self),
        };
        parts.iter().map(|part| part.single().unwrap_or_default())
    }

    /// All the bytes, copied into one `Vec` (for tests and cold paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        for part in self.parts() {
            bytes.extend_from_slice(part);
        }
        bytes
    }

    /// The owned buffer back, to be reused; `None` for a shared or gathered one.
    #[inline]
    pub fn into_owned(self) -> Option<Vec<u8>> {
        match self {
            SendBuf::Owned(buf) => Some(buf),
            SendBuf::Shared(_) | SendBuf::Gathered(_) => None,
        }
    }
}

impl From<Vec<u8>> for SendBuf {
    #[inline]
    fn from(buf: Vec<u8>) -> SendBuf {
        SendBuf::Owned(buf)
    }
}

impl From<Arc<[u8]>> for SendBuf {
    #[inline]
    fn from(buf: Arc<[u8]>) -> SendBuf {
        SendBuf::Shared(buf)
    }
}

impl From<Box<Gather>> for SendBuf {
    #[inline]
    fn from(gather: Box<Gather>) -> SendBuf {
        SendBuf::Gathered(gather)
    }
}

/// The parts of a gathered send: up to [`MAX_GATHER`] owned or shared
/// buffers, sent in order as one (see the module doc).
#[derive(Default)]
pub struct Gather {
    /// Owned or shared buffers, never gathered ones.
    parts: Vec<SendBuf>,
    /// The bytes of `parts`.
    len: usize,
    /// The port's description of the parts from some position, made by
    /// [`Gather::io_slices`]. Each slice points into a part: it is cleared
    /// before any part changes or goes, and never read by this type.
    slices: Vec<IoSlice<'static>>,
}

impl Gather {
    /// An empty gather; it takes memory with its first part.
    pub fn new() -> Gather {
        Gather::default()
    }

    /// The number of bytes of all parts.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the parts hold no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of parts.
    #[inline]
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// Whether it holds [`MAX_GATHER`] parts: no more can be added.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.parts.len() >= MAX_GATHER
    }

    /// Add `part` behind the others; `Err` gives it back if the gather is
    /// full or `part` is itself gathered.
    #[inline]
    pub fn push(&mut self, part: SendBuf) -> Result<(), SendBuf> {
        if self.is_full() || matches!(part, SendBuf::Gathered(_)) {
            return Err(part);
        }
        self.slices.clear();
        self.len += part.len();
        self.parts.push(part);
        Ok(())
    }

    /// Take every part out, in order, leaving the gather empty with its
    /// memory kept for the next send.
    pub fn drain(&mut self) -> Drain<'_, SendBuf> {
        self.slices.clear();
        self.len = 0;
        self.parts.drain(..)
    }

    /// The bytes from `pos` on, as slices for a vectored send: the kernel's
    /// `iovec` on Unix, `WSABUF` on Windows (`IoSlice` is guaranteed to have
    /// their layout). Empty parts are left out; a part too long for one slice
    /// (over 4 GiB on Windows) ends the slices with as much of it as fits, so
    /// the slices are always the next bytes to send. Made here, once per
    /// call, into memory the gather keeps: a port passes their address to
    /// the kernel and keeps the gather (so the parts and the slices) until
    /// the completion; any change to the gather invalidates them.
    pub fn io_slices(&mut self, pos: usize) -> &[IoSlice<'_>] {
        self.slices.clear();
        let mut skip = pos;
        for part in &self.parts {
            let bytes = part.single().unwrap_or_default();
            if skip >= bytes.len() {
                skip -= bytes.len();
                continue;
            }
            let rest = &bytes[skip..];
            skip = 0;
            let slice = &rest[..rest.len().min(MAX_SLICE)];
            // SAFETY: the slice points into a part of this gather; the
            // `'static` is never seen outside: `slices` is only handed out
            // borrowed from `self` (below), and it is cleared before any part
            // is changed, removed or dropped (`push`, `drain`; dropping the
            // gather drops `slices`, which reads nothing through them).
            let slice: &'static [u8] = unsafe { &*(slice as *const [u8]) };
            self.slices.push(IoSlice::new(slice));
            if slice.len() < rest.len() {
                break;
            }
        }
        &self.slices
    }
}

impl Clone for Gather {
    /// The same parts (owned ones copied, shared ones one more reference);
    /// the port's slices are not cloned.
    fn clone(&self) -> Gather {
        Gather {
            parts: self.parts.clone(),
            len: self.len,
            slices: Vec::new(),
        }
    }
}

impl fmt::Debug for Gather {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("parts", &self.parts)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Gather, SendBuf, MAX_GATHER};

    fn gather(parts: &[&[u8]]) -> Gather {
        let mut gather = Gather::new();
        for (i, part) in parts.iter().enumerate() {
            let part = if i % 2 == 0 {
                SendBuf::Owned(part.to_vec())
            } else {
                SendBuf::Shared(Arc::from(*part))
            };
            gather.push(part).unwrap();
        }
        gather
    }

    fn rest(gather: &mut Gather, pos: usize) -> Vec<u8> {
        gather
            .io_slices(pos)
            .iter()
            .flat_map(|s| s.to_vec())
            .collect()
    }

    #[test]
    fn slices_from_any_position_are_the_rest_of_the_bytes() {
        let mut gather = gather(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(gather.len(), 6);
        assert_eq!(gather.part_count(), 4);
        let all = b"abcdef";
        for pos in 0..=all.len() {
            assert_eq!(rest(&mut gather, pos), &all[pos..], "from {}", pos);
        }
        assert_eq!(gather.io_slices(0).len(), 3, "the empty part is left out");
        assert_eq!(gather.io_slices(3).len(), 2, "starts inside the third part");
        assert!(gather.io_slices(6).is_empty());
    }

    #[test]
    fn parts_to_vec_and_drain() {
        let mut gather = gather(&[b"one", b"two"]);
        let buf = SendBuf::Gathered(Box::new(gather.clone()));
        assert_eq!(buf.len(), 6);
        assert!(buf.single().is_none());
        assert_eq!(buf.to_vec(), b"onetwo");
        assert_eq!(buf.parts().count(), 2);
        let single = SendBuf::Owned(b"x".to_vec());
        assert_eq!(single.parts().collect::<Vec<_>>(), vec![&b"x"[..]]);
        let parts: Vec<SendBuf> = gather.drain().collect();
        assert_eq!(parts.len(), 2);
        assert!(gather.is_empty() && gather.part_count() == 0);
        assert!(gather.io_slices(0).is_empty());
    }

    #[test]
    fn a_full_gather_and_a_gathered_part_are_refused() {
        let mut gather = Gather::new();
        assert!(gather.push(SendBuf::Gathered(Box::default())).is_err());
        let shared: Arc<[u8]> = Arc::from(&b"z"[..]);
        for _ in 0..MAX_GATHER {
            gather.push(SendBuf::Shared(Arc::clone(&shared))).unwrap();
        }
        assert!(gather.is_full());
        assert!(gather.push(SendBuf::Shared(shared)).is_err());
        assert_eq!(gather.io_slices(0).len(), MAX_GATHER);
    }
}
