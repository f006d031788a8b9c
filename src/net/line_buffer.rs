//! Bounded, sans-I/O framing of client bytes into command lines.
//!
//! The buffer never holds more than the unread complete lines of one
//! `push` plus at most `max_line` bytes of an unfinished line: as soon as an
//! unfinished line cannot fit any more it is dropped, reported once as
//! [`LineEvent::TooLong`] (in order, after the lines before it), and the rest
//! of it is skipped as it arrives, up to its line end.

/// What the next piece of client input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// One command line, without its CRLF (or bare LF).
    Line(&'a [u8]),
    /// A line longer than `max_line` (line end included) was skipped.
    TooLong,
}

/// Splits client input into lines of at most `max_line` octets.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` before this index were already returned.
    start: usize,
    max_line: usize,
    /// Positions in `buf` where an overlong line was cut out; its `TooLong`
    /// event is due when reading reaches that position. Normally at most one
    /// (the driver drains after each push); more only if it does not, and
    /// then each stands for at least `max_line` bytes of input received.
    cut_at: Vec<usize>,
    /// Input is being skipped up to and including the next LF.
    discarding: bool,
}

impl LineBuffer {
    /// `max_line` counts the line end too (RFC 2449: 255 with CRLF).
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            max_line: max_line.max(1),
            cut_at: Vec::new(),
            discarding: false,
        }
    }

    /// Changes the limit for lines not yet complete (SASL lines are longer).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(1);
    }

    /// Appends bytes read from the client.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.discarding {
            match memchr::memchr(b'\n', data) {
                None => return,
                Some(lf) => {
                    self.discarding = false;
                    data = data.get(lf + 1..).unwrap_or_default();
                }
            }
        }
        if data.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            for cut in &mut self.cut_at {
                *cut -= self.start;
            }
            self.start = 0;
        }
        let old_len = self.buf.len();
        self.buf.extend_from_slice(data);
        // The unfinished tail: at max_line bytes without LF it cannot be a
        // valid line any more, whatever arrives next.
        let after_lf = memchr::memrchr(b'\n', data).map(|lf| old_len + lf + 1);
        let tail_start = match (after_lf, self.cut_at.last()) {
            (Some(lf), _) => lf,
            (None, Some(&cut)) => cut.max(self.tail_start_before(old_len)),
            (None, None) => self.tail_start_before(old_len),
        };
        if self.buf.len() - tail_start >= self.max_line {
            self.buf.truncate(tail_start);
            self.cut_at.push(tail_start);
            self.discarding = true;
        }
    }

    /// Where the unfinished line that ends at `end` starts.
    fn tail_start_before(&self, end: usize) -> usize {
        let head = self.buf.get(..end).unwrap_or_default();
        memchr::memrchr(b'\n', head).map_or(0, |lf| lf + 1)
    }

    /// The next complete line, or `TooLong` once per overlong line.
    pub fn next_line(&mut self) -> Option<LineEvent<'_>> {
        let limit = self.cut_at.first().copied().unwrap_or(self.buf.len());
        if limit == self.start && !self.cut_at.is_empty() {
            self.cut_at.remove(0);
            return Some(LineEvent::TooLong);
        }
        let pending = self.buf.get(self.start..limit).unwrap_or_default();
        let lf = memchr::memchr(b'\n', pending)?;
        let line_start = self.start;
        self.start += lf + 1;
        if lf + 1 > self.max_line {
            return Some(LineEvent::TooLong);
        }
        let mut end = line_start + lf;
        if end > line_start && self.buf.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        Some(LineEvent::Line(
            self.buf.get(line_start..end).unwrap_or_default(),
        ))
    }

    /// `true` when [`next_line`](Self::next_line) would return an event
    /// now; the driver flushes its replies when this turns `false`.
    pub fn has_complete_line(&self) -> bool {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        !self.cut_at.is_empty() || memchr::memchr(b'\n', pending).is_some()
    }

    /// Drops everything buffered: after STLS, plaintext sent behind the
    /// command must never be executed (RFC 7817 §4).
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.cut_at.clear();
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and collects every event.
    fn events(max: usize, input: &[u8], chunk: usize) -> Vec<Option<Vec<u8>>> {
        let mut lb = LineBuffer::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            lb.push(piece);
            assert!(
                lb.buf.len() <= max + chunk,
                "buffer grew to {}",
                lb.buf.len()
            );
            while let Some(ev) = lb.next_line() {
                out.push(match ev {
                    LineEvent::Line(l) => Some(l.to_vec()),
                    LineEvent::TooLong => None,
                });
            }
            assert!(!lb.has_complete_line());
        }
        out
    }

    fn line(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn crlf_and_bare_lf_lines_in_every_chunking() {
        let input = b"USER a\r\nPASS b c\nSTAT\r\n\r\nLIST\r";
        for chunk in 1..=input.len() {
            assert_eq!(
                events(255, input, chunk),
                vec![line("USER a"), line("PASS b c"), line("STAT"), line("")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn only_the_cr_right_before_lf_is_stripped() {
        assert_eq!(events(255, b"A\rB\r\r\n", 64), vec![line("A\rB\r")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted_one_more_is_too_long() {
        let ok = format!("{}\r\n", "x".repeat(8));
        let long = format!("{}\r\n", "y".repeat(9));
        let input = format!("{ok}{long}NOOP\r\n");
        for chunk in 1..=input.len() {
            assert_eq!(
                events(10, input.as_bytes(), chunk),
                vec![line("xxxxxxxx"), None, line("NOOP")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn huge_line_is_reported_once_and_not_buffered() {
        let mut lb = LineBuffer::new(255);
        lb.push(b"NOOP\r\n");
        for _ in 0..1000 {
            lb.push(&[b'a'; 4096]);
            assert!(lb.buf.len() <= 255 + 4096);
        }
        assert!(lb.has_complete_line());
        assert_eq!(lb.next_line(), Some(LineEvent::Line(b"NOOP")));
        assert_eq!(lb.next_line(), Some(LineEvent::TooLong));
        assert_eq!(lb.next_line(), None);
        lb.push(b"aaa\r\nSTAT\r\n");
        assert_eq!(lb.next_line(), Some(LineEvent::Line(b"STAT")));
        assert_eq!(lb.next_line(), None);
    }

    #[test]
    fn undrained_pushes_keep_events_in_order() {
        let mut lb = LineBuffer::new(10);
        lb.push(b"A\r\n0123456789");
        lb.push(b"xx\r\nB\r\nabcdefghijk");
        lb.push(b"\nqwertyuiopasdf");
        lb.push(b"\nC\n");
        let mut got = Vec::new();
        while let Some(ev) = lb.next_line() {
            got.push(format!("{ev:?}"));
        }
        let want = [
            LineEvent::Line(b"A"),
            LineEvent::TooLong,
            LineEvent::Line(b"B"),
            LineEvent::TooLong,
            LineEvent::TooLong,
            LineEvent::Line(b"C"),
        ];
        assert_eq!(
            got,
            want.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn discard_buffered_drops_pipelined_plaintext() {
        let mut lb = LineBuffer::new(255);
        lb.push(b"STLS\r\nUSER evil\r\n");
        assert_eq!(lb.next_line(), Some(LineEvent::Line(b"STLS")));
        lb.discard_buffered();
        assert!(!lb.has_complete_line());
        assert_eq!(lb.next_line(), None);
        lb.push(b"CAPA\r\n");
        assert_eq!(lb.next_line(), Some(LineEvent::Line(b"CAPA")));
    }

    #[test]
    fn set_max_line_allows_longer_lines() {
        let mut lb = LineBuffer::new(10);
        lb.set_max_line(100);
        let long = format!("{}\r\n", "z".repeat(50));
        lb.push(long.as_bytes());
        assert_eq!(
            lb.next_line(),
            Some(LineEvent::Line("z".repeat(50).as_bytes()))
        );
    }
}
