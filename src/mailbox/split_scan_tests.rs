//! Tests of the two-half scan: joined, it is exactly the scan from the start, whatever the spool holds.

use std::io::Write;

use super::*;
use crate::mailbox::scan::scan_bytes;

/// The scan of `data[split..]` resumed at `split`, as the second thread
/// makes it.
fn resumed(data: &[u8], split: usize) -> Scan {
    let mut s = Scanner::resume_at(split as u64);
    s.feed(&data[split..]);
    s.finish()
}

/// Every place a second half could start.
fn boundaries(data: &[u8]) -> Vec<usize> {
    memmem::find_iter(data, BOUNDARY).map(|i| i + 2).collect()
}

fn spool_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f
}

fn scanned_in_halves(data: &[u8]) -> Scan {
    let f = spool_file(data);
    scan_halves_from(f.as_file(), data.len() as u64, 0, &mut || {}).unwrap()
}

#[test]
fn a_spool_split_near_its_middle_scans_as_a_whole() {
    let mut data = Vec::new();
    for i in 0..40 {
        write!(
            data,
            "From a{i}@x Mon Jan  1 00:00:00 2024\nMessage-ID: <{i}@x>\n\nbody {i}\r\nline\n\n"
        )
        .unwrap();
    }
    let f = spool_file(&data);
    let mid = data.len() as u64 / 2;
    let split = boundary_after(f.as_file(), mid, data.len() as u64)
        .unwrap()
        .expect("a boundary after the middle");
    assert!(split > mid && data[split as usize..].starts_with(b"From "));
    assert_eq!(scanned_in_halves(&data), scan_bytes(&data));
}

#[test]
fn a_boundary_cut_by_a_read_block_is_found_and_one_too_far_is_not() {
    let block = limits::SCAN_BLOCK;
    for cut in 1..BOUNDARY.len() {
        // The boundary's first `cut` bytes end the first block.
        let mut data = vec![b'x'; block - cut];
        data.extend_from_slice(b"\n\nFrom a\n\nbody\n");
        let f = spool_file(&data);
        let found = boundary_after(f.as_file(), 0, data.len() as u64).unwrap();
        assert_eq!(found, Some((block - cut + 2) as u64), "cut {cut}");
    }
    let far = limits::SPLIT_SEARCH_MAX_BYTES as usize;
    let mut data = vec![b'x'; far];
    data.extend_from_slice(b"\n\nFrom a\n\nbody\n");
    let f = spool_file(&data);
    assert_eq!(
        boundary_after(f.as_file(), 0, data.len() as u64).unwrap(),
        None
    );
    assert_eq!(
        boundary_after(f.as_file(), 8, data.len() as u64).unwrap(),
        Some(far as u64 + 2)
    );
}

#[test]
fn unusual_spools_fall_back_to_one_scan_with_the_same_result() {
    let cases: [&[u8]; 5] = [
        // No boundary after the middle: one long message.
        b"From a\n\nshort\n\nFrom b\nSubject: long\n\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
        // Blank lines only before the boundary after the middle: they
        // belong to the first message's content hash.
        b"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nFrom a\n\nx\n",
        // Text before the first From line is message 1.
        b"leading text\n\nFrom a\n\none\n\nFrom b\n\ntwo\n",
        b"",
        b"From a\n\nbody without a final line end",
    ];
    for data in cases {
        assert_eq!(scanned_in_halves(data), scan_bytes(data), "{data:?}");
    }
}

#[test]
fn a_first_half_without_a_message_is_not_joined() {
    let data = b"\n\nFrom a\n\nx\n";
    let split = 2;
    let first = scan_bytes(&data[..split]);
    assert!(first.messages.is_empty());
    assert_eq!(join(first, resumed(data, split)), None);
}

/// Pieces that make boundaries, blank lines of "\n" and "\r\n", leading
/// text and header lines the UID digest reads.
const PIECES: [&[u8]; 10] = [
    b"From ",
    b"\n",
    b"\n\n",
    b"\n\nFrom x\n",
    b"\r\n",
    b"Received: a",
    b"Message-ID: <m>",
    b"body text ",
    b"From",
    b"\x00\xff",
];

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(2000))]

    /// Split at every boundary, the two halves join into exactly the scan
    /// from the start (offsets, sizes, UID digests, content hashes), or
    /// refuse to join only when the first half holds no message.
    #[test]
    fn halves_joined_at_any_boundary_are_the_whole_scan(
        picks in proptest::collection::vec(0..PIECES.len(), 0..60),
    ) {
        let data: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
        let whole = scan_bytes(&data);
        for split in boundaries(&data) {
            let first = scan_bytes(&data[..split]);
            let had_message = !first.messages.is_empty();
            match join(first, resumed(&data, split)) {
                Some(joined) => proptest::prop_assert_eq!(&joined, &whole),
                None => proptest::prop_assert!(!had_message),
            }
        }
        proptest::prop_assert_eq!(&scanned_in_halves(&data), &whole);
    }
}
