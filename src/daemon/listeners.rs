//! Listening sockets: bind every configured address, IPv4 and IPv6 side by side.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

use crate::daemon::error::DaemonError;
use crate::limits::LISTEN_BACKLOG;

/// A bound, non-blocking listening socket.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    /// The resolved address (port 0 in the config becomes the real port).
    pub local: SocketAddr,
    /// Implicit TLS (`listen_tls`, POP3S): the handshake comes first.
    pub tls: bool,
}

/// Binds every address in `addrs` and logs `listening on ADDR (pop3)` for
/// each, with the port actually bound.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<Listener>, DaemonError> {
    if addrs.is_empty() {
        return Err(DaemonError::NoListeners);
    }
    bind_each(addrs, false)
}

/// Binds `addrs` as plain POP3 (`tls` false) or implicit-TLS listeners and
/// logs `listening on ADDR (pop3)` or `(pop3s)` for each.
pub fn bind_each(addrs: &[SocketAddr], tls: bool) -> Result<Vec<Listener>, DaemonError> {
    addrs
        .iter()
        .map(|&addr| {
            let mut listener = bind(addr).map_err(|source| DaemonError::Listen { addr, source })?;
            listener.tls = tls;
            let kind = if tls { "pop3s" } else { "pop3" };
            log::info!("listening on {} ({kind})", listener.local);
            Ok(listener)
        })
        .collect()
}

/// One listening socket. Built by hand rather than with
/// `TcpListener::bind` because `[::]` needs IPV6_V6ONLY set before bind to
/// coexist with `0.0.0.0` on the same port.
pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // A restarted daemon must not wait out TIME_WAIT of its old sessions.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(
        &fd,
        Backlog::new(LISTEN_BACKLOG).unwrap_or(Backlog::MAXCONN),
    )?;
    let socket = TcpListener::from(fd);
    let local = socket.local_addr()?;
    Ok(Listener {
        socket,
        local,
        tls: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn ephemeral_port_is_resolved_and_nonblocking() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(l.local.port(), 0);
        let err = l.socket.accept().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        TcpStream::connect(l.local).unwrap();
    }

    #[test]
    fn ipv6_any_coexists_with_ipv4_any_on_one_port() {
        let v4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let v6 = match bind(SocketAddr::new("::".parse().unwrap(), v4.local.port())) {
            Ok(l) => l,
            // Hosts without IPv6 cannot run this test.
            Err(e) if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => return,
            Err(e) => panic!("[::] on the same port failed: {e}"),
        };
        assert_eq!(v6.local.port(), v4.local.port());
    }

    #[test]
    fn address_in_use_is_explained() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_all(&[l.local]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on {}", l.local)),
            "{text}"
        );
        assert!(text.contains("already running"), "{text}");
        assert!(matches!(bind_all(&[]), Err(DaemonError::NoListeners)));
    }
}
