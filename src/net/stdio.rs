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
    input: Side,
    output: Side,
}

/// One direction: its descriptor, what poll waits for on it, and how long.
#[derive(Debug)]
struct Side {
    file: File,
    ready_for: PollFlags,
    // A Cell: `Conn` sets timeouts through `&self`, like a TcpStream.
    timeout: Cell<Option<Duration>>,
}

impl Side {
    fn new(file: File, ready_for: PollFlags) -> Side {
        Side {
            file,
            ready_for,
            timeout: Cell::new(None),
        }
    }

    /// Waits until this side is ready, or fails with `TimedOut`. A timeout
    /// longer than poll's u16 milliseconds simply waits again: the driver
    /// loops on TimedOut until its own deadline.
    fn wait(&self) -> io::Result<()> {
        wait(self.file.as_fd(), self.ready_for, self.timeout.get())
    }
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
            input: Side::new(input, PollFlags::POLLIN),
            output: Side::new(output, PollFlags::POLLOUT),
        }
    }

    /// How long a read may wait; never fails (a `Result` like a TcpStream's).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.input.timeout.set(t);
        Ok(())
    }

    /// How long a write may wait; never fails.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.output.timeout.set(t);
        Ok(())
    }

    /// The client's address when stdin is an IP socket.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        inet(getpeername::<SockaddrStorage>(self.input.file.as_raw_fd()).ok()?)
    }

    /// Our address when stdin is an IP socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        inet(getsockname::<SockaddrStorage>(self.input.file.as_raw_fd()).ok()?)
    }

    /// The descriptors in use (a forked helper must not keep them).
    pub fn raw_fds(&self) -> (i32, i32) {
        (self.input.file.as_raw_fd(), self.output.file.as_raw_fd())
    }

    /// Best effort: ends both directions if stdin is a socket.
    pub fn shutdown(&self) {
        let _ = shutdown(self.input.file.as_raw_fd(), Shutdown::Both);
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
        self.input.wait()?;
        self.input.file.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.wait()?;
        self.output.file.write(buf)
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
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
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
