//! The bytes of a send: a buffer the caller owns outright, or one shared
//! (reference-counted) by many sends at once, such as a broadcast framed once
//! for every receiver.
//!
//! Either way the port owns its [`SendBuf`] from submission until the
//! completion hands it back: for a shared buffer the port holds one of its
//! references, which keeps the bytes alive (and unchanged: they are never
//! written through a `SendBuf`) while the kernel reads them.

use std::ops::Deref;
use std::sync::Arc;

/// The buffer of a send.
#[derive(Clone, Debug)]
pub enum SendBuf {
    /// Bytes of the caller's own, handed back in the completion to be reused.
    Owned(Vec<u8>),
    /// Bytes shared with other sends (and other threads); never copied.
    Shared(Arc<[u8]>),
}

impl SendBuf {
    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            SendBuf::Owned(buf) => buf,
            SendBuf::Shared(buf) => buf,
        }
    }

    /// The owned buffer back, to be reused; `None` for a shared one.
    #[inline]
    pub fn into_owned(self) -> Option<Vec<u8>> {
        match self {
            SendBuf::Owned(buf) => Some(buf),
            SendBuf::Shared(_) => None,
        }
    }
}

impl Deref for SendBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
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
