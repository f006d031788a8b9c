//! RETR/TOP transfer encoder: stored message bytes → POP3 multi-line body (CRLF, dot-stuffed).
//!
//! Pure and streaming: fed the message in chunks of any size, it carries
//! one byte of line state across chunks (at a line start? the last byte a
//! CR?), so the output does not depend on where the chunks are split.
//!
//! * A bare LF becomes CRLF; a stored CRLF stays CRLF (never CRCRLF); a CR
//!   not followed by LF is passed through as data (it ends no line).
//! * A line starting with `.` gets one more `.` (RFC 1939 §3).
//! * [`Encoder::finish`] adds the line end a message without a final
//!   newline lacks, so the body always ends in CRLF (nothing is added to an
//!   empty message).
//! * TOP: the header, the blank line (`"\n"` or `"\r\n"`) and `n` body
//!   lines; after that, input is ignored and [`Encoder::is_done`] is true.
//!
//! The octets produced minus [`Encoder::stuffed_dots`] equal the size the
//! scanner computes for the message.

use memchr::memchr;

/// Bytes of a RETR chunk looked at to choose between copying whole lines
/// and the byte loop.
const DENSITY_SAMPLE: usize = 1024;

/// How far into a TOP transfer we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    /// RETR: everything.
    All,
    /// TOP, still in the header; then this many body lines.
    Header(u64),
    /// TOP, in the body, this many lines still to send (≥ 1).
    Body(u64),
    /// TOP, all requested lines sent.
    Done,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Encoder {
    top: Top,
    at_line_start: bool,
    /// The previous input byte was a CR.
    after_cr: bool,
    /// Bytes of the current line so far (saturating; TOP's blank line is
    /// `""` or `"\r"` before its LF).
    line_len: u64,
    stuffed: u64,
}

impl Encoder {
    /// Whole message (RETR).
    pub fn retr() -> Encoder {
        Encoder::with(Top::All)
    }

    /// Header, blank line and `body_lines` lines of the body (TOP).
    pub fn top(body_lines: u64) -> Encoder {
        Encoder::with(Top::Header(body_lines))
    }

    /// RETR for `None`, TOP for `Some(n)`.
    pub fn new(body_lines: Option<u64>) -> Encoder {
        body_lines.map_or_else(Encoder::retr, Encoder::top)
    }

    fn with(top: Top) -> Encoder {
        Encoder {
            top,
            at_line_start: true,
            after_cr: false,
            line_len: 0,
            stuffed: 0,
        }
    }

    /// All the output TOP asked for has been produced; further input is
    /// ignored, so the caller may stop reading.
    pub fn is_done(&self) -> bool {
        self.top == Top::Done
    }

    /// Dots added by dot-stuffing so far.
    pub fn stuffed_dots(&self) -> u64 {
        self.stuffed
    }

    /// The largest output [`Encoder::encode`] can append for `input_len`
    /// bytes: every byte may double (LF → CRLF, `.` → `..`).
    pub fn max_output(input_len: usize) -> usize {
        input_len.saturating_mul(2)
    }

    /// Encodes the next chunk of the message, appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.top == Top::All {
            self.encode_all_lines(input, out);
            return;
        }
        let mut rest = input;
        while !rest.is_empty() && self.top != Top::Done {
            let (line, complete) = match memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[(line.len() + usize::from(complete)).min(rest.len())..];
            self.piece(line, complete, out);
        }
    }

    /// RETR: the output differs from the input only by a CR before a bare
    /// LF and a `.` after an LF followed by `.`, so runs of input between
    /// such spots are copied whole (one copy per LF-ended line, fewer for
    /// stored CRLF text), after one reservation for the chunk.
    fn encode_all_lines(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        // Lines of a few bytes (the worst case is every line "."): a byte
        // loop beats a memchr call and two copies per line.
        let sample = input.get(..DENSITY_SAMPLE).unwrap_or(input);
        if memchr::memchr_iter(b'\n', sample).count() > sample.len() / 8 {
            self.encode_bytes(input, out);
            return;
        }
        out.reserve(Encoder::max_output(input.len()));
        if self.at_line_start && input.first() == Some(&b'.') {
            out.push(b'.');
            self.stuffed += 1;
        }
        let mut copied = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            let cr = match lf.checked_sub(1) {
                Some(before) => input.get(before) == Some(&b'\r'),
                // The CR, if any, ended the previous chunk.
                None => self.after_cr,
            };
            if !cr {
                out.extend_from_slice(input.get(copied..lf).unwrap_or_default());
                out.push(b'\r');
                copied = lf;
            }
            if input.get(lf + 1) == Some(&b'.') {
                out.extend_from_slice(input.get(copied..=lf).unwrap_or_default());
                out.push(b'.');
                self.stuffed += 1;
                copied = lf + 1;
            }
        }
        out.extend_from_slice(input.get(copied..).unwrap_or_default());
        self.at_line_start = last == b'\n';
        self.after_cr = last == b'\r';
        // `line_len` only matters to TOP, which never comes here.
    }

    /// RETR, one byte at a time into a slice of `out` sized for the worst
    /// case, without branches on the data.
    fn encode_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Encoder::max_output(input.len()), 0);
        let dst = out.get_mut(start..).unwrap_or_default();
        let mut at_line_start = self.at_line_start;
        let mut after_cr = self.after_cr;
        let mut n = 0;
        for &b in input {
            let lf = b == b'\n';
            let dot = at_line_start & (b == b'.');
            // A CR or a `.` goes before the byte.
            let extra = (lf & !after_cr) | dot;
            if let Some(d) = dst.get_mut(n) {
                *d = match (extra, lf) {
                    (false, _) => b,
                    (true, true) => b'\r',
                    (true, false) => b'.',
                };
            }
            let e = usize::from(extra);
            if let Some(d) = dst.get_mut(n + e) {
                *d = b;
            }
            n += 1 + e;
            self.stuffed += u64::from(dot);
            at_line_start = lf;
            after_cr = b == b'\r';
        }
        out.truncate(start + n);
        self.at_line_start = at_line_start;
        self.after_cr = after_cr;
    }

    /// `line` is a piece of one line without its LF; `complete` says the LF
    /// followed it.
    fn piece(&mut self, line: &[u8], complete: bool, out: &mut Vec<u8>) {
        if let Some(&first) = line.first() {
            if self.at_line_start && first == b'.' {
                out.push(b'.');
                self.stuffed += 1;
            }
            out.extend_from_slice(line);
            self.line_len = self.line_len.saturating_add(line.len() as u64);
            self.at_line_start = false;
            self.after_cr = line.last() == Some(&b'\r');
        }
        if !complete {
            return;
        }
        if self.after_cr {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
        let blank = self.line_len == 0 || (self.line_len == 1 && self.after_cr);
        self.at_line_start = true;
        self.after_cr = false;
        self.line_len = 0;
        self.top = match self.top {
            Top::Header(0) if blank => Top::Done,
            Top::Header(n) if blank => Top::Body(n),
            Top::Body(1) => Top::Done,
            Top::Body(n) => Top::Body(n - 1),
            other => other,
        };
    }

    /// Ends the message: adds the missing final line end, if any.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start && self.top != Top::Done {
            self.piece(&[], true, out);
        }
    }
}

/// Encodes a whole message held in memory (tests, small inputs).
pub fn encode_all(message: &[u8], body_lines: Option<u64>) -> Vec<u8> {
    let mut enc = Encoder::new(body_lines);
    let mut out = Vec::with_capacity(Encoder::max_output(message.len()) + 2);
    enc.encode(message, &mut out);
    enc.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `input` in chunks of `chunk` bytes.
    fn chunked(input: &[u8], chunk: usize, body_lines: Option<u64>) -> (Vec<u8>, u64) {
        let mut enc = Encoder::new(body_lines);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            let before = out.len();
            enc.encode(c, &mut out);
            assert!(out.len() - before <= Encoder::max_output(c.len()));
        }
        enc.finish(&mut out);
        (out, enc.stuffed_dots())
    }

    /// Every chunk size gives the same bytes as encoding in one piece.
    fn check(input: &[u8], body_lines: Option<u64>, expected: &[u8]) {
        assert_eq!(
            encode_all(input, body_lines),
            expected,
            "whole input {:?}",
            String::from_utf8_lossy(input)
        );
        for chunk in 1..=input.len().max(1) {
            let (out, _) = chunked(input, chunk, body_lines);
            assert_eq!(out, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn lf_becomes_crlf_and_crlf_stays() {
        check(b"a\nb\r\nc\n", None, b"a\r\nb\r\nc\r\n");
        check(b"\n\n", None, b"\r\n\r\n");
        check(b"\r\n\r\n", None, b"\r\n\r\n");
    }

    #[test]
    fn lone_cr_is_data() {
        check(b"a\rb\n", None, b"a\rb\r\n");
        check(b"a\r\rb\r\r\n", None, b"a\r\rb\r\r\n");
        // CR-only line ends: one line; the missing final line end is added
        // as LF after the last CR.
        check(b"one\rtwo\r", None, b"one\rtwo\r\n");
    }

    #[test]
    fn dot_stuffing_at_line_starts_only() {
        check(
            b".\n..x\na.b\n.\r\n\r.\n",
            None,
            b"..\r\n...x\r\na.b\r\n..\r\n\r.\r\n",
        );
        check(b".", None, b"..\r\n");
    }

    #[test]
    fn final_line_end_added_once() {
        check(b"abc", None, b"abc\r\n");
        check(b"abc\n", None, b"abc\r\n");
        check(b"", None, b"");
        check(b"x\r", None, b"x\r\n");
    }

    #[test]
    fn top_stops_after_header_blank_and_n_lines() {
        let msg = b"H: 1\nH: 2\n\nb1\n.b2\nb3\n";
        check(msg, Some(0), b"H: 1\r\nH: 2\r\n\r\n");
        check(msg, Some(1), b"H: 1\r\nH: 2\r\n\r\nb1\r\n");
        check(msg, Some(2), b"H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\n");
        check(msg, Some(3), b"H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\nb3\r\n");
        check(msg, Some(99), b"H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\nb3\r\n");
    }

    #[test]
    fn top_with_crlf_blank_line_and_no_body() {
        check(b"H: 1\r\n\r\nbody\r\n", Some(0), b"H: 1\r\n\r\n");
        check(b"H: 1\r\n\r\nbody", Some(5), b"H: 1\r\n\r\nbody\r\n");
        // No blank line at all: the whole message is header.
        check(b"H: 1\nH: 2", Some(0), b"H: 1\r\nH: 2\r\n");
        // A line of a lone CR then data is not blank.
        check(b"H\n\rx\nb\n", Some(0), b"H\r\n\rx\r\nb\r\n");
    }

    #[test]
    fn stops_consuming_when_top_is_done() {
        let mut enc = Encoder::top(0);
        let mut out = Vec::new();
        enc.encode(b"H\n\nbody\n", &mut out);
        assert!(enc.is_done());
        enc.encode(b"more\n", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"H\r\n\r\n");
    }

    #[test]
    fn pseudo_random_inputs_keep_size_invariant() {
        // Output length minus stuffed dots = content + bare LFs + added end.
        let alphabet = b"\n\r.aF";
        let mut x: u32 = 12345;
        for _ in 0..300 {
            let len = (x % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    alphabet[(x >> 16) as usize % alphabet.len()]
                })
                .collect();
            let (out, dots) = chunked(&input, 3, None);
            let bare_lf = input
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b == b'\n' && (i == 0 || input[i - 1] != b'\r'))
                .count();
            let added = match input.last() {
                None | Some(b'\n') => 0,
                Some(b'\r') => 1,
                Some(_) => 2,
            };
            assert_eq!(
                out.len() as u64 - dots,
                (input.len() + bare_lf + added) as u64
            );
            assert!(out.is_empty() || out.ends_with(b"\r\n"));
            x = x.wrapping_add(7);
        }
    }

    /// RFC 1939 §3 line by line over the whole message: slow and obviously
    /// right.
    fn reference_encode(message: &[u8], body_lines: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut in_body = false;
        let mut left = body_lines.unwrap_or(u64::MAX);
        let mut lines: Vec<&[u8]> = message.split(|&b| b == b'\n').collect();
        if message.ends_with(b"\n") || message.is_empty() {
            lines.pop();
        }
        for line in lines {
            if in_body {
                if left == 0 {
                    break;
                }
                left -= 1;
            }
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            if line.ends_with(b"\r") {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
            if body_lines.is_some() && (line.is_empty() || line == b"\r") {
                in_body = true;
            }
        }
        out
    }

    /// What random messages are spliced from. Long runs without LF make
    /// chunks sparse enough for the line-copying path; the rest sends most
    /// chunks to the byte loop.
    const PIECES: [&[u8]; 10] = [
        b"\n",
        b"\r",
        b"\r\n",
        b".",
        b"..",
        b"x",
        b"text ",
        b"\n.\n",
        b"\n\n",
        b"a longer run of text, with no line end in it at all",
    ];

    proptest::proptest! {
        #![proptest_config(crate::test_support::proptest_cases(3000))]

        /// Messages spliced from [`PIECES`], encoded in chunks of 1 to 80
        /// bytes, come out as the reference encoder says, with the count of
        /// stuffed dots.
        #[test]
        fn random_messages_match_the_reference_encoder_in_random_chunks(
            picks in proptest::collection::vec(0..PIECES.len(), 0..60),
            body_lines in proptest::prop_oneof![
                proptest::strategy::Just(None),
                proptest::strategy::Just(Some(0)),
                proptest::strategy::Just(Some(1)),
                proptest::strategy::Just(Some(3)),
            ],
            sizes in proptest::collection::vec(1usize..=80, 1..64),
        ) {
            let input: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
            let expected = reference_encode(&input, body_lines);
            let mut enc = Encoder::new(body_lines);
            let mut out = Vec::new();
            for chunk in crate::test_support::chunks(&input, &sizes) {
                enc.encode(chunk, &mut out);
            }
            enc.finish(&mut out);
            proptest::prop_assert_eq!(&out, &expected);
            let dots = expected.windows(3).filter(|w| w == b"\n..").count()
                + usize::from(expected.starts_with(b".."));
            proptest::prop_assert_eq!(enc.stuffed_dots(), dots as u64);
        }
    }
}
