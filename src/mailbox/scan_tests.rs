//! Tests of the mbox scanner: fixed cases over every block split, and random spools against a reference scanner.

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
        let content = &data[m.content_offset as usize..(m.content_offset + m.content_len) as usize];
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

/// Pieces of the spools cut at every point below.
const SPLIT_PIECES: [&[u8]; 9] = [
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

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(200))]

    #[test]
    fn random_spools_never_panic_and_agree_across_splits(
        picks in proptest::collection::vec(0..SPLIT_PIECES.len(), 0..24),
    ) {
        let data: Vec<u8> = picks.iter().flat_map(|&i| SPLIT_PIECES[i].iter().copied()).collect();
        scan_all_splits(&data);
    }
}

/// The framing rules of the module documentation, line by line over the
/// whole spool in memory: slow and obviously right.
fn reference_scan(data: &[u8]) -> Scan {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| start + i + 1);
        lines.push((start, &data[start..end]));
        start = end;
    }
    // Message starts: a `From ` line at offset 0 or after a "\n" line.
    let mut starts: Vec<usize> = Vec::new();
    let mut prev_blank = true;
    for (i, &(_, line)) in lines.iter().enumerate() {
        if prev_blank && line.starts_with(b"From ") {
            starts.push(i);
        }
        prev_blank = line == b"\n";
    }
    // Text before the first From_ line is a message if not only blank lines.
    let first = starts.first().copied().unwrap_or(lines.len());
    let mut groups: Vec<(usize, usize, bool)> = Vec::new();
    if lines[..first].iter().any(|&(_, l)| l != b"\n") {
        groups.push((0, first, false));
    }
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(lines.len());
        groups.push((s, e, true));
    }
    let mut messages: Vec<ScannedMessage> = Vec::new();
    for (s, e, has_from) in groups {
        let group = &lines[s..e];
        let from_offset = group[0].0 as u64;
        let content_lines = if has_from { &group[1..] } else { group };
        let content_offset = content_lines
            .first()
            .map_or(from_offset + group[0].1.len() as u64, |&(o, _)| o as u64);
        let mut body: Vec<u8> = content_lines
            .iter()
            .flat_map(|&(_, l)| l.to_vec())
            .collect();
        // The last line, if it is exactly "\n", is the separator.
        if body.ends_with(b"\n") && content_lines.last().map(|&(_, l)| l) == Some(b"\n") {
            body.pop();
        }
        let bare = (0..body.len())
            .filter(|&i| body[i] == b'\n' && (i == 0 || body[i - 1] != b'\r'))
            .count();
        let added = match body.last() {
            None | Some(b'\n') => 0,
            Some(b'\r') => 1,
            Some(_) => 2,
        };
        let mut hasher = UidHasher::new();
        for &(_, line) in content_lines {
            if line == b"\n" {
                break;
            }
            if hasher.header_line(line) {
                hasher.update(line);
            }
        }
        let end = lines.get(e).map_or(data.len(), |&(o, _)| o) as u64;
        // From the previous message's end (the first: from the file start).
        let hash_from = messages.last().map_or(0, |m| m.end) as usize;
        messages.push(ScannedMessage {
            from_offset,
            content_offset,
            content_len: body.len() as u64,
            end,
            size: (body.len() + bare + added) as u64,
            digest: hasher.finish(),
            raw_hash: xxhash_rust::xxh3::xxh3_128(&data[hash_from..end as usize]),
        });
    }
    Scan {
        messages,
        scanned_len: data.len() as u64,
    }
}

// Pieces that hit every fast-path edge: boundaries, blank lines made of
// "\n" and "\r\n", CRs before LFs, header names and long lines.
const PIECES: [&[u8]; 14] = [
    b"From ",
    b"\n",
    b"\n\n",
    b"\n\nFrom x\n",
    b"\r",
    b"\r\n",
    b"Received: a",
    b"Date: d",
    b"Message-ID: <m>",
    b" folded",
    b"From",
    b"body text that is longer than a line head ",
    b".",
    b"\x00\xff",
];

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(3000))]

    /// Spools spliced from [`PIECES`], fed whole and in blocks of 1 to 24
    /// bytes, scan exactly as the reference scanner says.
    #[test]
    fn random_spools_match_the_reference_scanner_in_random_blocks(
        picks in proptest::collection::vec(0..PIECES.len(), 0..60),
        blocks in proptest::collection::vec(1usize..=24, 1..32),
    ) {
        let data: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
        let expected = reference_scan(&data);
        proptest::prop_assert_eq!(&scan_bytes(&data), &expected);
        let mut s = Scanner::new();
        for block in crate::test_support::chunks(&data, &blocks) {
            s.feed(block);
        }
        proptest::prop_assert_eq!(&s.finish(), &expected);
    }
}
