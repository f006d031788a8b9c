//! In-fuzz fakes: an account table, an in-memory mbox maildrop and a SCRAM secret store.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ironpop::account::{AuthOutcome, Login, Principal};
use ironpop::authenticator::Authenticator;
use ironpop::mailbox::scan::scan_bytes;
use ironpop::mailbox::transfer::Encoder;
use ironpop::mailbox::{
    CommitReport, MailboxError, Maildrop, MaildropOpener, MessageInfo, TransferError,
};
use ironpop::pop3::{Backend, Session, SessionSettings};
use ironpop::sasl::{
    Context, ProofCheck, ScramLookup, ScramParams, ScramSecret, SecretLookup, KEY_LEN,
};

/// alice/secret reads [`SPOOL`]; `busy` (password `x`) is in use; `down`
/// makes the backend fail; everyone else is rejected.
struct Accounts;

impl Authenticator for Accounts {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        let ok = match user {
            "alice" => password == b"secret",
            "busy" => password == b"x",
            "down" => return AuthOutcome::Unavailable("fake backend down".into()),
            _ => false,
        };
        if ok {
            AuthOutcome::Accepted(Login::by_path(Principal {
                user: user.to_owned(),
                mailbox: PathBuf::from(format!("/fuzz/mail/{user}")),
            }))
        } else {
            AuthOutcome::Rejected
        }
    }
}

const SPOOL: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nMessage-ID: <1@x>\nSubject: one\n\n\
.dot line\nbody\n\nFrom b@x Mon Jan  1 00:00:01 2024\nMessage-ID: <2@x>\n\n>From quoted\r\n\n\
From c@x Mon Jan  1 00:00:02 2024\nSubject: three\n\nno final newline";

/// The real scanner and encoder over [`SPOOL`] held in memory.
struct MemoryMaildrop {
    messages: Vec<MessageInfo>,
    contents: Vec<&'static [u8]>,
}

impl Maildrop for MemoryMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn write_message(
        &mut self,
        index: usize,
        body_lines: Option<u64>,
        out: &mut dyn io::Write,
    ) -> Result<(), TransferError> {
        let content = self.contents.get(index).ok_or_else(|| {
            TransferError::Client(io::Error::new(io::ErrorKind::InvalidInput, "no message"))
        })?;
        let mut enc = Encoder::new(body_lines);
        let mut buf = Vec::new();
        enc.encode(content, &mut buf);
        enc.finish(&mut buf);
        out.write_all(&buf)?;
        Ok(())
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitReport, MailboxError> {
        assert_eq!(deleted.len(), self.messages.len(), "one flag per message");
        Ok(CommitReport::tally(&self.messages, deleted))
    }
}

struct Opener;

impl MaildropOpener for Opener {
    fn open(&self, login: Login) -> Result<Box<dyn Maildrop>, MailboxError> {
        if login.principal.user == "busy" {
            return Err(MailboxError::InUse {
                path: login.principal.mailbox,
            });
        }
        let scan = scan_bytes(SPOOL);
        let messages = scan
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| MessageInfo {
                size: m.size,
                uid: format!("uid{i}"),
            })
            .collect();
        let contents = scan
            .messages
            .iter()
            .map(|m| {
                let start = usize::try_from(m.content_offset).unwrap_or(0);
                let len = usize::try_from(m.content_len).unwrap_or(0);
                SPOOL.get(start..start + len).unwrap_or_default()
            })
            .collect();
        Ok(Box::new(MemoryMaildrop { messages, contents }))
    }
}

/// A fresh session over the fakes; `plaintext` is the USER/PASS policy.
pub fn session(plaintext: bool) -> Session {
    Session::new(
        Backend {
            auth: Arc::new(Accounts),
            maildrops: Arc::new(Opener),
        },
        SessionSettings {
            plaintext_allowed: plaintext,
            stls_offered: !plaintext,
            tls_active: false,
            peer: "192.0.2.1".into(),
            local: "192.0.2.2".into(),
            tls_protocol: None,
            cert_identity: None,
            client_chain: None,
        },
    )
}

/// alice's SCRAM secret (password `secret`), derived once: PBKDF2 is slow.
fn alice_secret() -> ScramSecret {
    static SECRET: OnceLock<ScramSecret> = OnceLock::new();
    SECRET
        .get_or_init(|| {
            ScramSecret::derive(b"secret", b"fuzz-salt-16byte", 4096).expect("valid parameters")
        })
        .clone()
}

struct Secrets;

impl ScramLookup for Secrets {
    fn scram_params(&self, user: &str) -> SecretLookup {
        match user {
            "alice" => {
                let secret = alice_secret();
                SecretLookup::Found(ScramParams {
                    salt: secret.salt().to_vec(),
                    iterations: secret.iterations(),
                })
            }
            "down" => SecretLookup::Unavailable("fake backend down".into()),
            _ => SecretLookup::NoSecret,
        }
    }

    fn scram_verify(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ProofCheck {
        if user != "alice" {
            return ProofCheck::Rejected;
        }
        match alice_secret().check_proof(auth_message, proof) {
            Some(server_signature) => ProofCheck::Verified {
                login: Login::by_path(Principal {
                    user: user.to_owned(),
                    mailbox: PathBuf::from("/fuzz/mail/alice"),
                }),
                server_signature,
            },
            None => ProofCheck::Rejected,
        }
    }
}

/// Every mechanism offered: SCRAM through [`Secrets`], EXTERNAL as alice.
pub fn sasl_context() -> Context {
    Context {
        scram: Some(Arc::new(Secrets)),
        cert_identity: Some("alice".into()),
    }
}
