//! Reading a PROXY header off a trusted proxy's socket: exactly the header's bytes, under a deadline.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::net::proxy::{self, Header, Parsed, ProxyError};

/// Why no usable header was read; the connection is closed.
#[derive(Debug)]
pub enum ReadError {
    Invalid(ProxyError),
    Timeout(Duration),
    Eof,
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Invalid(e) => e.fmt(f),
            ReadError::Timeout(t) => {
                write!(f, "no complete PROXY header within {}s", t.as_secs().max(1))
            }
            ReadError::Eof => f.write_str("connection closed before a complete PROXY header"),
            ReadError::Io(e) => write!(f, "reading the PROXY header failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads and decodes the header at the start of `stream`, asking the
/// socket only for bytes the header must still contain, so the POP3
/// command or TLS ClientHello behind it stays in the socket for the
/// session. Leaves a read timeout set on the socket; callers reset it.
pub fn read_header(stream: &TcpStream, wait: Duration) -> Result<Header, ReadError> {
    let mut buf = [0u8; proxy::MAX_HEADER];
    let mut have = 0usize;
    let deadline = Instant::now() + wait;
    loop {
        let need = match proxy::parse(buf.get(..have).unwrap_or_default()) {
            Ok(Parsed::Complete { header, .. }) => return Ok(header),
            Ok(Parsed::NeedMore(n)) => n,
            Err(e) => return Err(ReadError::Invalid(e)),
        };
        let Some(dest) = buf.get_mut(have..have.saturating_add(need)) else {
            // The parser bounds every header by MAX_HEADER; defensive.
            return Err(ReadError::Invalid(ProxyError::V1TooLong));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout(wait));
        }
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(ReadError::Io)?;
        match (&*stream).read(dest) {
            Ok(0) => return Err(ReadError::Eof),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Timeout(wait))
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn reads_a_trickled_header_and_leaves_the_rest() {
        let (mut client, server) = pair();
        let writer = thread::spawn(move || {
            for piece in [
                &b"PROXY TCP4 192.0"[..],
                b".2.7 10.0.0.1 5",
                b"000 110\r",
                b"\nCAPA\r\n",
            ] {
                client.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            client
        });
        let header = read_header(&server, Duration::from_secs(10)).unwrap();
        assert_eq!(
            header,
            Header::Proxied {
                source: "192.0.2.7:5000".parse().unwrap(),
                destination: "10.0.0.1:110".parse().unwrap(),
            }
        );
        let _client = writer.join().unwrap();
        let mut rest = [0u8; 6];
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (&server).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"CAPA\r\n");
    }

    #[test]
    fn silence_times_out_and_garbage_or_eof_is_refused() {
        let (_client, server) = pair();
        let started = Instant::now();
        let err = read_header(&server, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ReadError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let (mut client, server) = pair();
        client.write_all(b"USER bob\r\nPASS x\r\n").unwrap();
        let err = read_header(&server, Duration::from_secs(10)).unwrap_err();
        assert!(
            matches!(err, ReadError::Invalid(ProxyError::NoHeader)),
            "{err}"
        );

        let (mut client, server) = pair();
        client.write_all(b"PROXY TCP4").unwrap();
        drop(client);
        let err = read_header(&server, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, ReadError::Eof), "{err}");
    }
}
