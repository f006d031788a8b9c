//! Incremental mbox scanner: message boundaries, POP3 sizes and UID digests from raw blocks.
//!
//! Pure: it is fed the spool in blocks of any size (the maildrop reads
//! `limits::SCAN_BLOCK` at a time) and keeps a few bytes of state across
//! blocks, so the result does not depend on where the blocks are split.
//! Header lines are found with memchr; a message body is skipped from one
//! `"\n\nFrom "` to the next with its line ends counted in bulk, so the
//! scan runs near memory speed. Nothing is allocated per line.
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
//! * Each message gets a content hash ([`ScannedMessage::raw_hash`], XXH3-128)
//!   of its raw range, so an update can prove later that the bytes it
//!   removes are still the ones this scan saw. Every byte fed is hashed
//!   once, in the same pass, at the end of each block.
//! * The POP3 size counts every bare LF as CRLF (a stored CRLF stays two
//!   octets), plus the line end the transfer encoder adds when the message
//!   does not end in one: exactly the octets `transfer::Encoder` produces
//!   before dot-stuffing.

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};
use xxhash_rust::xxh3::Xxh3;

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
    /// XXH3-128 of the raw bytes from the previous message's `end` (0 for
    /// the first message) to `end`: the raw range, plus any blank lines
    /// before the first message.
    pub raw_hash: u128,
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
    /// A blank line and a `From ` line: the only message boundary.
    boundary: Finder<'static>,
    /// The content hash of the bytes `hashed_to` back to the end of the
    /// last message hashed (or 0).
    hasher: Xxh3,
    hashed_to: u64,
    /// Messages whose `raw_hash` is final.
    hashed_messages: usize,
    /// Bytes fed but not hashed yet: the start of a line that may turn out
    /// to begin a message (< [`HEAD`] bytes).
    carry: [u8; HEAD],
    carry_len: usize,
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
            boundary: Finder::new(b"\n\nFrom "),
            hasher: Xxh3::new(),
            hashed_to: 0,
            hashed_messages: 0,
            carry: [0; HEAD],
            carry_len: 0,
        }
    }

    /// A scanner that continues a spool at `offset`, which must be the
    /// start of a message's `From ` line (so the previous line was blank):
    /// scanning from there finds exactly what a scan from 0 finds from
    /// there on. The spool index rescans its last message this way.
    pub fn resume_at(offset: u64) -> Scanner {
        Scanner {
            offset,
            line_start: offset,
            hashed_to: offset,
            ..Scanner::new()
        }
    }

    /// Bytes fed so far (including the offset resumed at).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Scans the next block of the spool.
    pub fn feed(&mut self, block: &[u8]) {
        self.frame(block);
        self.hash_settled(block, false);
    }

    fn frame(&mut self, block: &[u8]) {
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

    /// The hot path: whole lines of a message body, where only a `From `
    /// line after a blank line (a message boundary) and bare LFs (for the
    /// size) matter. It jumps to the next `"\n\nFrom "` and counts the line
    /// ends before it in bulk. Returns the bytes consumed: up to the blank
    /// line before a boundary, else up to the last LF of the block (0 when
    /// not at a body line start, or when the block holds no LF).
    fn body_lines(&mut self, block: &[u8]) -> usize {
        let Some(cur) = self.cur.as_mut() else {
            return 0;
        };
        if self.line_len != 0 || self.prev_blank || cur.in_header || cur.content_offset.is_none() {
            return 0;
        }
        // At a line start, so a leading LF is a blank line of its own.
        let end = if block.starts_with(b"\nFrom ") {
            1
        } else if let Some(i) = self.boundary.find(block) {
            i + 2
        } else {
            match memrchr(b'\n', block) {
                Some(last) => last + 1,
                None => return 0,
            }
        };
        let Some(lines) = block.get(..end) else {
            return 0;
        };
        let lfs = count_lf(lines);
        // The byte before `lines` is an LF, so every CR LF pair is inside.
        cur.bare_lf += (lfs - count_crlf(lines)) as u64;
        cur.nonblank |= lfs < lines.len();
        self.offset += end as u64;
        self.line_start = self.offset;
        self.prev_byte = Some(b'\n');
        self.prev_blank = end == 1 || lines.get(end - 2) == Some(&b'\n');
        end
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
            raw_hash: 0, // see `hash_settled`
        });
    }

    /// Hashes what was fed up to the last point no message boundary can
    /// precede any more (all of it at the end), closing the content hash of
    /// each message that ended there. `block` is what was just fed; the
    /// bytes before it that were not hashed yet are in `carry`.
    fn hash_settled(&mut self, block: &[u8], at_end: bool) {
        let undecided = self.kind == Kind::Undecided && self.line_len > 0;
        let settled = if undecided && !at_end {
            self.line_start
        } else {
            self.offset
        };
        let pending_start = self.offset - block.len() as u64 - self.carry_len as u64;
        let carry = self.carry;
        let carry_len = self.carry_len;
        // Bytes `[from, to)` of what is pending (carry, then block).
        let pending = |from: u64, to: u64, out: &mut Xxh3| {
            let (a, b) = (
                (from - pending_start) as usize,
                (to - pending_start) as usize,
            );
            if a < carry_len {
                out.update(&carry[a..b.min(carry_len)]);
            }
            if b > carry_len {
                out.update(&block[a.max(carry_len) - carry_len..b - carry_len]);
            }
        };
        while let Some(m) = self.messages.get_mut(self.hashed_messages) {
            pending(self.hashed_to, m.end, &mut self.hasher);
            m.raw_hash = self.hasher.digest128();
            self.hasher.reset();
            self.hashed_to = m.end;
            self.hashed_messages += 1;
        }
        pending(self.hashed_to, settled, &mut self.hasher);
        self.hashed_to = settled;
        let rest = (settled - pending_start) as usize..(self.offset - pending_start) as usize;
        let mut kept = [0u8; HEAD];
        for (dst, i) in kept.iter_mut().zip(rest.clone()) {
            *dst = if i < carry_len {
                carry[i]
            } else {
                block[i - carry_len]
            };
        }
        self.carry = kept;
        self.carry_len = rest.len();
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
        self.hash_settled(&[], true);
        Scan {
            messages: self.messages,
            scanned_len: end,
        }
    }
}

/// LFs in `data` (memchr counts a vector at a time).
fn count_lf(data: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', data).count()
}

/// CR LF pairs in `data`.
fn count_crlf(data: &[u8]) -> usize {
    // Spools written by Unix MDAs hold no CR at all: one vector pass.
    let Some(first) = memchr(b'\r', data) else {
        return 0;
    };
    let data = data.get(first..).unwrap_or_default();
    let next = data.get(1..).unwrap_or_default();
    // Branch-free so that the compiler vectorises it.
    data.iter()
        .zip(next)
        .map(|(&a, &b)| usize::from((a == b'\r') & (b == b'\n')))
        .sum()
}

/// Scans a whole spool held in memory (tests, small inputs).
pub fn scan_bytes(data: &[u8]) -> Scan {
    let mut s = Scanner::new();
    s.feed(data);
    s.finish()
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
