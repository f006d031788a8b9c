//! A TCP connection from a chosen loopback address: each of 127/8 is its own client address to the server (per-address limit, throttle, eviction). Shared by the integration tests and the load bench.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;

use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

/// Connects to `addr` (IPv4) from `src`, one of 127/8.
pub fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = addr else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// The `n`th client address of 127/8 after 127.0.0.1 (n < 2^24 - 2).
pub fn client_address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x7f00_0002 + n)
}
