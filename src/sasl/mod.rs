//! SASL server side (RFC 4422, RFC 5034 for POP3): mechanisms as pure state machines.
//!
//! The session owns an [`Exchange`] between `AUTH` and its final reply. It
//! feeds it the initial response and each continuation line exactly as the
//! client sent them; the exchange decodes base64, handles `=` and `*`, and
//! answers with a [`Step`]: a challenge to send as `+ base64`, a finished
//! [`Outcome`] the session still has to turn into a login, or a [`Failure`].
//! Nothing here does I/O; the only outside call is the injected
//! [`ScramLookup`], the passdb that holds the SCRAM secrets.

mod external;
mod plain;
mod scram;
mod scram_secret;

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

pub use scram::{ProofCheck, ScramLookup, ScramParams, SecretLookup};
pub use scram_secret::{ScramSecret, ScramSecretError, KEY_LEN};

pub use crate::account::Password;
use crate::limits;

/// The mechanisms ironpop implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    External,
}

impl Mechanism {
    /// In the order CAPA lists them: strongest first.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::ScramSha256,
        Mechanism::External,
        Mechanism::Plain,
    ];

    /// The registered name (RFC 4422 §3.1), as CAPA and AUTH spell it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// Mechanism names are compared without regard to case (RFC 5034 §4).
    pub fn from_name(name: &[u8]) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The password itself crosses the wire: subject to `plaintext_auth`.
    pub fn sends_password(self) -> bool {
        matches!(self, Mechanism::Plain)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the connection offers the mechanisms.
#[derive(Clone, Default)]
pub struct Context {
    /// Where SCRAM secrets come from; `None` when the passdb cannot hold
    /// them (system accounts), and then SCRAM-SHA-256 is not offered.
    pub scram: Option<Arc<dyn ScramLookup>>,
    /// The account the TLS client certificate names
    /// (`pki::identity`); `None` without one. It decides whether
    /// EXTERNAL is offered; the passdb verifies the chain again at login.
    pub cert_identity: Option<String>,
}

impl Context {
    /// Whether `mech` is usable on this connection now (for CAPA's SASL
    /// line and for AUTH). PLAIN additionally obeys `plaintext_allowed`.
    pub fn offers(&self, mech: Mechanism, plaintext_allowed: bool) -> bool {
        match mech {
            Mechanism::Plain => plaintext_allowed,
            Mechanism::ScramSha256 => self.scram.is_some(),
            Mechanism::External => self.cert_identity.is_some(),
        }
    }

    /// The mechanisms for CAPA's `SASL` line, in preference order.
    pub fn offered(&self, plaintext_allowed: bool) -> Vec<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .filter(|m| self.offers(*m, plaintext_allowed))
            .collect()
    }
}

/// A finished exchange. The session still has to make it a login.
#[derive(Debug)]
pub enum Outcome {
    /// PLAIN: verify through `Authenticator::verify_password`.
    Password { user: String, password: Password },
    /// SCRAM: the passdb checked the client's proof and accepted the
    /// account, with its spool (opened by the privileged helper, if any).
    Accepted(crate::account::Login),
    /// EXTERNAL: the session has the passdb verify the client's certificate
    /// chain, which must name an account matching `authzid` (empty: any).
    Certificate { authzid: String },
}

/// Why an exchange ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The client sent `*`.
    Cancelled,
    /// A line that is not valid base64.
    BadBase64,
    /// A line longer than `limits::MAX_SASL_LINE`.
    TooLong,
    /// The client broke the mechanism's syntax; the text says how.
    Malformed(&'static str),
    /// The authorization identity differs from the authenticated one.
    AuthzidMismatch,
    /// EXTERNAL without a verified client certificate naming an account.
    NoCertificate,
    /// Wrong password or proof, or unknown user: `[AUTH]`.
    Rejected,
    /// The account database failed: `[SYS/TEMP]`. The text is for the log.
    Unavailable(String),
}

impl Failure {
    /// Failures that count as a failed login (`[AUTH]`, the failure delay).
    pub fn is_credential_failure(&self) -> bool {
        matches!(
            self,
            Failure::Rejected | Failure::AuthzidMismatch | Failure::NoCertificate
        )
    }
}

impl fmt::Display for Failure {
    /// Text fit for the client's `-ERR` line (no secrets, no paths).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Cancelled => f.write_str("authentication cancelled"),
            Failure::BadBase64 => f.write_str("invalid base64 in SASL response"),
            Failure::TooLong => write!(
                f,
                "SASL response too long (at most {} octets)",
                limits::MAX_SASL_LINE
            ),
            Failure::Malformed(what) => write!(f, "malformed SASL response: {what}"),
            Failure::AuthzidMismatch => {
                f.write_str("authorization identity must be empty or the authenticated user")
            }
            Failure::NoCertificate => {
                f.write_str("no verified client certificate naming an account")
            }
            Failure::Rejected => f.write_str("authentication failed"),
            Failure::Unavailable(_) => {
                f.write_str("authentication is temporarily unavailable; try again later")
            }
        }
    }
}

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send `+ ` and [`challenge_line`] of this, then read one more line.
    Challenge(Vec<u8>),
    Done(Outcome),
    Failed(Failure),
}

/// The text after `+ ` for a challenge (no line end). An empty challenge
/// is an empty string: the line is `+ ` (RFC 5034 §4).
pub fn challenge_line(challenge: &[u8]) -> String {
    BASE64.encode(challenge)
}

enum Machine {
    Plain,
    Scram(Box<scram::ScramServer>),
    External(Option<String>),
    Finished,
}

/// One AUTH exchange, from the AUTH command to its final reply.
pub struct Exchange {
    mechanism: Mechanism,
    machine: Machine,
}

impl Exchange {
    /// Starts `mech`, or `None` when this connection cannot use it (see
    /// [`Context::offers`]; the plaintext policy is the session's check).
    pub fn start(mech: Mechanism, ctx: &Context) -> Option<Exchange> {
        let machine = match mech {
            Mechanism::Plain => Machine::Plain,
            Mechanism::ScramSha256 => {
                Machine::Scram(Box::new(scram::ScramServer::new(ctx.scram.clone()?)))
            }
            Mechanism::External => Machine::External(Some(ctx.cert_identity.clone()?)),
        };
        Some(Exchange {
            mechanism: mech,
            machine,
        })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// True once a `Done` or `Failed` step was returned.
    pub fn is_finished(&self) -> bool {
        matches!(self.machine, Machine::Finished)
    }

    /// The optional argument after the mechanism name in `AUTH mech [ir]`.
    /// Without one, every mechanism here is client-first, so the answer is
    /// an empty challenge; `=` is an empty initial response.
    pub fn initial_response(&mut self, arg: Option<&[u8]>) -> Step {
        match arg {
            None => Step::Challenge(Vec::new()),
            Some(b"=") => self.step(b""),
            Some(b"") => self.fail(Failure::Malformed("use = for an empty initial response")),
            Some(line) => self.continuation(line),
        }
    }

    /// A line the client sent after a `+` challenge (line end removed).
    pub fn continuation(&mut self, line: &[u8]) -> Step {
        if line == b"*" {
            return self.fail(Failure::Cancelled);
        }
        match decode_line(line) {
            Ok(message) => self.step(&message),
            Err(failure) => self.fail(failure),
        }
    }

    /// One decoded client message. Every `Done` or `Failed` ends the
    /// exchange; stepping a finished exchange fails.
    pub fn step(&mut self, client_message: &[u8]) -> Step {
        let step = match &mut self.machine {
            Machine::Plain => match plain::parse(client_message) {
                Ok((user, password)) => Step::Done(Outcome::Password { user, password }),
                Err(failure) => Step::Failed(failure),
            },
            Machine::Scram(server) => server.step(client_message),
            Machine::External(identity) => external::step(identity.take(), client_message),
            Machine::Finished => Step::Failed(Failure::Malformed("the exchange is already over")),
        };
        if !matches!(step, Step::Challenge(_)) {
            self.machine = Machine::Finished;
        }
        step
    }

    fn fail(&mut self, failure: Failure) -> Step {
        self.machine = Machine::Finished;
        Step::Failed(failure)
    }
}

/// Strict base64 of one client line, bounded before decoding.
fn decode_line(line: &[u8]) -> Result<Vec<u8>, Failure> {
    if line.len() > limits::MAX_SASL_LINE {
        return Err(Failure::TooLong);
    }
    BASE64.decode(line).map_err(|_| Failure::BadBase64)
}

#[cfg(test)]
mod tests;
