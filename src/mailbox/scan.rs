//! Incremental mbox scanner: message boundaries, POP3 sizes and UID digests from raw blocks.
//!
//! Pure: it is fed the spool in blocks of any size (the maildrop reads
//! `limits::SCAN_BLOCK` at a time) and keeps a few bytes of state across
//! blocks, so the result does not depend on where the blocks are split.
//! Lines are found with memchr; nothing is allocated per line.
//!
//! Framing rules (mboxo/mboxrd as the MDAs write it, and as popa3d reads it):
//!
//! * A message starts at a line beginning `From ` at offset 0 or right
//!   after a blank line (exactly `"\n"`; popa3d does not count `"\r\n"`, and
//!   neither do we, so message boundaries and UIDs agree with popa3d).
//! * The blank line before the next `From ` line (or a blank last line of
//!   the file) is the mbox separator, not part of the message.
//! * `Content-Length:` is ignored; `>From ` lines are content, served as
//!   stored.
//! * Text before the first `From ` line: popa3d refuses to open such a
//!   mailbox. We serve it as message 1 (without a `From ` line), so nothing
//!   in the spool is hidden from its owner and it can be deleted; if it is
//!   only blank lines it is no message and is simply kept.
//! * The POP3 size counts every bare LF as CRLF (a stored CRLF stays two
//!   octets), plus the line end the transfer encoder adds when the message
//!   does not end in one: exactly the octets `transfer::Encoder` produces
//!   before dot-stuffing.

use memchr::memchr;

use super::uidl::{UidHasher, CLASSIFY_BYTES};

/// Bytes kept from a line's start when the line is split across blocks:
/// enough for `From ` and every header name `UidHasher` looks at.
const HEAD: usize = 16;
const _: () = assert!(HEAD >= CLASSIFY_BYTES);

/// One message as found by the scan. Offsets are absolute in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedMessage {
    /// Start of the raw range: the `From ` line, or `content_offset` for
    /// text before the first `From ` line.
    pub from_offset: u64,
    /// The message itself starts here (after the `From ` line).
    pub content_offset: u64,
    /// Stored bytes of the message, without the separating blank line.
    pub content_len: u64,
    /// End of the raw range: the next message's `from_offset`, or the
    /// scanned length. Deleting the message removes `from_offset..end`.
    pub end: u64,
    /// Octets as sent by RETR (CRLF line ends, before dot-stuffing).
    pub size: u64,
    /// Input of the UIDL (see `uidl`).
    pub digest: [u8; 16],
}

impl ScannedMessage {
    /// The message has a `From ` line (false only for leading text).
    pub fn has_from_line(&self) -> bool {
        self.from_offset != self.content_offset
    }
}

/// The result of scanning a whole spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub messages: Vec<ScannedMessage>,
    /// Bytes scanned (L): later growth is new mail for the next session.
    pub scanned_len: u64,
}

/// What the current line is, once its first bytes are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Undecided,
    FromLine,
    Header { hashed: bool },
    Other,
}

/// The message being scanned.
struct Current {
    from_offset: u64,
    /// `None` while its `From ` line is still being read.
    content_offset: Option<u64>,
    in_header: bool,
    hasher: UidHasher,
    bare_lf: u64,
    /// Some line other than a blank one was seen (for leading text).
    nonblank: bool,
}

/// Feed blocks with [`Scanner::feed`], then [`Scanner::finish`].
pub struct Scanner {
    offset: u64,
    messages: Vec<ScannedMessage>,
    cur: Option<Current>,
    line_start: u64,
    line_len: u64,
    head: [u8; HEAD],
    head_len: usize,
    kind: Kind,
    prev_blank: bool,
    prev_byte: Option<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            offset: 0,
            messages: Vec::new(),
            cur: None,
            line_start: 0,
            line_len: 0,
            head: [0; HEAD],
            head_len: 0,
            kind: Kind::Undecided,
            // Offset 0 counts as "after a blank line".
            prev_blank: true,
            prev_byte: None,
        }
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Scans the next block of the spool.
    pub fn feed(&mut self, block: &[u8]) {
        let mut rest = block;
        while !rest.is_empty() {
            let n = self.body_lines(rest);
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
            let (len, complete) = match memchr(b'\n', rest) {
                Some(i) => (i + 1, true),
                None => (rest.len(), false),
            };
            let (seg, tail) = rest.split_at(len);
            self.segment(seg, complete);
            rest = tail;
        }
    }

    /// The hot path: whole lines of a message body, where only blank lines
    /// (a `From ` may follow) and bare LFs (for the size) matter. Returns
    /// the bytes consumed; stops after a blank line, at the last LF of the
    /// block, or at once when not at a body line start.
    fn body_lines(&mut self, block: &[u8]) -> usize {
        let Some(cur) = self.cur.as_mut() else {
            return 0;
        };
        if self.line_len != 0 || self.prev_blank || cur.in_header || cur.content_offset.is_none() {
            return 0;
        }
        let mut start = 0;
        let mut bare = 0;
        for lf in memchr::memchr_iter(b'\n', block) {
            let line_start = start;
            start = lf + 1;
            if lf == line_start {
                bare += 1;
                self.prev_blank = true;
                break;
            }
            cur.nonblank = true;
            bare += u64::from(block.get(lf - 1) != Some(&b'\r'));
        }
        if start > 0 {
            cur.bare_lf += bare;
            self.offset += start as u64;
            self.line_start = self.offset;
            self.prev_byte = Some(b'\n');
        }
        start
    }

    /// One piece of a line: all of it (`complete`, ending in LF) or its
    /// part in this block.
    fn segment(&mut self, seg: &[u8], complete: bool) {
        let mut hashed_from = 0;
        if self.kind == Kind::Undecided {
            if self.head_len == 0 && (complete || seg.len() >= HEAD) {
                // The usual case: the line start is in this block.
                self.decide(&seg[..seg.len().min(HEAD)], complete);
                hashed_from = seg.len().min(HEAD);
            } else {
                let take = (HEAD - self.head_len).min(seg.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&seg[..take]);
                self.head_len += take;
                hashed_from = take;
                if self.head_len == HEAD || complete {
                    let head = self.head;
                    self.decide(&head[..self.head_len], complete);
                }
            }
        }
        if let (Kind::Header { hashed: true }, Some(cur)) = (self.kind, self.cur.as_mut()) {
            cur.hasher.update(&seg[hashed_from..]);
        }
        let before = self.prev_byte;
        self.offset += seg.len() as u64;
        self.prev_byte = seg.last().copied().or(before);
        if !complete {
            self.line_len += seg.len() as u64;
            return;
        }
        let line_total = self.line_len + seg.len() as u64;
        if self.kind == Kind::FromLine {
            if let Some(cur) = self.cur.as_mut() {
                cur.content_offset = Some(self.offset);
            }
            self.prev_blank = false;
        } else {
            let before_lf = if seg.len() >= 2 {
                seg.get(seg.len() - 2).copied()
            } else {
                before
            };
            if let Some(cur) = self.cur.as_mut() {
                if before_lf != Some(b'\r') || line_total < 2 {
                    cur.bare_lf += 1;
                }
            }
            self.prev_blank = line_total == 1;
        }
        self.line_start = self.offset;
        self.line_len = 0;
        self.head_len = 0;
        self.kind = Kind::Undecided;
    }

    /// Classifies the current line from its first bytes (`head`, which
    /// holds the whole line when it is shorter than [`HEAD`]). `head` is
    /// hashed here when the line is a hashed header line; the caller hashes
    /// the rest.
    fn decide(&mut self, head: &[u8], complete: bool) {
        if self.prev_blank && head.starts_with(b"From ") {
            self.finish_message(self.line_start, true);
            self.cur = Some(Current {
                from_offset: self.line_start,
                content_offset: None,
                in_header: true,
                hasher: UidHasher::new(),
                bare_lf: 0,
                nonblank: true,
            });
            self.kind = Kind::FromLine;
            return;
        }
        let start = self.line_start;
        let cur = self.cur.get_or_insert_with(|| Current {
            from_offset: start,
            content_offset: Some(start),
            in_header: true,
            hasher: UidHasher::new(),
            bare_lf: 0,
            nonblank: false,
        });
        let blank = complete && head == b"\n";
        cur.nonblank |= !blank;
        self.kind = if !cur.in_header {
            Kind::Other
        } else if blank {
            cur.in_header = false;
            Kind::Other
        } else {
            let hashed = cur.hasher.header_line(head);
            if hashed {
                cur.hasher.update(head);
            }
            Kind::Header { hashed }
        };
    }

    /// Closes the current message at `end`; `strip` drops its last line,
    /// the blank separator line.
    fn finish_message(&mut self, end: u64, strip: bool) {
        let Some(cur) = self.cur.take() else {
            return;
        };
        let content_offset = cur.content_offset.unwrap_or(end);
        if !cur.nonblank && content_offset == cur.from_offset {
            // Blank lines before the first `From `: no message, kept as is.
            return;
        }
        let stored = end.saturating_sub(content_offset);
        let strip = u64::from(strip && stored > 0);
        let content_len = stored - strip;
        let mut size = content_len + cur.bare_lf.saturating_sub(strip);
        if strip == 0 && content_len > 0 && self.line_len > 0 {
            // No final LF: the encoder adds one (CRLF, or LF after a CR).
            size += if self.prev_byte == Some(b'\r') { 1 } else { 2 };
        }
        self.messages.push(ScannedMessage {
            from_offset: cur.from_offset,
            content_offset,
            content_len,
            end,
            size,
            digest: cur.hasher.finish(),
        });
    }

    /// Ends the scan at the current offset (the scanned length L).
    pub fn finish(mut self) -> Scan {
        if self.kind == Kind::Undecided && self.line_len > 0 {
            let head = self.head;
            self.decide(&head[..self.head_len], false);
        }
        let end = self.offset;
        let strip = self.line_len == 0 && self.prev_blank;
        self.finish_message(end, strip);
        Scan {
            messages: self.messages,
            scanned_len: end,
        }
    }
}

/// Scans a whole spool held in memory (tests, small inputs).
pub fn scan_bytes(data: &[u8]) -> Scan {
    let mut s = Scanner::new();
    s.feed(data);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::transfer::encode_all;
    use crate::mailbox::uidl::popa3d_uid;
    use md5::{Digest, Md5};

    /// Scans `data` in blocks of `block` bytes.
    fn scan_in(data: &[u8], block: usize) -> Scan {
        let mut s = Scanner::new();
        for c in data.chunks(block) {
            s.feed(c);
        }
        assert_eq!(s.offset(), data.len() as u64);
        s.finish()
    }

    /// Scans with every block size and checks the invariants that tie the
    /// scan to the bytes and to the transfer encoder.
    fn scan_all_splits(data: &[u8]) -> Scan {
        let whole = scan_bytes(data);
        for block in (1..=data.len().min(80)).chain([4096, 65536]) {
            assert_eq!(scan_in(data, block), whole, "block size {block}");
        }
        let mut prev_end = None;
        for m in &whole.messages {
            if let Some(e) = prev_end {
                assert_eq!(m.from_offset, e, "raw ranges are contiguous");
            }
            prev_end = Some(m.end);
            let content =
                &data[m.content_offset as usize..(m.content_offset + m.content_len) as usize];
            let body = encode_all(content, None);
            let dots = body.windows(3).filter(|w| *w == b"\n..").count()
                + usize::from(body.starts_with(b".."));
            assert_eq!(m.size, (body.len() - dots) as u64);
            if m.has_from_line() {
                assert!(data[m.from_offset as usize..].starts_with(b"From "));
            }
        }
        assert_eq!(prev_end.unwrap_or(whole.scanned_len), whole.scanned_len);
        assert_eq!(whole.scanned_len, data.len() as u64);
        whole
    }

    fn contents<'a>(data: &'a [u8], scan: &Scan) -> Vec<&'a [u8]> {
        scan.messages
            .iter()
            .map(|m| &data[m.content_offset as usize..(m.content_offset + m.content_len) as usize])
            .collect()
    }

    #[test]
    fn splits_messages_and_strips_separators() {
        let data = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody 1\n\n\
From c@d Mon Jan  1 00:00:01 2024\nSubject: two\n\nbody 2\nFrom not a separator\n\n";
        let scan = scan_all_splits(data);
        assert_eq!(
            contents(data, &scan),
            vec![
                &b"Subject: one\n\nbody 1\n"[..],
                &b"Subject: two\n\nbody 2\nFrom not a separator\n"[..],
            ]
        );
        assert_eq!(scan.messages[0].size, 24);
        assert_eq!(scan.messages[1].end, data.len() as u64);
    }

    #[test]
    fn from_needs_a_blank_line_and_content_length_is_ignored() {
        let data = b"From x\nContent-Length: 0\n\nline\n>From q\nFrom inline\n \nFrom sp\n";
        let scan = scan_all_splits(data);
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.messages[0].content_len, data.len() as u64 - 7);
    }

    #[test]
    fn missing_final_newline_counts_the_added_crlf() {
        let data = b"From x\nA: 1\n\nno newline";
        let scan = scan_all_splits(data);
        assert_eq!(scan.messages[0].content_len, 16);
        assert_eq!(scan.messages[0].size, 6 + 2 + 10 + 2);
        // A From_ line alone: an empty message.
        let scan = scan_all_splits(b"From x");
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(
            (scan.messages[0].content_len, scan.messages[0].size),
            (0, 0)
        );
    }

    #[test]
    fn crlf_is_not_doubled_and_cr_only_is_one_line() {
        let scan = scan_all_splits(b"From x\r\nA: 1\r\n\r\nb\r\n");
        assert_eq!(scan.messages[0].size, 11);
        let scan = scan_all_splits(b"From x\rA: 1\r\rb\r");
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.messages[0].size, 0, "one unterminated From_ line");
        let scan = scan_all_splits(b"A: 1\rB: 2\r\rbody\r");
        assert_eq!(scan.messages[0].size, 16 + 1);
    }

    #[test]
    fn leading_text_is_served_as_a_message() {
        let data = b"garbage line\n\nFrom x\nA: 1\n\nb\n";
        let scan = scan_all_splits(data);
        assert_eq!(scan.messages.len(), 2);
        assert!(!scan.messages[0].has_from_line());
        assert_eq!(contents(data, &scan)[0], b"garbage line\n");
        assert_eq!(scan.messages[1].from_offset, 14);
        // Leading blank lines are not a message.
        let scan = scan_all_splits(b"\n\nFrom x\nA: 1\n");
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.messages[0].from_offset, 2);
        // No From_ line at all.
        let scan = scan_all_splits(b"just text");
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.messages[0].size, 11);
    }

    #[test]
    fn empty_blank_nul_and_8bit_spools() {
        assert_eq!(scan_all_splits(b"").messages, vec![]);
        assert_eq!(scan_all_splits(b"\n\n\n").messages, vec![]);
        let data = b"From x\nSubject: \xff\x00\n\n\x00\x80\xfe\n\nFrom y\n\x00";
        let scan = scan_all_splits(data);
        assert_eq!(scan.messages.len(), 2);
        assert_eq!(scan.messages[1].size, 3);
    }

    #[test]
    fn digest_covers_the_fixed_header_lines() {
        let long = format!("Received: from {}\n", "x".repeat(200));
        let data = format!(
            "From x\nSubject: s\n{long}\tby y\nDate: d\nReceived: second\n\nReceived: in body\n"
        );
        let scan = scan_all_splits(data.as_bytes());
        let expected: [u8; 16] = Md5::digest(format!("{long}\tby y\n")).into();
        assert_eq!(scan.messages[0].digest, expected);
    }

    #[test]
    fn identical_headers_give_identical_digests() {
        let data = b"From a\nMessage-ID: <1@x>\n\none\n\nFrom b\nMessage-ID: <1@x>\n\ntwo\n";
        let scan = scan_all_splits(data);
        assert_eq!(scan.messages[0].digest, scan.messages[1].digest);
        assert_eq!(popa3d_uid(&scan.messages[0].digest).len(), 16);
    }

    #[test]
    fn pseudo_random_spools_never_panic_and_agree_across_splits() {
        let pieces: [&[u8]; 9] = [
            b"From ",
            b"\n",
            b"\r",
            b"Received: a",
            b"\n\n",
            b".",
            b"x",
            b"Date: ",
            b"\x00",
        ];
        let mut x: u32 = 99;
        for _ in 0..200 {
            let mut data = Vec::new();
            for _ in 0..(x % 24) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                data.extend_from_slice(pieces[(x >> 16) as usize % pieces.len()]);
            }
            scan_all_splits(&data);
            x = x.wrapping_add(3);
        }
    }
}
