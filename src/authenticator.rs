//! The `Authenticator` every account database answers to — in-process without root (`privsep::accounts`), through the privileged helper (`auth::helper_client`), behind the failed-login throttle — and its SCRAM verdict.
//!
//! Its own module, below both the root side and the network side, so that
//! `privsep/` can implement it without importing `auth/`.

use rustls::pki_types::CertificateDer;

use crate::account::{AuthOutcome, Login};
use crate::sasl::{SecretLookup, KEY_LEN};

/// Checks credentials for a session; an accepted login comes with its
/// spool ([`Login`]), handed over in the same value. Implementations compare
/// secrets in constant time and spend the same effort on unknown users as
/// on known ones.
pub trait Authenticator: Send + Sync {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login>;

    /// AUTH EXTERNAL: the client's certificate chain (end entity first)
    /// must verify against `tls_client_ca` now and name an account of this
    /// passdb, and `authzid` must be empty or that account. There is no
    /// way to have an account without a credential: this, a password, or
    /// a SCRAM proof.
    fn verify_certificate(
        &self,
        chain: &[CertificateDer<'_>],
        authzid: &str,
    ) -> AuthOutcome<Login> {
        let _ = (chain, authzid);
        AuthOutcome::Rejected
    }

    /// Whether any account here has a SCRAM-SHA-256 secret; SCRAM is
    /// offered only then (a crypt hash cannot serve it).
    fn offers_scram(&self) -> bool {
        false
    }

    /// The salt and iteration count of `user`'s SCRAM-SHA-256 secret
    /// (public: they go to the client in server-first).
    fn scram_params(&self, user: &str) -> SecretLookup {
        let _ = user;
        SecretLookup::NoSecret
    }

    /// AUTH SCRAM-SHA-256's client proof over `auth_message`, checked by
    /// the holder of the secret; on success the account and the
    /// ServerSignature.
    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        let _ = (user, auth_message, proof);
        ScramLogin::rejected()
    }
}

/// The passdb's verdict on a SCRAM proof: the session's ([`Login`]), or
/// the account database's (`Principal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramLogin<A = Login> {
    pub outcome: AuthOutcome<A>,
    /// Present exactly when `outcome` is `Accepted`.
    pub server_signature: Option<[u8; KEY_LEN]>,
}

impl<A> ScramLogin<A> {
    pub fn rejected() -> ScramLogin<A> {
        ScramLogin::failed(AuthOutcome::Rejected)
    }

    /// A verdict without a signature (`Rejected` or `Unavailable`).
    pub fn failed(outcome: AuthOutcome<A>) -> ScramLogin<A> {
        debug_assert!(!matches!(outcome, AuthOutcome::Accepted(_)));
        ScramLogin {
            outcome,
            server_signature: None,
        }
    }

    /// The same verdict with the accepted account turned into `B`.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> ScramLogin<B> {
        ScramLogin {
            outcome: self.outcome.map(f),
            server_signature: self.server_signature,
        }
    }
}
