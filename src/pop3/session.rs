//! The POP3 session state machine: one line in, replies out, no I/O of its own.
//!
//! Every line goes through the same steps: parse the keyword, pass the one
//! gate (state and policy), parse the arguments, dispatch. The AUTHORIZATION
//! commands live here, AUTH (SASL) in `session/sasl.rs`, the TRANSACTION
//! commands in `transaction.rs`. STLS answers `Control::StartTls`; from
//! then on no line is executed until the driver reports the handshake with
//! [`Session::tls_started`].

mod sasl;

use std::io::{self, Write};
use std::sync::Arc;

use super::capa::{self, CapaContext};
use super::command::{self, Command, Verb};
use super::reply::{self, RespCode};
use super::transaction::{Handled, Transaction};
use crate::account::{AuthOutcome, ClientChain, Login};
use crate::authenticator::Authenticator;
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
    /// Plain connection and TLS configured: STLS is offered.
    pub stls_offered: bool,
    pub tls_active: bool,
    /// Client address for log lines (`rip=`), e.g. "203.0.113.5".
    pub peer: String,
    /// Server address for the login line (`lip=`), e.g. "192.0.2.1".
    pub local: String,
    /// Negotiated TLS protocol for the login line (`tls=`), `None`: plain.
    pub tls_protocol: Option<&'static str>,
    /// The account a verified TLS client certificate names, for AUTH
    /// EXTERNAL (`pki::identity`); `None` without one.
    pub cert_identity: Option<String>,
    /// That certificate's chain: AUTH EXTERNAL hands it to the passdb,
    /// which verifies it again (in the privileged helper when there is one).
    pub client_chain: Option<ClientChain>,
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
    /// `+OK` to STLS is written: flush it, drop every byte the client sent
    /// after the STLS line (RFC 2595 §4, CVE-2011-0411), run the TLS
    /// handshake, then call [`Session::tls_started`] (or close on failure).
    StartTls,
}

/// Where the session is: the RFC 1939 state, refined by what it waits for.
enum Mode {
    /// `user` is the name of a USER command just before, waiting for PASS.
    Authorization {
        user: Option<String>,
    },
    /// Between AUTH and its final reply: lines are SASL responses.
    Sasl(Box<crate::sasl::Exchange>),
    /// STLS was accepted; nothing is executed until the handshake is done.
    StartingTls,
    Transaction(Box<Transaction>),
    /// QUIT, or the session was closed: nothing more is accepted.
    Ended,
}

/// One POP3 session.
pub struct Session {
    backend: Backend,
    settings: SessionSettings,
    mode: Mode,
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
            mode: Mode::Authorization { user: None },
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
        match self.mode {
            Mode::Transaction(_) => State::Transaction,
            _ => State::Authorization,
        }
    }

    /// The longest line the driver should accept now, line end included.
    pub fn max_line(&self) -> usize {
        match self.mode {
            // A SASL response is base64 of a client message, not a command.
            Mode::Sasl(_) => limits::MAX_SASL_LINE + 2,
            _ => limits::MAX_COMMAND_LINE,
        }
    }

    /// The logged-in user, in TRANSACTION state.
    pub fn user(&self) -> Option<&str> {
        match &self.mode {
            Mode::Transaction(t) => Some(t.user()),
            _ => None,
        }
    }

    /// The client address the log lines name (`rip=`).
    pub fn peer(&self) -> &str {
        &self.settings.peer
    }

    /// The TLS handshake after STLS succeeded: AUTHORIZATION starts again
    /// with a fresh view (RFC 2595 §4): no pending USER, STLS no longer
    /// offered, plaintext authentication allowed (every `plaintext_auth`
    /// policy allows it over TLS), the negotiated protocol for the login
    /// line, and the client certificate's identity.
    pub fn tls_started(
        &mut self,
        tls_protocol: Option<&'static str>,
        cert_identity: Option<String>,
        client_chain: Option<ClientChain>,
    ) {
        if !matches!(self.mode, Mode::StartingTls) {
            return;
        }
        self.settings.tls_active = true;
        self.settings.stls_offered = false;
        self.settings.plaintext_allowed = true;
        self.settings.tls_protocol = tls_protocol;
        self.settings.cert_identity = cert_identity;
        self.settings.client_chain = client_chain;
        self.mode = Mode::Authorization { user: None };
        self.bad_commands = 0;
    }

    /// Answers one command line (without its line end). `Err` only means
    /// writing to `out` failed: the driver closes and calls [`abort`](Self::abort).
    pub fn handle_line(&mut self, line: &[u8], out: &mut dyn Write) -> io::Result<Control> {
        // RFC 1939: PASS must come immediately after USER.
        let pending_user = self.take_pending_user();
        match self.mode {
            // After STLS a line can only come from a driver that did not
            // discard what followed STLS: never execute it.
            Mode::Ended | Mode::StartingTls => return Ok(Control::Close),
            Mode::Sasl(_) => return self.sasl_response(Ok(line), out),
            _ => {}
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
                Refusal::PlaintextNotAllowed => self.plaintext_refused(out),
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
        match self.mode {
            Mode::Ended | Mode::StartingTls => return Ok(Control::Close),
            Mode::Sasl(_) => return self.sasl_response(Err(()), out),
            _ => {}
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
        match std::mem::replace(&mut self.mode, Mode::Ended) {
            Mode::Transaction(t) => t.abort(&self.settings.peer, reason),
            Mode::Authorization { .. } | Mode::Sasl(_) | Mode::StartingTls => log::debug!(
                "disconnect: rip={} reason={reason} (not logged in)",
                self.settings.peer
            ),
            Mode::Ended => {}
        }
    }

    fn take_pending_user(&mut self) -> Option<String> {
        match &mut self.mode {
            Mode::Authorization { user } => user.take(),
            _ => None,
        }
    }

    fn stls_available(&self) -> bool {
        self.settings.stls_offered && !self.settings.tls_active
    }

    /// `-ERR [AUTH]` for USER, PASS or AUTH PLAIN when `plaintext_auth`
    /// forbids them here, pointing at STLS when it would help.
    fn plaintext_refused(&mut self, out: &mut dyn Write) -> io::Result<Control> {
        let hint = if self.stls_available() {
            "; use STLS"
        } else {
            ""
        };
        reply::err_code(
            out,
            RespCode::Auth,
            format_args!("plaintext authentication is not allowed on this connection{hint}"),
        )?;
        self.count_bad()
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
                    sasl: self.sasl_offered(),
                    policy: self.backend.maildrops.policy(),
                };
                capa::write_capa(out, &ctx)?;
            }
            Command::Quit => return self.quit(out),
            Command::User(name) => {
                self.mode = Mode::Authorization {
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
            Command::Auth {
                mechanism: None, ..
            } => self.list_mechanisms(out)?,
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => return self.auth(mechanism, initial_response, out),
            Command::Stls if self.stls_available() => {
                reply::ok(out, format_args!("Begin TLS negotiation"))?;
                self.mode = Mode::StartingTls;
                self.bad_commands = 0;
                return Ok(Control::StartTls);
            }
            Command::Stls => {
                let text = if self.settings.tls_active {
                    "TLS is already active"
                } else {
                    "TLS is not available on this connection"
                };
                reply::err(out, text)?;
            }
            cmd => {
                let Mode::Transaction(t) = &mut self.mode else {
                    // Unreachable: the gate admits these only in TRANSACTION.
                    return self.bad(out, "command not valid in this state");
                };
                return match t.handle(&cmd, &self.settings.peer, out)? {
                    Handled::Done => {
                        self.bad_commands = 0;
                        Ok(Control::Continue)
                    }
                    Handled::Failed => Ok(Control::Continue),
                    Handled::Bad => self.count_bad(),
                    Handled::Close(reason) => {
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
        match std::mem::replace(&mut self.mode, Mode::Ended) {
            Mode::Transaction(t) => t.quit(&self.settings.peer, out)?,
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
        let outcome = self.backend.auth.verify_password(user, password);
        self.login(user, "USER", outcome, out)
    }

    /// One more failed login: logged, `-ERR [AUTH] text`, and the failure
    /// delay; the connection closes after `MAX_AUTH_FAILURES`.
    fn auth_failed(
        &mut self,
        user: Option<&str>,
        method: &str,
        text: impl std::fmt::Display,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        self.auth_failures += 1;
        crate::counters::login(method, false);
        let then_close = self.auth_failures >= limits::MAX_AUTH_FAILURES;
        let user = user.map(|u| format!("user={u} ")).unwrap_or_default();
        log::warn!(
            "auth failed: {user}method={method} rip={} failures={}",
            self.settings.peer,
            self.auth_failures
        );
        if then_close {
            self.mode = Mode::Ended;
        }
        reply::err_code(out, RespCode::Auth, text)?;
        Ok(Control::AuthFailed { then_close })
    }

    /// Turns the account database's answer into a login: hands the
    /// accepted login (account and spool) on to the maildrop opener and
    /// enters TRANSACTION, or says why not.
    fn login(
        &mut self,
        user: &str,
        method: &str,
        outcome: AuthOutcome<Login>,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        let peer = &self.settings.peer;
        let login = match outcome {
            AuthOutcome::Accepted(login) => login,
            AuthOutcome::Rejected => {
                // Unknown user and wrong password look exactly alike.
                return self.auth_failed(Some(user), method, "invalid user name or password", out);
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
        let account = login.principal.user.clone();
        match self.backend.maildrops.open(login) {
            Ok(maildrop) => {
                let t = Transaction::new(maildrop, account);
                let (count, octets) = t.totals();
                let tls = self
                    .settings
                    .tls_protocol
                    .unwrap_or(if self.settings.tls_active {
                        "yes"
                    } else {
                        "no"
                    });
                log::info!(
                    "login: user={} method={method} rip={peer} lip={} tls={tls}",
                    t.user(),
                    self.settings.local
                );
                reply::ok(
                    out,
                    format_args!("maildrop has {count} messages ({octets} octets)"),
                )?;
                self.mode = Mode::Transaction(Box::new(t));
                self.bad_commands = 0;
                crate::counters::login(method, true);
            }
            Err(e) => {
                // The log gets the whole story; the client no file paths.
                log::warn!("login: user={account} rip={peer}: {e}");
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
    if e.is_login_delay() {
        reply::err_code(
            out,
            RespCode::LoginDelay,
            "logged in too recently; see LOGIN-DELAY in CAPA",
        )
    } else if e.is_in_use() {
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
