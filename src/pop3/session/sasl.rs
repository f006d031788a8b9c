//! AUTH (RFC 5034): mechanism list, the SASL exchange, and its end as a login or a failure.

use std::io::{self, Write};
use std::sync::Arc;

use super::{Control, Mode, Session};
use crate::account::AuthOutcome;
use crate::authenticator::Authenticator;
use crate::pop3::reply::{self, RespCode};
use crate::sasl::{
    challenge_line, Context, Exchange, Failure, Mechanism, Outcome, ProofCheck, ScramLookup,
    SecretLookup, Step, KEY_LEN,
};

/// The account database as the SCRAM exchange's verifier: it hands out
/// salt and iterations and checks proofs, keeping the keys to itself.
struct PassdbScram(Arc<dyn Authenticator>);

impl ScramLookup for PassdbScram {
    fn scram_params(&self, user: &str) -> SecretLookup {
        self.0.scram_params(user)
    }

    fn scram_verify(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ProofCheck {
        let login = self.0.scram_login(user, auth_message, proof);
        match (login.outcome, login.server_signature) {
            (AuthOutcome::Accepted(login), Some(server_signature)) => ProofCheck::Verified {
                login,
                server_signature,
            },
            (AuthOutcome::Accepted(_), None) => ProofCheck::Unavailable(
                "the account database accepted a SCRAM proof without a signature".into(),
            ),
            (AuthOutcome::Rejected, _) => ProofCheck::Rejected,
            (AuthOutcome::Unavailable(why), _) => ProofCheck::Unavailable(why),
        }
    }
}

impl Session {
    /// What the SASL mechanisms can use on this connection now.
    fn sasl_context(&self) -> Context {
        let auth = &self.backend.auth;
        Context {
            scram: auth
                .offers_scram()
                .then(|| Arc::new(PassdbScram(Arc::clone(auth))) as Arc<dyn ScramLookup>),
            cert_identity: self.settings.cert_identity.clone(),
        }
    }

    /// The mechanisms usable now, for CAPA's SASL line and bare AUTH.
    pub(super) fn sasl_offered(&self) -> Vec<Mechanism> {
        self.sasl_context().offered(self.settings.plaintext_allowed)
    }

    /// `AUTH` without an argument: the usable mechanisms, one per line.
    pub(super) fn list_mechanisms(&self, out: &mut dyn Write) -> io::Result<()> {
        reply::ok(out, format_args!("SASL mechanisms follow"))?;
        for mech in self.sasl_offered() {
            write!(out, "{mech}\r\n")?;
        }
        reply::end_multiline(out)
    }

    /// `AUTH mechanism [initial-response]`.
    pub(super) fn auth(
        &mut self,
        name: &[u8],
        initial_response: Option<&[u8]>,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        let Some(mech) = Mechanism::from_name(name) else {
            return self.bad(
                out,
                "unsupported SASL mechanism (AUTH without arguments lists them)",
            );
        };
        if mech.sends_password() && !self.settings.plaintext_allowed {
            return self.plaintext_refused(out);
        }
        let Some(mut exchange) = Exchange::start(mech, &self.sasl_context()) else {
            return match mech {
                // Like a wrong password: the certificate is the credential.
                Mechanism::External => self.sasl_failed(mech, Failure::NoCertificate, out),
                _ => {
                    reply::err_code(
                        out,
                        RespCode::Auth,
                        format_args!("{mech} is not available: no account has a secret for it"),
                    )?;
                    self.count_bad()
                }
            };
        };
        let step = exchange.initial_response(initial_response);
        self.sasl_step(exchange, step, out)
    }

    /// A line while an exchange runs; `Err(())` when it was too long.
    pub(super) fn sasl_response(
        &mut self,
        line: Result<&[u8], ()>,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        let Mode::Sasl(mut exchange) =
            std::mem::replace(&mut self.mode, Mode::Authorization { user: None })
        else {
            return Ok(Control::Continue);
        };
        let mech = exchange.mechanism();
        let step = match line {
            Ok(line) => exchange.continuation(line),
            Err(()) => Step::Failed(Failure::TooLong),
        };
        if let Step::Failed(failure) = step {
            return self.sasl_failed(mech, failure, out);
        }
        self.sasl_step(*exchange, step, out)
    }

    fn sasl_step(
        &mut self,
        exchange: Exchange,
        step: Step,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        let mech = exchange.mechanism();
        match step {
            Step::Challenge(challenge) => {
                write!(out, "+ {}\r\n", challenge_line(&challenge))?;
                self.mode = Mode::Sasl(Box::new(exchange));
                Ok(Control::Continue)
            }
            Step::Failed(failure) => self.sasl_failed(mech, failure, out),
            Step::Done(Outcome::Password { user, password }) => {
                let outcome = self
                    .backend
                    .auth
                    .verify_password(&user, password.as_bytes());
                self.login(&user, mech.name(), outcome, out)
            }
            Step::Done(Outcome::Accepted(login)) => {
                let user = login.principal.user.clone();
                self.login(&user, mech.name(), AuthOutcome::Accepted(login), out)
            }
            Step::Done(Outcome::Certificate { authzid }) => {
                let chain = self.settings.client_chain.clone();
                let outcome = match &chain {
                    Some(chain) => self.backend.auth.verify_certificate(chain, &authzid),
                    None => AuthOutcome::Rejected,
                };
                let user = match &outcome {
                    AuthOutcome::Accepted(login) => login.principal.user.clone(),
                    _ => self.settings.cert_identity.clone().unwrap_or_default(),
                };
                self.login(&user, mech.name(), outcome, out)
            }
        }
    }

    /// The final `-ERR` of an exchange, with the right response code.
    fn sasl_failed(
        &mut self,
        mech: Mechanism,
        failure: Failure,
        out: &mut dyn Write,
    ) -> io::Result<Control> {
        self.mode = Mode::Authorization { user: None };
        match failure {
            Failure::Cancelled => {
                reply::err(out, &failure)?;
                Ok(Control::Continue)
            }
            Failure::Unavailable(ref detail) => {
                log::warn!(
                    "login: method={mech} rip={}: authentication backend failed: {detail}",
                    self.settings.peer
                );
                reply::err_code(out, RespCode::SysTemp, &failure)?;
                Ok(Control::Continue)
            }
            f if f.is_credential_failure() => self.auth_failed(None, mech.name(), &f, out),
            f => self.bad(out, &f),
        }
    }
}
