//! popa3d-compatible UIDLs: an MD5 of the headers that stay fixed, plus `-N` for duplicates.
//!
//! The algorithm is popa3d's (Openwall, `mailbox.c` in 0.5.1 … 1.0.3, also in
//! OpenBSD's tree), so users who migrate from popa3d keep their UIDs and
//! their clients do not fetch everything again:
//!
//! * one MD5 context per message, over the header lines (up to the first
//!   line that is exactly `"\n"`; a `"\r\n"` line does not end the header
//!   for popa3d, so it does not here either);
//! * a line is hashed whole, line end included, when it starts (ASCII
//!   case-insensitively) with `Received:` (only the first one), `Date:` and
//!   `Message-ID:` (only before the first `Received:`), `Delivered-To:`
//!   (always), or `X-Delivery-ID:` (always, but only with a capital `X`, as
//!   popa3d's `switch` has no `case 'x'`); folded continuation lines (space
//!   or tab first) inherit the decision of the line they continue;
//! * the UID is digest bytes 3 2 1 0 7 6 5 4 as lower-case hex (popa3d's
//!   `pop_trans.c` prints them in that order: 16 characters).
//!
//! popa3d has no duplicate handling (two identical messages share one UID,
//! against RFC 1939). We keep the plain UID for the first occurrence, so it
//! matches popa3d, and give the k-th occurrence (k ≥ 2) the suffix `-k`,
//! which cannot collide with a plain 16-hex-digit UID.

use std::collections::HashMap;

use md5::{Digest, Md5};

/// Bytes of a line's start needed to classify it (`X-Delivery-ID:` is 14).
pub const CLASSIFY_BYTES: usize = 14;

/// The UID hash of one message being scanned.
#[derive(Clone)]
pub struct UidHasher {
    md5: Md5,
    /// The current header line is one of the fixed ones.
    fixed: bool,
    /// A `Received:` line has been seen in this header.
    received: bool,
}

impl Default for UidHasher {
    fn default() -> Self {
        Self::new()
    }
}

fn starts_with_ci(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
}

impl UidHasher {
    pub fn new() -> UidHasher {
        UidHasher {
            md5: Md5::new(),
            fixed: false,
            received: false,
        }
    }

    /// A new header line begins; `head` is its first bytes (at least
    /// [`CLASSIFY_BYTES`] of them unless the line is shorter). Returns
    /// whether the line is hashed; the caller then passes all its bytes,
    /// `head` included, to [`UidHasher::update`].
    pub fn header_line(&mut self, head: &[u8]) -> bool {
        let Some(&first) = head.first() else {
            self.fixed = false;
            return false;
        };
        self.fixed = match first {
            b'\t' | b' ' => self.fixed,
            // Only the first Received: (from the local MTA) is stable.
            b'R' | b'r' if !self.received && starts_with_ci(head, b"Received:") => {
                self.received = true;
                true
            }
            b'D' | b'd' => {
                starts_with_ci(head, b"Delivered-To:")
                    || (!self.received && starts_with_ci(head, b"Date:"))
            }
            b'M' | b'm' => !self.received && starts_with_ci(head, b"Message-ID:"),
            b'X' => starts_with_ci(head, b"X-Delivery-ID:"),
            _ => false,
        };
        self.fixed
    }

    /// Hashes bytes of the current (fixed) header line.
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
    }

    pub fn finish(self) -> [u8; 16] {
        self.md5.finalize().into()
    }
}

/// popa3d's UIDL text for a digest.
pub fn popa3d_uid(digest: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(16);
    for &i in &[3usize, 2, 1, 0, 7, 6, 5, 4] {
        let b = digest[i];
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// UIDs for the messages of one mailbox, in mailbox order: popa3d's UID,
/// with `-k` appended to the k-th message (k ≥ 2) sharing a digest.
pub fn assign_uids<'a, I>(digests: I) -> Vec<String>
where
    I: IntoIterator<Item = &'a [u8; 16]>,
{
    let mut seen: HashMap<[u8; 16], u32> = HashMap::new();
    digests
        .into_iter()
        .map(|d| {
            let n = seen.entry(*d).or_insert(0);
            *n = n.saturating_add(1);
            let mut uid = popa3d_uid(d);
            if *n > 1 {
                uid.push('-');
                uid.push_str(&n.to_string());
            }
            uid
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes a header given as whole lines, the way the scanner drives it.
    fn digest_of(lines: &[&[u8]]) -> [u8; 16] {
        let mut h = UidHasher::new();
        for line in lines {
            let head = &line[..line.len().min(CLASSIFY_BYTES)];
            if h.header_line(head) {
                h.update(line);
            }
        }
        h.finish()
    }

    fn md5_of(bytes: &[u8]) -> [u8; 16] {
        Md5::digest(bytes).into()
    }

    #[test]
    fn uid_text_uses_popa3d_byte_order() {
        let d: [u8; 16] = core::array::from_fn(|i| i as u8 * 0x11);
        assert_eq!(popa3d_uid(&d), "3322110077665544");
    }

    #[test]
    fn fixed_headers_are_hashed_whole_with_line_ends() {
        let d = digest_of(&[
            b"Return-Path: <a@b>\n",
            b"Delivered-To: bob@example.org\n",
            b"Received: from x\n",
            b"\tby y; Mon, 1 Jan 2024\n",
            b"Received: from z\n",
            b"Date: Mon, 1 Jan 2024\n",
            b"Message-ID: <1@x>\n",
            b"Subject: hi\n",
            b"X-Delivery-ID: abc\n",
            b"x-delivery-id: lower-case x is not hashed\n",
        ]);
        let expected = md5_of(
            b"Delivered-To: bob@example.org\nReceived: from x\n\tby y; Mon, 1 Jan 2024\nX-Delivery-ID: abc\n",
        );
        assert_eq!(d, expected);
    }

    #[test]
    fn date_and_message_id_count_before_received() {
        let d = digest_of(&[
            b"message-id: <1@x>\r\n",
            b"DATE: today\n",
            b" folded\n",
            b"Subject: s\n",
            b" folded subject\n",
        ]);
        assert_eq!(d, md5_of(b"message-id: <1@x>\r\nDATE: today\n folded\n"));
    }

    #[test]
    fn empty_header_hashes_nothing() {
        assert_eq!(digest_of(&[]), md5_of(b""));
        assert_eq!(digest_of(&[b"Subject: x\n"]), md5_of(b""));
    }

    #[test]
    fn duplicates_get_numbered_suffixes() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let uids = assign_uids([&a, &b, &a, &a, &b]);
        let pa = popa3d_uid(&a);
        let pb = popa3d_uid(&b);
        assert_eq!(
            uids,
            vec![
                pa.clone(),
                pb.clone(),
                format!("{pa}-2"),
                format!("{pa}-3"),
                format!("{pb}-2")
            ]
        );
        for u in &uids {
            assert!((1..=70).contains(&u.len()));
            assert!(u.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        }
    }
}
