//! EXTERNAL (RFC 4422 App. A): the verified TLS client certificate names the account.

use super::{Failure, Outcome, Step};

/// `identity` is the account the certificate names; the client's message
/// is its authorization identity, empty or that same name. This early
/// check only spares the passdb a hopeless request: the passdb verifies
/// the chain and the authzid again (`Authenticator::verify_certificate`).
pub(super) fn step(identity: Option<String>, authzid: &[u8]) -> Step {
    let Some(identity) = identity else {
        return Step::Failed(Failure::NoCertificate);
    };
    let Ok(authzid) = std::str::from_utf8(authzid) else {
        return Step::Failed(Failure::Malformed(
            "EXTERNAL authorization identity must be UTF-8",
        ));
    };
    if !authzid.is_empty() && authzid != identity {
        return Step::Failed(Failure::AuthzidMismatch);
    }
    Step::Done(Outcome::Certificate {
        authzid: authzid.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authzid_of(step: Step) -> Option<String> {
        match step {
            Step::Done(Outcome::Certificate { authzid }) => Some(authzid),
            _ => None,
        }
    }

    #[test]
    fn empty_authzid_is_passed_on() {
        assert_eq!(authzid_of(step(Some("bob".into()), b"")), Some("".into()));
    }

    #[test]
    fn equal_authzid_accepted() {
        assert_eq!(
            authzid_of(step(Some("bob".into()), b"bob")),
            Some("bob".into())
        );
    }

    #[test]
    fn other_authzid_refused() {
        assert!(matches!(
            step(Some("bob".into()), b"alice"),
            Step::Failed(Failure::AuthzidMismatch)
        ));
    }

    #[test]
    fn no_certificate_refused() {
        assert!(matches!(
            step(None, b""),
            Step::Failed(Failure::NoCertificate)
        ));
    }

    #[test]
    fn non_utf8_authzid_refused() {
        assert!(matches!(
            step(Some("bob".into()), b"\xff"),
            Step::Failed(Failure::Malformed(_))
        ));
    }
}
