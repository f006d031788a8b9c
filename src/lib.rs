//! ironpop: a POP3 server for Unix mbox spools.
//!
//! Architecture in brief (see DESIGN.md for the full map):
//!
//! * `daemon` starts up (config, listeners, privilege drop), runs a mio poll
//!   loop over the listening sockets and hands each accepted connection to a
//!   bounded pool of worker threads.
//! * Each worker drives one blocking session: `net` reads bounded command
//!   lines from a [`net::Conn`] (plain TCP, TLS or stdin/stdout) and feeds
//!   them to the pure POP3 state machine in `pop3`, which answers through an
//!   output buffer that the driver flushes once per batch of commands.
//! * `privsep` holds everything that runs as root: the fork of the
//!   privileged helpers, the privilege drop, and the helper, which checks
//!   credentials against the account backends (passwd-file, system, PAM)
//!   and opens the account's spool. `auth` is the network side: the
//!   helper's client, `auth::access` that gives each session its
//!   `authenticator::Authenticator` (the helper's client, or the account
//!   database in-process without root), and the failed-login throttle; a
//!   login hands the session an `account::Login`, the account with its
//!   opened spool, in one value.
//! * `mailbox` turns that spool into a maildrop: scans it once, serves
//!   messages from it and applies deletions at QUIT without losing any
//!   other byte. `sasl` holds the AUTH mechanisms as pure state machines;
//!   `account` the few types every side of a login shares; `pki` the TLS
//!   files and the client-certificate checks both the handshake and the
//!   account database use.

pub mod account;
pub mod auth;
pub mod authenticator;
pub mod cli;
pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod exhaustion;
pub mod limits;
pub mod logging;
pub mod mailbox;
pub mod net;
pub mod pki;
pub mod pop3;
pub mod privsep;
pub mod sasl;
#[cfg(test)]
mod test_support;
