//! The batch without a server: which frames it keeps by reference, and how
//! replies are framed into the lent output buffers (checked by pointer identity,
//! so a copy that comes back is seen).

use super::{Batch, Reply};
use crate::framing::{ByteOrder, Frame, Framing};

const A: (usize, u64) = (1, 10);
const B: (usize, u64) = (2, 20);

fn prefixed() -> Batch {
    Batch::with_framing(Framing::length_prefixed(1, ByteOrder::Big).unwrap())
}

fn outputs(batch: &mut Batch) -> Vec<((usize, u64), Vec<u8>)> {
    batch.take_outputs().collect()
}

#[test]
fn a_frame_inside_the_chunk_is_kept_by_reference() {
    let mut batch = Batch::new();
    let chunk = b"hello world".to_vec();
    let at = chunk.as_ptr();
    let mut out = Vec::new();
    batch.push(A, Frame::Borrowed(&chunk[6..]), &chunk, &mut out);
    assert!(
        batch.keep_chunk(chunk).is_none(),
        "a chunk with a frame is kept"
    );
    assert_eq!(batch.frame(0), b"world");
    assert_eq!(batch.frame(0).as_ptr(), at.wrapping_add(6), "not copied");
    let mut spent = Vec::new();
    batch.clear(|c| spent.push(c));
    assert_eq!(spent.len(), 1);
    assert_eq!(
        spent[0].as_ptr(),
        at,
        "the same chunk goes back to the port"
    );
}

#[test]
fn a_frame_outside_the_chunk_is_copied_and_the_chunk_given_back() {
    let mut batch = Batch::new();
    let assembled = b"assembled".to_vec();
    let chunk = b"tail".to_vec();
    let mut out = Vec::new();
    batch.push(A, Frame::Borrowed(&assembled), &chunk, &mut out);
    batch.push(A, Frame::Borrowed(b""), &chunk, &mut out);
    assert_eq!(batch.keep_chunk(chunk).as_deref(), Some(&b"tail"[..]));
    assert_eq!(batch.frame(0), b"assembled");
    assert_ne!(batch.frame(0).as_ptr(), assembled.as_ptr());
    assert_eq!(batch.frame(1), b"");
}

#[test]
fn a_frame_handed_over_is_kept_as_it_is() {
    let mut batch = Batch::new();
    let owned = b"large, assembled".to_vec();
    let at = owned.as_ptr();
    let chunk = b"next".to_vec();
    let mut out = Vec::new();
    batch.push(A, Frame::Owned(owned), &chunk, &mut out);
    batch.push(A, Frame::Borrowed(&chunk), &chunk, &mut out);
    assert!(batch.keep_chunk(chunk).is_none());
    assert_eq!(batch.frame(0), b"large, assembled");
    assert_eq!(batch.frame(0).as_ptr(), at, "not copied");
    assert_eq!(batch.frame(1), b"next");
}

#[test]
fn frames_of_two_chunks_refer_to_their_own() {
    let mut batch = Batch::new();
    let (one, two) = (b"one".to_vec(), b"two".to_vec());
    let mut out = Vec::new();
    batch.push(A, Frame::Borrowed(&one), &one, &mut out);
    assert!(batch.keep_chunk(one).is_none());
    batch.push(B, Frame::Borrowed(&two), &two, &mut out);
    assert!(batch.keep_chunk(two).is_none());
    assert_eq!((batch.frame(0), batch.frame(1)), (&b"one"[..], &b"two"[..]));
}

#[test]
fn replies_are_framed_into_the_lent_output_in_place() {
    let mut batch = prefixed();
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"queued");
    let at = out.as_ptr();
    let chunk = b"abc".to_vec();
    batch.push(A, Frame::Borrowed(&chunk[..1]), &chunk, &mut out);
    batch.push(A, Frame::Borrowed(&chunk[1..]), &chunk, &mut out);
    assert!(out.is_empty(), "lent to the batch");
    batch.keep_chunk(chunk);
    batch.reply(0, b"x");
    batch.reply(1, b"yz");
    let got = outputs(&mut batch);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, A);
    assert_eq!(got[0].1, b"queued\x01x\x02yz");
    assert_eq!(
        got[0].1.as_ptr(),
        at,
        "the connection's own buffer, no copy"
    );
}

#[test]
fn replies_given_out_of_order_go_out_in_frame_order() {
    let mut batch = prefixed();
    let mut out = Vec::new();
    for _ in 0..4 {
        batch.push(A, Frame::Borrowed(b"f"), b"", &mut out);
    }
    batch.reply(3, b"d");
    batch.reply(1, b"bb");
    batch.reply(0, b"a");
    batch.reply(1, b"B"); // replaces the first reply to frame 1
    batch.reply(2, b"c");
    let got = outputs(&mut batch);
    assert_eq!(got[0].1, b"\x01a\x01B\x01c\x01d");
}

#[test]
fn fail_takes_back_a_reply_and_a_later_reply_undoes_it() {
    let mut batch = prefixed();
    let mut out = Vec::new();
    for _ in 0..3 {
        batch.push(A, Frame::Borrowed(b"f"), b"", &mut out);
    }
    batch.reply(0, b"a");
    batch.reply(1, b"b");
    batch.reply(2, b"c");
    batch.fail(1);
    assert_eq!(batch.outcomes[1], Reply::Fail);
    assert_eq!(batch.outcomes[2], Reply::Data(2, 4));
    batch.fail(2);
    batch.reply(1, b"B");
    assert_eq!(batch.outcomes[1], Reply::Data(2, 4));
    assert_eq!(outputs(&mut batch)[0].1, b"\x01a\x01B");
}

#[test]
fn an_unframable_reply_is_recorded_and_adds_nothing() {
    let mut batch = Batch::with_framing(Framing::lines(b"\n").unwrap());
    let mut out = Vec::new();
    batch.push(A, Frame::Borrowed(b"f"), b"", &mut out);
    batch.push(A, Frame::Borrowed(b"g"), b"", &mut out);
    batch.reply(1, b"ok");
    batch.reply(0, b"bad\nline");
    assert!(matches!(batch.outcomes[0], Reply::Unframable(_)));
    assert_eq!(outputs(&mut batch)[0].1, b"ok\n");
}

#[test]
fn a_connection_seen_again_gets_a_second_output_in_order() {
    let mut batch = Batch::new();
    let (mut a, mut b) = (b"A:".to_vec(), Vec::new());
    batch.push(A, Frame::Borrowed(b"1"), b"", &mut a);
    batch.push(B, Frame::Borrowed(b"2"), b"", &mut b);
    batch.push(A, Frame::Borrowed(b"3"), b"", &mut a);
    for i in 0..3 {
        let reply = batch.frame(i).to_vec();
        batch.reply(i, &reply);
    }
    let got = outputs(&mut batch);
    let owners: Vec<_> = got.iter().map(|(owner, _)| *owner).collect();
    assert_eq!(owners, [A, B, A]);
    assert_eq!(got[0].1, b"A:1");
    assert_eq!(got[2].1, b"3");
}

#[test]
fn provided_buffers_fill_only_outputs_without_memory() {
    let mut batch = Batch::new();
    let mut with = Vec::with_capacity(8);
    let mut without = Vec::new();
    batch.push(A, Frame::Borrowed(b"1"), b"", &mut with);
    batch.push(B, Frame::Borrowed(b"2"), b"", &mut without);
    let spare = Vec::with_capacity(32);
    let at = spare.as_ptr();
    let mut pool = vec![spare];
    batch.provide_buffers(|| pool.pop());
    batch.reply(1, b"x");
    let got = outputs(&mut batch);
    assert_eq!(got[1].1.as_ptr(), at);
    assert!(pool.is_empty());
}
