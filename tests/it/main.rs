//! Integration tests: the real `ironpop` binary on loopback, driven by a raw client and real POP3 clients.

// The harness is a toolbox for every module; not each one uses every tool.
#[allow(dead_code)]
mod harness;

#[path = "../support/loopback.rs"]
mod loopback;

#[path = "../support/ports.rs"]
mod ports;

// Root-run fixtures, and the `require_root!` macro the modules after it use.
#[macro_use]
mod system;

mod check_config;
mod clients;
mod cluster;
mod cluster_kill;
mod crash;
mod daemon;
mod demo;
mod docs;
mod fail2ban;
mod fuzz_smoke;
mod maildrop;
mod operations;
#[cfg(feature = "pam")]
mod pam;
mod popa3d_compat;
mod protocol;
mod proxy;
mod retention;
mod safety;
mod server;
mod spool_index;
mod startup_recovery;
mod survival;
mod tls;
mod virtual_users;
