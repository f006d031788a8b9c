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

/// From this size on a full scan runs in two halves at once
/// (`mailbox/split_scan.rs`): a first login to a 1 GB spool then takes
/// about half its 0.3 s. Below it a scan takes a few tens of milliseconds
/// and a second thread would cost more than it saves.
pub const SPLIT_SCAN_MIN_BYTES: u64 = 64 << 20;

/// How far past the middle of the spool a message boundary is looked for
/// to split the scan; a message longer than that means one scan.
pub const SPLIT_SEARCH_MAX_BYTES: u64 = 4 << 20;

/// Worker thread stack: sessions keep no deep recursion and no large stack
/// buffers, and an idle session must cost little memory.
pub const WORKER_STACK: usize = 128 * 1024;

/// Default number of worker threads (config `max_sessions`): concurrent
/// sessions. An idle session costs 20–35 KiB, so 1024 of them stay under
/// 40 MiB; a flood of idle unauthenticated connections no longer fills them
/// (a newcomer evicts the idlest), so the bound is for logged-in sessions
/// and logins in progress. Its descriptor budget (see [`FDS_PER_SESSION`])
/// is 7 488, inside the packaged unit's `LimitNOFILE=16384` and the 524 288
/// hard limit systemd gives a Debian service.
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// Descriptors a logged-in session holds while idle: its socket (all an
/// unauthenticated session has; shutdown, eviction and `--kick` wake its
/// worker through a weak reference to it, not a second descriptor), the
/// spool and the session lock.
pub const FDS_PER_IDLE_SESSION: u64 = 3;

/// Descriptors a session opens besides those while it holds the delivery
/// locks (the scan at login, the update at QUIT): a duplicate of the spool
/// descriptor for the flock lock (only when `lock_methods` names it; the
/// fcntl lock is taken on the session's own descriptor), the dotlock (kept
/// open so that its keeper thread refreshes it through the descriptor),
/// and the journal and its directory, opened to fsync it (an update, or a
/// recovery at login). Measured with strace: 3 with the default
/// `fcntl dotlock`.
pub const FDS_WHILE_LOCKED: u64 = 4;

/// Descriptors one session holds at most.
pub const FDS_PER_SESSION: u64 = FDS_PER_IDLE_SESSION + FDS_WHILE_LOCKED;

/// Descriptors a connection waiting in the queue holds: its socket.
pub const FDS_PER_QUEUED: u64 = 1;

/// Descriptors the daemon holds besides its sessions: stdio, listeners,
/// epoll, signalfd, waker, up to 8 helper channels, syslog and notify
/// sockets, the pid file, and files read on SIGHUP (config, TLS), with room
/// to spare.
pub const FDS_FIXED: u64 = 64;

/// Default sessions per client address (config `max_sessions_per_ip`): a
/// household behind one NAT address with a few devices fits comfortably.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 16;

/// Accepted connections waiting for a free worker; beyond this the client is
/// told `-ERR [SYS/TEMP] server busy, try again` instead of waiting
/// unboundedly. A waiting connection normally gets the worker of an idle
/// unauthenticated session it evicted, within milliseconds; the queue only
/// fills when every worker holds a logged-in session.
pub fn accept_queue_len(max_sessions: usize) -> usize {
    max_sessions.clamp(1, 256)
}

/// When accept(2) fails for want of file descriptors the pending
/// connection stays in the kernel's queue and, with edge-triggered polling,
/// no new event comes for it: the acceptor retries on this timer instead of
/// spinning.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How often queued connections are checked against [`MAX_QUEUE_WAIT`].
pub const QUEUE_CHECK: Duration = Duration::from_secs(1);

/// How long a privileged helper waits before retrying a send or receive
/// the kernel refused for want of buffers or memory: long enough for the
/// daemon to drain its side, short against a login's time.
pub const HELPER_EXHAUSTION_PAUSE: Duration = Duration::from_millis(20);

/// Sends a helper tries per frame while socket buffers are short, before
/// the spool's descriptor is given up (the login gets `[SYS/TEMP]`).
pub const HELPER_SEND_ATTEMPTS: u32 = 5;

/// Longest a connection waits in the queue for a worker before it is told
/// `-ERR [SYS/TEMP] server busy, try again`: well inside the 30–60 s a
/// POP3 client waits for a greeting, so it sees a reason, not a timeout.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);

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

/// Bytes one round of an update moves (R): the journal of an update needs
/// R bytes of `state_dir` plus 32 per deleted message and per round,
/// whatever the spool's size; each round costs a few fsyncs, so a 1 GiB
/// update makes ~1000 of them. Unit tests use 64 KiB so that their small
/// spools take several rounds.
pub const JOURNAL_ROUND: u64 = if cfg!(test) { 64 * 1024 } else { 1024 * 1024 };

/// Bytes at the end of an update's range that its journal hashes and
/// recovery checks (the spool's last bytes before N, which the update
/// never writes): enough that a journal made without reading the spool
/// cannot pass; little enough that QUIT and recovery read it in no time.
pub const JOURNAL_TAIL_CHECK: u64 = 64 * 1024;

/// The fewest bytes that tail check must cover before startup recovery
/// has the privileged helper open a spool for a journal: a forger knows
/// a few bytes of any mbox ("From " at offset 0), not 64.
pub const JOURNAL_TAIL_CHECK_MIN: u64 = 64;

/// Another party's dotlock unchanged this long is stale: no shorter than
/// the common MDAs' own rules (Postfix 500 s, procmail 1024 s, Exim's
/// `lockfile_timeout` 30 min), so a live MDA writing a big message never
/// loses its lock to us. Our own locks are touched every minute.
pub const DOTLOCK_STALE_AFTER: Duration = Duration::from_secs(30 * 60);

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

/// The largest spool index read or written (72 bytes a message: about
/// 3.7 million messages). The index is read whole into memory at login;
/// a spool beyond this is simply scanned every time.
pub const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// `expire_days` above this is refused as a typo: 100 years.
pub const MAX_EXPIRE_DAYS: u64 = 36_500;

/// `login_delay` above this is refused as a typo: one day (RFC 2449 §6.8
/// clients poll; a longer delay locks users out for good).
pub const MAX_LOGIN_DELAY_SECS: u64 = 24 * 3600;

// Connections.

/// Capacity kept while a session is idle: a greeting or a short reply fits,
/// and an idle session does not pin a full `limits::WRITE_BUFFER`.
pub const IDLE_WRITE_CAPACITY: usize = 512;

/// The goodbye after a timeout must not hold the worker on a client that
/// stopped reading.
pub const GOODBYE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The TLS close_notify at the end of a session is best effort: a client
/// that stopped reading holds the worker no longer than this.
pub const CLOSE_NOTIFY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How far the socket's read timeout may be off the time left before the
/// deadline (at most this, and at most an eighth of the time left).
pub const READ_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// A handshake is a few round trips; a client that needs longer is stuck
/// or hostile, and holds a worker thread meanwhile. `auth_timeout` caps it
/// further.
pub const MAX_HANDSHAKE_TIME: Duration = Duration::from_secs(30);

/// Records the server buffers beyond what it has sent: RETR streams through
/// a bounded output buffer, so a few records' worth is plenty.
pub const TLS_SEND_BUFFER: usize = 64 * 1024;

/// Most PROXY v2 address + TLV bytes accepted after the fixed part. The
/// spec allows 65535; addresses need at most 216 (AF_UNIX), so 512 leaves
/// room for the usual TLVs while bounding what one connection makes us
/// buffer.
pub const PROXY_V2_MAX_PAYLOAD: usize = 512;

/// Longest wait for the header: a proxy sends it at once, so a slow one is
/// a stuck connection holding a worker (`auth_timeout` caps it further).
pub const MAX_PROXY_HEADER_WAIT: Duration = Duration::from_secs(10);

// Credentials.

/// Account names are short; anything longer is not a login name.
pub const MAX_CERT_IDENTITY: usize = 255;

/// RFC 7677 §4 and Dovecot: at least 4096 iterations.
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// Dovecot allows up to INT_MAX; every USER/PASS login against such an
/// entry would then hold a worker for minutes, so we refuse beyond this.
pub const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// Salts longer than this are not something any tool writes.
pub const MAX_SCRAM_SALT: usize = 256;

/// RFC 4616 §2: each field is at most 255 octets.
pub const MAX_PLAIN_FIELD: usize = 255;

/// RFC 4616's bound for user names serves here too.
pub const MAX_SCRAM_USER: usize = 255;

/// Most certificates in a client chain (end entity + intermediates).
pub const MAX_CERT_CHAIN: usize = 4;

/// Largest DER certificate accepted (real ones are 1–2 KiB).
pub const MAX_CERT: usize = 16 * 1024;

/// `CRYPT_MAX_PASSPHRASE_SIZE` in `<crypt.h>` counts the terminating NUL.
pub const MAX_PASSWORD: usize = 511;

// Failed logins per client address (auth/throttle.rs; the base delay is
// `auth_fail_delay`).

/// The delay after a failure doubles with each failure from the same
/// address up to this: a guesser gets two tries a minute, and a client
/// still waits (they time out after a minute or more).
pub const THROTTLE_MAX_DELAY: Duration = Duration::from_secs(30);

/// Failures in a row after which the address is refused: more than anyone
/// mistyping a password makes, few for a guesser.
pub const THROTTLE_BLOCK_AFTER: u32 = 10;

/// How long a blocked address stays refused: guessing becomes slow, and
/// users sharing the address (NAT) are not locked out for long.
pub const THROTTLE_BLOCK_FOR: Duration = Duration::from_secs(300);

/// Failures older than this are forgotten: a user who mistyped earlier
/// starts afresh.
pub const THROTTLE_FORGET_AFTER: Duration = Duration::from_secs(900);

/// Addresses remembered at most, the stalest forgotten first: about 1 MiB,
/// and a client with many addresses cannot grow it.
pub const THROTTLE_MAX_ADDRESSES: usize = 16 * 1024;

// Files read at startup.

/// A certificate chain, key or CA bundle is a few KiB; refuse to read
/// something that is clearly not one (a device, a huge file by mistake).
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A config file larger than this is not a config file (a mistyped `-f
/// /dev/zero` must not eat memory).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Longest config line accepted; anything longer is a mistake (or binary).
pub const MAX_CONFIG_LINE: usize = 4096;

/// A passwd file larger than this is refused: it would cost every login a
/// long re-read, and no real deployment comes near it.
pub const MAX_PASSWD_FILE: u64 = 64 * 1024 * 1024;

/// Longer lines are logged and skipped (a crypt string is ~100 bytes; the
/// extra fields may carry some userdb settings).
pub const MAX_PASSWD_LINE: usize = 4096;

/// A shadow or login.defs file bigger than this is not read (a sane one
/// is kilobytes).
pub const MAX_SYSTEM_FILE: u64 = 16 * 1024 * 1024;

// Configuration bounds.

// Upper bounds keep every later `Instant + Duration` and thread count sane;
// a value above one is refused as a typo.

/// `max_sessions`, `max_sessions_per_ip`: each session is a thread and a
/// few descriptors; far beyond what one machine serves.
pub const MAX_SESSIONS_LIMIT: u64 = 100_000;

/// `auth_timeout`, `idle_timeout`: a day; longer only pins idle workers.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `auth_fail_delay`: a minute; every failed login holds a worker that long.
pub const MAX_FAIL_DELAY_SECS: u64 = 60;

/// `lock_timeout`: an hour; a login waits this long for the MDA's lock.
pub const MAX_LOCK_TIMEOUT_SECS: u64 = 3_600;

// Privileged helper.

/// A helper answers within this time or is considered hung: even a
/// costly hash takes well under a second.
pub const HELPER_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a helper whose reply timed out is waited for before its
/// channel is given up (the helper reads end of file and exits if its
/// lookup ever returns; when every channel is given up the daemon stops;
/// looked at when a receive times out, so up to one
/// [`HELPER_REPLY_TIMEOUT`] later): a PAM, NSS or LDAP lookup still
/// hanging after this long is not coming back, while one that merely hit
/// a slow server has long returned.
pub const HELPER_LATE_REPLY_WAIT: Duration = Duration::from_secs(600);

/// Longest a login waits for a free helper before it gets `[SYS/TEMP]`:
/// a helper is busy only for a login check (well under a second) or
/// while its late reply is awaited, so this long means the helpers are
/// stuck or swamped; the client hears why well
/// inside the 30–60 s it waits for an answer.
pub const HELPER_QUEUE_WAIT: Duration = Duration::from_secs(20);

/// How long the answer to "does any account have a SCRAM secret?" is
/// reused: every CAPA asks, and unauthenticated clients must not be able to
/// keep the helpers (shared with the costly hash checks) busy with it. An
/// edit of the passwd file shows within this time.
pub const OFFERS_SCRAM_TTL: Duration = Duration::from_secs(5);

/// Most helper processes: each holds a yescrypt hash (16 MiB) while it
/// works, and more than the machine has cores only queues in the kernel.
pub const MAX_HELPERS: usize = 8;

/// Fewest helper processes, whatever the core count: with one, a single
/// hung account lookup would stop every login until it returns.
pub const MIN_HELPERS: usize = 2;

/// Longest user name on the wire (Linux allows 32; passwd files more).
pub const MAX_HELPER_USER: usize = 256;

/// Longest spool path (PATH_MAX).
pub const MAX_HELPER_PATH: usize = 4096;

/// Longest explanatory text (a refusal reason, a backend error).
pub const MAX_HELPER_TEXT: usize = 1024;

/// Longest SCRAM AuthMessage: three client/server messages, each at most
/// one SASL line.
pub const MAX_AUTH_MESSAGE: usize = 3 * MAX_SASL_LINE;

/// The largest frame either side sends or accepts: room for a client
/// certificate chain of [`MAX_CERT_CHAIN`] certificates of [`MAX_CERT`] bytes.
pub const MAX_HELPER_FRAME: usize = MAX_CERT_CHAIN * (MAX_CERT + 2) + 1024;

// Daemon.

/// More passed sockets than this is a misconfiguration, not a service.
pub const MAX_LISTEN_FDS: usize = 64;

/// A worker with nothing to do for this long exits, so a burst of
/// connections does not leave hundreds of idle threads behind.
pub const IDLE_WORKER_LINGER: Duration = Duration::from_secs(60);

/// Pending connections the kernel holds for us; the acceptor drains them
/// quickly, this only absorbs bursts.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Log lines a second about refused connections (then one line with the
/// count left out): a flood shows in the log without filling it.
pub const REFUSAL_LOG_LINES_PER_SECOND: u32 = 5;

/// Log lines a second about failures of accept(2) (out of descriptors): it
/// fails again at every wakeup, and one line says it.
pub const ACCEPT_ERROR_LOG_LINES_PER_SECOND: u32 = 1;

/// After SIGTERM, sessions in the middle of a command get this long to
/// finish it; idle sessions are closed at once.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After the grace period every connection is cut; sessions still busy
/// with the mailbox (an update in progress) get this long to finish it.
pub const SHUTDOWN_FINISH: Duration = Duration::from_secs(20);

// Control socket (ironpop --who/--kick/--stats and the daemon side).

/// The daemon answers from its poll loop at once; this only guards
/// against a daemon that is stuck.
pub const CONTROL_REPLY_TIME: Duration = Duration::from_secs(10);

/// Conversations at once: an administrator and a metrics timer need a few.
pub const CONTROL_MAX_CLIENTS: usize = 4;

/// A whole conversation, from accept to the last octet of the reply.
pub const CONTROL_CLIENT_TIME: Duration = Duration::from_secs(5);

/// A lock file's line is short; more is not a lock file of ours.
pub const LOCK_FILE_MAX_LINE: u64 = 4096;

/// The longest request line, LF included: a command and a user name.
pub const CONTROL_MAX_REQUEST: usize = 256;

/// The longest reply: what a client reads, and what the daemon makes. A
/// `WHO` line is about 100 octets (up to ~400 with a 255-octet user name),
/// so this holds tens of thousands of sessions and still bounds memory;
/// with more (`max_sessions` goes up to [`MAX_SESSIONS_LIMIT`]) the daemon
/// sends the lines that fit and a last line that counts the rest.
pub const CONTROL_MAX_REPLY: usize = 8 * 1024 * 1024;

/// The longest `KICK` target: user names and addresses are far shorter.
pub const CONTROL_MAX_TARGET: usize = 200;

/// Unread input taken before a conversation is closed (closing with input
/// unread would reset the client before it reads the reply); bounded so a
/// client that keeps sending cannot hold the poll loop.
pub const CONTROL_DRAIN_AT_CLOSE: usize = 64 * 1024;

// Mailbox.

/// First pause before retrying a delivery lock someone else holds: an MDA
/// holds it for milliseconds per message, so the first retry comes soon.
pub const DELIVERY_LOCK_FIRST_RETRY: Duration = Duration::from_millis(5);

/// The retry pause doubles up to this: a long delivery is polled a few
/// times a second, not spun on, until [`DEFAULT_LOCK_TIMEOUT`] (`lock_timeout`).
pub const DELIVERY_LOCK_MAX_RETRY: Duration = Duration::from_millis(200);

/// How often a dotlock we hold is touched: well inside
/// [`DOTLOCK_STALE_AFTER`], so no MDA takes it as stale (unit tests: often
/// enough to see it happen).
pub const DOTLOCK_TOUCH_EVERY: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(60)
};

/// Random messages re-scanned at login when the stat hint says nothing was
/// written since the index was saved: a cheap spot check.
pub const INDEX_SAMPLES_QUIET: usize = 16;

/// Random messages re-scanned at login when the spool was written since
/// (new mail, or anything else): more, because something did change.
pub const INDEX_SAMPLES_CHANGED: usize = 64;

/// A sampled message longer than this has only its boundaries checked, so
/// the login-time check costs at most a few MiB of reading.
pub const INDEX_SAMPLE_MAX_BYTES: u64 = 64 * 1024;

/// RETR and TOP rescan a message up to this long before answering `+OK`
/// (at scan speed, a fraction of sending it); longer ones have their
/// boundaries checked only.
pub const RETR_CHECK_MAX_BYTES: u64 = 1024 * 1024;

/// RETR/TOP read size: 64 KiB preads take a quarter of the syscalls of the
/// 16 KiB reply buffer, and each encoded chunk goes to the socket in one
/// write (`Output` passes a write larger than its buffer straight through).
pub const RETR_READ_BLOCK: usize = 64 * 1024;

/// Most deleted ranges or rounds one journal may describe (a sanity bound
/// for reading a journal: 2^24 × 16 bytes = 256 MiB).
pub const MAX_JOURNAL_ENTRIES: u64 = 1 << 24;

/// Longest spool key kept readable in `state_dir` file names (NAME_MAX is
/// 255; room for the suffixes); longer ones are hashed.
pub const MAX_READABLE_STATE_KEY: usize = 200;
