//! The account database with its credential checks, as the privileged helper (or, without one, the process itself) consults it.
//!
//! Every way to an account goes through a credential checked here: a
//! password, a client certificate chain verified against `tls_client_ca`,
//! or a SCRAM proof checked against the stored secret. There is no
//! password-less lookup by name from outside, so whoever can ask (the
//! network process, talking to the helper) cannot obtain an account, nor
//! have its spool opened, without one of them. The one exception is
//! [`AccountDb::startup_spool`], which the helper answers only on the
//! startup channel the daemon closes before it serves anyone
//! (`helper.rs`), and only for the account's own spool.

use std::path::Path;
use std::sync::Arc;

use nix::unistd::Uid;
use rustls::pki_types::CertificateDer;

use super::cert_login::CertCheck;
use super::checked::Checked;
use super::passwd_file::Found;
use super::passwd_file::PasswdFile;
use super::system::SystemDb;
use crate::account::{AuthOutcome, Login, Principal};
use crate::authenticator::{Authenticator, ScramLogin};
use crate::config::{Config, Passdb};
use crate::sasl::{ScramParams, SecretLookup, KEY_LEN};

/// Where the accounts are, with the rule for who must own a spool.
pub enum AccountBackend {
    /// System accounts: a spool belongs to its user.
    System(SystemDb),
    /// Virtual users: spools belong to the entry's uid field when it is
    /// set, otherwise to the daemon's user (like Dovecot's vmail), `owner`.
    PasswdFile { db: PasswdFile, owner: Uid },
    /// PAM checks the password; the account itself is a system account.
    #[cfg(feature = "pam")]
    Pam(super::pam::PamDb),
}

/// An account database and the trust anchors for client certificates.
pub struct AccountDb {
    accounts: AccountBackend,
    certs: Option<CertCheck>,
}

impl AccountDb {
    pub fn new(accounts: AccountBackend, certs: Option<CertCheck>) -> AccountDb {
        AccountDb { accounts, certs }
    }

    /// The database `passdb` names and the client CA, checked now (as
    /// root, in the daemon) so that an unreadable file stops startup.
    /// `daemon_uid` owns virtual spools.
    pub fn for_config(config: &Config, daemon_uid: Uid) -> Result<AccountDb, String> {
        let accounts = match &config.passdb {
            Passdb::System => {
                let db = SystemDb::new(config.mailbox.clone());
                db.check()?;
                AccountBackend::System(db)
            }
            Passdb::PasswdFile(path) => {
                let db = PasswdFile::new(path.clone(), config.mailbox.clone());
                db.check()?;
                AccountBackend::PasswdFile {
                    db,
                    owner: daemon_uid,
                }
            }
            #[cfg(feature = "pam")]
            Passdb::Pam => AccountBackend::Pam(super::pam::PamDb::new(config.mailbox.clone())?),
            #[cfg(not(feature = "pam"))]
            Passdb::Pam => {
                return Err("passdb = pam is not available in this build: \
                            rebuild ironpop with `cargo build --features pam` \
                            (needs libpam0g-dev), or use passdb = system"
                    .into())
            }
        };
        let certs = CertCheck::from_config(config)?;
        Ok(AccountDb::new(accounts, certs))
    }

    /// The account without a credential check: only ever called after one.
    fn lookup(&self, user: &str) -> Checked {
        match &self.accounts {
            AccountBackend::System(db) => db.lookup_account(user),
            AccountBackend::PasswdFile { db, owner } => spool_owner(db.lookup(user), *owner),
            #[cfg(feature = "pam")]
            AccountBackend::Pam(db) => db.lookup_account(user),
        }
    }

    /// USER/PASS and AUTH PLAIN.
    pub fn verify(&self, user: &str, password: &[u8]) -> Checked {
        match &self.accounts {
            AccountBackend::System(db) => db.verify_account(user, password),
            AccountBackend::PasswdFile { db, owner } => {
                spool_owner(db.verify_account(user, password), *owner)
            }
            #[cfg(feature = "pam")]
            AccountBackend::Pam(db) => db.verify_account(user, password),
        }
    }

    /// AUTH EXTERNAL: the chain verified now, the account it names, the
    /// authzid; then the account as for a password login.
    pub fn certificate(&self, chain: &[CertificateDer<'_>], authzid: &str) -> Checked {
        let Some(certs) = &self.certs else {
            log::info!("login refused: client certificate offered, but tls_client_ca is not set");
            return (AuthOutcome::Rejected, None);
        };
        match certs.identity(chain, authzid) {
            Ok(user) => self.lookup(&user),
            Err(why) => {
                log::info!("login refused: {why}");
                (AuthOutcome::Rejected, None)
            }
        }
    }

    /// Startup recovery: the account `user` as a login would find it
    /// (locked and expired accounts refused), provided its spool is
    /// `spool`. A journal names both, and the journal is the unprivileged
    /// daemon's file: any other path is refused, so no journal can have an
    /// arbitrary file opened as root.
    pub fn startup_spool(&self, user: &str, spool: &Path) -> Checked {
        match self.lookup(user) {
            (AuthOutcome::Accepted(p), owner) if p.mailbox.as_os_str() == spool.as_os_str() => {
                (AuthOutcome::Accepted(p), owner)
            }
            (AuthOutcome::Accepted(p), _) => {
                log::error!(
                    "startup recovery: refused to open {} for {user:?}: the account's spool is {}",
                    spool.display(),
                    p.mailbox.display()
                );
                (AuthOutcome::Rejected, None)
            }
            other => other,
        }
    }

    pub fn offers_scram(&self) -> bool {
        match &self.accounts {
            AccountBackend::PasswdFile { db, .. } => db.offers_scram(),
            _ => false,
        }
    }

    /// The public half of `user`'s SCRAM secret.
    pub fn scram_params(&self, user: &str) -> SecretLookup {
        let AccountBackend::PasswdFile { db, .. } = &self.accounts else {
            return SecretLookup::NoSecret;
        };
        match db.scram_secret(user) {
            Ok(Some(secret)) => SecretLookup::Found(ScramParams {
                salt: secret.salt().to_vec(),
                iterations: secret.iterations(),
            }),
            Ok(None) => SecretLookup::NoSecret,
            Err(why) => SecretLookup::Unavailable(why),
        }
    }

    /// A SCRAM client proof, checked against the stored secret; only a
    /// right proof leads to the account (which must not be locked).
    pub fn scram_login(
        &self,
        user: &str,
        auth_message: &[u8],
        proof: &[u8; KEY_LEN],
    ) -> (ScramLogin<Principal>, Option<Uid>) {
        let AccountBackend::PasswdFile { db, .. } = &self.accounts else {
            return (ScramLogin::rejected(), None);
        };
        let signature = match db.scram_secret(user) {
            Ok(Some(secret)) => secret.check_proof(auth_message, proof),
            Ok(None) => None,
            Err(why) => return (ScramLogin::failed(AuthOutcome::Unavailable(why)), None),
        };
        let Some(signature) = signature else {
            return (ScramLogin::rejected(), None);
        };
        match self.lookup(user) {
            (AuthOutcome::Accepted(p), owner) => (
                ScramLogin {
                    outcome: AuthOutcome::Accepted(p),
                    server_signature: Some(signature),
                },
                owner,
            ),
            (other, _) => (ScramLogin::failed(other), None),
        }
    }
}

/// A passwd-file entry's spool owner: its uid field, or the daemon's user.
fn spool_owner((outcome, ids): Found, daemon: Uid) -> Checked {
    (outcome, Some(ids.uid.unwrap_or(daemon)))
}

/// Without a helper, the process makes the same checks itself, and the
/// session opens the spool by its path.
impl Authenticator for AccountDb {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        self.verify(user, password).0.map(Login::by_path)
    }

    fn verify_certificate(
        &self,
        chain: &[CertificateDer<'_>],
        authzid: &str,
    ) -> AuthOutcome<Login> {
        self.certificate(chain, authzid).0.map(Login::by_path)
    }

    fn offers_scram(&self) -> bool {
        AccountDb::offers_scram(self)
    }

    fn scram_params(&self, user: &str) -> SecretLookup {
        AccountDb::scram_params(self, user)
    }

    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        AccountDb::scram_login(self, user, auth_message, proof)
            .0
            .map(Login::by_path)
    }
}

/// The account database the config's `passdb` names, used in-process
/// (no privileged helper): the same checks the helper would make.
///
/// A passwd file is read once here so that a missing or unreadable file
/// stops startup with a clear message instead of failing every login.
pub fn build_authenticator(config: &Config) -> Result<Arc<dyn Authenticator>, String> {
    let db = AccountDb::for_config(config, nix::unistd::geteuid())?;
    Ok(Arc::new(db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::ScramSecret;
    use std::path::PathBuf;

    fn db(dir: &tempfile::TempDir) -> AccountDb {
        let secret = ScramSecret::derive(b"pencil", b"salt of s", 4096).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("s:{secret}\nlocked:!\np:{{PLAIN}}pw\n")).unwrap();
        AccountDb::new(
            AccountBackend::PasswdFile {
                db: PasswdFile::new(users, "/m/%u".into()),
                owner: Uid::from_raw(4242),
            },
            None,
        )
    }

    /// A client's proof for `password`, computed from the secret's parts.
    fn proof(password: &[u8], auth_message: &[u8]) -> [u8; KEY_LEN] {
        use ring::{digest, hmac};
        // SaltedPassword := Hi(password, salt, i), as a client computes it.
        let salted = {
            let mut out = [0u8; KEY_LEN];
            ring::pbkdf2::derive(
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                std::num::NonZeroU32::new(4096).unwrap(),
                b"salt of s",
                password,
                &mut out,
            );
            out
        };
        let sign = |k: &[u8], d: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d);
        let client_key = sign(&salted, b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        let signature = sign(stored.as_ref(), auth_message);
        let mut p = [0u8; KEY_LEN];
        for (o, (a, b)) in p
            .iter_mut()
            .zip(client_key.as_ref().iter().zip(signature.as_ref()))
        {
            *o = a ^ b;
        }
        p
    }

    #[test]
    fn scram_login_needs_the_right_proof() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        assert!(AccountDb::offers_scram(&db));
        match AccountDb::scram_params(&db, "s") {
            SecretLookup::Found(p) => {
                assert_eq!((p.salt.as_slice(), p.iterations), (&b"salt of s"[..], 4096))
            }
            _ => panic!("no params"),
        }
        assert!(matches!(
            AccountDb::scram_params(&db, "p"),
            SecretLookup::NoSecret
        ));
        let msg = b"n=s,r=abc,r=abcdef,s=x,i=4096,c=biws,r=abcdef";
        let (login, owner) = AccountDb::scram_login(&db, "s", msg, &proof(b"pencil", msg));
        assert!(matches!(login.outcome, AuthOutcome::Accepted(ref p) if p.user == "s"));
        assert!(login.server_signature.is_some());
        assert_eq!(owner, Some(Uid::from_raw(4242)));
        // A proof for another message, another password, another user.
        let other = proof(b"pencil", b"another message");
        assert_eq!(
            AccountDb::scram_login(&db, "s", msg, &other).0,
            ScramLogin::rejected()
        );
        let wrong = proof(b"pencils", msg);
        assert_eq!(
            AccountDb::scram_login(&db, "s", msg, &wrong).0,
            ScramLogin::rejected()
        );
        let right = proof(b"pencil", msg);
        for user in ["p", "nobody", "locked"] {
            assert_eq!(
                AccountDb::scram_login(&db, user, msg, &right).0,
                ScramLogin::rejected(),
                "{user}"
            );
        }
    }

    #[test]
    fn entry_uid_names_the_spool_owner_on_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let secret = ScramSecret::derive(b"pencil", b"salt of s", 4096).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("s:{secret}:5151:\np:{{PLAIN}}pw:5252:9\n")).unwrap();
        let db = AccountDb::new(
            AccountBackend::PasswdFile {
                db: PasswdFile::new(users, "/m/%u".into()),
                owner: Uid::from_raw(4242),
            },
            None,
        );
        let (outcome, owner) = db.verify("p", b"pw");
        assert!(matches!(outcome, AuthOutcome::Accepted(_)));
        assert_eq!(owner, Some(Uid::from_raw(5252)));
        // The certificate path goes through the same lookup.
        assert_eq!(db.lookup("p").1, Some(Uid::from_raw(5252)));
        let msg = b"n=s,r=abc,r=abcdef,s=x,i=4096,c=biws,r=abcdef";
        let (login, owner) = AccountDb::scram_login(&db, "s", msg, &proof(b"pencil", msg));
        assert!(matches!(login.outcome, AuthOutcome::Accepted(_)));
        assert_eq!(owner, Some(Uid::from_raw(5151)));
    }

    #[test]
    fn no_account_without_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        // Without tls_client_ca no certificate opens anything; the
        // certificate-less "lookup" is not reachable from outside.
        assert_eq!(db.certificate(&[], "").0, AuthOutcome::Rejected);
        assert_eq!(
            db.certificate(&[CertificateDer::from(b"p".to_vec())], "p")
                .0,
            AuthOutcome::Rejected
        );
        assert!(matches!(db.verify("p", b"pw").0, AuthOutcome::Accepted(_)));
        assert_eq!(db.verify("p", b"pW").0, AuthOutcome::Rejected);
    }

    #[test]
    fn startup_spool_is_only_the_accounts_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let (outcome, owner) = db.startup_spool("p", Path::new("/m/p"));
        assert!(matches!(outcome, AuthOutcome::Accepted(ref a) if a.mailbox == Path::new("/m/p")));
        assert_eq!(owner, Some(Uid::from_raw(4242)));
        for (user, spool) in [
            ("p", "/m/s"),
            ("p", "/etc/shadow"),
            ("p", "/m/p/../p"),
            ("p", "/m/./p"),
            ("p", "/m//p"),
            ("locked", "/m/locked"),
            ("nobody", "/m/nobody"),
        ] {
            assert_eq!(
                db.startup_spool(user, Path::new(spool)).0,
                AuthOutcome::Rejected,
                "{user} {spool}"
            );
        }
    }

    #[test]
    fn passwd_file_passdb_builds_a_working_authenticator() {
        let (_dir, users) = crate::test_support::scratch_file("users", "demo:{PLAIN}demo\n");
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::PasswdFile(users);
        config.mailbox = "/srv/%u.mbox".into();
        let auth = build_authenticator(&config).unwrap();
        assert_eq!(
            auth.verify_password("demo", b"demo").map(|l| l.principal),
            AuthOutcome::Accepted(Principal {
                user: "demo".into(),
                mailbox: PathBuf::from("/srv/demo.mbox"),
            })
        );
        assert!(matches!(
            auth.verify_password("demo", b"x"),
            AuthOutcome::Rejected
        ));
    }

    #[test]
    fn missing_passwd_file_fails_at_startup() {
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::PasswdFile("/nonexistent/users".into());
        let e = build_authenticator(&config).err().unwrap();
        assert!(
            e.contains("cannot read passwd file /nonexistent/users"),
            "{e}"
        );
    }

    #[cfg(not(feature = "pam"))]
    #[test]
    fn pam_is_reported_as_unavailable() {
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::Pam;
        let e = build_authenticator(&config).err().unwrap();
        assert!(e.contains("passdb = pam is not available"), "{e}");
        assert!(e.contains("--features pam"), "{e}");
    }
}
