//! Unit tests of the PROXY header parser: every form, every malformed case, and never reading past the header.

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feeds `stream` the way the reader does (exactly the bytes asked for);
/// returns the outcome and how many bytes were taken.
fn incremental(stream: &[u8]) -> (Result<Header, ProxyError>, usize) {
    let mut have = 0usize;
    loop {
        match parse(&stream[..have]) {
            Ok(Parsed::Complete { header, len }) => {
                assert_eq!(len, have, "a complete header is all that was read");
                return (Ok(header), have);
            }
            Ok(Parsed::NeedMore(n)) => {
                assert!(n > 0, "asks for at least one byte");
                if have + n > stream.len() {
                    return (Err(ProxyError::NoHeader), have);
                }
                have += n;
            }
            Err(e) => return (Err(e), have),
        }
    }
}

fn v2(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = V2_SIGNATURE.to_vec();
    v.push(0x20 | cmd);
    v.push(fam);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn v2_inet(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
    [&src[..], &dst, &sp.to_be_bytes(), &dp.to_be_bytes()].concat()
}

#[test]
fn v1_tcp4_and_the_pop3_bytes_behind_it_stay_unread() {
    let stream = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 110\r\nUSER bob\r\n";
    let (header, taken) = incremental(stream);
    assert_eq!(
        header,
        Ok(Header::Proxied {
            source: sa("192.0.2.7:56324"),
            destination: sa("198.51.100.1:110"),
        })
    );
    assert_eq!(&stream[taken..], b"USER bob\r\n");
}

#[test]
fn v1_tcp6() {
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 995\r\n";
    assert_eq!(
        parse(h),
        Ok(Parsed::Complete {
            header: Header::Proxied {
                source: sa("[2001:db8::7]:65535"),
                destination: sa("[2001:db8::1]:995"),
            },
            len: h.len(),
        })
    );
}

#[test]
fn v1_unknown_ignores_the_rest() {
    assert_eq!(
        incremental(b"PROXY UNKNOWN\r\nxyz"),
        (Ok(Header::Unknown), 15)
    );
    let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert_eq!(incremental(h), (Ok(Header::Unknown), h.len()));
}

#[test]
fn v1_longest_header_fits_the_bound() {
    let h = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(h.len(), 104);
    assert!(matches!(incremental(h).0, Ok(Header::Proxied { .. })));
}

#[test]
fn v1_malformed_lines_are_refused() {
    let bad: &[(&[u8], &str)] = &[
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "no destination port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "extra fields"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "extra fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "extra fields"),
        (b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "port"),
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "printable"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n", "printable"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "printable"),
        (b"PROXY UNKNOWN \xff\r\n", "printable"),
        (b"PROXY \r\n12345678", "protocol"),
    ];
    for (input, what) in bad {
        match incremental(input).0 {
            Err(e @ ProxyError::V1Malformed(_)) => assert!(
                e.to_string().contains(what),
                "{:?}: {e} should mention {what}",
                String::from_utf8_lossy(input)
            ),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
}

#[test]
fn v1_without_crlf_in_107_bytes_is_refused_without_reading_more() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(300, b'a');
    let (result, taken) = incremental(&long);
    assert_eq!(result, Err(ProxyError::V1TooLong));
    assert!(taken <= V1_MAX, "read {taken} bytes");
}

#[test]
fn not_a_header_is_refused_early() {
    for input in [
        &b"USER bob\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01",
        b"PROXX",
        b"\r\n\r\nx",
    ] {
        let (result, taken) = incremental(input);
        assert_eq!(result, Err(ProxyError::NoHeader), "{input:?}");
        assert!(taken <= MIN_HEADER);
    }
    assert_eq!(parse(b""), Ok(Parsed::NeedMore(MIN_HEADER)));
    assert_eq!(parse(b"PRO"), Ok(Parsed::NeedMore(MIN_HEADER - 3)));
    assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parsed::NeedMore(MIN_HEADER - 5)));
}

#[test]
fn v2_inet_with_tlvs_skipped_and_pop3_bytes_left() {
    let mut payload = v2_inet([192, 0, 2, 7], [198, 51, 100, 1], 40000, 995);
    payload.extend_from_slice(&[0x01, 0x00, 0x04, b'p', b'o', b'p', b'3']); // ALPN TLV
    let mut stream = v2(1, 0x11, &payload);
    let header_len = stream.len();
    stream.extend_from_slice(b"\x16\x03\x01");
    assert_eq!(
        incremental(&stream),
        (
            Ok(Header::Proxied {
                source: sa("192.0.2.7:40000"),
                destination: sa("198.51.100.1:995"),
            }),
            header_len
        )
    );
}

#[test]
fn v2_inet6() {
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let payload = [
        &src.octets()[..],
        &dst.octets(),
        &1234u16.to_be_bytes(),
        &110u16.to_be_bytes(),
    ]
    .concat();
    assert_eq!(
        incremental(&v2(1, 0x21, &payload)).0,
        Ok(Header::Proxied {
            source: sa("[2001:db8::7]:1234"),
            destination: sa("[2001:db8::1]:110"),
        })
    );
}

#[test]
fn v2_local_unspec_and_unix_keep_the_real_peer() {
    let h = v2(0, 0x00, &[]);
    assert_eq!(incremental(&h), (Ok(Header::Local), 16));
    // LOCAL ignores whatever family and addresses follow.
    let h = v2(0, 0x11, &[9; 5]);
    assert_eq!(incremental(&h), (Ok(Header::Local), 21));
    assert_eq!(incremental(&v2(1, 0x00, &[])).0, Ok(Header::Unknown));
    assert_eq!(incremental(&v2(1, 0x31, &[0; 216])).0, Ok(Header::Unknown));
}

#[test]
fn v2_malformed_headers_are_refused() {
    let inet = v2_inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let mut bad_version = v2(1, 0x11, &inet);
    bad_version[12] = 0x11;
    assert_eq!(incremental(&bad_version).0, Err(ProxyError::V2Version(1)));
    assert_eq!(
        incremental(&v2(2, 0x11, &inet)).0,
        Err(ProxyError::V2Command(2))
    );
    assert_eq!(
        incremental(&v2(1, 0x12, &inet)).0,
        Err(ProxyError::V2Family(0x12)),
        "UDP"
    );
    assert_eq!(
        incremental(&v2(1, 0x41, &inet)).0,
        Err(ProxyError::V2Family(0x41))
    );
    assert_eq!(
        incremental(&v2(1, 0x11, &inet[..11])).0,
        Err(ProxyError::V2Short { len: 11, need: 12 })
    );
    assert_eq!(
        incremental(&v2(1, 0x21, &inet)).0,
        Err(ProxyError::V2Short { len: 12, need: 36 })
    );
    // An oversized length is refused from the fixed part alone.
    let mut huge = v2(1, 0x11, &inet);
    huge[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let (result, taken) = incremental(&huge);
    assert_eq!(result, Err(ProxyError::V2TooLong(65535)));
    assert_eq!(taken, 16);
    assert!(result.unwrap_err().to_string().contains("65535"));
}

#[test]
fn truncated_headers_ask_for_more_and_never_complete() {
    let full = v2(1, 0x11, &v2_inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
    let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec();
    for h in [full, v1] {
        for cut in 0..h.len() {
            match parse(&h[..cut]) {
                Ok(Parsed::NeedMore(n)) => assert!(cut + n <= h.len(), "cut {cut} asks {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(5000))]

    /// Arbitrary bytes after either signature: no panic, and a complete
    /// header never claims more than it was given. A cheap sweep; the fuzz
    /// target goes further.
    #[test]
    fn arbitrary_bytes_never_panic(
        v2 in proptest::bool::ANY,
        rest in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let mut buf: Vec<u8> = if v2 {
            V2_SIGNATURE.to_vec()
        } else {
            b"PROXY ".to_vec()
        };
        buf.extend_from_slice(&rest);
        if let Ok(Parsed::Complete { len, .. }) = parse(&buf) {
            proptest::prop_assert!(len <= buf.len());
        }
    }
}
