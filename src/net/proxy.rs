//! The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary): a pure, bounded parser.
//!
//! No I/O here: [`parse`] looks at the bytes received so far and either
//! decodes a complete header, says how many more bytes the header needs at
//! least (so the reader never consumes a byte of the POP3 stream or TLS
//! handshake behind it), or names what is wrong.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::limits;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound on a v1 line, CRLF included.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header.
const V2_FIXED: usize = 16;
/// The longest header [`parse`] can accept: the size of a reader's buffer.
pub const MAX_HEADER: usize = V2_FIXED + limits::PROXY_V2_MAX_PAYLOAD;
/// The shortest possible header (`PROXY UNKNOWN\r\n`): this many bytes can
/// always be read before looking.
pub const MIN_HEADER: usize = 15;

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: the client's address and the address it
    /// connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 LOCAL: the proxy speaks for itself (health checks); the real
    /// peer address stands.
    Local,
    /// v1 UNKNOWN, or a v2 family without usable addresses (AF_UNSPEC,
    /// AF_UNIX): the spec says to use the real peer address.
    Unknown,
}

/// The outcome of looking at the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; what follows belongs to the client.
    Complete { header: Header, len: usize },
    /// The header is at least this many bytes longer than what was given.
    NeedMore(usize),
}

/// Why the bytes are not a PROXY header. Phrased for the log line that
/// explains why a connection from a trusted proxy was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither the v1 nor the v2 signature.
    NoHeader,
    /// No CRLF within the first 107 bytes.
    V1TooLong,
    /// A v1 line that does not follow the grammar; says which part.
    V1Malformed(&'static str),
    /// A v2 version other than 2.
    V2Version(u8),
    /// A v2 command other than LOCAL (0) and PROXY (1).
    V2Command(u8),
    /// A v2 address family / transport byte we cannot use.
    V2Family(u8),
    /// A v2 length beyond [`limits::PROXY_V2_MAX_PAYLOAD`].
    V2TooLong(usize),
    /// A v2 length too short for the addresses of its family.
    V2Short { len: usize, need: usize },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoHeader => {
                f.write_str("the connection did not start with a PROXY protocol header")
            }
            ProxyError::V1TooLong => {
                write!(
                    f,
                    "PROXY v1 header without CRLF in its first {V1_MAX} bytes"
                )
            }
            ProxyError::V1Malformed(what) => write!(f, "malformed PROXY v1 header: {what}"),
            ProxyError::V2Version(v) => write!(f, "PROXY v2 header with unknown version {v}"),
            ProxyError::V2Command(c) => write!(f, "PROXY v2 header with unknown command {c}"),
            ProxyError::V2Family(b) => {
                write!(
                    f,
                    "PROXY v2 header with unsupported address family/transport 0x{b:02x}"
                )
            }
            ProxyError::V2TooLong(n) => write!(
                f,
                "PROXY v2 header announces {n} bytes of addresses and TLVs (at most {} accepted)",
                limits::PROXY_V2_MAX_PAYLOAD
            ),
            ProxyError::V2Short { len, need } => write!(
                f,
                "PROXY v2 header has {len} bytes of addresses, its family needs {need}"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Decodes the header at the start of `buf`, if it is all there.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let v2_seen = buf.len().min(V2_SIGNATURE.len());
    let v1_seen = buf.len().min(V1_PREFIX.len());
    if buf.get(..v2_seen) == V2_SIGNATURE.get(..v2_seen) && buf.len() >= MIN_HEADER {
        return parse_v2(buf);
    }
    if buf.get(..v1_seen) == V1_PREFIX.get(..v1_seen) && buf.len() >= MIN_HEADER {
        return parse_v1(buf);
    }
    let could_be = |sig: &[u8], seen: usize| buf.get(..seen) == sig.get(..seen);
    if could_be(&V2_SIGNATURE, v2_seen) || could_be(V1_PREFIX, v1_seen) {
        // Only reachable below MIN_HEADER: every header is that long.
        Ok(Parsed::NeedMore(MIN_HEADER - buf.len()))
    } else {
        Err(ProxyError::NoHeader)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or_default();
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= V1_MAX {
            return Err(ProxyError::V1TooLong);
        }
        let body = window.strip_suffix(b"\r").unwrap_or(window);
        if !printable(body) {
            return Err(ProxyError::V1Malformed(
                "a byte that is not printable ASCII",
            ));
        }
        // CRLF still to come: two more bytes, or one after a trailing CR.
        let need = if window.last() == Some(&b'\r') { 1 } else { 2 };
        return Ok(Parsed::NeedMore(need));
    };
    let line = window.get(V1_PREFIX.len()..cr).unwrap_or_default();
    if !printable(line) {
        return Err(ProxyError::V1Malformed(
            "a byte that is not printable ASCII",
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| ProxyError::V1Malformed("a byte that is not printable ASCII"))?;
    let header = v1_fields(text)?;
    Ok(Parsed::Complete {
        header,
        len: cr + 2,
    })
}

fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (b' '..=b'~').contains(b))
}

fn v1_fields(text: &str) -> Result<Header, ProxyError> {
    let mut fields = text.split(' ');
    let family = fields.next().unwrap_or_default();
    match family {
        // The rest of an UNKNOWN line is to be ignored.
        "UNKNOWN" => return Ok(Header::Unknown),
        "TCP4" | "TCP6" => {}
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    }
    let mut next = |what| fields.next().ok_or(ProxyError::V1Malformed(what));
    let (src, dst) = (next("no source address")?, next("no destination address")?);
    let (sport, dport) = (next("no source port")?, next("no destination port")?);
    if fields.next().is_some() {
        return Err(ProxyError::V1Malformed("extra fields after the ports"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        if family == "TCP4" {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::V1Malformed("TCP4 address is not an IPv4 address"))
        } else {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::V1Malformed("TCP6 address is not an IPv6 address"))
        }
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// A decimal port, 0..=65535, without sign or leading zeros.
fn port(s: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::V1Malformed("port is not a number from 0 to 65535");
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(fixed) = buf.get(..V2_FIXED) else {
        return Ok(Parsed::NeedMore(V2_FIXED.saturating_sub(buf.len())));
    };
    let byte = |i: usize| fixed.get(i).copied().unwrap_or(0);
    let (ver_cmd, fam) = (byte(12), byte(13));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let len = usize::from(u16::from_be_bytes([byte(14), byte(15)]));
    if len > limits::PROXY_V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong(len));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(ProxyError::V2Command(c)),
    };
    let total = V2_FIXED + len;
    let Some(payload) = buf.get(V2_FIXED..total) else {
        return Ok(Parsed::NeedMore(total.saturating_sub(buf.len())));
    };
    let header = if local {
        // LOCAL: family and addresses are to be ignored.
        Header::Local
    } else {
        v2_addresses(fam, payload)?
    };
    Ok(Parsed::Complete { header, len: total })
}

/// The addresses of a v2 PROXY command; TLVs after them are skipped.
fn v2_addresses(fam: u8, payload: &[u8]) -> Result<Header, ProxyError> {
    const STREAM: u8 = 1;
    let need = match (fam >> 4, fam & 0x0f) {
        (0, _) => return Ok(Header::Unknown),
        (1, STREAM) => 12,
        (2, STREAM) => 36,
        (3, 0..=2) => 216,
        _ => return Err(ProxyError::V2Family(fam)),
    };
    let short = ProxyError::V2Short {
        len: payload.len(),
        need,
    };
    let a = payload.get(..need).ok_or(short)?;
    let be16 = |i: usize| u16::from_be_bytes(octets(a, i));
    let (source, destination) = match need {
        12 => {
            let ip = |i: usize| IpAddr::from(Ipv4Addr::from(octets::<4>(a, i)));
            (
                SocketAddr::new(ip(0), be16(8)),
                SocketAddr::new(ip(4), be16(10)),
            )
        }
        36 => {
            let ip = |i: usize| IpAddr::from(Ipv6Addr::from(octets::<16>(a, i)));
            (
                SocketAddr::new(ip(0), be16(32)),
                SocketAddr::new(ip(16), be16(34)),
            )
        }
        // AF_UNIX: the proxy's own client was local to it; no IP to use.
        _ => return Ok(Header::Unknown),
    };
    Ok(Header::Proxied {
        source,
        destination,
    })
}

/// The `N` bytes of `a` at `i` (an address or port field). The caller has
/// checked `a`'s length; zeros stand in rather than a panic if it had not.
fn octets<const N: usize>(a: &[u8], i: usize) -> [u8; N] {
    let mut o = [0u8; N];
    o.copy_from_slice(a.get(i..i + N).unwrap_or(&[0; N]));
    o
}

#[cfg(test)]
mod tests;
