//! The CAPA list (RFC 2449): only what works in the session's current state.

use std::io::{self, Write};

use crate::mailbox::MailPolicy;
use crate::sasl::Mechanism;

/// What the capability list depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapaContext {
    /// Still in AUTHORIZATION (USER and STLS are offered only there).
    pub authorization: bool,
    /// USER/PASS are allowed on this connection now.
    pub plaintext_allowed: bool,
    /// STLS would work: plain connection with TLS configured.
    pub stls_offered: bool,
    /// The SASL mechanisms usable now (plaintext policy applied).
    pub sasl: Vec<Mechanism>,
    /// EXPIRE and LOGIN-DELAY as the maildrop enforces them.
    pub policy: MailPolicy,
}

/// The capability lines, without line ends.
pub fn capabilities(ctx: &CapaContext) -> Vec<String> {
    let mut caps: Vec<String> = ["TOP", "UIDL"].map(String::from).to_vec();
    if ctx.authorization && ctx.plaintext_allowed {
        caps.push("USER".into());
    }
    if ctx.authorization && !ctx.sasl.is_empty() {
        let names: Vec<&str> = ctx.sasl.iter().map(|m| m.name()).collect();
        caps.push(format!("SASL {}", names.join(" ")));
    }
    if ctx.authorization && ctx.stls_offered {
        caps.push("STLS".into());
    }
    caps.extend(["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from));
    // The values the maildrop enforces, never a promise it does not keep.
    caps.extend(ctx.policy.capa_lines());
    caps.push(format!(
        "IMPLEMENTATION ironpop-{}",
        env!("CARGO_PKG_VERSION")
    ));
    caps
}

/// The whole multi-line CAPA response.
pub fn write_capa(out: &mut dyn Write, ctx: &CapaContext) -> io::Result<()> {
    out.write_all(b"+OK capability list follows\r\n")?;
    for cap in capabilities(ctx) {
        write!(out, "{cap}\r\n")?;
    }
    out.write_all(b".\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(authorization: bool, plaintext_allowed: bool, stls_offered: bool) -> CapaContext {
        CapaContext {
            authorization,
            plaintext_allowed,
            stls_offered,
            sasl: Vec::new(),
            policy: MailPolicy::default(),
        }
    }

    #[test]
    fn authorization_with_plaintext_and_stls() {
        let mut out = Vec::new();
        let mut c = ctx(true, true, true);
        c.sasl = vec![Mechanism::ScramSha256, Mechanism::Plain];
        write_capa(&mut out, &c).unwrap();
        let want = format!(
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL SCRAM-SHA-256 PLAIN\r\n\
             STLS\r\nRESP-CODES\r\n\
             AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION ironpop-{}\r\n.\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn user_only_when_plaintext_allowed_and_not_after_login() {
        assert!(!capabilities(&ctx(true, false, false)).contains(&"USER".into()));
        assert!(capabilities(&ctx(true, true, false)).contains(&"USER".into()));
        assert!(!capabilities(&ctx(false, true, true)).contains(&"USER".into()));
    }

    #[test]
    fn stls_only_when_offered_and_before_login() {
        assert!(!capabilities(&ctx(true, true, false)).contains(&"STLS".into()));
        assert!(capabilities(&ctx(true, false, true)).contains(&"STLS".into()));
        assert!(!capabilities(&ctx(false, true, true)).contains(&"STLS".into()));
    }

    #[test]
    fn sasl_only_in_authorization_and_when_usable() {
        let mut c = ctx(true, false, true);
        assert!(capabilities(&c).iter().all(|l| !l.starts_with("SASL")));
        c.sasl = vec![Mechanism::External];
        assert!(capabilities(&c).contains(&"SASL EXTERNAL".into()));
        c.authorization = false;
        assert!(capabilities(&c).iter().all(|l| !l.starts_with("SASL")));
    }

    #[test]
    fn nothing_untrue_is_advertised() {
        for caps in [ctx(true, true, true), ctx(false, false, false)].map(|c| capabilities(&c)) {
            assert!(caps.iter().all(|c| !c.starts_with("SASL")));
            assert!(caps.iter().all(|c| !c.starts_with("LOGIN-DELAY")));
            assert!(caps.contains(&"PIPELINING".into()));
        }
    }
}
