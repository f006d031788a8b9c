//! `Socket`: a session's TCP connection, with weak handles other threads use to wake its worker (shutdown, eviction, `--kick`) without a second descriptor.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Deref;
use std::sync::{Arc, Weak};

/// The one descriptor of a client connection, owned by the session that
/// serves it. The descriptor is closed when the last strong reference goes:
/// the session's, or a [`Waker`]'s for the instant it is shutting it down.
pub struct Socket(Arc<TcpStream>);

/// A handle that can shut a [`Socket`] down but does not keep it open.
///
/// Why this is safe where a stored descriptor number would not be: a
/// waker calls shutdown(2) only through a strong reference it has just
/// upgraded to, and the descriptor cannot be closed while any strong
/// reference exists. So it can never hit a number that was closed and
/// handed to another file in between; once the session's socket is gone
/// the upgrade fails and the waker does nothing. (A `try_clone` did the
/// same with a second descriptor per session.)
#[derive(Clone)]
pub struct Waker(Weak<TcpStream>);

impl Socket {
    pub fn new(stream: TcpStream) -> Socket {
        Socket(Arc::new(stream))
    }

    pub fn waker(&self) -> Waker {
        Waker(Arc::downgrade(&self.0))
    }
}

impl Waker {
    /// Shuts the socket down `how` if its session still holds it; `false`
    /// once it is closed.
    pub fn shutdown(&self, how: Shutdown) -> bool {
        match self.0.upgrade() {
            Some(stream) => {
                let _ = stream.shutdown(how);
                true
            }
            None => false,
        }
    }
}

impl From<TcpStream> for Socket {
    fn from(stream: TcpStream) -> Socket {
        Socket::new(stream)
    }
}

impl Deref for Socket {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.0
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    #[test]
    fn a_waker_wakes_a_blocked_reader() {
        let (server, _client) = pair();
        let mut socket = Socket::new(server);
        let waker = socket.waker();
        let reader = std::thread::spawn(move || socket.read(&mut [0u8; 8]).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(waker.shutdown(Shutdown::Read));
        assert_eq!(reader.join().unwrap(), 0, "the read sees end of file");
    }

    /// The race rule: once the session's socket is closed, a waker never
    /// touches a descriptor again, though its number is free for the next
    /// connection (which the daemon would take at once).
    #[test]
    fn a_waker_never_reaches_a_reused_descriptor() {
        let (server, _client) = pair();
        let socket = Socket::new(server);
        let waker = socket.waker();
        drop(socket);
        let (next, mut next_client) = pair();
        assert!(!waker.shutdown(Shutdown::Both), "nothing to wake any more");
        next_client.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            (&next).read(&mut buf).unwrap(),
            1,
            "the next connection is untouched"
        );
    }
}
