//! Every default and hard limit of ironpop, each with the reason for its value.

use std::time::Duration;

/// RFC 2449 §4: a command line is at most 255 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 255;

/// RFC 2449 §4 lets a server refuse longer lines; a SASL continuation line
/// carries base64 of a client message (SCRAM proofs, certificates are not
/// sent this way), so a few KiB is plenty and still bounded.
pub const MAX_SASL_LINE: usize = 8 * 1024;

/// RFC 1939 §4: arguments are at most 40 octets.
pub const MAX_ARGUMENT: usize = 40;

/// Bytes read from the client per read(2); small so that an idle session
/// costs little memory, large enough for a pipelined batch of commands.
pub const READ_BUFFER: usize = 4 * 1024;

/// Replies are assembled here and leave in one write; RETR streams through
/// it. 16 KiB keeps loopback throughput high without costing much per
/// session (the buffer is only grown while a reply is being sent).
pub const WRITE_BUFFER: usize = 16 * 1024;

/// mbox scanning reads the spool in blocks of this size (DESIGN.md: no mmap,
/// a truncated file would SIGBUS the whole daemon).
pub const SCAN_BLOCK: usize = 64 * 1024;

/// Worker thread stack: sessions keep no deep recursion and no large stack
/// buffers, and an idle session must cost little memory.
pub const WORKER_STACK: usize = 128 * 1024;

/// Default number of worker threads (config `max_sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 512;

/// Default sessions per client address (config `max_sessions_per_ip`): a
/// household behind one NAT address with a few devices fits comfortably.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 16;

/// Accepted connections waiting for a free worker; beyond this the client is
/// told `-ERR [SYS/TEMP] too many connections` instead of waiting unboundedly.
pub fn accept_queue_len(max_sessions: usize) -> usize {
    max_sessions.clamp(1, 256)
}

/// AUTHORIZATION idle limit: a client that has not logged in within a minute
/// is not going to.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// TRANSACTION idle limit: RFC 1939 §3 requires at least 10 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// RFC 1939 §3's minimum autologout timer; shorter values are accepted (for
/// tests) but `-t` warns about them.
pub const RFC1939_MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Delay before every failed-authentication reply: slows password guessing.
pub const DEFAULT_AUTH_FAIL_DELAY: Duration = Duration::from_secs(2);

/// How long to keep retrying a delivery lock held by the MDA.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// liblockfile's convention: a dotlock unchanged for 5 minutes is stale.
pub const DOTLOCK_STALE_AFTER: Duration = Duration::from_secs(300);

/// Failed commands in AUTHORIZATION before the connection is dropped: a
/// client that keeps failing is a scanner, not a user.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Unknown or malformed commands tolerated in a row before the connection is
/// dropped (a client speaking some other protocol at us).
pub const MAX_BAD_COMMANDS: u32 = 20;

/// A spool index is trusted for at most this long after the full scan
/// that built it: whatever its sampled checks cannot see (a size-neutral
/// edit of one message in the middle) is served at most this long, for
/// the price of one full scan a day.
pub const INDEX_FULL_SCAN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The largest spool index read or written (56 bytes a message: about
/// 4.8 million messages). The index is read whole into memory at login;
/// a spool beyond this is simply scanned every time.
pub const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// `expire_days` above this is refused as a typo: 100 years.
pub const MAX_EXPIRE_DAYS: u64 = 36_500;

/// `login_delay` above this is refused as a typo: one day (RFC 2449 §6.8
/// clients poll; a longer delay locks users out for good).
pub const MAX_LOGIN_DELAY_SECS: u64 = 24 * 3600;
