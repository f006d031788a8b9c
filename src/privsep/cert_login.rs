//! AUTH EXTERNAL as the passdb checks it: the client's certificate chain verified against `tls_client_ca` now, the account it names, and the authzid.
//!
//! The network process also judges the chain right after the handshake,
//! but only to decide whether to offer EXTERNAL. The decision that opens a
//! spool is taken here, by whoever holds the account database: the
//! privileged helper (which read `tls_client_ca` as root at startup), or
//! the process itself when it runs without one.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;

use crate::config::{CertUserField, Config};
use crate::limits::{MAX_CERT, MAX_CERT_CHAIN};
use crate::pki::identity::cert_identity;
use crate::pki::{client_verifier, provider, verified_chain};

/// The trust anchors and naming rule for client certificates.
pub struct CertCheck {
    verifier: Arc<dyn ClientCertVerifier>,
    field: CertUserField,
}

impl CertCheck {
    /// From `tls_client_ca` and `tls_cert_user`; `None` when no client CA
    /// is configured (then EXTERNAL never succeeds).
    pub fn from_config(config: &Config) -> Result<Option<CertCheck>, String> {
        let Some(ca) = &config.tls_client_ca else {
            return Ok(None);
        };
        let verifier = client_verifier(ca, provider()).map_err(|e| e.to_string())?;
        Ok(Some(CertCheck::new(verifier, config.tls_cert_user)))
    }

    pub fn new(verifier: Arc<dyn ClientCertVerifier>, field: CertUserField) -> CertCheck {
        CertCheck { verifier, field }
    }

    /// The account `chain` (end entity first) names, if the chain is
    /// valid now and `authzid` is empty or that account. `Err` says why
    /// not, for the log (certificates are public: the reason is no secret).
    pub fn identity(&self, chain: &[CertificateDer<'_>], authzid: &str) -> Result<String, String> {
        if chain.len() > MAX_CERT_CHAIN || chain.iter().any(|c| c.len() > MAX_CERT) {
            return Err("client certificate chain is too long".into());
        }
        verified_chain(self.verifier.as_ref(), chain)
            .map_err(|e| format!("client certificate not accepted: {e}"))?;
        let end_entity = chain.first().ok_or("no client certificate was presented")?;
        let name = cert_identity(end_entity, self.field).map_err(|e| e.to_string())?;
        if !authzid.is_empty() && authzid != name {
            return Err(format!(
                "authorization identity {authzid:?} is not the certificate's account {name:?}"
            ));
        }
        Ok(name)
    }
}

/// A throw-away PKI for unit tests.
#[cfg(test)]
pub(crate) mod test_pki {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };

    fn client_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    }

    pub(crate) type Pki = (
        tempfile::TempDir,
        Config,
        CertificateDer<'static>,
        CertificateDer<'static>,
    );

    /// A CA, a client certificate it signed for `cn`, and a self-signed one.
    pub(crate) fn pki(cn: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let good = client_params(cn)
            .signed_by(&key, &ca)
            .unwrap()
            .der()
            .clone();
        let selfsigned = client_params(cn).self_signed(&key).unwrap().der().clone();
        let (dir, ca_path) = crate::test_support::scratch_file("ca.pem", ca.pem());
        let mut config = Config::defaults(std::path::Path::new("/t.conf"));
        config.tls_client_ca = Some(ca_path);
        (dir, config, good, selfsigned)
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::pki;
    use super::*;

    #[test]
    fn verifies_chain_names_account_and_checks_authzid() {
        let (_dir, config, good, selfsigned) = pki("alice");
        let check = CertCheck::from_config(&config).unwrap().unwrap();
        assert_eq!(
            check.identity(std::slice::from_ref(&good), ""),
            Ok("alice".into())
        );
        assert_eq!(
            check.identity(std::slice::from_ref(&good), "alice"),
            Ok("alice".into())
        );
        let e = check
            .identity(std::slice::from_ref(&good), "bob")
            .unwrap_err();
        assert!(e.contains("authorization identity"), "{e}");
        let e = check.identity(&[selfsigned], "").unwrap_err();
        assert!(e.contains("not accepted"), "{e}");
        let e = check.identity(&[], "").unwrap_err();
        assert!(e.contains("not accepted"), "{e}");
        let e = check
            .identity(&vec![good; MAX_CERT_CHAIN + 1], "")
            .unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn no_client_ca_means_no_check() {
        let config = Config::defaults(std::path::Path::new("/t.conf"));
        assert!(CertCheck::from_config(&config).unwrap().is_none());
    }
}
