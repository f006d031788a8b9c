//! The control socket: `ironpop --who`, `--kick` and `--stats` ask the running daemon over a Unix socket.
//!
//! * `protocol`: the request and reply lines (pure, fuzzed);
//! * `server`: the daemon's side, served from the acceptor's poll loop
//!   (what it answers, from the session table and the counters, is
//!   `daemon/control_answer.rs`: nothing here imports the daemon);
//! * `client`: the command-line side; `command`: the three commands;
//!   `render`: the tables and the OpenMetrics or Prometheus text they print;
//! * `locks`: `--who` without a daemon (inetd mode), from the session
//!   locks in `state_dir`.
//!
//! The socket's file is made as root, in `privsep::control_socket`.

pub mod client;
pub mod command;
pub mod locks;
pub mod protocol;
pub mod render;
pub mod server;
