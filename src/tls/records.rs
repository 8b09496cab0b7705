//! Where a stream of TLS records stands: between two records, or inside one.
//! rustls 0.22 does not say whether a stream ended cleanly or in the middle
//! of a record (a truncation); this reads only the 5-byte record headers to
//! know.

/// Bytes of a record header: content type, version (2), length (2).
const HEADER: usize = 5;

/// The position of a stream of records.
#[derive(Debug, Default)]
pub(crate) struct RecordBoundary {
    /// The header being read, `header_len` bytes of it so far.
    header: [u8; HEADER],
    header_len: usize,
    /// Body bytes of the current record still to come.
    body_left: usize,
}

impl RecordBoundary {
    /// Follow the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == HEADER {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_len = 0;
            }
        }
    }

    /// Whether the stream stands between two records.
    pub(crate) fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }
}
