//! The command-line side of the control socket: one request, the whole reply, errors in the administrator's words.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{parse_reply, ReplyError, Request};
use crate::limits::{CONTROL_MAX_REPLY, CONTROL_REPLY_TIME};
use crate::privsep::control_socket::CONTROL_GROUP;

/// Why the daemon could not be asked.
#[derive(Debug)]
pub enum ControlError {
    /// No socket there: no daemon (or inetd mode).
    NoSocket(PathBuf),
    /// The socket's permissions keep this user out.
    NotAllowed(PathBuf),
    /// A socket nobody listens on: the daemon is not running.
    NotRunning(PathBuf),
    Io(PathBuf, io::Error),
    Reply(ReplyError),
    /// No daemon, and the session locks (inetd mode) cannot be read.
    Locks(PathBuf, io::Error),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NoSocket(p) => write!(
                f,
                "no control socket at {}: is the daemon running (and is this its config)?",
                p.display()
            ),
            ControlError::NotAllowed(p) => write!(
                f,
                "permission denied on {}: the control socket is for root and group {CONTROL_GROUP}",
                p.display()
            ),
            ControlError::NotRunning(p) => write!(
                f,
                "nothing answers on {}: the daemon is not running",
                p.display()
            ),
            ControlError::Io(p, e) => write!(f, "control socket {}: {e}", p.display()),
            ControlError::Reply(e) => e.fmt(f),
            ControlError::Locks(p, e) => write!(
                f,
                "no daemon answers, and the session locks in {} cannot be listed: {e}",
                p.display()
            ),
        }
    }
}

impl std::error::Error for ControlError {}

/// Sends `request` to the daemon at `path`; the reply's body lines.
pub fn ask(path: &Path, request: &Request) -> Result<Vec<String>, ControlError> {
    let io_err = |e: io::Error| ControlError::Io(path.to_path_buf(), e);
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ControlError::NoSocket(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ControlError::NotAllowed(path.to_path_buf()),
        io::ErrorKind::ConnectionRefused => ControlError::NotRunning(path.to_path_buf()),
        _ => io_err(e),
    })?;
    stream
        .set_read_timeout(Some(CONTROL_REPLY_TIME))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_REPLY_TIME)))
        .map_err(io_err)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io_err)?;
    let mut reply = Vec::new();
    match (&stream)
        .take(CONTROL_MAX_REPLY as u64 + 1)
        .read_to_end(&mut reply)
    {
        // The daemon closes as soon as the reply is out; the framing
        // tells a whole reply from a cut one either way.
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(io_err(e)),
    }
    let body = parse_reply(&reply).map_err(ControlError::Reply)?;
    Ok(body.into_iter().map(str::to_owned).collect())
}
