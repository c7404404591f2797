//! Splitting a byte stream into event lines, with a hard bound on line length.
//!
//! The framer is sans-I/O: `fold` feeds it from files and `serve` from sockets, so both read lines by the
//! same rules. Unlike `tokio_util::codec::LinesCodec`, an over-long line is not an error that ends the
//! stream: it is reported as one [`Frame::TooLong`] item, its bytes are discarded as they arrive (never
//! buffered whole), and reading resumes after its newline.

use bytes::{Buf, BytesMut};

/// The longest line accepted, in bytes, not counting the line end (events.md: 1 MiB).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One item cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` or `\r\n`, numbered from 1.
    Line {
        /// 1-based line number in this stream.
        number: u64,
        /// The line's bytes (not yet checked for UTF-8).
        bytes: BytesMut,
    },
    /// A line longer than the bound; its content was dropped.
    TooLong {
        /// 1-based line number in this stream.
        number: u64,
    },
}

/// Cuts lines out of a growing buffer.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Lines completed so far.
    line_number: u64,
    /// How far into the buffer we already searched for `\n`, so a long partial line is scanned once.
    scanned: usize,
    /// True while we drop the rest of an over-long line up to its newline.
    discarding: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineFramer {
    /// A framer that rejects lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            line_number: 0,
            scanned: 0,
            discarding: false,
        }
    }

    /// Counts `lines` lines as read already (the ingest auth line, read before framing starts).
    pub fn skip_lines(&mut self, lines: u64) {
        self.line_number += lines;
    }

    /// The number of the last line returned (or being discarded).
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// Takes the next frame out of `buf`, or returns `None` when `buf` holds no complete line yet.
    ///
    /// While an over-long line is being discarded, the bytes of `buf` are consumed as they come, so the
    /// buffer never grows past `max_line` plus one read.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if self.discarding {
                match memchr::memchr(b'\n', buf) {
                    Some(pos) => {
                        buf.advance(pos + 1);
                        self.discarding = false;
                        self.scanned = 0;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            let search_from = self.scanned.min(buf.len());
            match memchr::memchr(b'\n', &buf[search_from..]) {
                Some(offset) => {
                    let newline = search_from + offset;
                    self.scanned = 0;
                    self.line_number += 1;
                    let mut line = buf.split_to(newline + 1);
                    line.truncate(newline);
                    if line.last() == Some(&b'\r') {
                        line.truncate(newline - 1);
                    }
                    if line.len() > self.max_line {
                        return Some(Frame::TooLong {
                            number: self.line_number,
                        });
                    }
                    return Some(Frame::Line {
                        number: self.line_number,
                        bytes: line,
                    });
                }
                None if buf.len() > self.max_line + 1 => {
                    // `+ 1` leaves room for the `\r` of a maximal line ending in `\r\n`.
                    self.line_number += 1;
                    self.discarding = true;
                    buf.clear();
                    self.scanned = 0;
                    return Some(Frame::TooLong {
                        number: self.line_number,
                    });
                }
                None => {
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }

    /// Takes the last frame at the end of the stream: a final line without a newline, if any.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if let Some(frame) = self.decode(buf) {
            return Some(frame);
        }
        if self.discarding || buf.is_empty() {
            buf.clear();
            self.discarding = false;
            return None;
        }
        buf.extend_from_slice(b"\n");
        self.decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = framer.decode(&mut buf) {
                out.push(frame);
            }
        }
        while let Some(frame) = framer.decode_eof(&mut buf) {
            out.push(frame);
        }
        out
    }

    fn line(number: u64, text: &str) -> Frame {
        Frame::Line {
            number,
            bytes: BytesMut::from(text.as_bytes()),
        }
    }

    #[test]
    fn splits_lines_across_chunks_and_line_ends() {
        let mut framer = LineFramer::new(100);
        let got = frames(&mut framer, &[b"ab", b"c\r\nde", b"f\n", b"\n", b"last"]);
        assert_eq!(
            got,
            vec![line(1, "abc"), line(2, "def"), line(3, ""), line(4, "last")]
        );
    }

    #[test]
    fn over_long_line_is_one_item_and_reading_resumes() {
        let mut framer = LineFramer::new(4);
        let got = frames(&mut framer, &[b"ok\n12345", b"6789", b"0\nnext\n"]);
        assert_eq!(
            got,
            vec![line(1, "ok"), Frame::TooLong { number: 2 }, line(3, "next")]
        );
    }

    #[test]
    fn over_long_line_is_not_buffered_whole() {
        let mut framer = LineFramer::new(8);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'x'; 20]);
        assert_eq!(framer.decode(&mut buf), Some(Frame::TooLong { number: 1 }));
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 20]);
            assert_eq!(framer.decode(&mut buf), None);
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"x\nok\n");
        assert_eq!(framer.decode(&mut buf), Some(line(2, "ok")));
    }

    #[test]
    fn line_of_exactly_the_bound_is_accepted_even_with_crlf() {
        let mut framer = LineFramer::new(4);
        let got = frames(&mut framer, &[b"1234\r", b"\n12345\n"]);
        assert_eq!(got, vec![line(1, "1234"), Frame::TooLong { number: 2 }]);
    }

    #[test]
    fn over_long_last_line_without_newline() {
        let mut framer = LineFramer::new(4);
        let got = frames(&mut framer, &[b"a\n123456"]);
        assert_eq!(got, vec![line(1, "a"), Frame::TooLong { number: 2 }]);
    }
}
