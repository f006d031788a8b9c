//! Unit tests of the index file format: round trip, damage, inconsistent offsets.

use super::*;
use crate::mailbox::scan::scan_bytes;

const SPOOL: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nMessage-ID: <1@x>\n\nbody\n\n\
From b@x Mon Jan  1 00:00:01 2024\nMessage-ID: <2@x>\n\nsecond\n";

fn sample() -> Index {
    let scan = scan_bytes(SPOOL);
    Index {
        path: b"/var/mail/bob".to_vec(),
        inode: 1234,
        indexed_len: scan.scanned_len,
        hint: StatHint {
            size: scan.scanned_len,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_001, 6),
            taken_at: 1_700_000_002,
        },
        full_scan_at: 1_700_000_000,
        entries: scan
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| Entry {
                message,
                retrieved_at: i as i64 * 7,
            })
            .collect(),
    }
}

#[test]
fn round_trip_keeps_everything() {
    let index = sample();
    let bytes = index.encode();
    assert_eq!(
        bytes.len(),
        8 + 4 + 4 + 13 + 3 * 8 + 6 * 8 + 8 + 2 * ENTRY_LEN + 8
    );
    assert_eq!(Index::decode(&bytes), Ok(index));
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = sample().encode();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut damaged = bytes.clone();
            damaged[i] ^= bit;
            assert!(
                Index::decode(&damaged).is_err(),
                "flip {bit:#x} at {i} passed"
            );
        }
    }
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let bytes = sample().encode();
    for n in 0..bytes.len() {
        assert!(Index::decode(&bytes[..n]).is_err(), "{n} bytes passed");
    }
    assert_eq!(
        Index::decode(b"From a@x\n\nnot an index at all"),
        Err(DecodeError::BadMagic)
    );
    let mut future = bytes.clone();
    future[8] = 9;
    assert_eq!(Index::decode(&future), Err(DecodeError::Version(9)));
}

#[test]
fn out_of_order_offsets_are_refused_even_with_a_good_checksum() {
    let mut index = sample();
    index.entries[1].message.from_offset = 3;
    let e = Index::decode(&index.encode()).unwrap_err();
    assert!(matches!(e, DecodeError::Inconsistent(_)), "{e:?}");
    let mut index = sample();
    index.indexed_len = 10;
    assert!(Index::decode(&index.encode()).is_err());
    let mut index = sample();
    index.entries[0].message.content_len = u64::MAX;
    assert!(Index::decode(&index.encode()).is_err());
}

#[test]
fn checksum_counts_trailing_zeros() {
    assert_ne!(checksum(b"ab"), checksum(b"ab\0"));
    assert_ne!(checksum(b""), checksum(b"\0\0\0\0\0\0\0\0"));
}
