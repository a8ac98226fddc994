//! Reading a message sent in BDAT chunks (RFC 3030 CHUNKING).
//!
//! A chunk is exactly as many octets as its `BDAT size` said, with no dot-stuffing and no end
//! marker, so there is nothing to smuggle: the reader counts. An oversized message is still
//! read to the end of every chunk (the octets are on the wire and must be consumed to find the
//! next command), but not kept.
//!
//! ```
//! use postrider::server::bdat::ChunkReader;
//! let mut message = ChunkReader::new(100, b"Received: x\r\n");
//! message.start_chunk(5);
//! assert_eq!(message.feed(b"hello, and the next command"), 5);
//! assert!(message.chunk_done());
//! let (body, too_big) = message.finish();
//! assert_eq!(&body[..], b"Received: x\r\nhello");
//! assert!(!too_big);
//! ```

use bytes::{Bytes, BytesMut};

/// The chunks of one message, joined.
#[derive(Debug)]
pub struct ChunkReader {
    out: BytesMut,
    /// Octets of the message so far (the prefix is not counted).
    size: u64,
    limit: u64,
    /// Octets of the current chunk still to come.
    remaining: u64,
}

impl ChunkReader {
    /// A reader for a message of at most `limit` octets, after `prefix`.
    pub fn new(limit: usize, prefix: &[u8]) -> ChunkReader {
        let mut out = BytesMut::with_capacity(prefix.len() + 8 * 1024);
        out.extend_from_slice(prefix);
        ChunkReader {
            out,
            size: 0,
            limit: limit as u64,
            remaining: 0,
        }
    }

    /// Begins a chunk of `size` octets (the previous one must be done).
    pub fn start_chunk(&mut self, size: u64) {
        debug_assert!(self.chunk_done(), "a chunk started inside another");
        self.remaining = size;
    }

    /// True when the current chunk has been read whole.
    pub fn chunk_done(&self) -> bool {
        self.remaining == 0
    }

    /// True once the message is over the limit (the rest is read and dropped).
    pub fn too_big(&self) -> bool {
        self.size > self.limit
    }

    /// Takes what belongs to the current chunk from `input`; returns how many octets it used.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let take = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        self.remaining -= take as u64;
        self.size = self.size.saturating_add(take as u64);
        if self.size <= self.limit {
            self.out.extend_from_slice(&input[..take]);
        }
        take
    }

    /// The message (with the prefix) and whether it was over the limit.
    pub fn finish(self) -> (Bytes, bool) {
        let too_big = self.too_big();
        (self.out.freeze(), too_big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_byte_for_byte_without_unstuffing() {
        let mut r = ChunkReader::new(1000, b"");
        r.start_chunk(6);
        assert_eq!(r.feed(b"a\r\n.\r"), 6 - 1);
        assert_eq!(r.feed(b"\nBDAT"), 1);
        r.start_chunk(3);
        assert_eq!(r.feed(b"..x"), 3);
        let (body, too_big) = r.finish();
        assert_eq!(&body[..], b"a\r\n.\r\n..x");
        assert!(!too_big);
    }

    #[test]
    fn an_oversized_message_is_consumed_but_not_kept() {
        let mut r = ChunkReader::new(4, b"P");
        r.start_chunk(10);
        assert_eq!(r.feed(&[b'x'; 10]), 10);
        assert!(r.chunk_done());
        assert!(r.too_big());
        let (body, too_big) = r.finish();
        assert!(too_big);
        assert!(body.len() <= 1 + 4);
    }

    #[test]
    fn an_empty_last_chunk_is_allowed() {
        let mut r = ChunkReader::new(4, b"");
        r.start_chunk(0);
        assert!(r.chunk_done());
        assert_eq!(r.feed(b"QUIT\r\n"), 0);
    }
}
