//! The TLS core without sockets: loading files (each bad file named), and a
//! session driven in memory against a rustls client.

mod loading;
mod session;

use super::records::RecordBoundary;

#[test]
fn record_boundaries_are_followed_across_any_split() {
    // Two records: 3 and 0 body bytes.
    let stream = [22u8, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3, 0, 0];
    for split in 0..=stream.len() {
        let mut records = RecordBoundary::default();
        records.feed(&stream[..split]);
        let between = matches!(split, 0 | 8 | 13);
        assert_eq!(records.at_boundary(), between, "split at {}", split);
        records.feed(&stream[split..]);
        assert!(records.at_boundary());
    }
    let mut records = RecordBoundary::default();
    for byte in &stream[..10] {
        records.feed(std::slice::from_ref(byte));
    }
    assert!(!records.at_boundary());
}
