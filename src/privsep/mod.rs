//! Everything that runs with root privileges, and nothing else: read this folder to audit what stays root.
//!
//! ironpop starts as root only to bind ports, load keys, and fork the
//! privileged helpers; then the network process drops root for good. What
//! runs as root, and why:
//!
//! * `fork.rs` — at startup, forks the helpers (before any thread exists)
//!   and hands the network process over to `privileges.rs`, keeping only
//!   its ends of the helpers' channels; without root, sets up the
//!   in-process account database instead.
//! * `control_socket.rs` — at startup, makes the control socket's file
//!   (directory under /run, owner root, group `ironpop`, mode 0660).
//! * `privileges.rs` — drops root: `user`, `group` and its supplementary
//!   groups, no new privileges, not dumpable, and checks root cannot come
//!   back.
//! * `helper.rs` — the helper loop: one request at a time over a
//!   socketpair; checks a credential and, on success, opens the account's
//!   spool as root and passes its descriptor back. It holds no network
//!   socket. Before that, the first helper serves a second socketpair,
//!   the *startup channel*, and only it: startup recovery's "open this
//!   account's spool" (no credential: a crash left the update journal,
//!   not a password). The daemon closes the channel after startup
//!   recovery, before it accepts or reads any client; the helper then
//!   closes its end and serves the ordinary channel, which refuses that
//!   request. A socketpair cannot be reopened, so a daemon compromised
//!   through the network can never ask it. Even in the window the answer
//!   is only the account's own spool (its template expansion, the
//!   login's owner/one-link/no-symlink checks); the recovery itself runs
//!   unprivileged in the daemon, on the descriptor.
//! * `spool.rs` — opens the account's spool for the helper: no symbolic
//!   link, a regular file with one link, owned by the account.
//! * `helper_wire.rs` — the helper's bounded frame format, decoded without
//!   I/O: the helper's only input from the less trusted side.
//! * `accounts.rs` — the account database the helper consults: every way to
//!   an account goes through a credential checked here (`checked.rs`: the
//!   answer every backend gives it), except `startup_spool`, which only
//!   the startup channel reaches.
//! * `system.rs` (`/etc/shadow`, readable only by root), `pam.rs` (the PAM
//!   stack, which may need root), `passwd_file.rs` + `passwd_ids.rs` (a
//!   passwd file the admin may keep root-only), `crypt.rs` (libxcrypt
//!   hashing for all of them) — the account backends; `decoy.rs` and
//!   `system_decoy.rs` — what a login without a secret to check costs
//!   (a typical account's hash, derived from the backend's own entries);
//!   `file_stamp.rs` — when a cached passwd or shadow reading is stale.
//! * `pid_file_keeper.rs` — a process that waits for the detached daemon
//!   to end and removes its pid file, which the daemon cannot unlink after
//!   the drop.
//! * `cert_login.rs` — AUTH EXTERNAL's certificate chain checked against
//!   `tls_client_ca`, which the helper read as root at startup (with
//!   `pki/`'s verifier and name reading, which the handshake shares).
//!
//! Also as root, before the drop, outside this folder: only what it
//! produces (the configuration, the TLS keys, the bound sockets, the log's
//! connection, the pid file) outlives `privileges.rs`, not the code:
//!
//! * `main.rs`, `config/`, `logging.rs` — reading the configuration file
//!   and setting up the log.
//! * `daemon/preflight.rs` — the startup checks (paths, owners, modes);
//!   `daemon/fd_budget.rs` — raising the descriptor limit.
//! * `net/tls.rs` with `pki/files.rs` — reading the TLS certificate and
//!   key (the key file may be readable by root only).
//! * `daemon/listeners.rs` (or `daemon/systemd.rs` for sockets systemd
//!   passes) — binding the POP3 ports (below 1024).
//! * `daemon/detach.rs` — the pid file check, the fork into the background
//!   and writing the pid file.
//!
//! Inside the helper, from other folders: `pki/` (the client CA verifier
//! and certificate names, for `cert_login.rs`), `sasl/scram_secret.rs`
//! (stored SCRAM secrets read from the passwd file and the proof checked
//! against them), `account.rs`, `authenticator.rs`, `config/`, `limits.rs`
//! and `exhaustion.rs` — data types and pure code; their only I/O there
//! is `pki/files.rs` reading `tls_client_ca` at startup.
//!
//! Without root (`ironpop` started as an ordinary user, or `-i`/demo modes
//! that choose it) the same code runs in-process with the user's own rights.
//! The network side of the helper (its client, the per-session
//! `Authenticator` built on it in `auth/access.rs`, the failed-login
//! throttle) lives in `auth/`; nothing here imports it. The
//! `Authenticator` trait the account database implements is in
//! `authenticator.rs`, below both sides. Besides `crate::account`,
//! `crate::authenticator` and `crate::pki`, this folder uses only the
//! config, the limits, `exhaustion` and the SASL secrets: nothing of the
//! network side.

pub mod accounts;
pub mod cert_login;
pub mod checked;
pub mod control_socket;
pub mod crypt;
pub mod decoy;
pub mod error;
pub mod file_stamp;
pub mod fork;
pub mod helper;
pub mod helper_wire;
#[cfg(feature = "pam")]
pub mod pam;
pub mod passwd_file;
pub mod passwd_ids;
pub mod pid_file_keeper;
pub mod privileges;
pub mod spool;
pub mod system;
pub mod system_decoy;
