//! inetd mode's transport: the client on stdin/stdout (one socket under inetd/systemd, anything under a test), with poll-based timeouts.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getpeername, getsockname, shutdown, Shutdown, SockaddrStorage};

/// Descriptors 0 and 1, duplicated so the session owns them.
#[derive(Debug)]
pub struct Stdio {
    input: File,
    output: File,
    // Cells: `Conn` sets timeouts through `&self`, like a TcpStream.
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

impl Stdio {
    /// Takes duplicates of the process's stdin and stdout.
    pub fn from_process() -> io::Result<Stdio> {
        let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        Ok(Stdio::new(input, output))
    }

    pub fn new(input: File, output: File) -> Stdio {
        Stdio {
            input,
            output,
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.read_timeout.set(t);
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        self.write_timeout.set(t);
    }

    /// The client's address when stdin is an IP socket.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        inet(getpeername::<SockaddrStorage>(self.input.as_raw_fd()).ok()?)
    }

    /// Our address when stdin is an IP socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        inet(getsockname::<SockaddrStorage>(self.input.as_raw_fd()).ok()?)
    }

    /// The descriptors in use (a forked helper must not keep them).
    pub fn raw_fds(&self) -> (i32, i32) {
        (self.input.as_raw_fd(), self.output.as_raw_fd())
    }

    /// Best effort: ends both directions if stdin is a socket.
    pub fn shutdown(&self) {
        let _ = shutdown(self.input.as_raw_fd(), Shutdown::Both);
    }
}

fn inet(addr: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    addr.as_sockaddr_in6()
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

/// Waits until `fd` is ready for `events`, or fails with `TimedOut`.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> io::Result<()> {
    let Some(timeout) = timeout else {
        return Ok(());
    };
    // The whole timeout (idle_timeout can be many minutes): a write has no
    // retry loop above it, unlike a read.
    let limit =
        PollTimeout::try_from(timeout.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, limit) {
        Ok(0) => Err(io::ErrorKind::TimedOut.into()),
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EINTR) => Err(io::ErrorKind::Interrupted.into()),
        Err(e) => Err(e.into()),
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A timeout longer than poll's u16 milliseconds simply waits again:
        // the driver loops on TimedOut until its own deadline.
        wait(
            self.input.as_fd(),
            PollFlags::POLLIN,
            self.read_timeout.get(),
        )?;
        self.input.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        wait(
            self.output.as_fd(),
            PollFlags::POLLOUT,
            self.write_timeout.get(),
        )?;
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn round_trip_and_timeout_over_a_socketpair() {
        let (ours, mut client) = UnixStream::pair().unwrap();
        let input = File::from(std::os::fd::OwnedFd::from(ours.try_clone().unwrap()));
        let output = File::from(std::os::fd::OwnedFd::from(ours));
        let mut s = Stdio::new(input, output);
        assert_eq!(s.peer_addr(), None, "a Unix socket has no IP peer");
        s.write_all(b"+OK\r\n").unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"+OK\r\n");
        s.set_read_timeout(Some(Duration::from_millis(20)));
        let e = s.read(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        client.write_all(b"QUIT\r\n").unwrap();
        assert_eq!(s.read(&mut got).unwrap(), 5);
        s.shutdown();
        assert_eq!(client.read(&mut got).unwrap(), 0, "shut down");
    }

    #[test]
    fn tcp_stdin_reports_addresses() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let f = |s: &std::net::TcpStream| {
            File::from(std::os::fd::OwnedFd::from(s.try_clone().unwrap()))
        };
        let s = Stdio::new(f(&server), f(&server));
        assert_eq!(s.peer_addr(), Some(c.local_addr().unwrap()));
        assert_eq!(s.local_addr(), Some(l.local_addr().unwrap()));
    }
}
