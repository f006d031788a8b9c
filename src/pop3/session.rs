//! The POP3 session state machine: one line in, replies out, no I/O of its own.
//!
//! Every line goes through the same steps: parse the keyword, pass the one
//! gate (state and policy), parse the arguments, dispatch. The AUTHORIZATION
//! commands live here; the TRANSACTION commands in `transaction.rs`. STLS
//! and SASL will add a `Control` variant and a `Phase` each; the gate and
//! the dispatch are where they slot in.

use std::io::{self, Write};
use std::sync::Arc;

use super::capa::{self, CapaContext};
use super::command::{self, Command, Verb};
use super::reply::{self, RespCode};
use super::transaction::{Step, Transaction};
use crate::auth::{AuthOutcome, Authenticator};
use crate::limits;
use crate::mailbox::{MailboxError, MaildropOpener};

/// What a session needs from the rest of the daemon.
pub struct Backend {
    pub auth: Arc<dyn Authenticator>,
    pub maildrops: Arc<dyn MaildropOpener>,
}

/// Per-connection facts the session cannot know by itself.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// USER/PASS permitted on this connection now.
    pub plaintext_allowed: bool,
    /// Plain connection and TLS configured (the TLS issue uses it).
    pub stls_offered: bool,
    pub tls_active: bool,
    /// Client address for log lines (`rip=`), e.g. "203.0.113.5".
    pub peer: String,
    /// Server address for the login line (`lip=`), e.g. "192.0.2.1".
    pub local: String,
    /// Negotiated TLS protocol for the login line (`tls=`), `None`: plain.
    pub tls_protocol: Option<&'static str>,
}

/// The RFC 1939 state, for the driver's choice of idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Authorization,
    Transaction,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Authorization => "AUTHORIZATION",
            State::Transaction => "TRANSACTION",
        }
    }
}

/// What the driver does after the replies to a line are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Sleep `auth_fail_delay`, flush, then continue or close.
    AuthFailed {
        then_close: bool,
    },
    /// Flush and close the connection.
    Close,
}

enum Phase {
    /// `user` is the name of a USER command just before, waiting for PASS.
    Authorization {
        user: Option<String>,
    },
    Transaction(Box<Transaction>),
    /// QUIT, or the session was closed: nothing more is accepted.
    Ended,
}

/// One POP3 session.
pub struct Session {
    backend: Backend,
    settings: SessionSettings,
    phase: Phase,
    /// Bad commands in a row (unknown, malformed, wrong state, too long).
    bad_commands: u32,
    auth_failures: u32,
}

/// Why the gate turned a command away.
enum Refusal {
    WrongState(Verb, State),
    PlaintextNotAllowed,
}

impl Session {
    pub fn new(backend: Backend, settings: SessionSettings) -> Session {
        Session {
            backend,
            settings,
            phase: Phase::Authorization { user: None },
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    /// The greeting; deliberately without an APOP timestamp.
    pub fn greeting(&mut self, out: &mut dyn Write) -> io::Result<()> {
        reply::ok(out, format_args!("ironpop ready"))
    }

    /// AUTHORIZATION also once the session has ended (nothing is logged in).
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Transaction(_) => State::Transaction,
            _ => State::Authorization,
        }
    }

    /// The longest line the driver should accept now, line end included.
    pub fn max_line(&self) -> usize {
        limits::MAX_COMMAND_LINE
    }

    /// Answers one command line (without its line end). `Err` only means
    /// writing to `out` failed: the driver closes and calls [`abort`](Self::abort).
    pub fn handle_line(&mut self, line: &[u8], out: &mut dyn Write) -> io::Result<Control> {
        // RFC 1939: PASS must come immediately after USER.
        let pending_user = self.take_pending_user();
        if matches!(self.phase, Phase::Ended) {
            return Ok(Control::Close);
        }
        let (verb, rest) = match command::split(line) {
            Ok(split) => split,
            Err(e) => return self.bad(out, e),
        };
        if let Err(refusal) = self.gate(verb) {
            return match refusal {
                Refusal::WrongState(verb, state) => self.bad(
                    out,
                    format_args!("{} is not valid in {} state", verb.name(), state.name()),
                ),
                Refusal::PlaintextNotAllowed => {
                    let hint = if self.stls_available() {
                        "; use STLS"
                    } else {
                        ""
                    };
                    reply::err_code(
                        out,
                        RespCode::Auth,
                        format_args!(
                            "plaintext authentication is not allowed on this connection{hint}"
                        ),
                    )?;
                    self.count_bad()
                }
            };
        }
        let cmd = match command::parse_args(verb, rest) {
            Ok(cmd) => cmd,
            Err(e) => return self.bad(out, e),
        };
        self.dispatch(cmd, pending_user, out)
    }

    /// The line was longer than [`max_line`](Self::max_line) and was skipped.
    pub fn handle_too_long(&mut self, out: &mut dyn Write) -> io::Result<Control> {
        self.take_pending_user();
        if matches!(self.phase, Phase::Ended) {
            return Ok(Control::Close);
        }
        let max = self.max_line();
        self.bad(
            out,
            format_args!("line too long (at most {max} octets including CRLF)"),
        )
    }

    /// The connection ends without QUIT: nothing is written to the mailbox.
    /// A no-op once the session has ended (after QUIT or `Control::Close`),
    /// so the driver may call it at every connection end.
    pub fn abort(&mut self, reason: &str) {
        match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Transaction(t) => t.abort(&self.settings.peer, reason),
            Phase::Authorization { .. } => log::debug!(
                "disconnect: rip={} reason={reason} (not logged in)",
                self.settings.peer
            ),
            Phase::Ended => {}
        }
    }

    fn take_pending_user(&mut self) -> Option<String> {
        match &mut self.phase {
            Phase::Authorization { user } => user.take(),
            _ => None,
        }
    }

    fn stls_available(&self) -> bool {
        self.settings.stls_offered && !self.settings.tls_active
    }

    /// The one check before dispatch: is `verb` allowed here and now?
    fn gate(&self, verb: Verb) -> Result<(), Refusal> {
        let state = self.state();
        let valid = match verb {
            Verb::Capa | Verb::Quit => true,
            Verb::User | Verb::Pass | Verb::Apop | Verb::Auth | Verb::Stls => {
                state == State::Authorization
            }
            Verb::Stat
            | Verb::List
            | Verb::Retr
            | Verb::Dele
            | Verb::Noop
            | Verb::Rset
            | Verb::Top
            | Verb::Uidl => state == State::Transaction,
        };
        if !valid {
            return Err(Refusal::WrongState(verb, state));
        }
        if matches!(verb, Verb::User | Verb::Pass) && !self.settings.plaintext_allowed {
            return Err(Refusal::PlaintextNotAllowed);
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        cmd: Command<'_>,
        pending_user: Option<String>,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        match cmd {
            Command::Capa => {
                let ctx = CapaContext {
                    authorization: self.state() == State::Authorization,
                    plaintext_allowed: self.settings.plaintext_allowed,
                    stls_offered: self.stls_available(),
                };
                capa::write_capa(out, ctx)?;
            }
            Command::Quit => return self.quit(out),
            Command::User(name) => {
                self.phase = Phase::Authorization {
                    user: Some(name.to_owned()),
                };
                reply::ok(out, format_args!("send PASS"))?;
            }
            Command::Pass(password) => {
                let Some(user) = pending_user else {
                    return self.bad(out, "PASS must follow a successful USER");
                };
                return self.pass(&user, password, out);
            }
            Command::Apop => reply::err(out, "APOP is not supported")?,
            Command::Auth { .. } => {
                reply::err_code(out, RespCode::Auth, "no SASL mechanisms are available")?
            }
            Command::Stls => {
                // The TLS issue turns this into `Control::StartTls`.
                let text = if self.settings.tls_active {
                    "TLS is already active"
                } else {
                    "TLS is not available on this connection"
                };
                reply::err(out, text)?;
            }
            cmd => {
                let Phase::Transaction(t) = &mut self.phase else {
                    // Unreachable: the gate admits these only in TRANSACTION.
                    return self.bad(out, "command not valid in this state");
                };
                return match t.handle(&cmd, &self.settings.peer, out)? {
                    Step::Done => {
                        self.bad_commands = 0;
                        Ok(Control::Continue)
                    }
                    Step::Failed => Ok(Control::Continue),
                    Step::Bad => self.count_bad(),
                    Step::Close(reason) => {
                        self.abort(reason);
                        Ok(Control::Close)
                    }
                };
            }
        }
        self.bad_commands = 0;
        Ok(Control::Continue)
    }

    fn quit(&mut self, out: &mut dyn Write) -> io::Result<Control> {
        match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Transaction(t) => t.quit(&self.settings.peer, out)?,
            _ => {
                log::debug!(
                    "disconnect: rip={} reason=quit (not logged in)",
                    self.settings.peer
                );
                reply::ok(out, format_args!("ironpop signing off"))?;
            }
        }
        Ok(Control::Close)
    }

    fn pass(&mut self, user: &str, password: &[u8], out: &mut dyn Write) -> io::Result<Control> {
        let peer = &self.settings.peer;
        let principal = match self.backend.auth.verify_password(user, password) {
            AuthOutcome::Accepted(principal) => principal,
            AuthOutcome::Rejected => {
                self.auth_failures += 1;
                let then_close = self.auth_failures >= limits::MAX_AUTH_FAILURES;
                log::warn!(
                    "auth failed: user={user} method=USER rip={peer} failures={}",
                    self.auth_failures
                );
                if then_close {
                    self.phase = Phase::Ended;
                }
                // Unknown user and wrong password look exactly alike.
                reply::err_code(out, RespCode::Auth, "invalid user name or password")?;
                return Ok(Control::AuthFailed { then_close });
            }
            AuthOutcome::Unavailable(detail) => {
                log::warn!(
                    "login: user={user} rip={peer}: authentication backend failed: {detail}"
                );
                reply::err_code(
                    out,
                    RespCode::SysTemp,
                    "authentication is temporarily unavailable; try again later",
                )?;
                return Ok(Control::Continue);
            }
        };
        match self.backend.maildrops.open(&principal) {
            Ok(maildrop) => {
                let t = Transaction::new(maildrop, principal.user);
                let (count, octets) = t.totals();
                log::info!(
                    "login: user={} method=USER rip={peer} lip={} tls={}",
                    t.user(),
                    self.settings.local,
                    self.settings.tls_protocol.unwrap_or("no")
                );
                reply::ok(
                    out,
                    format_args!("maildrop has {count} messages ({octets} octets)"),
                )?;
                self.phase = Phase::Transaction(Box::new(t));
                self.bad_commands = 0;
            }
            Err(e) => {
                // The log gets the whole story; the client no file paths.
                log::warn!("login: user={} rip={peer}: {e}", principal.user);
                open_error_reply(&e, out)?;
            }
        }
        Ok(Control::Continue)
    }

    /// `-ERR text` for a bad command; closes after too many in a row.
    fn bad(&mut self, out: &mut dyn Write, text: impl std::fmt::Display) -> io::Result<Control> {
        reply::err(out, text)?;
        self.count_bad()
    }

    fn count_bad(&mut self) -> io::Result<Control> {
        self.bad_commands += 1;
        if self.bad_commands < limits::MAX_BAD_COMMANDS {
            return Ok(Control::Continue);
        }
        log::info!(
            "closing: rip={} sent {} bad commands in a row",
            self.settings.peer,
            self.bad_commands
        );
        self.abort("too-many-bad-commands");
        Ok(Control::Close)
    }
}

fn open_error_reply(e: &MailboxError, out: &mut dyn Write) -> io::Result<()> {
    if e.is_in_use() {
        reply::err_code(
            out,
            RespCode::InUse,
            "mailbox is in use by another POP3 session",
        )
    } else if e.is_permanent() {
        reply::err_code(
            out,
            RespCode::SysPerm,
            "mailbox cannot be opened; please contact the administrator",
        )
    } else {
        reply::err_code(
            out,
            RespCode::SysTemp,
            "mailbox is temporarily unavailable; try again later",
        )
    }
}
