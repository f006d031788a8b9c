//! `ironpop --who`, `--kick` and `--stats`: ask the daemon, print the answer.

use super::client::{ask, ControlError};
use super::protocol::{decode_stat, decode_who, Request, Target};
use super::render::{self, StatsFormat};
use crate::config::Config;
use crate::limits::CONTROL_MAX_REPLY;

/// What a control command printed, and whether it found anything to act on.
pub struct Printed {
    pub text: String,
    /// `--kick` matched no session (exit status 1).
    pub nothing_matched: bool,
}

fn printed(text: String) -> Printed {
    Printed {
        text,
        nothing_matched: false,
    }
}

/// `--who`: the daemon's sessions; without a daemon (inetd mode), the
/// mailboxes held in `state_dir` (and a note on standard error).
pub fn who(config: &Config) -> Result<Printed, ControlError> {
    match ask(&config.control_socket, &Request::Who) {
        Ok(lines) => {
            let body: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (mut rows, left_out) = decode_who(&body).map_err(ControlError::Reply)?;
            let mut text = render::who_table(&mut rows);
            if left_out > 0 {
                text.push_str(&format!(
                    "and {left_out} more sessions, left out: a reply holds at most {} MiB\n",
                    CONTROL_MAX_REPLY >> 20
                ));
            }
            Ok(printed(text))
        }
        // No socket, or one an earlier daemon left behind with nobody
        // listening (it cannot remove it after the privilege drop).
        Err(ControlError::NoSocket(socket) | ControlError::NotRunning(socket)) => {
            let held = super::locks::held(&config.state_dir, &config.mailbox)
                .map_err(|e| ControlError::Locks(config.state_dir.clone(), e))?;
            eprintln!(
                "ironpop: no daemon answers on {}; sessions holding mailbox locks in {} (inetd mode):",
                socket.display(),
                config.state_dir.display()
            );
            Ok(printed(super::locks::who_table(&held)))
        }
        Err(e) => Err(e),
    }
}

/// `--kick TARGET`: how many sessions ended.
pub fn kick(config: &Config, target: &str) -> Result<Printed, ControlError> {
    let target = Target::parse(target)
        .map_err(|e| ControlError::Reply(super::protocol::ReplyError::Refused(e.to_string())))?;
    let lines = ask(&config.control_socket, &Request::Kick(target.clone()))?;
    let count: usize = lines
        .first()
        .and_then(|l| l.parse().ok())
        .ok_or(ControlError::Reply(super::protocol::ReplyError::Malformed(
            "KICK without a count",
        )))?;
    let what = match &target {
        Target::User(u) => format!("of user {u}"),
        Target::Address(a) => format!("from {a}"),
    };
    let plural = if count == 1 { "" } else { "s" };
    Ok(Printed {
        text: format!("ended {count} session{plural} {what}\n"),
        nothing_matched: count == 0,
    })
}

/// `--stats [--openmetrics | --prometheus]`.
pub fn stats(config: &Config, format: StatsFormat) -> Result<Printed, ControlError> {
    let lines = ask(&config.control_socket, &Request::Stats)?;
    let stats = lines
        .iter()
        .map(|l| decode_stat(l).map(|(n, v)| (n.to_owned(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ControlError::Reply)?;
    Ok(printed(render::stats(&stats, format)))
}
