//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one client message.

use super::{Failure, Password};
use crate::limits::MAX_PLAIN_FIELD;

/// The user and password to verify, or why the message is unusable.
pub(super) fn parse(message: &[u8]) -> Result<(String, Password), Failure> {
    let mut fields = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::Malformed(
            "PLAIN needs authzid NUL authcid NUL password",
        ));
    };
    if passwd.contains(&0) {
        return Err(Failure::Malformed("PLAIN has more than three fields"));
    }
    if authcid.is_empty() || passwd.is_empty() {
        return Err(Failure::Malformed(
            "PLAIN user name and password must not be empty",
        ));
    }
    if authzid.len() > MAX_PLAIN_FIELD
        || authcid.len() > MAX_PLAIN_FIELD
        || passwd.len() > MAX_PLAIN_FIELD
    {
        return Err(Failure::Malformed("PLAIN field longer than 255 octets"));
    }
    let (Ok(authzid), Ok(authcid)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return Err(Failure::Malformed("PLAIN identities must be UTF-8"));
    };
    if std::str::from_utf8(passwd).is_err() {
        return Err(Failure::Malformed("PLAIN password must be UTF-8"));
    }
    if authcid.chars().any(char::is_control) {
        return Err(Failure::Malformed(
            "PLAIN user name contains control characters",
        ));
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(Failure::AuthzidMismatch);
    }
    Ok((authcid.to_owned(), Password::new(passwd.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(message: &[u8]) -> (String, Vec<u8>) {
        let (user, pw) = parse(message).expect("accepted");
        (user, pw.as_bytes().to_vec())
    }

    #[test]
    fn empty_authzid() {
        assert_eq!(ok(b"\0bob\0secret"), ("bob".into(), b"secret".to_vec()));
    }

    #[test]
    fn authzid_equal_to_authcid() {
        assert_eq!(ok(b"bob\0bob\0pw"), ("bob".into(), b"pw".to_vec()));
    }

    #[test]
    fn utf8_password_kept_verbatim() {
        assert_eq!(
            ok("\0bob\0p\u{e4}ss".as_bytes()).1,
            "p\u{e4}ss".as_bytes().to_vec()
        );
    }

    #[test]
    fn authzid_other_user_refused() {
        assert_eq!(
            parse(b"alice\0bob\0pw").err(),
            Some(Failure::AuthzidMismatch)
        );
    }

    #[test]
    fn malformed_messages_refused() {
        for bad in [
            &b""[..],
            b"bob",
            b"\0bob",
            b"\0\0pw",
            b"\0bob\0",
            b"\0bob\0pw\0extra",
            b"\0b\xffb\0pw",
            b"\xff\0bob\0pw",
            b"\0bob\0\xff",
            b"\0b\x01ob\0pw",
        ] {
            assert!(
                matches!(parse(bad), Err(Failure::Malformed(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn field_lengths_bounded() {
        let long = vec![b'a'; MAX_PLAIN_FIELD + 1];
        let max = vec![b'a'; MAX_PLAIN_FIELD];
        let mut m = b"\0".to_vec();
        m.extend_from_slice(&max);
        m.push(0);
        m.extend_from_slice(&max);
        assert!(parse(&m).is_ok());
        for which in 0..3 {
            let mut fields = [b"".to_vec(), b"bob".to_vec(), b"pw".to_vec()];
            fields[which] = long.clone();
            let m = fields.join(&0u8);
            assert!(
                matches!(parse(&m), Err(Failure::Malformed(_))),
                "field {which}"
            );
        }
    }
}
