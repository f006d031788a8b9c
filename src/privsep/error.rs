//! What can go wrong setting up privilege separation, in the administrator's words; the daemon reports it among its startup errors.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum PrivsepError {
    /// The account database could not be set up.
    Auth(String),
    /// The privilege drop is impossible or did not take.
    Privileges(String),
    /// A system call failed; `what` says which step.
    System {
        what: &'static str,
        source: io::Error,
    },
}

impl PrivsepError {
    pub fn system(what: &'static str, source: impl Into<io::Error>) -> PrivsepError {
        PrivsepError::System {
            what,
            source: source.into(),
        }
    }
}

impl fmt::Display for PrivsepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivsepError::Auth(detail) => write!(f, "cannot set up authentication: {detail}"),
            PrivsepError::Privileges(detail) => write!(f, "cannot drop privileges: {detail}"),
            PrivsepError::System { what, source } => write!(f, "cannot {what}: {source}"),
        }
    }
}

impl std::error::Error for PrivsepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivsepError::System { source, .. } => Some(source),
            _ => None,
        }
    }
}
