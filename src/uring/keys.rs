//! The `user_data` of the ring's SQEs: what each CQE answers.
//!
//! Below [`ACCEPT_TAG`] are op slot keys (one SQE per op). [`STREAM_TAG`] or
//! [`ACCEPT_TAG`] plus a stream key marks a multishot recv or accept. Two
//! values are reserved: [`WAKE`] for the read always posted on the waker's
//! eventfd, and [`CANCEL`] for cancel requests, whose CQEs are swallowed (the
//! cancelled ops still complete under their own keys).

/// `user_data` of the read posted on the waker's eventfd.
pub(super) const WAKE: u64 = u64::MAX;
/// `user_data` of cancel requests; their CQEs are swallowed.
pub(super) const CANCEL: u64 = u64::MAX - 1;
/// Set in the `user_data` of every multishot recv.
pub(super) const STREAM_TAG: u64 = 1 << 62;
/// Set in the `user_data` of every multishot accept.
pub(super) const ACCEPT_TAG: u64 = 1 << 61;

// Every reserved `user_data` is told apart from the others and from slot keys.
const _: () = assert!(ACCEPT_TAG & STREAM_TAG == 0);
const _: () = assert!(WAKE & ACCEPT_TAG != 0 && CANCEL & ACCEPT_TAG != 0);

/// What a CQE answers, read from its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    /// The waker's eventfd read.
    Wake,
    /// A cancel request.
    Cancel,
    /// Multishot recv stream `key`.
    Stream(usize),
    /// Multishot accept stream `key`.
    Accept(usize),
    /// The op in slot `key`.
    Slot(usize),
}

impl Key {
    /// The meaning of `user_data`.
    pub(super) fn of(user_data: u64) -> Key {
        match user_data {
            WAKE => Key::Wake,
            CANCEL => Key::Cancel,
            tagged if tagged & STREAM_TAG != 0 => Key::Stream((tagged & !STREAM_TAG) as usize),
            tagged if tagged & ACCEPT_TAG != 0 => Key::Accept((tagged & !ACCEPT_TAG) as usize),
            key => Key::Slot(key as usize),
        }
    }
}
