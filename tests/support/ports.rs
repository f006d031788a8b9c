//! Loopback ports for programs that must be told their port (HAProxy, socket activation), taken from below the kernel's ephemeral range so that no port-0 bind or outgoing connection of a parallel test can take them between the probe and the bind.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// The lowest port the kernel hands out by itself (`ip_local_port_range`);
/// 32768, Linux's default, when it cannot be read.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port that is free on every one of `hosts`, is none of `taken`, and
/// that the kernel never assigns on its own: a probe of port 0 returns a
/// port that another test's server, binding port 0 a moment later, may
/// receive before the program it was meant for binds it. Random within
/// [10000, ephemeral start) and probed on every host: a port another test
/// already bound fails the probe and another is drawn; two tests drawing
/// the same port at the same moment is possible but unlikely (1 in about
/// 22 000).
pub fn unassigned_port(hosts: &[Ipv4Addr], taken: &[u16]) -> u16 {
    let low = 10_000u16;
    let high = ephemeral_start().max(low + 1000);
    for _ in 0..200 {
        let draw = RandomState::new().build_hasher().finish();
        let port = low + (draw % u64::from(high - low)) as u16;
        if taken.contains(&port) {
            continue;
        }
        let probes: Vec<_> = hosts
            .iter()
            .map(|h| TcpListener::bind(SocketAddrV4::new(*h, port)))
            .collect();
        if probes.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port below {high} free on all of {hosts:?}");
}
