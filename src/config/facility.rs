//! The syslog facilities `syslog_facility` may name: the configuration is checked against this table and the logger opens with it, so both accept the same names.

use nix::syslog::Facility;

/// The facility for a `syslog_facility` config value.
pub fn facility_from_name(name: &str) -> Option<Facility> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mail" => Facility::LOG_MAIL,
        "daemon" => Facility::LOG_DAEMON,
        "auth" => Facility::LOG_AUTH,
        "user" => Facility::LOG_USER,
        "kern" => Facility::LOG_KERN,
        "syslog" => Facility::LOG_SYSLOG,
        "lpr" => Facility::LOG_LPR,
        "news" => Facility::LOG_NEWS,
        "uucp" => Facility::LOG_UUCP,
        "local0" => Facility::LOG_LOCAL0,
        "local1" => Facility::LOG_LOCAL1,
        "local2" => Facility::LOG_LOCAL2,
        "local3" => Facility::LOG_LOCAL3,
        "local4" => Facility::LOG_LOCAL4,
        "local5" => Facility::LOG_LOCAL5,
        "local6" => Facility::LOG_LOCAL6,
        "local7" => Facility::LOG_LOCAL7,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_names() {
        assert!(matches!(
            facility_from_name("mail"),
            Some(Facility::LOG_MAIL)
        ));
        assert!(matches!(
            facility_from_name("LOCAL7"),
            Some(Facility::LOG_LOCAL7)
        ));
        assert!(facility_from_name("mial").is_none());
    }
}
